"""A page of an indexed view (a mailbox or the account by receivedAt) is read by one statement alone, with its
query state and total on its rows; what that statement cannot tell apart (no row) takes the transaction's path
and gets the same answers. Both backends."""

from __future__ import annotations

import pytest

from jmapmono.mailbox.search_query import AnchorNotFound, Window, run_query
from jmapmono.mailbox.search_sql import EmailQuery, InMailbox, Sort
from tests.support.statements import alone_only

NEWEST_FIRST = (Sort("received", ascending=False),)


def deliver(services, n: int, thread: int) -> str:
    """Email ``n`` into alice's Inbox, received ``n`` seconds after the first, in thread ``thread``."""
    refs = f"In-Reply-To: <t{thread}@x>\r\n" if n != thread else ""
    raw = f"From: a@example.org\r\nSubject: s{thread}\r\nMessage-ID: <{'m' if refs else 't'}{n}@x>\r\n{refs}\r\nb\r\n"
    alice = services.accounts.get("alice@example.org").account_id
    received = 1_700_000_000_000 + n * 1000
    return services.mailboxes.append(alice, raw.encode(), [inbox_of(services, alice)], received_at=received).id


def inbox_of(services, account_id: str) -> str:
    return services.mailboxes.mailbox_by_role(account_id, "inbox").id


def test_a_page_of_a_view_is_one_statement_with_its_state_and_total(services, alice, monkeypatch):
    ids = [deliver(services, n, thread=n % 2) for n in range(5)]  # two threads: 0, 2, 4 and 1, 3
    newest = list(reversed(ids))
    inbox = inbox_of(services, alice.account_id)
    state = services.changes.state(alice.account_id, "Email")
    cases = [
        (EmailQuery(InMailbox(inbox), NEWEST_FIRST), Window(1, limit=2, calculate_total=True), newest[1:3], 5),
        (EmailQuery(InMailbox(inbox), NEWEST_FIRST, True), Window(0, calculate_total=True), newest[:2], 2),
        (EmailQuery(None, NEWEST_FIRST), Window(3, calculate_total=True), newest[3:], 5),
        (EmailQuery(None, (Sort("received", ascending=True),), True), Window(0), [ids[0], ids[1]], None),
    ]
    for query, window, expected, total in cases:
        with alone_only(services.db, monkeypatch) as statements:
            page = run_query(services.db, alice.account_id, query, window)
        assert len(statements) == 1, query
        assert (page.ids, page.position, page.total, page.state, page.indexed) == (
            expected,
            window.position,
            total,
            state,
            True,
        )


def test_what_one_statement_cannot_tell_apart_gets_the_same_answers(services, alice, bob):
    ids = [deliver(services, n, thread=n) for n in range(3)]
    state = services.changes.state(alice.account_id, "Email")
    inbox = EmailQuery(InMailbox(inbox_of(services, alice.account_id)), NEWEST_FIRST)

    past_the_end = run_query(services.db, alice.account_id, inbox, Window(7, calculate_total=True))
    assert (past_the_end.ids, past_the_end.total, past_the_end.state) == ([], 3, state)

    # another account's mailbox is an empty view here, whatever it holds
    bobs = EmailQuery(InMailbox(inbox_of(services, bob.account_id)), NEWEST_FIRST)
    services.mailboxes.deliver("bob@example.org", b"Subject: for bob\r\n\r\nb\r\n")
    foreign = run_query(services.db, alice.account_id, bobs, Window(0, calculate_total=True))
    assert (foreign.ids, foreign.total, foreign.state) == ([], 0, state)

    anchored = run_query(services.db, alice.account_id, inbox, Window(anchor=ids[1], anchor_offset=-1, limit=2))
    assert (anchored.ids, anchored.position) == ([ids[2], ids[1]], 0)
    from_the_end = run_query(services.db, alice.account_id, inbox, Window(-1))
    assert (from_the_end.ids, from_the_end.position) == ([ids[0]], 2)
    with pytest.raises(AnchorNotFound):
        run_query(services.db, alice.account_id, inbox, Window(anchor="Mnowhere"))


def test_the_page_cut_by_the_server_cap_says_so(services, alice, monkeypatch):
    monkeypatch.setattr("jmapmono.mailbox.search_query.MAX_LIMIT", 2)
    for n in range(3):
        deliver(services, n, thread=n)
    inbox = EmailQuery(InMailbox(inbox_of(services, alice.account_id)), NEWEST_FIRST)
    assert run_query(services.db, alice.account_id, inbox, Window(0, limit=5)).limit == 2  # cut: reported
    assert run_query(services.db, alice.account_id, inbox, Window(1, limit=5)).limit is None  # two left: not cut

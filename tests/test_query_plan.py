"""The inbox view of a 10,000-message mailbox is answered by the indexes: the plan walks
message_mailboxes_view in order and stops after the page (no full scan, no sort), collapsing
threads with one probe of message_mailboxes_thread per row; and the answer is right. Both backends."""

from __future__ import annotations

import time

import pytest

from jmapmono.mailbox.model import NewMessage
from jmapmono.mailbox.search_query import View, ViewSQL

N = 10_000
THREAD_SIZE = 10
T0 = 1_704_103_200_000


def message(i: int) -> bytes:
    t = i % (N // THREAD_SIZE)  # interleaved threads: each has emails spread over the whole mailbox
    refs = f"In-Reply-To: <t{t}@x>\r\n" if i >= N // THREAD_SIZE else ""
    return (
        f"From: sender{i % 37}@example.org\r\nTo: alice@example.org\r\nSubject: Topic {t}\r\n"
        f"Message-ID: <{'t' if not refs else 'm'}{t if not refs else i}@x>\r\n{refs}"
        f"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n\r\nBody of message {i}\r\n"
    ).encode()


@pytest.fixture
def big(services, alice):
    """Alice's Inbox with N emails (some receivedAt ties), appended in bulk; returns (inbox, expected rows)."""
    inbox = services.mailboxes.mailbox_by_role(alice.account_id, "inbox").id
    started = time.monotonic()
    items = [NewMessage(message(i), (inbox,), ("$seen",) if i % 3 else (), T0 + (i // 2) * 1000) for i in range(N)]
    result = services.mailboxes.append_many(alice.account_id, items)
    print(f"append_many {N}: {time.monotonic() - started:.1f}s")
    assert len(result.created) == N and not result.errors
    rows = [(a.received_at, a.id, a.thread_id) for a in result.created.values()]
    with services.db.transaction() as tx:
        if tx.dialect == "postgres":
            tx.execute("ANALYZE")  # as autovacuum would after a bulk load
    return inbox, rows


def plan(services, sql: str, params: list) -> str:
    with services.db.read() as tx:
        if tx.dialect == "sqlite":
            return "\n".join(r["detail"] for r in tx.query("EXPLAIN QUERY PLAN " + sql, params))
        return "\n".join(next(iter(r.values())) for r in tx.query("EXPLAIN " + sql, params))


def test_inbox_view_of_10k_messages_uses_the_index(services, alice, big):
    inbox, rows = big
    newest_first = sorted(rows, key=lambda r: (-r[0], r[1]))
    heads, seen = [], set()
    for _, email_id, thread in newest_first:
        if thread not in seen:
            seen.add(thread)
            heads.append(email_id)
    assert len(seen) == N // THREAD_SIZE

    for collapse, expected in ((False, [r[1] for r in newest_first]), (True, heads)):
        view = ViewSQL(View(inbox, ascending=False, collapse=collapse), alice.account_id)
        text = plan(services, *view.page_sql(50, 100))
        print(f"collapse={collapse}\n{text}")
        if services.db.dialect == "sqlite":
            assert "message_mailboxes_view" in text
            assert "TEMP B-TREE" not in text and "SCAN" not in text  # SCAN: a full pass over a table or index
            if collapse:
                assert "message_mailboxes_thread" in text
        else:
            assert "message_mailboxes_view" in text and "Sort" not in text
            assert "Seq Scan on message_mailboxes" not in text
            if collapse:
                assert "message_mailboxes_thread" in text
        started = time.monotonic()
        args = {"filter": {"inMailbox": inbox}, "sort": [{"property": "receivedAt", "isAscending": False}]}
        r = alice.call("Email/query", {**args, "collapseThreads": collapse, "position": 100, "limit": 50})
        took = (time.monotonic() - started) * 1000
        print(f"Email/query collapse={collapse}: {took:.1f} ms")
        assert r["ids"] == expected[100:150] and r["canCalculateChanges"] is True
        r = alice.call("Email/query", {**args, "collapseThreads": collapse, "anchor": expected[777], "limit": 5})
        assert (r["position"], r["ids"]) == (777, expected[777:782])
        r = alice.call("Email/query", {**args, "collapseThreads": collapse, "position": -3, "calculateTotal": True})
        assert (r["total"], r["ids"]) == (len(expected), expected[-3:])


def test_general_path_on_10k_messages_is_right(services, alice, big):
    inbox, rows = big
    started = time.monotonic()
    r = alice.call(
        "Email/query",
        {"filter": {"inMailbox": inbox, "notKeyword": "$seen"}, "calculateTotal": True, "limit": 10},
    )
    print(f"unread view of {N}: {(time.monotonic() - started) * 1000:.1f} ms")
    unread = {email_id for i, (_, email_id, _) in enumerate(rows) if i % 3 == 0}
    assert r["total"] == len(unread) and set(r["ids"]) <= unread and r["canCalculateChanges"] is False
    started = time.monotonic()
    r = alice.call("Email/query", {"filter": {"body": "message 4242"}, "calculateTotal": True})
    print(f"body search in {N}: {(time.monotonic() - started) * 1000:.1f} ms")
    assert r["ids"] == [rows[4242][1]] and r["total"] == 1  # word prefixes: "4242" starts no other word

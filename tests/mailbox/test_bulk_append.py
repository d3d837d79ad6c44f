"""Bulk append writes many rows per statement yet stores exactly what appending one message at a time
stores: the same threads (replies before parents, shared ids under other subjects, the oldest key
winning later), counts, change-log kinds, blob references, search and header rows; one event; and a
bounded number of statements however many messages. Both backends, with statements cut small too."""

from __future__ import annotations

from collections import Counter

import pytest

from jmapmono.mailbox import counts
from jmapmono.mailbox.model import NewMessage
from jmapmono.store import multirow
from jmapmono.store.postgres import PostgresTransaction
from jmapmono.store.sqlite import SQLiteTransaction

T0 = 1_700_000_000_000


def mail(subject: str, msgid: str | None = None, refs: str = "", body: str = "body") -> bytes:
    head = f"From: Bob <bob@example.org>\r\nTo: alice@example.org\r\nSubject: {subject}\r\n"
    if msgid:
        head += f"Message-ID: <{msgid}>\r\n"
    if refs:
        head += "References: " + " ".join(f"<{r}>" for r in refs.split()) + "\r\n"
    return (head + f"X-Seq: {subject}/{msgid}\r\n\r\n{body}\r\n").encode()


# (raw, mailbox roles, keywords): order matters; comments name the rule each line exercises.
CASES = [
    (mail("Plan", "p1@x"), ("inbox",), ()),
    (mail("Re: Plan", "p2@x", "p1@x"), ("inbox",), ("$seen",)),  # joins its parent
    (mail("Re: Topic", "r1@x", "t@x"), ("inbox", "archive"), ()),  # reply first: a new thread
    (mail("Re: Topic", "r2@x", "t@x"), ("inbox",), ("$flagged",)),  # its sibling joins it
    (mail("Topic", "t@x"), ("archive",), ("$seen",)),  # the parent arrives last: joins the replies
    (mail("Other", "o1@x", "p1@x"), ("inbox",), ()),  # a known id under another subject: new thread
    (mail("Same", "a@x"), ("inbox",), ()),  # A
    (mail("Same", "b@x", "c@x"), ("inbox",), ("$draft",)),  # B: a thread of its own
    (mail("Same", "c2@x", "a@x b@x"), ("inbox",), ()),  # C names A and B: A's row is older, joins A
    (mail("Same", "d@x", "b@x"), ("inbox",), ()),  # (Same, b@x): B's row is the oldest: joins B
    (mail("No id"), ("inbox",), ()),  # no Message-ID: always a thread of its own
    (mail("No id"), ("inbox",), ()),  # the same bytes again: one blob, two references
    (mail("Big", "big@x", body="word " * 40_000), ("trash",), ("$seen", "$answered")),
]


def outbox_size(services) -> int:
    with services.db.read() as tx:
        return tx.value("SELECT COUNT(*) FROM event_outbox")


def append_each(services, account_id: str, items: list[NewMessage]) -> list:
    return [services.mailboxes.append_many(account_id, [item]).created[0] for item in items]


def snapshot(services, account_id: str, appended: list) -> dict:
    """What the append stored, in terms independent of generated ids (message and thread ids by position)."""
    index = {a.id: n for n, a in enumerate(appended)}
    threads: dict[str, list[int]] = {}
    for n, a in enumerate(appended):
        threads.setdefault(a.thread_id, []).append(n)
    mgr = services.mailboxes
    names = {mb.id: mb.role for mb in mgr.get_mailboxes(account_id)[0]}
    with services.db.read() as tx:
        rows = {
            "memberships": sorted(
                (index[r["message_id"]], names[r["mailbox_id"]], r["received_at"])
                for r in tx.query(
                    "SELECT mm.* FROM message_mailboxes mm JOIN messages m ON m.id = mm.message_id "
                    "WHERE m.account_id = ?",
                    (account_id,),
                )
            ),
            "keywords": sorted(
                (index[r["message_id"]], r["keyword"])
                for r in tx.query(
                    "SELECT k.* FROM message_keywords k JOIN messages m ON m.id = k.message_id WHERE m.account_id = ?",
                    (account_id,),
                )
            ),
            "messages": sorted(
                (index[r["id"]], r["blob_id"], r["size"], r["subject"], r["from_json"], r["references_json"])
                for r in tx.query("SELECT * FROM messages WHERE account_id = ?", (account_id,))
            ),
            "search": sorted(
                (index[r["message_id"]], r["text"], r["subject_key"], r["from_key"], r["to_key"])
                for r in tx.query("SELECT * FROM message_search WHERE account_id = ?", (account_id,))
            ),
            "headers": sorted(
                (index[r["message_id"]], r["name"], r["value"])
                for r in tx.query(
                    "SELECT h.* FROM message_headers h JOIN messages m ON m.id = h.message_id WHERE m.account_id = ?",
                    (account_id,),
                )
            ),
            "blob_refs": sorted(
                (r["blob_id"], index[r["ref"].removeprefix("message:")], r["type"], r["expires_at"])
                for r in tx.query(
                    "SELECT * FROM blob_refs WHERE account_id = ? AND ref LIKE 'message:%'", (account_id,)
                )
            ),
            "thread_keys": [
                (r["msgid"], r["subject"], threads[r["thread_id"]], index[r["message_id"]])
                for r in tx.query("SELECT * FROM thread_keys WHERE account_id = ? ORDER BY id", (account_id,))
            ],
            "counts": {names[i]: (c, counts.recount(tx, i)) for i, c in counts.read(tx, list(names)).items()},
        }
    changes = services.changes
    rows["threads"] = sorted(threads.values())
    rows["email_created"] = [index[i] for i in changes.changes_since(account_id, "Email", "0").created]
    thread_changes = changes.changes_since(account_id, "Thread", "0")
    rows["thread_created"] = sorted(threads[t] for t in thread_changes.created)
    rows["thread_updated"] = thread_changes.updated
    return rows


@pytest.fixture(params=["default", "tiny statements"])
def limits(request, monkeypatch) -> str:
    """The default statement limits, or limits so small that every table takes several statements."""
    if request.param != "default":
        monkeypatch.setattr(multirow, "MAX_PARAMS", 12)
        monkeypatch.setattr(multirow, "MAX_BYTES", 300)
        monkeypatch.setattr(multirow, "IN_CHUNK", 2)
    return request.param


def test_one_call_stores_what_one_message_at_a_time_stores(services, limits):
    one, _ = services.accounts.create_user("one@example.org")
    many, _ = services.accounts.create_user("many@example.org")
    mgr = services.mailboxes

    def items(account_id: str) -> list[NewMessage]:
        roles = {mb.role: mb.id for mb in mgr.get_mailboxes(account_id)[0]}
        return [
            NewMessage(raw, tuple(roles[r] for r in where), kw, T0 + n * 1000)
            for n, (raw, where, kw) in enumerate(CASES)
        ]

    one_by_one = append_each(services, one.account_id, items(one.account_id))
    before, events_before = mgr.states(many.account_id), outbox_size(services)
    result = mgr.append_many(many.account_id, items(many.account_id))
    at_once = [result.created[n] for n in range(len(CASES))]

    expected, got = snapshot(services, one.account_id, one_by_one), snapshot(services, many.account_id, at_once)
    assert got == expected
    assert all(maintained == recounted for maintained, recounted in got["counts"].values())
    assert got["threads"] == [[0, 1], [2, 3, 4], [5], [6, 8], [7, 9], [10], [11], [12]]
    assert at_once[10].blob_id == at_once[11].blob_id and len({a.blob_id for a in at_once}) == len(CASES) - 1
    assert got["thread_updated"] == [] and got["email_created"] == list(range(len(CASES)))
    # One operation: the states it returned are current, and one event carries every message.
    after = mgr.states(many.account_id)
    assert result.states["Email"] == after["Email"] != before["Email"]
    assert result.states["Thread"] == after["Thread"] != before["Thread"]
    with services.db.read() as tx:
        (event,) = [r["event"] for r in tx.query("SELECT event FROM event_outbox ORDER BY id")][events_before:]
    assert all(a.id in event for a in at_once)

    # Later messages thread the same way in both accounts: the keys were stored in the same order.
    later = [
        (mail("Same", "e@x", "b@x"), ("inbox",), ()),
        (mail("Re: Topic", "r9@x", "r2@x"), ("inbox",), ()),
        (mail("Plan", "p9@x", "p2@x"), ("inbox",), ("$seen",)),
    ]
    for account, done in ((one.account_id, one_by_one), (many.account_id, at_once)):
        roles = {mb.role: mb.id for mb in mgr.get_mailboxes(account)[0]}
        for raw, where, kw in later:
            done.append(mgr.append(account, raw, [roles[r] for r in where], kw, T0))
    assert snapshot(services, many.account_id, at_once) == snapshot(services, one.account_id, one_by_one)
    assert [a.thread_id for a in at_once[-3:]] == [at_once[7].thread_id, at_once[2].thread_id, at_once[0].thread_id]


def test_refused_items_leave_no_rows_and_the_rest_is_stored(services, alice, limits):
    mgr = services.mailboxes
    inbox = mgr.mailbox_by_role(alice.account_id, "inbox").id
    items = [
        NewMessage(mail("Ok", "ok1@x"), (inbox,)),
        NewMessage(mail("Bad", "bad@x"), ("Mnope",)),
        NewMessage(mail("Bad kw", "kw@x"), (inbox,), ("bad keyword",)),
        NewMessage(mail("Re: Ok", "ok2@x", "ok1@x"), (inbox,)),
    ]
    result = mgr.append_many(alice.account_id, items)
    assert sorted(result.created) == [0, 3] and sorted(result.errors) == [1, 2]
    assert result.created[0].thread_id == result.created[3].thread_id
    with services.db.read() as tx:
        assert tx.value("SELECT COUNT(*) FROM thread_keys WHERE account_id = ?", (alice.account_id,)) == 3
        assert tx.value("SELECT COUNT(*) FROM messages WHERE account_id = ?", (alice.account_id,)) == 2
        assert counts.read(tx, [inbox])[inbox] == counts.recount(tx, inbox)
        assert counts.read(tx, [inbox])[inbox].total_emails == 2


def test_statements_do_not_grow_with_the_number_of_messages(services, alice, monkeypatch):
    statements = Counter()
    for cls in (SQLiteTransaction, PostgresTransaction):
        for name in ("execute", "query"):
            original = getattr(cls, name)

            def counted(self, sql, params=(), _original=original):
                statements[" ".join(sql.split()[:3])] += 1
                return _original(self, sql, params)

            monkeypatch.setattr(cls, name, counted)
    inbox = services.mailboxes.mailbox_by_role(alice.account_id, "inbox").id
    items = [
        NewMessage(
            mail(f"Topic {n % 50}", f"m{n}@x", f"m{n % 50}@x" if n >= 50 else ""), (inbox,), ("$seen",) * (n % 2)
        )
        for n in range(1000)
    ]
    result = services.mailboxes.append_many(alice.account_id, items)
    assert len(result.created) == 1000 and len({a.thread_id for a in result.created.values()}) == 50
    # One message at a time took ~8 statements each (8,000 here); now a few per table.
    assert sum(statements.values()) < 40, statements


def test_row_chunks_respect_both_limits_and_keep_order(monkeypatch):
    rows = [("a" * 10, n) for n in range(10)] + [("b" * 100, 99)] + [("c", n) for n in range(5)]
    chunks = list(multirow.row_chunks(rows, max_params=6, max_bytes=35))
    assert [r for c in chunks for r in c] == rows
    assert all(len(c) * 2 <= 6 for c in chunks)
    assert all(sum(len(r[0]) for r in c) <= 35 or len(c) == 1 for c in chunks)  # an oversized row goes alone
    assert [len(c) for c in chunks] == [3, 3, 3, 1, 1, 3, 2]
    monkeypatch.setattr(multirow, "MAX_PARAMS", 6)
    assert multirow.fits_one(rows[:3]) and not multirow.fits_one(rows[:4])
    assert list(multirow.in_chunks(["b", "a", "b", "c"], 2)) == [["a", "b"], ["c"]]

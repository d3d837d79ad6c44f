"""The inbox view of a 10,000-message mailbox is answered by the indexes: the plan walks
message_mailboxes_view in order and stops after the page (no full scan, no sort), collapsing
threads with one probe of message_mailboxes_thread per row; and the answer is right. Both backends.
(How fast: bench/inbox_query.py.)"""

from __future__ import annotations

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


def load(services, alice) -> tuple[str, list[tuple[int, str, str]]]:
    """Alice's Inbox with N emails (receivedAt ties in pairs) appended in bulk: (inbox, [(receivedAt, id, thread)])."""
    inbox = services.mailboxes.mailbox_by_role(alice.account_id, "inbox").id
    items = [NewMessage(message(i), (inbox,), ("$seen",) if i % 3 else (), T0 + (i // 2) * 1000) for i in range(N)]
    result = services.mailboxes.append_many(alice.account_id, items)
    assert len(result.created) == N and not result.errors
    with services.db.transaction() as tx:
        if tx.dialect == "postgres":
            tx.execute("ANALYZE")  # as autovacuum would after a bulk load
    return inbox, [(a.received_at, a.id, a.thread_id) for a in result.created.values()]


def plan(services, sql: str, params: list) -> str:
    with services.db.read() as tx:
        if tx.dialect == "sqlite":
            return "\n".join(r["detail"] for r in tx.query("EXPLAIN QUERY PLAN " + sql, params))
        return "\n".join(next(iter(r.values())) for r in tx.query("EXPLAIN " + sql, params))


def test_10k_messages(services, alice):
    """One load per backend (the bulk append is most of this test's time), several checks."""
    inbox, rows = load(services, alice)
    newest_first = sorted(rows, key=lambda r: (-r[0], r[1]))
    heads, seen = [], set()
    for _, email_id, thread in newest_first:
        if thread not in seen:
            seen.add(thread)
            heads.append(email_id)
    assert len(seen) == N // THREAD_SIZE
    everything = [r[1] for r in newest_first]
    check_inbox_view_plan_and_results(services, alice, inbox, everything, heads)
    check_general_path(alice, inbox, rows)
    check_query_changes(services, alice, inbox, everything)


def check_inbox_view_plan_and_results(services, alice, inbox, everything, heads):
    args = {"filter": {"inMailbox": inbox}, "sort": [{"property": "receivedAt", "isAscending": False}]}
    for collapse, expected in ((False, everything), (True, heads)):
        view = ViewSQL(View(inbox, ascending=False, collapse=collapse), alice.account_id)
        # the page, and the page with its state and total in one statement alone (what Email/query runs)
        for text in (plan(services, *view.page_sql(50, 100)), plan(services, *view.page_alone_sql(51, 100, True))):
            print(f"collapse={collapse}\n{text}")
            if services.db.dialect == "sqlite":
                assert "message_mailboxes_view" in text
                assert "TEMP B-TREE" not in text and "SCAN" not in text  # SCAN: a full pass over a table or index
            else:
                assert "message_mailboxes_view" in text and "Sort" not in text
                assert "Seq Scan on message_mailboxes" not in text
            if collapse:
                assert "message_mailboxes_thread" in text
        query = {**args, "collapseThreads": collapse}
        r = alice.call("Email/query", {**query, "position": 100, "limit": 50, "calculateTotal": True})
        assert r["ids"] == expected[100:150] and r["canCalculateChanges"] is True and r["total"] == len(expected)
        r = alice.call("Email/query", {**query, "anchor": expected[777], "limit": 5})
        assert (r["position"], r["ids"]) == (777, expected[777:782])
        r = alice.call("Email/query", {**query, "position": -3, "calculateTotal": True})
        assert (r["total"], r["ids"]) == (len(expected), expected[-3:])


def check_general_path(alice, inbox, rows):
    args = {"filter": {"inMailbox": inbox, "notKeyword": "$seen"}, "calculateTotal": True, "limit": 10}
    r = alice.call("Email/query", args)
    unread = {email_id for i, (_, email_id, _) in enumerate(rows) if i % 3 == 0}
    assert r["total"] == len(unread) and set(r["ids"]) <= unread and r["canCalculateChanges"] is False
    r = alice.call("Email/query", {"filter": {"body": "message 4242"}, "calculateTotal": True})
    assert r["ids"] == [rows[4242][1]] and r["total"] == 1  # word prefixes: "4242" starts no other word
    r = alice.call("Email/query", {"filter": {"text": "sender5@"}, "calculateTotal": True})
    assert r["total"] == len([i for i in range(N) if i % 37 == 5])  # the From header
    r = alice.call("Email/query", {"filter": {"from": "sender36"}, "calculateTotal": True})
    assert r["total"] == len([i for i in range(N) if i % 37 == 36])


def check_query_changes(services, alice, inbox, everything):
    args = {"filter": {"inMailbox": inbox}, "sort": [{"property": "receivedAt", "isAscending": False}]}
    state = alice.call("Email/query", {**args, "limit": 1})["queryState"]
    new = services.mailboxes.append(alice.account_id, message(N), [inbox], received_at=T0 + N * 1000).id
    services.mailboxes.set_keywords(alice.account_id, [everything[10]], add=["$flagged"])
    services.mailboxes.destroy_messages(alice.account_id, [everything[20]])
    r = alice.call("Email/queryChanges", {**args, "sinceQueryState": state})
    old = [i for i in everything[:500] if i not in r["removed"]]
    for added in r["added"]:
        old.insert(added["index"], added["id"])
    assert old[:400] == alice.call("Email/query", {**args, "limit": 400})["ids"]
    assert r["added"][0] == {"id": new, "index": 0} and everything[20] in r["removed"]

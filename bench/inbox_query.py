"""The inbox of a 10,000-message mailbox over JMAP, SQLite and Postgres: the list view and a resync.

The mailbox is filled in this process through the MailboxManager (``append_many``, 250 messages a
transaction; threads of 1–5 messages linked by References, 70 % read), then a client that synced
before the last changes was away while 100 messages arrived and 100 others were flagged. A real
``python -m jmapmono serve`` then answers, over one keep-alive HTTP connection:

- ``Email/query`` inMailbox inbox, sort receivedAt descending, limit 50 (with and without
  collapseThreads, and with calculateTotal);
- the same query plus ``Email/get`` of the 50 (list-view properties, by result reference);
- the resync: ``Email/changes`` from the client's old state + ``Email/get`` of what was created and
  updated (list-view properties, by result reference), one request.

Each case runs up to ``--seconds`` (default 3) or 2,000 requests.

    .venv/bin/python bench/inbox_query.py [--messages 10000] [--seconds 3]
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()  # before requests, kombu, psycopg are imported

import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import common  # noqa: E402
from common import HttpClient, basic, method_result  # noqa: E402

from jmapmono.config import load_config  # noqa: E402
from jmapmono.mailbox.model import NewMessage  # noqa: E402
from jmapmono.runtime import Runtime  # noqa: E402

USER = "alice@example.org"
BATCH = 250
CHANGED = 100
MAX_REQUESTS = 2000
LIST_VIEW = ["id", "threadId", "mailboxIds", "keywords", "from", "subject", "receivedAt", "size", "preview"]
START_MS = 1_767_225_600_000  # 2026-01-01


def conversation(thread: int, k: int, to: str) -> bytes:
    """Message ``k`` of conversation ``thread``: replies reference the first one."""
    refs = f"In-Reply-To: <t{thread}.0@bench.example>\r\nReferences: <t{thread}.0@bench.example>\r\n" if k else ""
    headers = (
        f"From: Sender {thread % 97} <sender{thread % 97}@example.net>\r\nTo: {to}\r\n"
        f"Subject: {'Re: ' if k else ''}Topic number {thread}\r\nMessage-ID: <t{thread}.{k}@bench.example>\r\n"
        f"{refs}Date: Thu, 01 Jan 2026 10:00:00 +0000\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    body = f"Message {k} about topic {thread}.\r\n" + "Some words of the body, for the preview and the index.\r\n" * 12
    return (headers + body).encode()


def populate(services: Runtime, account: str, inbox: str, count: int) -> float:
    """Fill the inbox with ``count`` messages in conversations; messages per second."""
    rng = random.Random(8621)
    items: list[NewMessage] = []
    thread, n = 0, 0
    while n < count:
        for k in range(min(rng.randint(1, 5), count - n)):
            keywords = ("$seen",) if rng.random() < 0.7 else ()
            items.append(NewMessage(conversation(thread, k, USER), (inbox,), keywords, START_MS + n * 60_000))
            n += 1
        thread += 1
    started = time.perf_counter()
    for i in range(0, len(items), BATCH):
        result = services.mailboxes.append_many(account, items[i : i + BATCH], delivery=True)
        if result.errors:
            raise RuntimeError(f"append refused: {result.errors}")
    return count / (time.perf_counter() - started)


def prepare(backend: str, url: str, work, count: int, figures: common.Figures) -> str:
    """Fill the database; the Email state the away client knew (before the last changes)."""
    services = Runtime(load_config(common.jmapmono_env(url, work / "data")))
    try:
        user, _ = services.accounts.create_user(USER, common.PASSWORD)
        account = user.account_id
        inbox = services.mailboxes.mailbox_by_role(account, "inbox").id
        rate = populate(services, account, inbox, count - CHANGED)
        figures.add(common.Row(figures.bench, f"{backend}: fill the inbox (append_many, {BATCH}/tx)", count, rate=rate))
        old_state = services.changes.state(account, "Email")
        with services.db.read() as tx:
            read = [
                r["id"] for r in tx.query("SELECT id FROM messages WHERE account_id = ? LIMIT ?", (account, CHANGED))
            ]
        for n in range(CHANGED):  # one delivery, one flag change: 200 states
            services.mailboxes.deliver(USER, conversation(10**6 + n, 0, USER))
            services.mailboxes.set_keywords(account, [read[n]], add=["$flagged"])
        if backend == "postgres":  # what autovacuum does within a minute of a bulk load: plan on real statistics
            with services.db.transaction() as tx:
                tx.execute("ANALYZE")
        return old_state
    finally:
        services.close()


def measure(figures: common.Figures, backend: str, port: int, old_state: str, count: int, seconds: float) -> None:
    http = HttpClient(port, basic(USER))
    account = common.account_id(http)
    boxes = method_result(http.jmap([["Mailbox/get", {"accountId": account, "ids": None}, "0"]]))["list"]
    inbox = next(b for b in boxes if b["role"] == "inbox")
    if inbox["totalEmails"] != count:
        raise RuntimeError(f"the inbox holds {inbox['totalEmails']} emails, expected {count}")
    query = {
        "accountId": account,
        "filter": {"inMailbox": inbox["id"]},
        "sort": [{"property": "receivedAt", "isAscending": False}],
        "limit": 50,
    }
    get_listed = {"accountId": account, "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"}}
    resync = [
        ["Email/changes", {"accountId": account, "sinceState": old_state, "maxChanges": 500}, "c"],
        [
            "Email/get",
            {
                "accountId": account,
                "#ids": {"resultOf": "c", "name": "Email/changes", "path": "/created"},
                "properties": LIST_VIEW,
            },
            "g1",
        ],
        [
            "Email/get",
            {
                "accountId": account,
                "#ids": {"resultOf": "c", "name": "Email/changes", "path": "/updated"},
                "properties": LIST_VIEW,
            },
            "g2",
        ],
    ]
    cases = {
        "Email/query limit 50": ([["Email/query", query, "q"]], 50),
        "Email/query limit 50, collapseThreads": ([["Email/query", {**query, "collapseThreads": True}, "q"]], 50),
        "Email/query limit 50, calculateTotal": ([["Email/query", {**query, "calculateTotal": True}, "q"]], 50),
        "Email/query + Email/get 50 (list view)": (
            [["Email/query", query, "q"], ["Email/get", {**get_listed, "properties": LIST_VIEW}, "g"]],
            50,
        ),
        f"resync: Email/changes + get ({CHANGED} new, {CHANGED} flagged)": (resync, CHANGED),
    }
    for case, (calls, expected) in cases.items():

        def once(case: str = case, calls: list = calls, expected: int = expected) -> None:
            response = http.jmap(calls)
            last = method_result(response, len(calls) - 1)
            got = last["ids"] if "ids" in last else last["list"]
            if len(got) != expected:
                raise RuntimeError(f"{case}: {len(got)} results, expected {expected}: {response}")

        for _ in range(5):
            once()
        samples, elapsed = common.timed(once, MAX_REQUESTS, seconds)
        figures.throughput(f"{backend}: {case}", len(samples), elapsed, samples)
    http.close()


def run(figures: common.Figures, backend: str, count: int, seconds: float, pg: object = None) -> None:
    with common.temp_dir() as work:
        url = common.database_url(backend, work, pg)
        old_state = prepare(backend, url, work, count, figures)
        with common.serving(common.jmapmono_env(url, work / "data"), work, lmtp=False) as server:
            common.wait_outbox_drained(url)  # the serving process first publishes what the filling committed
            measure(figures, backend, server.http_port, old_state, count, seconds)


def main(argv: list[str]) -> None:
    count = common.arg_int(argv, "messages", 10_000)
    seconds = common.arg_int(argv, "seconds", 3)
    common.banner(f"inbox of {count:,} messages over JMAP, one keep-alive client, up to {seconds} s per case")
    figures = common.Figures("inbox_query")
    run(figures, "sqlite", count, seconds)
    with common.postgres() as pg:
        run(figures, "postgres", count, seconds, pg)


if __name__ == "__main__":
    main(sys.argv[1:])

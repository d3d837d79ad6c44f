"""Bulk append speed of the mailbox layer: ``MailboxManager.append_many`` on SQLite and Postgres.

    .venv/bin/python bench/bulk_append.py [--messages 10000] [--batch 100] [--deliveries 200]
                                          [--backends sqlite,postgres]

Per backend, on a fresh database:

- ``append_many N``: one call appending N messages (threads of 10 interleaved across the mailbox, as an
  import of an old mailbox looks), timed whole, with the MIME parsing (before the transaction) apart and
  the SQL statements the transaction ran counted;
- ``append_many batch``: then batches of ``--batch`` messages into that full mailbox (Email/import,
  Email/copy sizes), so lookups run against 10k existing thread keys and memberships;
- ``deliver``: then single deliveries one at a time (the LMTP path), latency per message.

Statement counts are exact and do not depend on the machine's load; seconds do.
"""

from __future__ import annotations

# isort: off
import common  # first: patches the process for gevent

# isort: on

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from jmapmono.config import load_config
from jmapmono.mailbox import manager as manager_module
from jmapmono.mailbox import messages as messages_module
from jmapmono.mailbox.model import NewMessage
from jmapmono.runtime import Runtime
from jmapmono.store import load
from jmapmono.store.postgres import PostgresTransaction
from jmapmono.store.sqlite import SQLiteTransaction

THREAD_SIZE = 10
T0 = 1_704_103_200_000


class Counter:
    """SQL statements run (execute + query) and seconds spent parsing and preparing rows, while installed."""

    def __init__(self) -> None:
        self.statements = 0
        self.parse_s = 0.0
        self.sql_s = 0.0


@contextmanager
def counting() -> Iterator[Counter]:
    counter = Counter()
    saved = []
    for cls in (SQLiteTransaction, PostgresTransaction):
        for name in ("execute", "query"):
            original = getattr(cls, name)
            saved.append((cls, name, original))

            def wrapped(self, sql, params=(), _original=original):
                counter.statements += 1
                t0 = time.perf_counter()
                try:
                    return _original(self, sql, params)
                finally:
                    counter.sql_s += time.perf_counter() - t0

            setattr(cls, name, wrapped)
    summarize = manager_module.summarize
    prepare = getattr(messages_module, "prepare", None)

    def timed(fn):
        def call(*args):
            t0 = time.perf_counter()
            try:
                return fn(*args)
            finally:
                counter.parse_s += time.perf_counter() - t0

        return call

    manager_module.summarize = timed(summarize)
    if prepare is not None:  # rows computed before the transaction
        messages_module.prepare = timed(prepare)
    try:
        yield counter
    finally:
        manager_module.summarize = summarize
        if prepare is not None:
            messages_module.prepare = prepare
        for cls, name, original in saved:
            setattr(cls, name, original)


def message(i: int, n: int, tag: str = "") -> bytes:
    """Message ``i`` of ``n``: threads of THREAD_SIZE, the first of each a root, the rest replies to it."""
    threads = max(1, n // THREAD_SIZE)
    t = i % threads
    reply = i >= threads
    head = (
        f"From: Sender {i % 37} <sender{i % 37}@example.org>\r\nTo: alice@example.org\r\n"
        f"Subject: {'Re: ' if reply else ''}Topic {tag}{t}\r\n"
        f"Message-ID: <{'m' if reply else 't'}{tag}{i if reply else t}@bench.example>\r\n"
    )
    if reply:
        head += f"In-Reply-To: <t{tag}{t}@bench.example>\r\nReferences: <t{tag}{t}@bench.example>\r\n"
    head += "Date: Mon, 01 Jan 2024 10:00:00 +0000\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    body = f"Body of message {i}: the quick brown fox jumps over the lazy dog.\r\n" * 8
    return (head + body).encode()


def run_backend(backend: str, figures: common.Figures, n: int, batch: int, deliveries: int, pg) -> None:
    with common.temp_dir() as work:
        url = common.database_url(backend, work, pg)
        config = load_config(
            {
                "DATABASE_URL": url,
                "JMAPMONO_DATA_DIR": str(work / "data"),
                "BROKER_URL": "memory://localhost/",
                "JMAPMONO_LMTP_LISTEN": "off",
                "JMAPMONO_LOG_LEVEL": "WARNING",
            }
        )
        db = load(config)
        try:
            services = Runtime(config, db)
            user, _ = services.accounts.create_user("alice@example.org", common.PASSWORD)
            mgr, acc = services.mailboxes, user.account_id
            inbox = mgr.mailbox_by_role(acc, "inbox").id

            items = [NewMessage(message(i, n), (inbox,), ("$seen",) if i % 3 else (), T0 + i * 1000) for i in range(n)]
            with counting() as c:
                t0, cpu0 = time.perf_counter(), time.process_time()
                result = mgr.append_many(acc, items)
                seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            assert len(result.created) == n and not result.errors
            note = (
                f"{c.statements} statements ({c.statements / n:.2f}/msg) in {c.sql_s:.1f} s; "
                f"parse+prepare {c.parse_s:.1f} s; this process's CPU {cpu:.1f} s"
            )
            figures.throughput(f"{backend}: append_many {n} in one call", n, seconds, note=note)
            figures.value(f"{backend}: append_many {n}, total", seconds, "s")

            samples, statements, parse_s = [], 0, 0.0
            rounds = max(1, min(20, n // max(batch, 1)))
            for r in range(rounds):
                items = [
                    NewMessage(message(i, batch, tag=f"b{r}-"), (inbox,), (), T0 + (n + r * batch + i) * 1000)
                    for i in range(batch)
                ]
                with counting() as c:
                    t0 = time.perf_counter()
                    result = mgr.append_many(acc, items)
                    samples.append((time.perf_counter() - t0) * 1000)
                statements += c.statements
                parse_s += c.parse_s
                assert len(result.created) == batch and not result.errors
            note = f"{statements / (rounds * batch):.2f} statements/msg; ms per batch of {batch}"
            figures.throughput(
                f"{backend}: append_many {batch} into {n}", rounds * batch, sum(samples) / 1000, samples, note=note
            )

            samples, statements = [], 0
            for i in range(deliveries):
                raw = message(i, deliveries, tag="d-")
                with counting() as c:
                    t0 = time.perf_counter()
                    mgr.deliver("alice@example.org", raw)
                    samples.append((time.perf_counter() - t0) * 1000)
                statements += c.statements
            if deliveries:
                note = f"{statements / deliveries:.1f} statements each"
                figures.throughput(f"{backend}: deliver one", deliveries, sum(samples) / 1000, samples, note=note)
        finally:
            db.close()


def main(argv: list[str]) -> None:
    n = common.arg_int(argv, "messages", 10_000)
    batch = common.arg_int(argv, "batch", 100)
    deliveries = common.arg_int(argv, "deliveries", 200)
    backends = "sqlite,postgres"
    if "--backends" in argv:
        backends = argv[argv.index("--backends") + 1]
    figures = common.Figures("bulk_append")
    common.banner(f"bulk append: {n} messages, batches of {batch}, {deliveries} deliveries")
    for backend in backends.split(","):
        if backend == "postgres":
            with common.postgres() as pg:
                run_backend(backend, figures, n, batch, deliveries, pg)
        else:
            run_backend(backend, figures, n, batch, deliveries, None)


if __name__ == "__main__":
    main(sys.argv[1:])

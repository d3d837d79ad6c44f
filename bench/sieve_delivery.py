"""What an active Sieve script costs a delivery: ``MailboxManager.deliver`` with and without a 50-rule script.

    .venv/bin/python bench/sieve_delivery.py [--deliveries 300] [--rules 50] [--backends sqlite,postgres]

Per backend, on a fresh database, two users get the same messages, deliveries alternating between them so
that load and caches are shared: ``plain`` has no script, ``filtered`` an active script of ``--rules`` rules
(header :contains, address :domain, :matches, exists and size tests, each with a fileinto) that none of the
messages matches, so every test runs and the message falls through to the Inbox: the worst case. The
script is compiled once when set; delivery reads the active script's id (one indexed query) and runs the
program loaded on first use. Also timed apart: one run of the loaded program on a message (no store).
"""

from __future__ import annotations

# isort: off
import common  # first: patches the process for gevent

# isort: on

import statistics
import sys
import time

from jmapmono.config import load_config
from jmapmono.mailbox.sieve.run import Message
from jmapmono.runtime import Runtime
from jmapmono.store import load
from tests.support.sieve import activate


def script(rules: int) -> str:
    out = ['require ["fileinto", "mailbox"];']
    for i in range(rules):
        test = (
            f'header :contains "subject" "project-{i}"',
            f'address :domain :is "from" "list{i}.example"',
            f'header :matches "list-id" "*<list{i}.*>"',
            f'allof (exists "x-tag-{i}", size :under 10K)',
            f'anyof (header :is "x-priority" "{i}", address :localpart :is "to" "team{i}")',
        )[i % 5]
        out.append(f'if {test} {{ fileinto :create "Filtered/{i}"; stop; }}')
    return "\n".join(out) + "\n"


def message(i: int, to: str) -> bytes:
    return (
        f"From: Sender {i % 37} <sender{i % 37}@example.org>\r\nTo: {to}\r\nSubject: Status report {i}\r\n"
        f"Message-ID: <s{i}-{to}@bench.example>\r\nDate: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n" + "The quick brown fox jumps over the lazy dog.\r\n" * 60
    ).encode()


def run_backend(backend: str, figures: common.Figures, deliveries: int, rules: int, pg) -> None:
    with common.temp_dir() as work:
        url = common.database_url(backend, work, pg)
        env = {
            "DATABASE_URL": url,
            "JMAPMONO_DATA_DIR": str(work / "data"),
            "BROKER_URL": "memory://localhost/",
            "JMAPMONO_LMTP_LISTEN": "off",
            "JMAPMONO_LOG_LEVEL": "WARNING",
        }
        db = load(load_config(env))
        try:
            services = Runtime(load_config(env), db)
            mgr = services.mailboxes
            services.accounts.create_user("plain@example.org", common.PASSWORD)
            user, _ = services.accounts.create_user("filtered@example.org", common.PASSWORD)
            activate(services, "filtered@example.org", script(rules))
            for warm in range(5):  # first queries, the program loaded once
                mgr.deliver("plain@example.org", message(-warm - 1, "plain@example.org"))
                mgr.deliver("filtered@example.org", message(-warm - 1, "filtered@example.org"))
            samples: dict[str, list[float]] = {"plain": [], "filtered": []}
            for i in range(deliveries):
                for who in ("plain", "filtered") if i % 2 else ("filtered", "plain"):
                    raw = message(i, f"{who}@example.org")
                    t0 = time.perf_counter()
                    delivered = mgr.deliver(f"{who}@example.org", raw)
                    samples[who].append((time.perf_counter() - t0) * 1000)
                    assert delivered.message_id
            for who in ("plain", "filtered"):
                note = f"{rules}-rule script, none matching" if who == "filtered" else "no script"
                seconds = sum(samples[who]) / 1000
                figures.throughput(f"{backend}: deliver, {who}", deliveries, seconds, samples[who], note)
            diff = statistics.median(samples["filtered"]) - statistics.median(samples["plain"])
            figures.value(f"{backend}: median difference", diff, "ms", note="filtered minus plain")
            active = mgr.sieve.active(user.account_id)
            assert active is not None
            program = active[1]
            raw = message(0, "filtered@example.org")
            runs = []
            for _ in range(2000):
                t0 = time.perf_counter()
                program.run(Message(raw, "filtered@example.org"), 4)
                runs.append((time.perf_counter() - t0) * 1000)
            figures.throughput(f"{backend}: the {rules}-rule program alone", len(runs), sum(runs) / 1000, runs)
        finally:
            db.close()


def main(argv: list[str]) -> None:
    deliveries = common.arg_int(argv, "deliveries", 300)
    rules = common.arg_int(argv, "rules", 50)
    backends = "sqlite,postgres"
    if "--backends" in argv:
        backends = argv[argv.index("--backends") + 1]
    figures = common.Figures("sieve_delivery")
    common.banner(f"sieve delivery: {deliveries} deliveries per user, {rules} rules")
    for backend in backends.split(","):
        if backend == "postgres":
            with common.postgres() as pg:
                run_backend(backend, figures, deliveries, rules, pg)
        else:
            run_backend(backend, figures, deliveries, rules, None)


if __name__ == "__main__":
    main(sys.argv[1:])

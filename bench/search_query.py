"""Full-text search on a 10,000-message account over JMAP, SQLite and Postgres; and what indexing costs a delivery.

The account is filled in this process through the MailboxManager (``append_many``, 250 a transaction) with
bodies of about 1 KB in English, German, Russian, Japanese and Chinese (a fifth each; Postgres then
``VACUUM ANALYZE``d, as autovacuum does after a bulk load: the GIN index's pending list merged), then a real
``python -m jmapmono serve`` answers ``Email/query`` (sort receivedAt descending, limit 50) over one keep-alive
HTTP connection for text and body searches: a common word, a stemmed word, a CJK word inside a run, a quoted
phrase, two terms, a rare word and a missing one.

Delivery: ``MailboxManager.deliver`` of a 4 KB and a 100 KB English message into the filled account, in this
process (parse, index and the one transaction), median of ``--deliveries`` each.

    .venv/bin/python bench/search_query.py [--messages 10000] [--seconds 3] [--deliveries 30]
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
MAX_REQUESTS = 2000
START_MS = 1_767_225_600_000  # 2026-01-01
BODIES = [
    "The quarterly reports are ready for review; the budget meeting moved to Thursday {n}. "
    "Please send your comments on the forecast and the hiring plan before then. ",
    "Die Berichte über das Treffen in Köln wurden gestern verschickt {n}. Bitte lesen Sie die Unterlagen "
    "vor der nächsten Sitzung und schicken Sie Ihre Anmerkungen. ",
    "Встреча в Москве перенесена на следующую неделю {n}. Пожалуйста, подтвердите участие и пришлите "
    "свои замечания к отчёту до пятницы. ",
    "東京で会議があります {n}。明日の午後三時から本社の会議室で予算について話し合います。資料を準備してください。",
    "我们下个月去北京出差 {n}。请准备好季度报告和预算方案，会议在星期四上午举行。",
]
RARE = "zanzibar"
QUERIES = {
    "text: common word (report)": {"text": "report"},
    "body: stemmed (reports)": {"body": "reports"},
    "body: Russian stem (москва)": {"body": "москва"},
    "body: CJK word inside a run (会議)": {"body": "会議"},
    "body: Chinese (北京)": {"body": "北京"},
    'body: phrase ("quarterly reports")': {"body": '"quarterly reports"'},
    "text: two terms (budget thursday)": {"text": "budget thursday"},
    "text: rare word (1 in 1000)": {"text": RARE},
    "text: missing word": {"text": "xylophone"},
}


def message(n: int, body: str, subject: str) -> bytes:
    head = (
        f"From: Sender {n % 97} <sender{n % 97}@example.net>\r\nTo: {USER}\r\nSubject: {subject}\r\n"
        f"Message-ID: <s{n}@bench.example>\r\nDate: Thu, 01 Jan 2026 10:00:00 +0000\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    return (head + body).encode()


def populate(services: Runtime, account: str, inbox: str, count: int) -> float:
    rng = random.Random(8621)
    items = []
    for n in range(count):
        body = "".join(BODIES[n % len(BODIES)].format(n=rng.randint(0, 10**6)) for _ in range(6))
        if n % 1000 == 0:
            body += f" {RARE}"
        items.append(NewMessage(message(n, body, f"Topic {n}"), (inbox,), (), START_MS + n * 60_000))
    started = time.perf_counter()
    for i in range(0, len(items), BATCH):
        result = services.mailboxes.append_many(account, items[i : i + BATCH], delivery=True)
        if result.errors:
            raise RuntimeError(f"append refused: {result.errors}")
    return count / (time.perf_counter() - started)


def english(size: int) -> str:
    para = BODIES[0].format(n=0)
    return (para * (size // len(para) + 1))[:size]


def deliveries(figures: common.Figures, backend: str, services: Runtime, repeat: int) -> None:
    for size in (4 * 1024, 100 * 1024):
        body = english(size)
        samples = []
        for i in range(repeat + 3):
            raw = message(10**6 + size + i, body, f"Delivery {i}")
            started = time.perf_counter()
            services.mailboxes.deliver(USER, raw)
            if i >= 3:  # the first ones load the models
                samples.append((time.perf_counter() - started) * 1000)
        figures.latency(f"{backend}: deliver a {size // 1024} KB message", samples)


def prepare(backend: str, url: str, work, count: int, repeat: int, figures: common.Figures) -> None:
    services = Runtime(load_config(common.jmapmono_env(url, work / "data")))
    try:
        user, _ = services.accounts.create_user(USER, common.PASSWORD)
        inbox = services.mailboxes.mailbox_by_role(user.account_id, "inbox").id
        rate = populate(services, user.account_id, inbox, count)
        figures.add(common.Row(figures.bench, f"{backend}: fill (append_many, {BATCH}/tx)", count, rate=rate))
        if backend == "postgres":  # what autovacuum does after a bulk load (and the GIN pending list merged)
            import psycopg

            with psycopg.connect(url, autocommit=True) as connection:
                connection.execute("VACUUM ANALYZE")
        deliveries(figures, backend, services, repeat)
    finally:
        services.close()


def measure(figures: common.Figures, backend: str, port: int, seconds: float) -> None:
    http = HttpClient(port, basic(USER))
    account = common.account_id(http)
    for case, condition in QUERIES.items():
        query = {
            "accountId": account,
            "filter": condition,
            "sort": [{"property": "receivedAt", "isAscending": False}],
            "limit": 50,
        }

        def once(query: dict = query) -> int:
            return len(method_result(http.jmap([["Email/query", query, "q"]]))["ids"])

        found = [once() for _ in range(5)][-1]
        samples, elapsed = common.timed(once, MAX_REQUESTS, seconds)
        figures.throughput(f"{backend}: Email/query {case}", len(samples), elapsed, samples, note=f"{found} ids")
    http.close()


def run(figures: common.Figures, backend: str, count: int, seconds: float, repeat: int, pg: object = None) -> None:
    with common.temp_dir() as work:
        url = common.database_url(backend, work, pg)
        prepare(backend, url, work, count, repeat, figures)
        with common.serving(common.jmapmono_env(url, work / "data"), work, lmtp=False) as server:
            common.wait_outbox_drained(url)
            measure(figures, backend, server.http_port, seconds)


def main(argv: list[str]) -> None:
    count = common.arg_int(argv, "messages", 10_000)
    seconds = common.arg_int(argv, "seconds", 3)
    repeat = common.arg_int(argv, "deliveries", 30)
    common.banner(f"full-text search on {count:,} messages over JMAP, up to {seconds} s per case; deliveries")
    figures = common.Figures("search_query")
    run(figures, "sqlite", count, seconds, repeat)
    with common.postgres() as pg:
        run(figures, "postgres", count, seconds, repeat, pg)


if __name__ == "__main__":
    main(sys.argv[1:])

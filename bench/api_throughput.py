"""JMAP API throughput, every row of the performance table, on both backends, printed as one table.

A real ``python -m jmapmono serve`` holds one user with 120 delivered messages (4 KB, over LMTP), on
SQLite + memory:// (the embedded default) and on Postgres + RabbitMQ (the production path: ``BROKER_URL``
amqp://). One client on a raw keep-alive socket (HTTP Basic; the verified password is remembered by the
server, as in production) sends one request at a time:

- ``Core/echo`` (a request with no data work: HTTP, authentication, JSON, dispatch);
- ``Email/get`` of 10 emails, default properties;
- the inbox view: ``Email/query`` (inMailbox, receivedAt descending, limit 50) + ``Email/get`` of the 50
  (list-view properties, by result reference), one request;
- ``Core/echo`` and ``Email/get`` of 10 over an RFC 8887 WebSocket (``Request`` messages);

then 8 concurrent client processes (``api_cores.run_clients``) send ``Core/echo`` and ``Email/get`` of 10
to a ``serve --workers N`` (N: the CPUs) on the same database. Each single-client case runs for up to
``--seconds`` (default 3) or 5,000 requests; each 8-client case for ``--seconds`` plus its start.

    .venv/bin/python bench/api_throughput.py [--seconds 3]
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()  # before requests, kombu, psycopg are imported

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402

import common  # noqa: E402
import websocket  # noqa: E402
from api_cores import run_clients  # noqa: E402
from common import HttpClient, LMTPClient, basic, lmtp_deliver, message, method_result  # noqa: E402

USER = "alice@example.org"
MESSAGES = 120
MAX_REQUESTS = 5000
CORE = ["urn:ietf:params:jmap:core"]
LIST_VIEW = ["id", "threadId", "mailboxIds", "keywords", "from", "subject", "receivedAt", "size", "preview"]

#: The rows of the summary: (row, case name in the figures, target req/s).
ROWS: list[tuple[str, str, float]] = [
    ("HTTP Core/echo", "HTTP Core/echo", 3700),
    ("HTTP Email/get of 10", "HTTP Email/get 10 emails", 2000),
    ("WebSocket Core/echo", "WebSocket Core/echo", 8600),
    ("WebSocket Email/get of 10", "WebSocket Email/get 10 emails", 2000),
    ("HTTP Email/query + get (inbox view)", "HTTP Email/query + get inbox view", 1500),
    ("8 clients, HTTP Core/echo", "8 clients: HTTP Core/echo", 5800),
    ("8 clients, HTTP Email/get of 10", "8 clients: HTTP Email/get 10 emails", 3500),
]
BACKENDS = {"sqlite": "SQLite + memory://", "postgres": "Postgres + RabbitMQ"}


def populate(lmtp_port: int) -> None:
    client = LMTPClient("127.0.0.1", lmtp_port)
    client.lhlo()
    for n in range(MESSAGES):
        lmtp_deliver(client, USER, message(n, USER, 4000))
    client.quit()


def inbox_id(http: HttpClient, account: str) -> str:
    boxes = method_result(http.jmap([["Mailbox/get", {"accountId": account, "ids": None}, "0"]]))["list"]
    return next(b["id"] for b in boxes if b["role"] == "inbox")


def run_case(
    figures: common.Figures, rates: dict[str, float], case: str, fn: Callable[[], None], seconds: float
) -> None:
    for _ in range(20):  # warm-up
        fn()
    samples, elapsed = common.timed(fn, MAX_REQUESTS, seconds)
    rates[case] = figures.throughput(case, len(samples), elapsed, samples).rate or 0.0


def measure(figures: common.Figures, backend: str, port: int, seconds: float) -> dict[str, float]:
    """The single-client rows; the rates by case name."""
    rates: dict[str, float] = {}
    http = HttpClient(port, basic(USER))
    account = common.account_id(http)
    inbox = inbox_id(http, account)
    query = {
        "accountId": account,
        "filter": {"inMailbox": inbox},
        "sort": [{"property": "receivedAt", "isAscending": False}],
        "limit": 50,
    }
    ids = method_result(http.jmap([["Email/query", query, "0"]]))["ids"]
    if len(ids) != 50:
        raise RuntimeError(f"the inbox view has {len(ids)} emails, expected 50")
    get10 = ["Email/get", {"accountId": account, "ids": ids[:10]}, "0"]
    view = [
        ["Email/query", query, "0"],
        ["Email/get", {"accountId": account, "#ids": {"resultOf": "0", "name": "Email/query", "path": "/ids"},
                       "properties": LIST_VIEW}, "1"],
    ]  # fmt: skip

    def echo() -> None:
        body = http.jmap([["Core/echo", {"hello": "world"}, "0"]], using=CORE)
        if body["methodResponses"][0][0] != "Core/echo":
            raise RuntimeError(f"unexpected echo response: {body}")

    def get_ten() -> None:
        if len(method_result(http.jmap([get10]))["list"]) != 10:
            raise RuntimeError("Email/get lost emails")

    def inbox_view() -> None:
        if len(method_result(http.jmap(view), 1)["list"]) != 50:
            raise RuntimeError("the inbox view lost emails")

    for case, fn in (
        ("HTTP Core/echo", echo),
        ("HTTP Email/get 10 emails", get_ten),
        ("HTTP Email/query + get inbox view", inbox_view),
    ):
        run_case(figures, rates, f"{backend}: {case}", fn, seconds)
    http.close()

    ws = websocket.create_connection(
        f"ws://127.0.0.1:{port}/jmap/ws",
        subprotocols=["jmap"],
        header=[f"Authorization: {basic(USER)}"],
        timeout=30,
        skip_utf8_validation=True,  # websocket-client checks UTF-8 in pure Python: the client's cost, not ours
    )
    counter = iter(range(10**9))

    def ws_call(using: list[str], calls: list) -> dict:
        request_id = f"r{next(counter)}"
        ws.send(json.dumps({"@type": "Request", "id": request_id, "using": using, "methodCalls": calls}))
        reply = json.loads(ws.recv())
        if reply.get("@type") != "Response" or reply.get("requestId") != request_id:
            raise RuntimeError(f"unexpected WebSocket reply: {str(reply)[:300]}")
        return reply

    def ws_echo() -> None:
        ws_call(CORE, [["Core/echo", {"hi": 1}, "0"]])

    def ws_get_ten() -> None:
        if len(method_result(ws_call(common.USING, [get10]))["list"]) != 10:
            raise RuntimeError("Email/get lost emails")

    run_case(figures, rates, f"{backend}: WebSocket Core/echo", ws_echo, seconds)
    run_case(figures, rates, f"{backend}: WebSocket Email/get 10 emails", ws_get_ten, seconds)
    ws.close()
    return rates


def run(figures: common.Figures, backend: str, seconds: float, pg: object = None, amqp: str | None = None) -> dict:
    workers = os.cpu_count() or 1
    with common.temp_dir() as work:
        url = common.database_url(backend, work, pg)
        # The 8 clients are one user: let all 8 requests be in progress at once (the default allows 4 per user).
        extra = {"JMAPMONO_MAX_CONCURRENT_REQUESTS": "8", **({"broker_url": amqp} if amqp else {})}
        env = common.jmapmono_env(url, work / "data", **extra)
        common.add_user(env, USER)
        with common.serving(env, work) as server:
            populate(server.lmtp_port)
            rates = measure(figures, backend, server.http_port, seconds)
        with common.serving(env, work, lmtp=False, workers=workers) as server:
            for case, name in (("echo", "HTTP Core/echo"), ("get10", "HTTP Email/get 10 emails")):
                rate = run_clients(server.http_port, case, 8, seconds)
                row = figures.value(f"{backend}: 8 clients: {name}", rate, "req/s", note=f"serve --workers {workers}")
                rates[row.case] = rate
    return rates


def summary(rates: dict[str, float]) -> None:
    """One table: every row of both backends, with its target beside it."""
    print(f"\n{'row (req/s)':<40} {BACKENDS['sqlite']:>20} {BACKENDS['postgres']:>20} {'target':>8}")
    for row, case, target in ROWS:
        cells = []
        for backend in BACKENDS:
            rate = rates.get(f"{backend}: {case}")
            cells.append("-" if rate is None else f"{rate:,.0f}{'' if rate >= target else ' (<)'}")
        print(f"{row:<40} {cells[0]:>20} {cells[1]:>20} {target:>8,.0f}")
    print("(<): below the target. One client unless noted; 8 clients are processes of their own on the same machine.")


def main(argv: list[str]) -> None:
    seconds = common.arg_int(argv, "seconds", 3)
    common.banner(f"API throughput, one keep-alive client (and 8), up to {seconds} s per case, both backends")
    figures = common.Figures("api_throughput")
    rates = run(figures, "sqlite", seconds)
    with common.postgres() as pg, common.rabbitmq() as amqp:
        rates.update(run(figures, "postgres", seconds, pg, amqp))
    summary(rates)


if __name__ == "__main__":
    main(sys.argv[1:])

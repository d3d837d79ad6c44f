"""JMAP API throughput: requests per second from one keep-alive client, one request at a time.

A real ``python -m jmapmono serve`` (SQLite + memory://, and Postgres) holds one user with 120
delivered messages. One client on a raw keep-alive socket (HTTP Basic; the verified password is cached
by the server, as in production) sends, one after the other:

- ``Core/echo`` (the cost of a request with no data work: HTTP, auth, JSON, dispatch);
- ``Email/get`` of 10 emails, default properties;
- ``Email/query`` inbox view: inMailbox, sort receivedAt descending, limit 50;
- ``Core/echo`` over an RFC 8887 WebSocket (the same request as a ``Request`` message).

Each case runs for up to ``--seconds`` (default 3) or 5,000 requests, whichever comes first.

    .venv/bin/python bench/api_throughput.py [--seconds 3]
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()  # before requests, kombu, psycopg are imported

import json  # noqa: E402
import sys  # noqa: E402

import common  # noqa: E402
import websocket  # noqa: E402
from common import HttpClient, LMTPClient, basic, lmtp_deliver, message, method_result  # noqa: E402

USER = "alice@example.org"
MESSAGES = 120
MAX_REQUESTS = 5000
CORE = ["urn:ietf:params:jmap:core"]


def populate(lmtp_port: int) -> None:
    client = LMTPClient("127.0.0.1", lmtp_port)
    client.lhlo()
    for n in range(MESSAGES):
        lmtp_deliver(client, USER, message(n, USER, 4000))
    client.quit()


def inbox_id(http: HttpClient, account: str) -> str:
    boxes = method_result(http.jmap([["Mailbox/get", {"accountId": account, "ids": None}, "0"]]))["list"]
    return next(b["id"] for b in boxes if b["role"] == "inbox")


def measure(figures: common.Figures, backend: str, port: int, seconds: float) -> None:
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

    def echo() -> None:
        body = http.jmap([["Core/echo", {"hello": "world"}, "0"]], using=CORE)
        if body["methodResponses"][0][0] != "Core/echo":
            raise RuntimeError(f"unexpected echo response: {body}")

    def get10() -> None:
        got = method_result(http.jmap([["Email/get", {"accountId": account, "ids": ids[:10]}, "0"]]))
        if len(got["list"]) != 10:
            raise RuntimeError(f"Email/get returned {len(got['list'])} emails, expected 10")

    def inbox_view() -> None:
        if len(method_result(http.jmap([["Email/query", query, "0"]]))["ids"]) != 50:
            raise RuntimeError("the inbox view lost emails")

    for case, fn in (
        ("HTTP Core/echo", echo),
        ("HTTP Email/get 10 emails", get10),
        ("HTTP Email/query inbox", inbox_view),
    ):
        for _ in range(20):  # warm-up
            fn()
        samples, elapsed = common.timed(fn, MAX_REQUESTS, seconds)
        figures.throughput(f"{backend}: {case}", len(samples), elapsed, samples)
    http.close()

    ws = websocket.create_connection(
        f"ws://127.0.0.1:{port}/jmap/ws", subprotocols=["jmap"], header=[f"Authorization: {basic(USER)}"], timeout=30
    )
    counter = iter(range(10**9))

    def ws_echo() -> None:
        request_id = f"r{next(counter)}"
        ws.send(
            json.dumps(
                {"@type": "Request", "id": request_id, "using": CORE, "methodCalls": [["Core/echo", {"hi": 1}, "0"]]}
            )
        )
        reply = json.loads(ws.recv())
        if reply.get("@type") != "Response" or reply.get("requestId") != request_id:
            raise RuntimeError(f"unexpected WebSocket reply: {reply}")

    for _ in range(20):
        ws_echo()
    samples, elapsed = common.timed(ws_echo, MAX_REQUESTS, seconds)
    figures.throughput(f"{backend}: WebSocket Core/echo", len(samples), elapsed, samples)
    ws.close()


def run(figures: common.Figures, backend: str, seconds: float, pg: object = None) -> None:
    with common.temp_dir() as work:
        url = common.database_url(backend, work, pg)
        env = common.jmapmono_env(url, work / "data")
        common.add_user(env, USER)
        with common.serving(env, work) as server:
            populate(server.lmtp_port)
            measure(figures, backend, server.http_port, seconds)


def main(argv: list[str]) -> None:
    seconds = common.arg_int(argv, "seconds", 3)
    common.banner(f"API throughput, one keep-alive client, sequential, up to {seconds} s per case")
    figures = common.Figures("api_throughput")
    run(figures, "sqlite", seconds)
    with common.postgres() as pg:
        run(figures, "postgres", seconds, pg)


if __name__ == "__main__":
    main(sys.argv[1:])

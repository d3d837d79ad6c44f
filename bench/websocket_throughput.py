"""JMAP over one RFC 8887 WebSocket: requests per second, one request at a time, SQLite and Postgres.

A real ``python -m jmapmono serve`` (SQLite + memory://, and Postgres + RabbitMQ) holds one user with 120
delivered messages of 4 KB. One client opens one WebSocket (``jmap`` subprotocol, HTTP Basic, no
permessage-deflate), enables push, and sends ``Request`` messages one after the other, each answered
before the next is sent:

- ``Core/echo`` (the cost of a WebSocket request with no data work: framing, JSON, dispatch);
- ``Email/get`` of 10 emails, default properties.

The client is a lean one (frames built and read by hand on a raw socket), so that the figure is the
server's; the note gives the serving process's CPU time per request (steadier than the rate on a busy
machine). Each case runs up to ``--seconds`` (default 3) or 20,000 requests. ``--profile SECONDS``
instead holds the SQLite server under the echo load for that long and prints its pid (for py-spy).

    .venv/bin/python bench/websocket_throughput.py [--seconds 3] [--only sqlite]
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()  # before requests, kombu, psycopg are imported

import base64  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import common  # noqa: E402
from api_throughput import MESSAGES, USER, inbox_id, populate  # noqa: E402
from common import HttpClient, basic, method_result  # noqa: E402

MAX_REQUESTS = 20_000
CORE = ["urn:ietf:params:jmap:core"]
MAIL = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"]


class LeanWebSocket:
    """A client WebSocket on a raw socket: the least client work per message (mask of zeros, as RFC 6455
    allows any key; small frames only to the server, any frame from it)."""

    def __init__(self, port: int, authorization: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /jmap/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: jmap\r\n"
                f"Authorization: {authorization}\r\n\r\n"
            ).encode()
        )
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(65536)
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"upgrade refused: {head[:200]!r}")

    def send(self, text: str) -> None:
        data = text.encode()
        n = len(data)
        if n < 126:
            head = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        self.sock.sendall(head + b"\0\0\0\0" + data)  # a zero mask leaves the payload as it is

    def _need(self, n: int) -> None:
        while len(self.buf) < n:
            chunk = self.sock.recv(262144)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.buf += chunk

    def recv(self) -> bytes:
        """The payload of the next text frame (the server sends each message in one frame)."""
        self._need(2)
        b0, b1 = self.buf[0], self.buf[1]
        n, at = b1 & 0x7F, 2
        if n == 126:
            self._need(4)
            n, at = struct.unpack_from("!H", self.buf, 2)[0], 4
        elif n == 127:
            self._need(10)
            n, at = struct.unpack_from("!Q", self.buf, 2)[0], 10
        self._need(at + n)
        payload, self.buf = self.buf[at : at + n], self.buf[at + n :]
        if b0 & 0x0F != 1 or not b0 & 0x80:
            raise RuntimeError(f"unexpected frame {b0:#x}")
        return payload

    def close(self) -> None:
        self.sock.close()


def cases(port: int) -> tuple[LeanWebSocket, dict]:
    """The open WebSocket and the two request texts (echo, Email/get of 10) for USER's account."""
    http = HttpClient(port, basic(USER))
    account = common.account_id(http)
    inbox = inbox_id(http, account)
    query = {"accountId": account, "filter": {"inMailbox": inbox}, "sort": [{"property": "receivedAt"}], "limit": 10}
    ids = method_result(http.jmap([["Email/query", query, "0"]]))["ids"]
    http.close()
    ws = LeanWebSocket(port, basic(USER))
    ws.send(json.dumps({"@type": "WebSocketPushEnable", "dataTypes": None}))
    echo = {"@type": "Request", "id": "r", "using": CORE, "methodCalls": [["Core/echo", {"hello": "world"}, "0"]]}
    get10 = {
        "@type": "Request",
        "id": "r",
        "using": MAIL,
        "methodCalls": [["Email/get", {"accountId": account, "ids": ids}, "0"]],
    }
    return ws, {"Core/echo": json.dumps(echo), "Email/get 10 emails": json.dumps(get10)}


def round_trip(ws: LeanWebSocket, text: str, check: bytes) -> None:
    ws.send(text)
    reply = ws.recv()
    if check not in reply:
        raise RuntimeError(f"unexpected WebSocket reply: {reply[:300]!r}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process used so far."""
    fields = open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(figures: common.Figures, backend: str, server: common.Serve, seconds: float) -> None:
    ws, texts = cases(server.http_port)
    checks = {"Core/echo": b'"Core/echo"', "Email/get 10 emails": b'"Email/get"'}
    for case, text in texts.items():
        for _ in range(50):  # warm-up
            round_trip(ws, text, checks[case])
        cpu = cpu_seconds(server.proc.pid)
        samples, elapsed = common.timed(lambda: round_trip(ws, text, checks[case]), MAX_REQUESTS, seconds)  # noqa: B023
        per = (cpu_seconds(server.proc.pid) - cpu) / len(samples) * 1e6
        note = f"server CPU {per:.0f} us/request"
        figures.throughput(f"{backend}: WebSocket {case}", len(samples), elapsed, samples, note=note)
    ws.close()


def profile(seconds: float) -> None:
    """Hold a SQLite server under echo then Email/get load; its pid is printed for a profiler."""
    with common.temp_dir() as work:
        env = common.jmapmono_env(common.database_url("sqlite", work), work / "data")
        common.add_user(env, USER)
        with common.serving(env, work) as server:
            populate(server.lmtp_port)
            ws, texts = cases(server.http_port)
            for case, text in texts.items():
                print(f"serve pid {server.proc.pid}: {case} for {seconds} s", flush=True)
                deadline = time.monotonic() + seconds
                count = 0
                while time.monotonic() < deadline:
                    ws.send(text)
                    ws.recv()
                    count += 1
                print(f"{case}: {count / seconds:.0f}/s", flush=True)
            ws.close()


def run(figures: common.Figures, backend: str, seconds: float, pg: object = None, amqp: str | None = None) -> None:
    with common.temp_dir() as work:
        url = common.database_url(backend, work, pg)
        env = common.jmapmono_env(url, work / "data", **({"broker_url": amqp} if amqp else {}))
        common.add_user(env, USER)
        with common.serving(env, work) as server:
            populate(server.lmtp_port)
            measure(figures, backend, server, seconds)


def main(argv: list[str]) -> None:
    if "--profile" in argv:
        return profile(common.arg_int(argv, "profile", 10))
    seconds = common.arg_int(argv, "seconds", 3)
    only = argv[argv.index("--only") + 1] if "--only" in argv else None
    common.banner(f"WebSocket requests/s, one socket, sequential, {MESSAGES} messages, up to {seconds} s per case")
    figures = common.Figures("websocket_throughput")
    if only in (None, "sqlite"):
        run(figures, "sqlite", seconds)
    if only in (None, "postgres"):
        with common.postgres() as pg, common.rabbitmq() as amqp:
            run(figures, "postgres+rabbitmq", seconds, pg, amqp)


if __name__ == "__main__":
    main(sys.argv[1:])

"""WebSocket lifecycle costs in one serving process (from the timed tests they replace; the tests check that
nothing is left behind and that a stuck client holds nobody up):

- connect, authenticate, enable push, disconnect (half with a close frame, half by closing the socket):
  cycles per second, until the server has let every socket go;
- the push latency of a reading client (delivery committed → its StateChange read), alone, then next to
  a client of another user that stopped reading in the middle of a flood of requests (its pushes pile up).

The app runs in this process on the HTTP server ``serve`` builds (event flow running, SQLite).

    .venv/bin/python bench/websocket_lifecycle.py [--cycles 1000] [--deliveries 50]
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()  # as every benchmark (common.py expects it)

import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import common  # noqa: E402
import gevent  # noqa: E402

from jmapmono.config import load_config  # noqa: E402
from jmapmono.store import open_database  # noqa: E402
from jmapmono.store.migrations import migrate  # noqa: E402
from tests.support.jmap import PASSWORD  # noqa: E402
from tests.support.servers import start_app  # noqa: E402
from tests.support.waiting import wait_until  # noqa: E402

READER, STUCK = "reader@example.org", "stuck@example.org"
CORE = ["urn:ietf:params:jmap:core"]


def cycles(server, count: int) -> float:
    """Connect/enable/disconnect cycles per second, until every socket has ended on the server."""
    started = time.perf_counter()
    for i in range(count):
        client = server.client(READER)
        client.enable_push(None if i % 3 else ["Email"])
        client.close() if i % 2 else client.sock.close()
    wait_until(lambda: not server.services.websockets.sockets, 60, message="every socket to end")
    return count / (time.perf_counter() - started)


def push_latencies(server, reader, account: str, deliveries: int, also=None) -> list[float]:
    """Milliseconds from a committed delivery to the reader's StateChange with the new Email state."""
    times = []
    for i in range(deliveries):
        raw = f"Subject: {i}\r\nMessage-ID: <bench{i}.{time.time()}@x>\r\n\r\nhi\r\n".encode()
        if also is not None:
            also(raw)
        started = time.perf_counter()
        server.services.mailboxes.deliver(READER, raw)
        now = server.services.changes.state(account, "Email")
        reader.push(where=lambda m, now=now: m["changed"].get(account, {}).get("Email") == now)
        times.append((time.perf_counter() - started) * 1000)
    return times


def main(argv: list[str]) -> None:
    count = common.arg_int(argv, "cycles", 1000)
    deliveries = common.arg_int(argv, "deliveries", 50)
    common.banner(f"WebSocket lifecycle: {count} connect/disconnect cycles, {deliveries} pushes per case")
    figures = common.Figures("websocket_lifecycle")
    with common.temp_dir() as work:
        url = common.database_url("sqlite", work)
        db = open_database(url)
        migrate(db)
        config = load_config({"DATABASE_URL": url, "JMAPMONO_DATA_DIR": str(work), "JMAPMONO_LMTP_LISTEN": "off"})
        server = start_app(config.with_overrides(ws_outbound_bytes=65536, ws_ping_seconds=0), db)
        try:
            for email in (READER, STUCK):
                server.services.accounts.create_user(email, PASSWORD)
            rate = cycles(server, count)
            figures.add(common.Row(figures.bench, "connect, enable push, disconnect", count, rate=rate))

            account = server.services.accounts.get(READER).account_id
            reader = server.client(READER)
            reader.enable_push(["Email"])
            figures.latency("reader's push, alone", push_latencies(server, reader, account, deliveries))

            stuck = server.client(STUCK)
            stuck.enable_push(None)
            [stuck_side] = [s for s in server.services.websockets.sockets if s.principal.email == STUCK]
            stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
            stuck_side.ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)

            def flood_of_requests() -> None:  # 24 MB of responses asked for, none read
                for i in range(400):
                    stuck.send_request([["Core/echo", {"pad": "x" * 60_000}, "e"]], f"f{i}", CORE)

            flood = gevent.spawn(flood_of_requests)
            wait_until(lambda: stuck_side.ws.messages_in > 10, 30, message="the flood to be read")
            times = push_latencies(
                server, reader, account, deliveries, also=lambda raw: server.services.mailboxes.deliver(STUCK, raw)
            )
            figures.latency("reader's push, next to a client that stopped reading", times)
            flood.kill()
            stuck.sock.close()
            reader.close()
        finally:
            server.stop()
            db.close()


if __name__ == "__main__":
    main(sys.argv[1:])

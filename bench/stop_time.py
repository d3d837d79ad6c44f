"""How long stopping takes, with work in the way (from the timed tests it replaces; the tests check that
stopping closes and hands over what it should):

- ``EventBus.stop()`` with a group handler stuck forever, on memory:// and amqp:// (a key listener
  cannot be stuck: it is interrupted at its first wait);
- SIGTERM of ``serve`` with 3 open WebSockets (push enabled): until every client has its 1001 close, and
  until the process has exited;
- SIGTERM of ``lmtp`` with an idle client connected: until it has the 421 reply, and until the exit;
- SIGTERM of a gunicorn gevent worker with an open WebSocket: until its 1001 close, and until the exit.

SQLite for the processes. Milliseconds, ``--repeat`` stops of each.

    .venv/bin/python bench/stop_time.py [--repeat 5]
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()  # as every benchmark (common.py expects it)

import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

import common  # noqa: E402
import gevent.event  # noqa: E402

from jmapmono.events.bus import Event, EventBus  # noqa: E402
from jmapmono.store import open_database  # noqa: E402
from jmapmono.store.migrations import migrate  # noqa: E402
from tests.support.servers import jmapmono_env, start_gunicorn, start_lmtp, start_serve  # noqa: E402
from tests.support.ws_client import WsClient  # noqa: E402

USER = "bench@example.org"


def ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def bus_stop(url: str, db) -> float:
    """Milliseconds of ``stop()`` of a bus whose group handler never returns."""
    never = gevent.event.Event()
    entered = gevent.event.Event()
    bus = EventBus(f"b{uuid.uuid4().hex[:8]}", url, db, retry_backoff=0.001)
    bus.register_group("g", lambda e: (entered.set(), never.wait()))
    bus.start()
    if not bus.wait_ready(15):
        raise RuntimeError("the bus did not connect")
    bus.dispatch(Event.new("x"))
    if not entered.wait(10):
        raise RuntimeError("no listener was called")
    started = time.perf_counter()
    bus.stop()
    return ms_since(started)


def serve_stop(url: str, work: Path) -> tuple[float, float]:
    """(ms until 3 WebSockets got 1001, ms until serve exited) after SIGTERM."""
    server = start_serve(url, work, lmtp=False)
    try:
        clients = [WsClient(server.http_port, common.basic(USER)) for _ in range(3)]
        for client in clients:
            client.enable_push(None)
        started = time.perf_counter()
        server.proc.send_signal(signal.SIGTERM)
        codes = [client.wait_closed(timeout=30) for client in clients]
        closed = ms_since(started)
        server.proc.wait(timeout=30)
        if codes != [1001] * 3:
            raise RuntimeError(f"closed with {codes}")
        return closed, ms_since(started)
    finally:
        server.stop()


def lmtp_stop(url: str, work: Path) -> tuple[float, float]:
    """(ms until the idle client read 421, ms until lmtp exited) after SIGTERM."""
    server = start_lmtp(url, work)
    try:
        client = server.client()
        started = time.perf_counter()
        server.proc.send_signal(signal.SIGTERM)
        reply = client.read_reply()
        answered = ms_since(started)
        server.proc.wait(timeout=30)
        client.close()
        if reply.code != 421:
            raise RuntimeError(f"answered {reply.code}")
        return answered, ms_since(started)
    finally:
        server.stop()


def gunicorn_stop(url: str, work: Path) -> tuple[float, float]:
    """(ms until the WebSocket got 1001, ms until gunicorn exited) after SIGTERM."""
    server = start_gunicorn(url, work / "data", work, graceful_timeout=120)
    try:
        client = WsClient(server.port, common.basic(USER))
        client.enable_push(None)
        started = time.perf_counter()
        server.send_signal(signal.SIGTERM)
        code = client.wait_closed(timeout=30)
        closed = ms_since(started)
        server.proc.wait(timeout=60)
        if code != 1001:
            raise RuntimeError(f"closed with {code}")
        return closed, ms_since(started)
    finally:
        server.stop(signal.SIGKILL)


def main(argv: list[str]) -> None:
    repeat = common.arg_int(argv, "repeat", 5)
    common.banner(f"stopping with work in the way, {repeat} stops each")
    figures = common.Figures("stop_time")
    with common.temp_dir() as work, common.rabbitmq() as amqp:
        url = common.database_url("sqlite", work)
        common.add_user(jmapmono_env(url, work / "data"), USER)  # migrates the database too
        db = open_database(url)
        migrate(db)
        try:
            for name, broker in (("memory://", "memory://localhost/"), ("amqp://", amqp)):
                figures.latency(
                    f"EventBus.stop(), stuck group handler, {name}", [bus_stop(broker, db) for _ in range(repeat)]
                )
        finally:
            db.close()
        for name, stop in (("serve, 3 WebSockets", serve_stop), ("lmtp, 1 idle client", lmtp_stop)):
            closed, exited = zip(*(stop(url, work) for _ in range(repeat)), strict=True)
            figures.latency(f"SIGTERM {name}: clients told", closed)
            figures.latency(f"SIGTERM {name}: process exited", exited)
        closed, exited = zip(*(gunicorn_stop(url, work) for _ in range(repeat)), strict=True)
        figures.latency("SIGTERM gunicorn worker, 1 WebSocket: client told", closed)
        figures.latency("SIGTERM gunicorn worker, 1 WebSocket: process exited", exited)


if __name__ == "__main__":
    main(sys.argv[1:])

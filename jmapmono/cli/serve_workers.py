"""``serve`` with several worker processes: this process binds, supervises and stops; the workers serve.

Why children started with ``python -m jmapmono serve --worker-fd FD`` rather than ``os.fork``: a fork of
a gevent process carries its hub, its SQLite connection and any lock a greenlet held; a fresh
interpreter carries only the inherited listening socket. Each worker builds its Runtime (event flow,
outbox tail, housekeeping under leases) and serves until SIGTERM; this process forwards SIGTERM/SIGINT
to every worker at once, waits for each to end its connections (WebSockets 1001, EventSource streams)
and requests, stops the LMTP child and exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from jmapmono.config import Config
from jmapmono.log import kv

if TYPE_CHECKING:
    from jmapmono.runtime import Runtime

log = logging.getLogger("jmapmono.cli.serve")

#: Connections the kernel queues on the shared socket while every worker is busy or restarting.
BACKLOG = 1024


def listen_socket(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket the workers inherit (it stays open while a worker restarts)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve_workers(
    config: Config,
    announce: Callable[[Config, tuple[str, str] | None, str | None], None],
    ensure_first_user: Callable[[Runtime], tuple[str, str] | None],
) -> int:
    """Run ``config.workers`` supervised workers on one socket (and the LMTP child) until SIGTERM/SIGINT."""
    import gevent
    from gevent.event import Event

    from jmapmono.cli.supervisor import ChildSupervisor, child_env, lmtp_child
    from jmapmono.exits import EX_TEMPFAIL, EX_USAGE, CommandError
    from jmapmono.runtime import Runtime

    if config.is_sqlite and ":memory:" in config.database_url:
        raise CommandError(
            "an in-memory SQLite database is one per process: set JMAPMONO_WORKERS=1 (or --workers 1)", EX_USAGE
        )
    runtime = Runtime(config)  # opens and migrates the database once, before any worker opens it
    try:
        sock = listen_socket(config.host, config.port)
    except OSError as e:
        runtime.stop()
        raise CommandError(f"cannot listen on {config.host}:{config.port}: {e.strerror or e}", EX_TEMPFAIL) from None
    try:
        first = ensure_first_user(runtime)
    except BaseException:
        sock.close()
        raise
    finally:
        runtime.stop()  # this process serves nothing: it holds no database connection while workers run

    stopping = Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stopping.set)
    fd = sock.fileno()
    argv = [sys.executable, "-m", "jmapmono", "serve", "--worker-fd", str(fd), "--workers", "1"]
    argv += ["--host", config.host, "--port", str(config.port), "--lmtp", "off"]
    env = child_env(config, JMAPMONO_WORKERS="1")
    workers = [ChildSupervisor("worker", argv, env, pass_fds=(fd,)) for _ in range(config.workers)]
    lmtp = lmtp_child(config, config.lmtp_listen) if config.lmtp_listen else None
    for child in [*workers, *([lmtp] if lmtp else [])]:
        child.start()
    log.info(
        kv(
            event="serve_started",
            http=f"{config.host}:{config.port}",
            workers=config.workers,
            lmtp=config.lmtp_listen or "off",
            database="sqlite" if config.is_sqlite else "postgres",
            broker=config.broker_url.split(":", 1)[0],
            pid=os.getpid(),
        )
    )
    announce(config, first, config.lmtp_listen)

    stopping.wait()
    started = time.monotonic()
    log.info(kv(event="serve_stopping", workers=len(workers)))
    gevent.joinall([gevent.spawn(w.stop) for w in workers])  # all at once: each ends its connections
    if lmtp is not None:
        lmtp.stop()
    sock.close()
    codes: list[Any] = [w.proc.returncode if w.proc is not None else None for w in workers]
    log.info(
        kv(
            event="serve_stopped",
            workers=",".join(str(c) for c in codes),
            ms=f"{(time.monotonic() - started) * 1000:.1f}",
        )
    )
    return 0

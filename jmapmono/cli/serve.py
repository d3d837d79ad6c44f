"""``serve``: the single-box server.

With one worker (``--workers 1``), one process under gevent runs its :class:`~jmapmono.runtime.Runtime`
(event flow, housekeeping) and serves HTTP (the Flask app on gevent's WSGI server). With N workers
(default: one per CPU, ``JMAPMONO_WORKERS``), this process binds the HTTP socket, migrates the database
and creates the first user, then runs N supervised ``python -m jmapmono serve --worker-fd FD`` children
that inherit the socket and each build their own Runtime (a fresh interpreter: no gevent hub, SQLite
connection or lock crosses a fork); the kernel hands each connection to whichever accepts it. A worker
that dies is restarted with back-off; the socket stays open meanwhile, so connections wait in its
backlog. Each worker's flow tails the outbox on memory:// (jmapmono/events/outbox_tail.py), so every
StateChange reaches the sockets of whichever worker holds them. The LMTP listener (asyncio, which must not run
under gevent) is a supervised child process, ``python -m jmapmono lmtp`` (jmapmono/cli/supervisor.py),
restarted with back-off if it dies and stopped on shutdown. SIGTERM or SIGINT stops accepting, closes
WebSockets (1001) and EventSource streams, waits for requests in progress, stops the child and exits 0.

On the first start with no user at all, a first user is created
(``admin@localhost``, or ``JMAPMONO_FIRST_USER``) and its password is printed
once to standard output.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any

from jmapmono.config import Config, ConfigError, load_config, parse_host_port
from jmapmono.log import kv

if TYPE_CHECKING:
    from gevent.pywsgi import WSGIServer

    from jmapmono.runtime import Runtime

log = logging.getLogger("jmapmono.cli.serve")

DEFAULT_FIRST_USER = "admin@localhost"
#: Seconds the HTTP server waits for requests in progress at shutdown.
HTTP_STOP_TIMEOUT = 3.0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``serve`` to the CLI."""
    p = sub.add_parser(
        "serve",
        help="run the single-box server: HTTP API, push and LMTP",
        description="Serve JMAP over HTTP and accept mail over LMTP until SIGTERM/SIGINT.",
    )
    p.add_argument("--host", help="HTTP listen address (default JMAPMONO_HOST, 127.0.0.1)")
    p.add_argument("--port", type=_port_arg, help="HTTP port (default PORT, 8080)")
    p.add_argument("--lmtp", metavar="HOST:PORT|off", type=_lmtp_arg, help="LMTP address (default 127.0.0.1:8024)")
    p.add_argument(
        "--workers", type=_workers_arg, help="HTTP and push worker processes (default JMAPMONO_WORKERS, one per CPU)"
    )
    p.add_argument("--worker-fd", type=int, help=argparse.SUPPRESS)  # a worker: serve on this inherited socket
    p.set_defaults(handler=_serve)


def _port_arg(value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number")
    return int(value)


def _workers_arg(value: str) -> int:
    if not value.isdigit() or not 0 < int(value) <= 256:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of workers (1-256)")
    return int(value)


def _lmtp_arg(value: str) -> str:
    if value.lower() in ("off", "none"):
        return "off"
    try:
        parse_host_port(value, "--lmtp")
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


def make_http_server(
    app: Any, host: str, port: int, idle_timeout: float | None = None, listener: socket.socket | None = None
) -> WSGIServer:
    """The HTTP server for ``app`` (on ``listener`` when given, a bound and listening socket): every listener
    of this process is built here, on the strict HTTP/1.1 front the gunicorn worker runs too
    (jmapmono/web/http_front.py)."""
    import gevent.pool

    from jmapmono.web.http_front import DEFAULT_IDLE_TIMEOUT, StrictWSGIServer

    timeout = DEFAULT_IDLE_TIMEOUT if idle_timeout is None else idle_timeout
    # A pool, even unbounded: gevent's stop(timeout) waits only for handlers in a pool, so without one the
    # requests in progress at SIGTERM would be cut.
    where = listener if listener is not None else (host, port)
    return StrictWSGIServer(where, app, idle_timeout=timeout, spawn=gevent.pool.Pool())


def ensure_first_user(services: Runtime, email: str | None = None) -> tuple[str, str] | None:
    """Create the first user when there is no user at all; its (email, password), else None."""
    from jmapmono.accounts.users import AccountError

    with services.db.read() as tx:
        if tx.one("SELECT id FROM users LIMIT 1") is not None:
            return None
    email = email or os.environ.get("JMAPMONO_FIRST_USER") or DEFAULT_FIRST_USER
    try:
        user, password = services.accounts.create_user(email)
    except AccountError as e:
        if services.accounts.get(email) is not None:  # another node created it at the same moment
            return None
        raise ConfigError(f"JMAPMONO_FIRST_USER: {e}") from None
    return user.email, password


def _announce(config: Config, first: tuple[str, str] | None, lmtp: str | None) -> None:
    url = f"{config.public_base_url}/.well-known/jmap"
    if first is not None:
        email, password = first
        bar = "=" * 72
        print(
            f"\n{bar}\n  jmapmono: first user created (this password is shown only once)\n\n"
            f"    email:    {email}\n    password: {password}\n\n"
            f"  Log in with HTTP Basic at {url}\n"
            + (f"  or open the web inbox at {config.public_base_url}/\n" if config.web_inbox else "")
            + f"{bar}\n",
            flush=True,
        )
    else:
        print(f"jmapmono is serving JMAP at {url}", flush=True)
        if config.web_inbox:
            print(f"Web inbox at {config.public_base_url}/", flush=True)
        print("Add a user with: python -m jmapmono user add EMAIL", flush=True)
    if lmtp:
        print(f"LMTP for your MTA on {lmtp} (Postfix: virtual_transport = lmtp:inet:{lmtp})", flush=True)


def _serve(args: argparse.Namespace) -> int:
    import signal

    import gevent
    from gevent.event import Event

    from jmapmono.metrics_dir import prepare_multiprocess_dir

    prepare_multiprocess_dir(load_config().data_dir)  # before prometheus_client is imported, here and in children

    from jmapmono.cli import gevent_patched
    from jmapmono.cli.supervisor import lmtp_child
    from jmapmono.exits import EX_SOFTWARE, EX_TEMPFAIL, CommandError
    from jmapmono.runtime import Runtime
    from jmapmono.web.app import create_app

    if not gevent_patched():
        raise CommandError("serve must run under gevent: start it with `python -m jmapmono serve`", EX_SOFTWARE)
    config = load_config()
    overrides: dict[str, Any] = {}
    if args.host:
        overrides["host"] = args.host
    if args.port:
        overrides["port"] = args.port
    if args.lmtp:
        overrides["lmtp_listen"] = None if args.lmtp == "off" else args.lmtp
    if args.workers:
        overrides["workers"] = args.workers
    config = config.with_overrides(**overrides)
    if args.worker_fd is not None:
        return _serve_worker(config, args.worker_fd)
    if config.workers > 1:
        from jmapmono.cli.serve_workers import serve_workers

        return serve_workers(config, _announce, ensure_first_user)

    runtime = Runtime(config)  # opens and migrates the database before any child shares it
    server = make_http_server(create_app(runtime), config.host, config.port, config.http_idle_timeout)
    try:
        server.init_socket()  # bind first: a busy port must not cost the first user's only password display
        first = ensure_first_user(runtime)
    except OSError as e:
        runtime.stop()
        raise CommandError(f"cannot listen on {config.host}:{config.port}: {e.strerror or e}", EX_TEMPFAIL) from None
    except BaseException:
        server.close()
        runtime.stop()
        raise

    stopping = Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stopping.set)
    runtime.start()
    child = lmtp_child(config, config.lmtp_listen) if config.lmtp_listen else None
    if child is not None:
        child.start()
    server.start()
    log.info(
        kv(
            event="serve_started",
            http=f"{config.host}:{config.port}",
            lmtp=config.lmtp_listen or "off",
            database="sqlite" if config.is_sqlite else "postgres",
            broker=config.broker_url.split(":", 1)[0],
            pid=os.getpid(),
        )
    )
    _announce(config, first, config.lmtp_listen)

    stopping.wait()
    started = time.monotonic()
    log.info(kv(event="serve_stopping"))
    server.close()  # accept nothing new while long-lived connections are closed
    ended = runtime.end_connections(timeout=HTTP_STOP_TIMEOUT / 2)
    server.stop(timeout=HTTP_STOP_TIMEOUT)
    if child is not None:
        child.stop()
    runtime.stop()
    log.info(kv(event="serve_stopped", connections=ended, ms=f"{(time.monotonic() - started) * 1000:.1f}"))
    return 0


def _serve_worker(config: Config, fd: int) -> int:
    """One worker of a multi-process ``serve``: its own Runtime, serving on the socket its parent bound."""
    import signal

    import gevent
    from gevent.event import Event

    from jmapmono.runtime import Runtime
    from jmapmono.web.app import create_app

    listener = socket.socket(fileno=fd)
    runtime = Runtime(config)
    server = make_http_server(create_app(runtime), config.host, config.port, config.http_idle_timeout, listener)
    stopping = Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stopping.set)
    gevent.spawn(_watch_parent, os.getppid(), stopping)
    runtime.start()
    server.start()
    log.info(kv(event="serve_worker_started", http=f"{config.host}:{config.port}", pid=os.getpid()))
    stopping.wait()
    started = time.monotonic()
    server.close()
    ended = runtime.end_connections(timeout=HTTP_STOP_TIMEOUT / 2)
    server.stop(timeout=HTTP_STOP_TIMEOUT)
    runtime.stop()
    log.info(
        kv(
            event="serve_worker_stopped",
            pid=os.getpid(),
            connections=ended,
            ms=f"{(time.monotonic() - started) * 1000:.1f}",
        )
    )
    return 0


def _watch_parent(ppid: int, stopping: Any) -> None:
    """Stop when the supervising ``serve`` is gone (re-parented): no orphan worker keeps serving."""
    import gevent

    while not stopping.is_set():
        if os.getppid() != ppid:
            log.warning(kv(event="serve_worker_parent_gone", parent=ppid, pid=os.getpid()))
            stopping.set()
            return
        gevent.sleep(1.0)

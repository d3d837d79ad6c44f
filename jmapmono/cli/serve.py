"""``serve``: the single-box server, and the runtime of that process.

One process under gevent serves HTTP (the Flask app on gevent's WSGI server) and
runs periodic housekeeping; the LMTP listener (asyncio, which must not run
under gevent) is a supervised child process, ``python -m jmapmono lmtp``,
restarted with back-off if it dies and stopped on shutdown. SIGTERM or SIGINT
stops accepting, stops the child and exits 0.

On the first start with no user at all, a first user is created
(``admin@localhost``, or ``JMAPMONO_FIRST_USER``) and its password is printed
once to standard output.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
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
#: Seconds the LMTP child gets to finish a delivery in progress before it is killed.
CHILD_STOP_TIMEOUT = 15.0

#: Periodic jobs ``serve`` runs, each in its own greenlet: (interval in seconds, name, job).
#: A part of the system adds its own here, or exposes ``Runtime.housekeeping_jobs()``
#: returning the same triples. A job must not block for long (it shares the process).
HousekeepingJob = tuple[float, str, Callable[["Runtime"], Any]]
HOUSEKEEPING: list[HousekeepingJob] = [
    # Expired uploads, then blobs nothing references any more (jmapmono/mailbox/blobs.py).
    (600.0, "blob_gc", lambda services: services.blobs.collect_garbage()),
]

#: Background parts ``serve`` starts once the database is open, before HTTP accepts (e.g. the event
#: buses and the outbox relay). Each gets the services and may return a function called at shutdown,
#: in reverse order. Deliveries by the LMTP child and ``deliver`` are other processes: anything that
#: reacts to them must read what they committed (the outbox), not wait for an in-process call.
StartupHook = Callable[["Runtime"], Callable[[], None] | None]


def _start_event_flow(services: Runtime) -> Callable[[], None]:
    """The event buses, the MailboxChangeListener and the outbox relay (jmapmono/events/flow.py)."""
    from jmapmono.events import flow

    return flow.start(services)


STARTUP: list[StartupHook] = [_start_event_flow]


def _close_websockets(services: Runtime) -> None:
    """Close every JMAP WebSocket with 1001 (going away) so clients reconnect elsewhere at once."""
    from jmapmono.push.ws_session import close_all

    closed = close_all(services, timeout=HTTP_STOP_TIMEOUT / 2)
    if closed:
        log.info(kv(event="websockets_closed", count=closed))


def _close_event_streams(services: Runtime) -> None:
    """End every EventSource stream cleanly so clients reconnect elsewhere at once."""
    from jmapmono.push.eventsource import close_all

    closed = close_all(services, timeout=HTTP_STOP_TIMEOUT / 2)
    if closed:
        log.info(kv(event="event_streams_closed", count=closed))


#: Run at shutdown before the HTTP server stops waiting for requests in progress: parts holding
#: long-lived connections (WebSocket, EventSource) end them here, promptly and cleanly, instead of
#: being cut when the HTTP server's stop timeout runs out.
ShutdownHook = Callable[["Runtime"], None]
SHUTDOWN: list[ShutdownHook] = [_close_websockets, _close_event_streams]


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
    p.set_defaults(handler=_serve)


def _port_arg(value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number")
    return int(value)


def _lmtp_arg(value: str) -> str:
    if value.lower() in ("off", "none"):
        return "off"
    try:
        parse_host_port(value, "--lmtp")
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


def make_http_server(app: Any, host: str, port: int) -> WSGIServer:
    """The HTTP server for ``app``: every listener of this process is built here."""
    import socket

    from gevent.pywsgi import WSGIServer

    class NoDelayWSGIServer(WSGIServer):
        def init_socket(self) -> None:
            super().init_socket()
            # pywsgi writes a response's headers and body in two sends: without TCP_NODELAY (inherited by
            # accepted sockets), Nagle and the client's delayed ACK add ~40 ms to every keep-alive request.
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # Requests are logged by the app (one key=value line each); pywsgi's own access log is off.
    return NoDelayWSGIServer((host, port), app, log=None, error_log=logging.getLogger("jmapmono.http"))


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


class ChildSupervisor:
    """Keeps one child process running: restarted with back-off when it dies, stopped on request."""

    #: A child that ran this long resets the back-off.
    HEALTHY_SECONDS = 10.0
    MAX_DELAY = 30.0

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        from gevent.event import Event

        self.name = name
        self.argv = argv
        self.env = env
        self.proc: Any = None
        self._stopping = Event()
        self._greenlet: Any = None

    def start(self) -> None:
        import gevent

        self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        import subprocess  # gevent-patched: waiting on the child yields to other greenlets

        failures = 0
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                self.proc = subprocess.Popen(self.argv, env=self.env, start_new_session=True)
            except OSError as e:
                log.error(kv(event="child_start_failed", child=self.name, error=str(e)))
            else:
                if self._stopping.is_set():
                    self._terminate(self.proc)
                    return
                log.info(kv(event="child_started", child=self.name, pid=self.proc.pid))
                code = self.proc.wait()
                if self._stopping.is_set():
                    return
                ran = time.monotonic() - started
                log.warning(kv(event="child_exited", child=self.name, pid=self.proc.pid, code=code, ran_s=f"{ran:.1f}"))
            ran = time.monotonic() - started
            failures = 0 if ran >= self.HEALTHY_SECONDS else failures + 1
            delay = min(self.MAX_DELAY, 0.5 * 2 ** max(0, failures - 1))
            self._stopping.wait(delay)

    def _terminate(self, proc: Any, timeout: float = CHILD_STOP_TIMEOUT) -> None:
        import subprocess

        if proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning(kv(event="child_killed", child=self.name, pid=proc.pid))
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        """Stop restarting; terminate the child (SIGTERM, then SIGKILL after the grace time)."""
        self._stopping.set()
        if self.proc is not None:
            self._terminate(self.proc)
        if self._greenlet is not None:
            self._greenlet.join(timeout=CHILD_STOP_TIMEOUT)
        if self.proc is not None:
            log.info(kv(event="child_stopped", child=self.name, pid=self.proc.pid, code=self.proc.returncode))


def child_python_path(environ: Mapping[str, str] = os.environ) -> str:
    """``PYTHONPATH`` for a ``sys.executable -m jmapmono`` child, so that it imports this same jmapmono.

    Run from a source tree, the directory holding the ``jmapmono`` package goes first (the child may
    start elsewhere than this process did). Installed, that directory is one the interpreter searches
    anyway (site-packages), and is left out: on ``PYTHONPATH`` it would come before the standard library.
    """
    import site
    import sysconfig

    import jmapmono

    holder = Path(jmapmono.__file__).resolve().parent.parent
    searched = {*site.getsitepackages(), site.getusersitepackages()}
    searched |= {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    installed = holder in {Path(p).resolve() for p in searched if p}
    return os.pathsep.join(p for p in (None if installed else str(holder), environ.get("PYTHONPATH")) if p)


def lmtp_child(config: Config, listen: str) -> ChildSupervisor:
    """The supervisor of the LMTP listener child, on this process's database."""
    env = dict(os.environ, DATABASE_URL=config.database_url, JMAPMONO_LMTP_LISTEN=listen)
    env.pop("PYTHONPATH", None)
    python_path = child_python_path()
    if python_path:
        env["PYTHONPATH"] = python_path
    argv = [sys.executable, "-m", "jmapmono", "lmtp", "--listen", listen, "--exit-with-parent"]
    return ChildSupervisor("lmtp", argv, env)


def housekeeping_jobs(services: Runtime) -> list[HousekeepingJob]:
    """Every periodic job: those registered in :data:`HOUSEKEEPING` and those ``services`` offers."""
    jobs = list(HOUSEKEEPING)
    offered = getattr(services, "housekeeping_jobs", None)
    if callable(offered):
        jobs.extend(offered())
    return jobs


def _housekeeping_loop(services: Runtime, job: HousekeepingJob, stopping: Any) -> None:
    interval, name, fn = job
    while not stopping.wait(interval):
        started = time.monotonic()
        try:
            fn(services)
            result = "ok"
        except Exception as e:  # a failed run is logged and tried again next interval
            result = f"{type(e).__name__}: {e}"
        log.info(kv(event="housekeeping", job=name, ms=f"{(time.monotonic() - started) * 1000:.1f}", result=result))


def _announce(config: Config, first: tuple[str, str] | None, lmtp: str | None) -> None:
    url = f"{config.public_base_url}/.well-known/jmap"
    if first is not None:
        email, password = first
        bar = "=" * 72
        print(
            f"\n{bar}\n  jmapmono: first user created (this password is shown only once)\n\n"
            f"    email:    {email}\n    password: {password}\n\n"
            f"  Log in with HTTP Basic at {url}\n{bar}\n",
            flush=True,
        )
    else:
        print(f"jmapmono is serving JMAP at {url}", flush=True)
        print("Add a user with: python -m jmapmono user add EMAIL", flush=True)
    if lmtp:
        print(f"LMTP for your MTA on {lmtp} (Postfix: virtual_transport = lmtp:inet:{lmtp})", flush=True)


def _serve(args: argparse.Namespace) -> int:
    import signal

    import gevent
    from gevent.event import Event

    from jmapmono.exits import EX_SOFTWARE, EX_TEMPFAIL, CommandError
    from jmapmono.main import gevent_patched
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
    config = config.with_overrides(**overrides)

    services = Runtime(config)  # opens and migrates the database before any child shares it
    server = make_http_server(create_app(services=services), config.host, config.port)
    try:
        server.init_socket()  # bind first: a busy port must not cost the first user's only password display
        first = ensure_first_user(services)
    except OSError as e:
        services.close()
        raise CommandError(f"cannot listen on {config.host}:{config.port}: {e.strerror or e}", EX_TEMPFAIL) from None
    except BaseException:
        server.close()
        services.close()
        raise

    stopping = Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stopping.set)
    stoppers = [stop for stop in (hook(services) for hook in STARTUP) if stop is not None]
    child = lmtp_child(config, config.lmtp_listen) if config.lmtp_listen else None
    if child is not None:
        child.start()
    workers = [gevent.spawn(_housekeeping_loop, services, job, stopping) for job in housekeeping_jobs(services)]
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
    for hook in SHUTDOWN:
        try:
            hook(services)
        except Exception as e:  # one part failing must not keep the process from stopping
            log.error(kv(event="stop_failed", part=getattr(hook, "__qualname__", repr(hook)), error=str(e)))
    server.stop(timeout=HTTP_STOP_TIMEOUT)
    if child is not None:
        child.stop()
    gevent.killall(workers, timeout=2)
    for stop in reversed(stoppers):
        try:
            stop()
        except Exception as e:  # one part failing to stop must not keep the others running
            log.error(kv(event="stop_failed", part=getattr(stop, "__qualname__", repr(stop)), error=str(e)))
    services.close()
    log.info(kv(event="serve_stopped", ms=f"{(time.monotonic() - started) * 1000:.1f}"))
    return 0

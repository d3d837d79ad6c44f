"""Helpers shared by the benchmarks: servers, the ``serve`` process, clients, figures.

Importing this module patches the process for gevent (before kombu, psycopg or requests are imported), so
every benchmark imports it first. Postgres and RabbitMQ come from tests/support/servers.py; when
``bench/run_all.py`` runs the benchmarks it starts one of each and hands them over in the environment
(``JMAPMONO_BENCH_POSTGRES``, ``JMAPMONO_BENCH_AMQP``) so that each script does not boot its own.

Figures: each benchmark adds rows to a :class:`Figures` and prints them; with ``JMAPMONO_BENCH_JSON`` set
(by run_all) the rows are also appended to that file, one JSON object per line.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import base64  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator, Sequence  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gevent.pool  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.lmtp_client import LMTPClient  # noqa: E402
from tests.support.push_sockets import open_push_socket  # noqa: E402
from tests.support.servers import (  # noqa: E402
    PostgresServer,
    RabbitMQServer,
    free_port,
    procfile_web_argv,
    wait_for_port,
)
from tests.support.waiting import wait_until  # noqa: E402

PASSWORD = "bench-password-0123"
USING = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"]


# -- figures -----------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class Row:
    """One line of figures: latency (ms) over ``n`` samples and/or a throughput."""

    bench: str
    case: str
    n: int
    median: float | None = None
    p95: float | None = None
    p99: float | None = None
    rate: float | None = None
    unit: str = "ms"
    rate_unit: str = "/s"
    note: str = ""


@dataclass
class Figures:
    """The rows of one benchmark: printed as a table and, under run_all, appended to its JSON file."""

    bench: str
    rows: list[Row] = field(default_factory=list)

    def latency(self, case: str, samples_ms: Sequence[float], note: str = "", rate: float | None = None) -> Row:
        row = Row(
            self.bench,
            case,
            len(samples_ms),
            statistics.median(samples_ms),
            percentile(samples_ms, 95),
            percentile(samples_ms, 99),
            rate,
            note=note,
        )
        return self.add(row)

    def throughput(
        self, case: str, count: int, seconds: float, samples_ms: Sequence[float] = (), note: str = ""
    ) -> Row:
        """``count`` operations in ``seconds`` (and, when given, the latency of each)."""
        if samples_ms:
            return self.latency(case, samples_ms, note=note, rate=count / seconds)
        return self.add(Row(self.bench, case, count, rate=count / seconds, note=note))

    def value(self, case: str, value: float, unit: str, note: str = "") -> Row:
        return self.add(Row(self.bench, case, 1, median=value, unit=unit, note=note))

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        print(format_row(row), flush=True)
        out = os.environ.get("JMAPMONO_BENCH_JSON")
        if out:
            with open(out, "a", encoding="utf-8") as f:
                f.write(json.dumps(row.__dict__) + "\n")
        return row


def _num(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


HEADER = f"{'benchmark':<20} {'case':<56} {'n':>6} {'median':>9} {'p95':>9} {'p99':>9} {'unit':<4} {'rate':>9}  note"


def format_row(row: Row) -> str:
    rate = f"{_num(row.rate, 1)}{row.rate_unit}" if row.rate is not None else "-"
    return (
        f"{row.bench:<20} {row.case:<56} {row.n:>6} {_num(row.median):>9} {_num(row.p95):>9} {_num(row.p99):>9} "
        f"{row.unit:<4} {rate:>9}  {row.note}"
    )


def python_speed() -> float:
    """Milliseconds this machine's Python takes for 10**6 additions in a loop (best of 3): the figures of two
    machines, or of one machine on two days, compare only after this one does (machines of one kind here
    have differed by 3x)."""
    best = float("inf")
    for _ in range(3):
        started, total = time.perf_counter(), 0
        for n in range(1_000_000):
            total += n
        best = min(best, time.perf_counter() - started)
    return best * 1000


def banner(title: str) -> None:
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n== {title} ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, load {load})\n{HEADER}", flush=True)


# -- shared servers ----------------------------------------------------------------------------------


class _Postgres:
    """``new_database()`` on a Postgres given by its admin URL (one started by run_all)."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url

    def new_database(self) -> str:
        """A new empty database. Named at random: a script may open run_all's Postgres several times, and
        each of its ``_Postgres`` objects would count from one again."""
        import secrets

        import psycopg

        name = f"bench{os.getpid()}_{secrets.token_hex(4)}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.admin_url.rsplit("/", 1)[0] + f"/{name}"


@contextmanager
def postgres() -> Iterator[Any]:
    """A Postgres to create databases on: run_all's if it passed one, else our own, stopped afterwards."""
    shared = os.environ.get("JMAPMONO_BENCH_POSTGRES")
    if shared:
        yield _Postgres(shared)
        return
    server = PostgresServer()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def rabbitmq() -> Iterator[str]:
    """An AMQP URL: run_all's broker if it passed one, else our own node, stopped afterwards."""
    shared = os.environ.get("JMAPMONO_BENCH_AMQP")
    if shared:
        yield shared
        return
    server = RabbitMQServer()
    try:
        yield server.url
    finally:
        server.close()


@contextmanager
def temp_dir(prefix: str = "jmapmono-bench-") -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def database_url(backend: str, work: Path, pg: Any = None) -> str:
    """A fresh, empty database of ``backend`` (``sqlite`` in ``work``, or ``postgres`` on ``pg``)."""
    if backend == "sqlite":
        return f"sqlite:///{work / 'jmapmono.sqlite3'}"
    return pg.new_database()


# -- jmapmono processes ------------------------------------------------------------------------------


def jmapmono_env(database_url: str, data_dir: Path, broker_url: str = "memory://localhost/", **extra: str) -> dict:
    """The environment of a jmapmono process on this database and broker, nothing inherited from ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JMAPMONO_") and k not in ("DATABASE_URL", "PORT")}
    env.update(
        DATABASE_URL=database_url,
        BROKER_URL=broker_url,
        JMAPMONO_DATA_DIR=str(data_dir),
        JMAPMONO_LOG_LEVEL="INFO",
    )
    env.update(extra)
    return env


def cli(env: dict, *args: str, stdin: bytes | None = None) -> str:
    """Run ``python -m jmapmono ARGS``; its stdout, or an error with its stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "jmapmono", *args], cwd=ROOT, env=env, input=stdin, capture_output=True, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"jmapmono {' '.join(args)} exited {done.returncode}: {done.stderr.decode()[-2000:]}")
    return done.stdout.decode()


def add_user(env: dict, email: str) -> None:
    """Create ``email`` with the benchmark password (the CLI also migrates a new database)."""
    cli(env, "user", "add", email, "--password", PASSWORD)


@dataclass
class Serve:
    """A ``python -m jmapmono serve`` process (HTTP, push, and optionally its LMTP child)."""

    proc: subprocess.Popen
    http_port: int
    lmtp_port: int | None
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def rss_kib(self) -> int:
        """Resident memory of the serving process, in KiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_serve(env: dict, work: Path, lmtp: bool = True, name: str = "serve", workers: int = 1) -> Serve:
    """Start ``serve`` (``workers`` HTTP processes; 1 by default, so figures compare across versions) on free
    loopback ports and wait until HTTP (and LMTP) answer and every worker's event flow runs."""
    http_port = free_port()
    lmtp_port = free_port() if lmtp else None
    argv = [sys.executable, "-m", "jmapmono", "serve", "--host", "127.0.0.1", "--port", str(http_port)]
    argv += ["--lmtp", f"127.0.0.1:{lmtp_port}" if lmtp_port else "off", "--workers", str(workers)]
    return _start(argv, env, work, name, http_port, lmtp_port, workers)


def start_gunicorn(env: dict, work: Path, workers: int, name: str = "gunicorn") -> Serve:
    """The Procfile's ``web`` process (gunicorn with its config file, ``workers`` gevent workers) on a free
    loopback port, LMTP off; ready once every worker's event flow runs."""
    http_port = free_port()
    argv = procfile_web_argv(http_port)
    argv = [str(Path(sys.executable).parent / "gunicorn"), *argv[1:], "-w", str(workers)]
    env = {**env, "PORT": str(http_port), "JMAPMONO_LMTP_LISTEN": "off"}
    return _start(argv, env, work, name, http_port, None, workers)


def _start(
    argv: list[str], env: dict, work: Path, name: str, http_port: int, lmtp_port: int | None, workers: int
) -> Serve:
    log_path = work / f"{name}-{http_port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    server = Serve(proc, http_port, lmtp_port, log_path)
    try:
        wait_for_port(http_port, 30, proc)
        if lmtp_port:
            wait_for_port(lmtp_port, 30, proc)
        wait_until(lambda: server.log().count("event=relay_started") >= workers, 30, message="the event flow to start")
    except Exception:
        server.stop()
        raise RuntimeError(f"{name} did not start (exit {server.proc.returncode}):\n{server.log()[-3000:]}") from None
    return server


@contextmanager
def serving(
    env: dict, work: Path, lmtp: bool = True, name: str = "serve", workers: int = 1, gunicorn: bool = False
) -> Iterator[Serve]:
    """A running ``serve`` (or, with ``gunicorn``, the Procfile's ``web``), stopped at the end; its log shown
    if the body fails."""
    server = start_gunicorn(env, work, workers) if gunicorn else start_serve(env, work, lmtp, name, workers)
    try:
        yield server
    except BaseException:
        print(f"--- {name} log (last lines)\n{server.log()[-4000:]}", file=sys.stderr)
        raise
    finally:
        server.stop()


def wait_outbox_drained(database_url: str, timeout: float = 120) -> None:
    """Wait until a serving process published every event committed so far (the outbox is empty)."""
    from jmapmono.store import open_database

    db = open_database(database_url)
    try:

        def drained() -> bool:
            with db.read() as tx:
                return tx.value("SELECT COUNT(*) FROM event_outbox WHERE dispatched_at IS NULL") == 0

        wait_until(drained, timeout, message="the outbox to be published")
    finally:
        db.close()


# -- clients -----------------------------------------------------------------------------------------


def basic(email: str, password: str = PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{email}:{password}".encode()).decode()


def message(n: int, to: str, size: int = 0, subject: str | None = None, extra_headers: str = "") -> bytes:
    """A plain-text message to ``to`` of about ``size`` bytes (at least the headers and one line)."""
    headers = (
        f"From: Carol <carol@example.net>\r\nTo: {to}\r\nSubject: {subject or f'benchmark message {n}'}\r\n"
        f"Message-ID: <{n}.{os.getpid()}.{time.time_ns()}@bench.example>\r\n"
        f"Date: Thu, 26 Nov 2026 10:00:00 +0000\r\n{extra_headers}Content-Type: text/plain; charset=utf-8\r\n\r\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    body = line * max(1, (size - len(headers)) // len(line))
    return headers + body


def lmtp_deliver(client: LMTPClient, to: str, raw: bytes) -> None:
    """One LMTP transaction for one recipient; raises unless it was stored (250)."""
    _, replies = client.transaction("carol@example.net", [to], raw)
    if [r.code for r in replies] != [250]:
        raise RuntimeError(f"LMTP delivery refused: {[str(r) for r in replies]}")


class HttpClient:
    """One keep-alive HTTP/1.1 connection on a raw socket: the least client overhead per request."""

    def __init__(self, port: int, authorization: str, timeout: float = 30.0) -> None:
        self.port = port
        self.authorization = authorization
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")

    def request(self, method: str, path: str, body: bytes = b"", content_type: str = "application/json") -> tuple:
        """(status, body bytes) of one request on the kept-alive connection."""
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nAuthorization: {self.authorization}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\nAccept: application/json\r\n\r\n"
        )
        self.sock.sendall(head.encode() + body)
        status_line = self.file.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split()[1])
        length, chunked = None, False
        while True:
            line = self.file.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value.strip())
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if chunked:
            parts = []
            while True:
                size = int(self.file.readline().split(b";")[0], 16)
                if size == 0:
                    self.file.readline()
                    break
                parts.append(self.file.read(size))
                self.file.readline()
            data = b"".join(parts)
        else:
            data = self.file.read(length or 0)
        return status, data

    def jmap(self, calls: list, using: list[str] | None = None) -> dict:
        """POST one JMAP request; its parsed response (raises on a non-200)."""
        body = json.dumps({"using": using or USING, "methodCalls": calls}).encode()
        status, data = self.request("POST", "/jmap/api", body)
        if status != 200:
            raise RuntimeError(f"JMAP request answered {status}: {data[:500]!r}")
        return json.loads(data)

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def account_id(client: HttpClient) -> str:
    """The primary mail account of the client's user, from the Session."""
    status, data = client.request("GET", "/.well-known/jmap")
    if status != 200:
        raise RuntimeError(f"Session answered {status}: {data[:300]!r}")
    return json.loads(data)["primaryAccounts"]["urn:ietf:params:jmap:mail"]


def method_result(response: dict, index: int = 0) -> dict:
    """The arguments of the ``index``-th method response; raises on a method error."""
    name, args, _ = response["methodResponses"][index]
    if name == "error":
        raise RuntimeError(f"method error: {args}")
    return args


def timed(fn: Callable[[], Any], count: int, max_seconds: float) -> tuple[list[float], float]:
    """Call ``fn`` up to ``count`` times or until ``max_seconds`` passed: (per-call ms, total seconds)."""
    samples: list[float] = []
    started = time.perf_counter()
    deadline = started + max_seconds
    while len(samples) < count:
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        samples.append((t1 - t0) * 1000)
        if t1 > deadline:
            break
    return samples, time.perf_counter() - started


def arg_int(argv: Sequence[str], name: str, default: int) -> int:
    """``--name N`` from ``argv``, else ``default`` (the scripts take only a few such knobs)."""
    flag = f"--{name}"
    if flag in argv:
        return int(argv[list(argv).index(flag) + 1])
    return default


def open_sockets(port: int, counts: dict[str, int]) -> dict[str, list[socket.socket]]:
    """``counts[email]`` push-enabled sockets per user, each enabled by the time this returns. Each user's
    first socket opens alone (the server checks the password once, then its credential cache answers)."""
    firsts = {email: open_push_socket(port, basic(email), 60, True) for email in counts}
    pool = gevent.pool.Pool(20)  # a few upgrades at once: the server's accept queue stays short
    rest = {
        email: [pool.spawn(open_push_socket, port, basic(email), 60, True) for _ in range(n - 1)]
        for email, n in counts.items()
    }
    pool.join(raise_error=True)
    return {email: [firsts[email], *(g.value for g in greenlets)] for email, greenlets in rest.items()}


def create_users(env: dict, emails: list[str]) -> dict[str, str]:
    """Create every user in this process (a CLI run each would take longer than the benchmark); email → account id."""
    from jmapmono.config import load_config
    from jmapmono.runtime import Runtime

    services = Runtime(load_config(env))
    try:
        return {email: services.accounts.create_user(email, PASSWORD)[0].account_id for email in emails}
    finally:
        services.stop()

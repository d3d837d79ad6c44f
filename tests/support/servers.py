"""Every server a test (or a benchmark) starts, on loopback, on free ports, in temporary directories.

- Real Postgres and RabbitMQ for the run (``PostgresServer``, ``RabbitMQServer``: tests/conftest.py, bench/).
- jmapmono itself as a deployment runs it: ``start_serve`` (``python -m jmapmono serve``, its LMTP child
  included), ``start_lmtp`` (``python -m jmapmono lmtp``), ``start_gunicorn`` (the Procfile's ``web`` command:
  gunicorn with conf/gunicorn.conf.py).
- In this process: ``start_app`` (the app on the HTTP server ``serve`` builds, the event flow running),
  ``start_http`` (any WSGI app, e.g. a fake receiver, on gevent's plain WSGI server).

Each returns an object with ``stop()``; a subprocess's output goes to a file under the test's tmp_path.
"""

from __future__ import annotations

import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.waiting import wait_until

#: The repository: the working directory of every jmapmono process a test starts.
ROOT = Path(__file__).resolve().parents[2]
PG_BIN = Path(os.environ.get("JMAPMONO_PG_BIN", "/usr/lib/postgresql/15/bin"))
RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")


def free_port() -> int:
    """A free loopback port below Linux's ephemeral range (32768+), so that outgoing connections of
    concurrent test processes do not land on a port a server is about to (re)bind."""
    while True:
        port = random.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Wait until something listens on 127.0.0.1:``port``; RuntimeError at once if ``proc`` exits first."""

    def listening() -> bool:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        return port_open(port)

    try:
        wait_until(listening, timeout, interval=0.05, message=f"a listener on 127.0.0.1:{port}")
    except AssertionError:
        raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s") from None


def require(missing: str | None) -> None:
    """Skip the calling test when something it needs is ``missing`` (the reason); under ``CI=true`` fail instead."""
    import pytest

    if missing is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {missing}")
    pytest.skip(missing)


def _as_user(user: str, argv: list[str]) -> list[str]:
    """Postgres refuses to run as root: drop to the service user when we are root."""
    if os.geteuid() == 0:
        return ["runuser", "-u", user, "--", *argv]
    return argv


class PostgresServer:
    """A throw-away Postgres cluster. ``new_database()`` gives each test its own database."""

    def __init__(self) -> None:
        if not (PG_BIN / "initdb").exists():
            raise RuntimeError(f"Postgres not found in {PG_BIN}: install Debian's postgresql (make test does)")
        self.dir = Path(tempfile.mkdtemp(prefix="jmapmono-pg-"))
        self.port = free_port()
        self._counter = 0
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        data = self.dir / "data"
        subprocess.run(
            _as_user(
                "postgres", [str(PG_BIN / "initdb"), "-D", str(data), "--auth=trust", "-E", "UTF8", "--no-locale"]
            ),
            check=True,
            capture_output=True,
        )
        self.data = data
        self.resume()

    def _pg_ctl(self, *args: str) -> None:
        argv = [str(PG_BIN / "pg_ctl"), "-D", str(self.data), *args]
        subprocess.run(_as_user("postgres", argv), check=True, capture_output=True)

    def resume(self) -> None:
        """Start the cluster (again, after ``halt``) on the same port, and wait until it accepts connections."""
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off -c max_connections=300"
        self._pg_ctl("-o", opts, "-l", str(self.dir / "log"), "-w", "start")

    def halt(self) -> None:
        """Stop the cluster (a database outage; ``resume`` ends it): its connections are cut."""
        self._pg_ctl("-m", "fast", "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self, template: str | None = None) -> str:
        """Create an empty database (or a copy of ``template``) and return its URL."""
        import psycopg

        self._counter += 1
        name = f"t{os.getpid()}_{self._counter}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            suffix = f" TEMPLATE {template}" if template else ""
            conn.execute(f"CREATE DATABASE {name}{suffix}")
        return self.url(name)

    def stop(self) -> None:
        subprocess.run(
            _as_user("postgres", [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(self.dir, ignore_errors=True)


class RabbitMQServer:
    """A throw-away RabbitMQ node. ``stop()``/``start()`` simulate a broker outage, ``pause()``/``resume()`` a hung
    broker; ``ctl()`` runs rabbitmqctl against it."""

    def __init__(self) -> None:
        if not (RABBIT_BIN / "rabbitmq-server").exists():
            raise RuntimeError("RabbitMQ not found: install Debian's rabbitmq-server (make test does)")
        self.dir = Path(tempfile.mkdtemp(prefix="jmapmono-rabbit-"))
        self.port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.name = f"jmapmono{os.getpid()}{self.port}@localhost"
        (self.dir / "enabled_plugins").write_text("[].\n")
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", str(self.dir)], check=True)
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.dir / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.dir / "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.dir / "enabled_plugins"),
            RABBITMQ_CONFIG_FILE=str(self.dir / "rabbitmq"),
            ERL_EPMD_ADDRESS="127.0.0.1",
            ERL_EPMD_PORT=str(self.epmd_port),
            HOME=str(self.dir),
        )
        return env

    def _argv(self, *argv: str) -> list[str]:
        """``argv`` as the broker's user, in the broker's environment (its node name, its Erlang cookie)."""
        if os.geteuid() != 0:
            return list(argv)
        env = [f"{k}={v}" for k, v in self._env().items() if k.startswith(("RABBITMQ_", "ERL_", "HOME"))]
        return ["runuser", "-u", "rabbitmq", "--", "env", *env, *argv]

    def start(self, timeout: float = 60) -> None:
        self.proc = subprocess.Popen(
            self._argv(str(RABBIT_BIN / "rabbitmq-server")),
            env=self._env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for_port(self.port, timeout, self.proc)
        self._check_is_amqp()

    def _check_is_amqp(self) -> None:
        """The port may have been taken by someone else while we were down: make sure it speaks AMQP."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(b"AMQP\x00\x00\x09\x01")
            frame = s.recv(7)
        if not frame.startswith(b"\x01\x00\x00"):
            raise RuntimeError(f"port {self.port} does not answer as our RabbitMQ node: {frame!r}")

    def stop(self) -> None:
        """Stop the node (the whole process group, epmd included) and wait for the port to close."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGCONT)  # a paused node handles no SIGTERM
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None
        # The node started its own epmd (a daemon, out of the process group): ask it to leave, on its port.
        epmd = ["epmd", "-port", str(self.epmd_port), "-kill"]
        subprocess.run(epmd, env=self._env(), capture_output=True, timeout=30)
        try:
            wait_until(lambda: not port_open(self.port), 30, interval=0.05, message="the broker's port to close")
        except AssertionError:
            pass  # left for start() to find out (it checks the port speaks AMQP)

    def pause(self) -> None:
        """SIGSTOP the whole node (a hung broker: its sockets stay open, nothing answers); ``resume`` ends it."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGCONT)

    def ctl(self, *args: str) -> str:
        """``rabbitmqctl`` against this node (e.g. ``list_queues name``): its standard output."""
        argv = self._argv(str(RABBIT_BIN / "rabbitmqctl"), "-q", "-n", self.name, *args)
        done = subprocess.run(argv, env=self._env(), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# -- jmapmono as a deployment runs it ------------------------------------------------------------------------------


def jmapmono_env(database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a jmapmono process on this database: nothing jmapmono reads is inherited from ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JMAPMONO_") and k not in ("DATABASE_URL", "PORT")}
    env.update(
        DATABASE_URL=database_url,
        JMAPMONO_DATA_DIR=str(data_dir),
        BROKER_URL="memory://localhost/",
        JMAPMONO_LOG_LEVEL="INFO",
    )
    env.update(extra)
    return env


def add_user(database_url: str, data_dir: Path, email: str, password: str) -> None:
    """Create a user with the operator's command (``jmapmono user add``), as a self-hoster would."""
    argv = [sys.executable, "-m", "jmapmono", "user", "add", email, "--password", password]
    made = subprocess.run(
        argv, cwd=ROOT, env=jmapmono_env(database_url, data_dir), capture_output=True, text=True, timeout=60
    )
    assert made.returncode == 0, made.stdout + made.stderr


def _stop_process(proc: subprocess.Popen, signum: int, timeout: float, group: bool = False) -> int:
    """Send ``signum`` (to the process group with ``group``), wait ``timeout`` seconds, then kill it."""
    if proc.poll() is None:
        if group:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            if group:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
            proc.wait()
    return proc.returncode


@dataclass
class ServeProcess:
    """``python -m jmapmono serve`` (its LMTP child too, unless started with ``lmtp=False``)."""

    proc: subprocess.Popen
    http_port: int
    lmtp_port: int | None
    out_path: Path
    err_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def child_pids(self) -> list[int]:
        return [int(p) for p in re.findall(r"event=child_started child=lmtp pid=(\d+)", self.stderr())]

    def worker_pids(self) -> list[int]:
        """Every worker process started so far (``workers`` > 1), restarts included, in start order."""
        return [int(p) for p in re.findall(r"event=child_started child=worker pid=(\d+)", self.stderr())]

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 20) -> int:
        return _stop_process(self.proc, signum, timeout)


def run_serve(
    database_url: str, tmp_path: Path, lmtp: bool = True, workers: int = 1, http_port: int | None = None, **env: str
) -> ServeProcess:
    """Start ``serve`` on free ports (LMTP too, unless ``lmtp`` is False; HTTP on ``http_port`` if given, e.g.
    a restart where its clients expect it), without waiting for it."""
    http_port = http_port or free_port()
    lmtp_port = free_port() if lmtp else None
    stem, n = f"serve-{http_port}", 1
    while (tmp_path / f"{stem}.out").exists():  # a restart on the same port keeps the previous logs
        n += 1
        stem = f"serve-{http_port}-{n}"
    out_path, err_path = tmp_path / f"{stem}.out", tmp_path / f"{stem}.err"
    argv = [sys.executable, "-m", "jmapmono", "serve", "--host", "127.0.0.1", "--port", str(http_port)]
    argv += ["--lmtp", f"127.0.0.1:{lmtp_port}" if lmtp_port else "off", "--workers", str(workers)]
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=jmapmono_env(database_url, tmp_path / "data", **env), stdout=out, stderr=err
        )
    return ServeProcess(proc, http_port, lmtp_port, out_path, err_path)


def start_serve(
    database_url: str, tmp_path: Path, lmtp: bool = True, workers: int = 1, http_port: int | None = None, **env: str
) -> ServeProcess:
    """``serve`` listening on its HTTP port (and its LMTP port); with ``workers`` > 1, every worker serving."""
    server = run_serve(database_url, tmp_path, lmtp, workers, http_port, **env)
    try:
        wait_for_port(server.http_port, 20, server.proc)
        if server.lmtp_port:
            wait_for_port(server.lmtp_port, 20, server.proc)
        if workers > 1:
            wait_until(
                lambda: (
                    server.stderr().count("event=serve_worker_started") >= workers or server.proc.poll() is not None
                ),
                timeout=30,
                message="every serve worker to start",
            )
    except Exception:
        server.stop()
        raise AssertionError(f"serve did not start:\n{server.stdout()}\n{server.stderr()}") from None
    return server


@dataclass
class LmtpProcess:
    """``python -m jmapmono lmtp``; its log (stdout and stderr) in ``log_path``."""

    proc: subprocess.Popen
    port: int
    log_path: Path

    def client(self) -> Any:
        """An LMTP client connected and greeted (LHLO answered 250)."""
        from tests.support.lmtp_client import LMTPClient

        client = LMTPClient("127.0.0.1", self.port)
        assert client.lhlo().code == 250
        return client

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        return _stop_process(self.proc, signal.SIGTERM, 15)


def start_lmtp(database_url: str, tmp_path: Path, **env: str) -> LmtpProcess:
    """An LMTP server process on ``database_url``, listening."""
    port = free_port()
    log_path = tmp_path / f"lmtp-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jmapmono", "lmtp", "--listen", f"127.0.0.1:{port}"],
            cwd=ROOT,
            env=jmapmono_env(database_url, tmp_path / "data", **env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = LmtpProcess(proc, port, log_path)
    try:
        wait_for_port(port, 15, proc)
    except Exception:
        server.stop()
        raise AssertionError(f"the LMTP server did not start:\n{server.log()}") from None
    return server


@dataclass
class GunicornProcess:
    """gunicorn as the Procfile's ``web`` line runs it (its own process group); its log in ``log_path``."""

    proc: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def send_signal(self, signum: int) -> None:
        """To the whole process group (the arbiter and its worker)."""
        os.killpg(self.proc.pid, signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30) -> int:
        return _stop_process(self.proc, signum, timeout, group=True)


def procfile_command(process: str) -> str:
    """The command of the Procfile's ``process`` line (``web``, ``lmtp``)."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith(f"{process}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"the Procfile has no {process} line")


def procfile_web_argv(port: int) -> list[str]:
    """The Procfile's ``web`` command as a platform runs it with ``PORT=port``: gunicorn and its config file."""
    argv = shlex.split(procfile_command("web").replace("$PORT", str(port)).replace("${PORT}", str(port)))
    assert argv[0] == "gunicorn" and "-c" in argv, f"the Procfile's web line is not gunicorn -c <config>: {argv}"
    return argv


def procfile_worker_class() -> str:
    """The gunicorn worker class the Procfile's ``web`` line runs (its ``-k``, else its config file's)."""
    argv = procfile_web_argv(0)
    match = re.search(r"(?:-k|--worker-class)[ =](\S+)", " ".join(argv))
    if match:
        return match.group(1)
    config = (ROOT / argv[argv.index("-c") + 1]).read_text()
    match = re.search(r"^worker_class = \"(\S+)\"$", config, re.M)
    if match:
        return match.group(1)
    raise AssertionError("the Procfile's web line names no gunicorn worker class (-k or its config file)")


def start_gunicorn(
    database_url: str,
    data_dir: Path,
    tmp_path: Path,
    graceful_timeout: int | None = None,
    workers: int = 1,
    **env: str,
) -> GunicornProcess:
    """The Procfile's ``web`` command (gunicorn, its config file), on a free loopback port, ``workers`` workers
    (one by default), LMTP off. Options given here go on its command line, where they win over the config."""
    port = free_port()
    argv = procfile_web_argv(port)
    overrides = ["-w", str(workers), "--bind", f"127.0.0.1:{port}"]
    if graceful_timeout is not None:
        overrides += ["--graceful-timeout", str(graceful_timeout)]
    argv = [str(Path(sys.executable).parent / "gunicorn"), *argv[1:-1], *overrides, argv[-1]]
    environ = jmapmono_env(
        database_url, data_dir, PORT=str(port), JMAPMONO_BASE_URL=f"http://127.0.0.1:{port}", JMAPMONO_LMTP_LISTEN="off"
    )
    environ.update(env)
    log_path = tmp_path / f"gunicorn-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = GunicornProcess(proc, port, log_path)
    try:
        wait_for_port(port, 30, proc)
    except Exception:
        server.stop(signal.SIGKILL)
        raise AssertionError(f"gunicorn did not start:\n{server.log()}") from None
    return server


def socket_owner(server_port: int, client: socket.socket, pids: list[int]) -> int | None:
    """Which of ``pids`` holds the server side of ``client``'s loopback TCP connection to ``server_port``
    (read from /proc: the kernel's own answer, whatever process accepted it)."""
    client_port = client.getsockname()[1]
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if int(local.rsplit(":", 1)[1], 16) == server_port and int(remote.rsplit(":", 1)[1], 16) == client_port:
                inodes.add(f"socket:[{inode}]")
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return pid
            except OSError:
                continue
    return None


# -- servers in this process ---------------------------------------------------------------------------------------


class HttpServer:
    """A WSGI app served in this process on a free loopback port (HTTPS with ``keyfile``/``certfile``)."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.server.start()
        self.port: int = self.server.server_port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (https with TLS), without a trailing slash."""
        scheme = "https" if getattr(self.server, "ssl_enabled", False) else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def stop(self, timeout: float = 1) -> None:
        self.server.stop(timeout=timeout)


def start_http(app: Any, **ssl: str) -> HttpServer:
    """``app`` (any WSGI app: a fake receiver, or the jmapmono app behind plain pywsgi) on gevent's WSGI server."""
    from gevent.pywsgi import WSGIServer

    return HttpServer(WSGIServer(("127.0.0.1", 0), app, log=None, error_log=None, **ssl))


class AppServer(HttpServer):
    """The jmapmono app on the HTTP server ``serve`` builds (``make_http_server``), with the event flow
    running for ``services`` unless ``flow`` is False. ``stop()`` closes WebSockets and streams first."""

    def __init__(self, services: Any, app: Any = None, flow: bool = True, port: int | None = None) -> None:
        from jmapmono.cli.serve import make_http_server
        from jmapmono.web.app import create_app

        self.services = services
        self.flow = services.start().flow if flow else None
        app = app if app is not None else create_app(services)
        super().__init__(make_http_server(app, "127.0.0.1", services.config.port if port is None else port))

    def client(self, email: str | None = None, **kwargs: Any) -> Any:
        """A WebSocket client (tests/support/ws_client.py), authenticated as ``email`` if given."""
        from tests.support.ws_client import WsClient, basic

        return WsClient(self.port, basic(email) if email else None, **kwargs)

    def stop(self, timeout: float = 2) -> None:
        self.services.end_connections(timeout=2.0)
        super().stop(timeout)
        if self.flow is not None:
            self.flow.stop()


def start_app(config: Any, db: Any, flow: bool = True, **overrides: Any) -> AppServer:
    """The app for a new Runtime on the test's database, on a free port that the Session's URLs name."""
    from jmapmono.runtime import Runtime

    return AppServer(Runtime(config.with_overrides(port=free_port(), **overrides), db), flow=flow)

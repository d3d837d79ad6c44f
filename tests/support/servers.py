"""Real Postgres and RabbitMQ servers for the test run, on loopback, in temp dirs.

Each is started on a free port under a temporary directory and stopped at the
end. Used by tests/conftest.py and by the benchmarks in bench/.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

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


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


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
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off -c max_connections=300"
        subprocess.run(
            _as_user(
                "postgres",
                [str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(self.dir / "log"), "-w", "start"],
            ),
            check=True,
            capture_output=True,
        )
        self.data = data

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
    """A throw-away RabbitMQ node. ``stop()``/``start()`` simulate a broker outage."""

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

    def start(self, timeout: float = 60) -> None:
        argv = [str(RABBIT_BIN / "rabbitmq-server")]
        if os.geteuid() == 0:
            argv = [
                "runuser",
                "-u",
                "rabbitmq",
                "--",
                "env",
                *[f"{k}={v}" for k, v in self._env().items() if k.startswith(("RABBITMQ_", "ERL_", "HOME"))],
                *argv,
            ]
        self.proc = subprocess.Popen(
            argv,
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
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None
        subprocess.run(["pkill", "-f", f"epmd.*-port {self.epmd_port}"], capture_output=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    time.sleep(0.05)
            except OSError:
                return

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

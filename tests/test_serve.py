"""``python -m jmapmono serve``: first-user set-up, HTTP, the supervised LMTP child, clean shutdown."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.support.lmtp_client import LMTPClient
from tests.support.servers import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
MESSAGE = b"From: bob@example.org\r\nSubject: hello\r\n\r\nHi.\r\n"


def wait_until(predicate: Callable[[], object], timeout: float = 15.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: its parent has not reaped it yet.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@dataclass
class ServeProcess:
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

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def serve_env(database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JMAPMONO_") and k not in ("DATABASE_URL", "PORT")}
    env.update(DATABASE_URL=database_url, JMAPMONO_DATA_DIR=str(data_dir), BROKER_URL="memory://localhost/")
    env.update(extra)
    return env


def run_serve(database_url: str, tmp_path: Path, lmtp: bool = True, **env: str) -> ServeProcess:
    """Start ``serve`` on free ports (LMTP too, unless ``lmtp`` is False), without waiting for it."""
    http_port = free_port()
    lmtp_port = free_port() if lmtp else None
    out_path, err_path = tmp_path / f"serve-{http_port}.out", tmp_path / f"serve-{http_port}.err"
    argv = [sys.executable, "-m", "jmapmono", "serve", "--host", "127.0.0.1", "--port", str(http_port)]
    argv += ["--lmtp", f"127.0.0.1:{lmtp_port}" if lmtp_port else "off"]
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=serve_env(database_url, tmp_path / "data", **env), stdout=out, stderr=err
        )
    return ServeProcess(proc, http_port, lmtp_port, out_path, err_path)


def start_serve(database_url: str, tmp_path: Path, lmtp: bool = True, **env: str) -> ServeProcess:
    server = run_serve(database_url, tmp_path, lmtp, **env)
    try:
        wait_for_port(server.http_port, 20, server.proc)
        if server.lmtp_port:
            wait_for_port(server.lmtp_port, 20, server.proc)
    except Exception:
        server.stop()
        raise AssertionError(f"serve did not start:\n{server.stdout()}\n{server.stderr()}") from None
    return server


def stored(services, email: str) -> list[bytes]:
    user = services.accounts.get(email)
    with services.db.read() as tx:
        rows = tx.query("SELECT blob_id FROM messages WHERE account_id = ?", (user.account_id,))
    return [services.blobs.get(user.account_id, r["blob_id"]) for r in rows]


def test_first_start_prints_working_credentials_lmtp_accepts_mail_sigterm_exits_0(services, config, tmp_path):
    server = start_serve(config.database_url, tmp_path)
    try:
        out = wait_until(lambda: re.search(r"password: (\S+)", server.stdout()) and server.stdout(), what="password")
        email = re.search(r"email: +(\S+)", out)[1]
        password = re.search(r"password: (\S+)", out)[1]
        assert email == "admin@localhost"
        assert f"{server.url}/.well-known/jmap" in out
        assert services.accounts.get(email) is not None

        ok = requests.get(f"{server.url}/.well-known/jmap", auth=(email, password), timeout=10)
        assert ok.status_code == 200, ok.text
        assert ok.json()["username"] == email
        bad = requests.get(f"{server.url}/.well-known/jmap", auth=(email, password + "x"), timeout=10)
        assert bad.status_code == 401

        with LMTPClient("127.0.0.1", server.lmtp_port) as client:
            assert client.lhlo().code == 250
            _, data = client.transaction("bob@example.org", [email], MESSAGE)
        assert [r.code for r in data] == [250]
        [raw] = stored(services, email)
        assert raw.endswith(MESSAGE)

        backend = "sqlite" if config.is_sqlite else "postgres"
        started_line = rf"event=serve_started http=127.0.0.1:{server.http_port} .*database={backend}"
        assert re.search(started_line, server.stderr())
        [child] = server.child_pids()
        started = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - started < 5
        assert not pid_alive(child)
        assert not port_open(server.lmtp_port) and not port_open(server.http_port)
    finally:
        server.stop()
    assert "Traceback" not in server.stderr()


def test_later_start_prints_the_url_and_how_to_add_users_and_sigint_exits_0(services, config, tmp_path):
    services.accounts.create_user("alice@example.org")
    server = start_serve(config.database_url, tmp_path, lmtp=False)
    try:
        out = wait_until(lambda: "user add" in server.stdout() and server.stdout(), what="the greeting")
        assert f"{server.url}/.well-known/jmap" in out
        assert "password" not in out
        assert services.accounts.get("admin@localhost") is None
        assert "lmtp=off" in server.stderr() and server.child_pids() == []
        assert server.stop(signal.SIGINT) == 0
    finally:
        server.stop()


def test_first_user_named_by_the_environment(services, config, tmp_path):
    server = start_serve(config.database_url, tmp_path, lmtp=False, JMAPMONO_FIRST_USER="Boss@Example.org")
    try:
        wait_until(lambda: "password:" in server.stdout(), what="password")
        assert "email:    boss@example.org" in server.stdout()
        assert [u.email for u in services.accounts.list()] == ["boss@example.org"]
    finally:
        assert server.stop() == 0


def test_invalid_first_user_stops_with_a_configuration_error(services, config, tmp_path):
    server = run_serve(config.database_url, tmp_path, lmtp=False, JMAPMONO_FIRST_USER="not an address")
    assert server.proc.wait(timeout=20) == 78
    assert "JMAPMONO_FIRST_USER" in server.stderr() and "Traceback" not in server.stderr()
    assert services.accounts.list() == []


def test_lmtp_child_is_restarted_when_it_dies(services, config, tmp_path):
    services.accounts.create_user("alice@example.org")
    server = start_serve(config.database_url, tmp_path)
    try:
        [first] = wait_until(server.child_pids, what="the LMTP child")
        os.kill(first, signal.SIGKILL)
        pids = wait_until(lambda: len(server.child_pids()) == 2 and server.child_pids(), what="a new LMTP child")
        assert pids[1] != first
        assert "event=child_exited child=lmtp" in server.stderr()

        def accepts_mail() -> bool:
            try:
                with LMTPClient("127.0.0.1", server.lmtp_port) as client:
                    client.lhlo()
                    _, data = client.transaction("b@example.org", ["alice@example.org"], MESSAGE)
                return [r.code for r in data] == [250]
            except OSError:
                return False

        wait_until(accepts_mail, what="the new LMTP child to accept mail")
        assert len(stored(services, "alice@example.org")) == 1
        assert server.stop() == 0
        assert not pid_alive(pids[1])
    finally:
        server.stop()


def test_lmtp_child_exits_when_serve_is_killed(services, config, tmp_path):
    """No orphan keeps the LMTP port after the supervisor dies without cleaning up."""
    server = start_serve(config.database_url, tmp_path)
    try:
        [child] = wait_until(server.child_pids, what="the LMTP child")
        server.proc.kill()
        server.proc.wait(timeout=10)
        wait_until(lambda: not pid_alive(child), timeout=10, what="the orphaned LMTP child to exit")
        assert not port_open(server.lmtp_port)
    finally:
        server.stop()


def test_http_port_in_use_exits_75_with_a_message(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = [sys.executable, "-m", "jmapmono", "serve", "--port", str(port), "--lmtp", "off"]
        env = serve_env(f"sqlite:///{tmp_path / 'db.sqlite3'}", tmp_path / "data")
        result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, timeout=30)
    assert result.returncode == 75
    assert f"cannot listen on 127.0.0.1:{port}".encode() in result.stderr
    assert b"Traceback" not in result.stderr


def test_bad_lmtp_flag_is_a_usage_error(tmp_path):
    argv = [sys.executable, "-m", "jmapmono", "serve", "--lmtp", "nowhere"]
    env = serve_env(f"sqlite:///{tmp_path / 'db.sqlite3'}", tmp_path / "data")
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, timeout=30)
    assert result.returncode == 64
    assert b"--lmtp" in result.stderr

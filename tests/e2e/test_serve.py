"""``python -m jmapmono serve``: first-user set-up, HTTP, the supervised LMTP child, clean shutdown."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import requests

from tests.support.lmtp_client import LMTPClient
from tests.support.servers import ROOT, jmapmono_env, port_open, run_serve, start_serve
from tests.support.waiting import wait_until

MESSAGE = b"From: bob@example.org\r\nSubject: hello\r\n\r\nHi.\r\n"


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


def stored(services, email: str) -> list[bytes]:
    user = services.accounts.get(email)
    with services.db.read() as tx:
        rows = tx.query("SELECT blob_id FROM messages WHERE account_id = ?", (user.account_id,))
    return [services.blobs.get(user.account_id, r["blob_id"]) for r in rows]


def test_first_start_prints_working_credentials_lmtp_accepts_mail_sigterm_exits_0(services, config, tmp_path):
    server = start_serve(config.database_url, tmp_path)
    try:
        out = wait_until(
            lambda: re.search(r"password: (\S+)", server.stdout()) and server.stdout(), timeout=15, message="password"
        )
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
        assert server.stop() == 0
        assert not pid_alive(child)
        assert not port_open(server.lmtp_port) and not port_open(server.http_port)
    finally:
        server.stop()
    assert "Traceback" not in server.stderr()


def test_later_start_prints_the_url_and_how_to_add_users_and_sigint_exits_0(services, config, tmp_path):
    services.accounts.create_user("alice@example.org")
    server = start_serve(config.database_url, tmp_path, lmtp=False)
    try:
        out = wait_until(lambda: "user add" in server.stdout() and server.stdout(), timeout=15, message="the greeting")
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
        wait_until(lambda: "password:" in server.stdout(), timeout=15, message="password")
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
        [first] = wait_until(server.child_pids, timeout=15, message="the LMTP child")
        os.kill(first, signal.SIGKILL)
        pids = wait_until(
            lambda: len(server.child_pids()) == 2 and server.child_pids(), timeout=15, message="a new LMTP child"
        )
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

        wait_until(accepts_mail, timeout=15, message="the new LMTP child to accept mail")
        assert len(stored(services, "alice@example.org")) == 1
        assert server.stop() == 0
        assert not pid_alive(pids[1])
    finally:
        server.stop()


def test_lmtp_child_exits_when_serve_is_killed(services, config, tmp_path):
    """No orphan keeps the LMTP port after the supervisor dies without cleaning up."""
    server = start_serve(config.database_url, tmp_path)
    try:
        [child] = wait_until(server.child_pids, timeout=15, message="the LMTP child")
        server.proc.kill()
        server.proc.wait(timeout=10)
        wait_until(lambda: not pid_alive(child), timeout=10, message="the orphaned LMTP child to exit")
        assert not port_open(server.lmtp_port)
    finally:
        server.stop()


def test_http_port_in_use_exits_75_with_a_message(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = [sys.executable, "-m", "jmapmono", "serve", "--port", str(port), "--lmtp", "off"]
        env = jmapmono_env(f"sqlite:///{tmp_path / 'db.sqlite3'}", tmp_path / "data")
        result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, timeout=30)
    assert result.returncode == 75
    assert f"cannot listen on 127.0.0.1:{port}".encode() in result.stderr
    assert b"Traceback" not in result.stderr


def test_bad_lmtp_flag_is_a_usage_error(tmp_path):
    argv = [sys.executable, "-m", "jmapmono", "serve", "--lmtp", "nowhere"]
    env = jmapmono_env(f"sqlite:///{tmp_path / 'db.sqlite3'}", tmp_path / "data")
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, timeout=30)
    assert result.returncode == 64
    assert b"--lmtp" in result.stderr

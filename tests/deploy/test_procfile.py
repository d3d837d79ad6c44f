"""The repository's Procfile run as a Procfile platform runs it: honcho starts ``web`` and ``lmtp`` with
``PORT``, ``DATABASE_URL`` and ``BROKER_URL`` in the environment, their commands found on a PATH that holds the
runtime requirements alone; ``WEB_CONCURRENCY=2`` workers. A delivery to the lmtp process reaches every push
socket of the web process; SIGTERM to honcho stops everything cleanly before honcho would kill it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.lmtp_client import LMTPClient
from tests.support.servers import ROOT, free_port, procfile_web_argv, procfile_worker_class, wait_for_port
from tests.support.venvs import clean_env
from tests.support.waiting import wait_until
from tests.support.ws_client import WsClient, basic

ALICE, PASSWORD = "alice@example.org", "alice-password-1"
SOCKETS = 6

pytestmark = pytest.mark.timeout(900)


def email_state(message: dict) -> str | None:
    return next((types["Email"] for types in message.get("changed", {}).values() if "Email" in types), None)


def test_honcho_runs_the_procfile_web_and_lmtp_on_postgres_and_rabbitmq(
    runtime_venv: Path, postgres_server, rabbitmq, tmp_path
):
    port, lmtp_port = free_port(), free_port()
    env = clean_env(
        PATH=os.pathsep.join([str(runtime_venv / "bin"), os.environ["PATH"]]),
        DATABASE_URL=postgres_server.new_database(),
        BROKER_URL=rabbitmq.url,
        WEB_CONCURRENCY="2",
        LMTP_PORT=str(lmtp_port),
        JMAPMONO_DATA_DIR=str(tmp_path / "data"),
        JMAPMONO_BASE_URL=f"http://127.0.0.1:{port}",
        JMAPMONO_LOG_LEVEL="INFO",
    )
    made = subprocess.run(
        ["python", "-m", "jmapmono", "user", "add", ALICE, "--password", PASSWORD],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stdout + made.stderr

    honcho = [str(Path(sys.executable).parent / "honcho"), "start", "--no-colour", "-f", str(ROOT / "Procfile")]
    honcho += ["-d", str(ROOT), "-p", str(port), "web", "lmtp"]
    log_path = tmp_path / "honcho.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(honcho, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    output = lambda: log_path.read_text(errors="replace")  # noqa: E731
    try:
        wait_for_port(port, 60, proc)
        wait_for_port(lmtp_port, 60, proc)
        workers = lambda: output().count("event=bus_connected bus=jmap ")  # noqa: E731
        wait_until(lambda: workers() >= 2, 60, message="both web workers connected to the broker")
        assert "Booting worker" in output() and output().count("Booting worker") == 2, output()

        clients = [WsClient(port, basic(ALICE, PASSWORD)) for _ in range(SOCKETS)]
        for client in clients:
            client.enable_push(["Email"])
        message = b"From: bob@example.org\r\nSubject: through the Procfile\r\n\r\nHi.\r\n"
        with LMTPClient("127.0.0.1", lmtp_port) as lmtp:
            assert lmtp.lhlo().code == 250
            rcpt, data = lmtp.transaction("bob@example.org", [ALICE], message)
            assert [r.code for r in rcpt + data] == [250, 250], (rcpt, data)
        states = {email_state(client.push(timeout=30, where=email_state)) for client in clients}
        assert len(states) == 1 and None not in states, states

        proc.send_signal(signal.SIGTERM)
        assert [client.wait_closed(timeout=30) for client in clients] == [1001] * SOCKETS
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = output()
    # Each stopped by its own graceful shutdown (the shell honcho runs a line in dies of the SIGTERM itself),
    # never by honcho's SIGKILL after its wait.
    assert "Shutting down: Master" in text and "event=lmtp_stopped" in text, text
    assert re.search(r"web\.1 stopped \(rc=(0|-15)\)", text) and re.search(r"lmtp\.1 stopped \(rc=(0|-15)\)", text), (
        text
    )
    assert "SIGKILL" not in text and "Traceback" not in text, text


def gunicorn_settings(**env: str) -> dict[str, str]:
    """The settings gunicorn resolves for the Procfile's web command in ``env`` (``--print-config``)."""
    argv = procfile_web_argv(int(env.get("PORT", "8080")))
    argv = [str(Path(sys.executable).parent / "gunicorn"), *argv[1:-1], "--print-config", argv[-1]]
    printed = subprocess.run(argv, cwd=ROOT, env=clean_env(**env), capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0, printed.stdout + printed.stderr
    return {k.strip(): v.strip() for k, _, v in (line.partition("=") for line in printed.stdout.splitlines()) if v}


@pytest.mark.parametrize(
    ("env", "workers"),
    [
        ({"BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//"}, str(os.cpu_count())),
        ({"BROKER_URL": "memory://localhost/"}, str(os.cpu_count())),
        ({}, str(os.cpu_count())),
        ({"BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//", "WEB_CONCURRENCY": "5"}, "5"),
        ({"WEB_CONCURRENCY": "3"}, "3"),
    ],
)
def test_the_web_command_binds_port_on_every_address_with_workers_from_web_concurrency(env, workers):
    settings = gunicorn_settings(PORT="18080", **env)
    assert settings["bind"] == "['0.0.0.0:18080']"
    assert settings["workers"] == workers
    assert settings["worker_class"] == procfile_worker_class() == "jmapmono.web.gunicorn_worker.StrictGeventWorker"
    assert settings["control_socket_disable"] == "True"
    assert int(settings["graceful_timeout"]) > 0

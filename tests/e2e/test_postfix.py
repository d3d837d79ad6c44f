"""A real Postfix in front of jmapmono, configured as README.md ("Postfix") says, word for word.

Each test runs a private Postfix (tests/support/postfix.py) whose ``main.cf``/``master.cf`` lines are
read from the README's code blocks, with only the addresses and paths of this machine substituted.
Mail goes in over SMTP at Postfix's port and must come out over JMAP.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
import requests

from tests.support import postfix as postfix_support
from tests.support.jmap import PASSWORD
from tests.support.postfix import PostfixInstance, rcpt_reply, require_postfix, start_postfix
from tests.support.servers import ROOT, add_user, free_port, start_serve, wait_for_port
from tests.support.venvs import copy_source
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(600)

#: The docs' `python3 -m venv` is Debian's python3 (a pyenv build under /root is not for service users).
SYSTEM_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
#: What building and installing the package reads from the source tree.
INSTALL_INPUTS = ("pyproject.toml", "README.md", "requirements.txt", "jmapmono")


def readme_blocks(section: str) -> list[list[str]]:
    """The indented code blocks of a README section, each as its lines (indent removed)."""
    text = (ROOT / "README.md").read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    blocks: list[list[str]] = []
    current: list[str] = []
    for line in body.splitlines():
        if line.startswith("    "):
            current.append(line[4:])
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


def main_cf(lines: list[str], **substitutions: str) -> dict[str, str]:
    settings = {}
    for line in lines:
        key, value = (part.strip() for part in line.split("=", 1))
        for old, new in substitutions.items():
            value = value.replace(old, new)
        settings[key] = value
    return settings


def message(subject: str, to: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "bob@sender.test"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(f"{subject}\n")
    return msg


def subjects(base_url: str, email: str) -> list[str]:
    """The subjects of ``email``'s messages, over JMAP."""
    auth = (email, PASSWORD)
    session = requests.get(f"{base_url}/.well-known/jmap", auth=auth, timeout=10).json()
    account = session["primaryAccounts"]["urn:ietf:params:jmap:mail"]
    body = {
        "using": ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"],
        "methodCalls": [
            ["Email/query", {"accountId": account}, "q"],
            [
                "Email/get",
                {
                    "accountId": account,
                    "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"},
                    "properties": ["subject"],
                },
                "g",
            ],
        ],
    }
    r = requests.post(f"{base_url}/jmap/api", json=body, auth=auth, timeout=10)
    assert r.status_code == 200, r.text
    return sorted(e["subject"] for e in r.json()["methodResponses"][1][1]["list"])


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory Postfix's daemons and the ``jmapmono`` user may traverse (pytest's tmp_path is 0700)."""
    require_postfix()
    path = Path(tempfile.mkdtemp(prefix="jmapmono-postfix-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def lmtp_world(shared_dir: Path, tmp_path: Path) -> Iterator[tuple[PostfixInstance, str]]:
    """``serve`` on SQLite with alice@example.org, and a Postfix handing it mail over LMTP as the README says."""
    url = f"sqlite:///{tmp_path / 'data' / 'jmapmono.sqlite3'}"
    add_user(url, tmp_path / "data", "alice@example.org", PASSWORD)
    server = start_serve(url, tmp_path)
    postfix = None
    try:
        lmtp_block = readme_blocks("Postfix")[0]
        postfix = start_postfix(
            shared_dir / "postfix", main_cf(lmtp_block, **{"127.0.0.1:8024": f"127.0.0.1:{server.lmtp_port}"})
        )
        yield postfix, server.url
    finally:
        if postfix is not None:
            postfix.stop()
        server.stop()


def test_mail_through_postfix_and_lmtp_is_seen_over_jmap(lmtp_world):
    postfix, url = lmtp_world
    with postfix.smtp() as client:
        client.send_message(message("through postfix", "alice@example.org"))
    wait_until(lambda: subjects(url, "alice@example.org") == ["through postfix"], 60, 0.1, "the message over JMAP")
    wait_until(postfix.queue_is_empty, 60, 0.1, "Postfix's queue to empty")
    assert "status=sent" in postfix.log() and "status=bounced" not in postfix.log()


def test_a_message_over_postfix_default_size_limit_gets_through(lmtp_world):
    postfix, url = lmtp_world
    big = message("twenty megabytes", "alice@example.org")
    big.add_attachment(os.urandom(15_000_000), maintype="application", subtype="octet-stream")  # ~20 MB base64
    with postfix.smtp() as client:
        client.send_message(big)
    wait_until(lambda: subjects(url, "alice@example.org") == ["twenty megabytes"], 120, 0.2, "the message over JMAP")


def test_an_unknown_recipient_is_refused_at_rcpt_and_a_known_one_accepted(lmtp_world):
    postfix, url = lmtp_world
    code, text = rcpt_reply(postfix, "bob@sender.test", "nobody@example.org")
    assert code == 550, text
    code, text = rcpt_reply(postfix, "bob@sender.test", "alice@example.org")
    assert code == 250, text
    # No bounce was queued for the unknown one: the sender learnt it at RCPT.
    wait_until(postfix.queue_is_empty, 60, 0.1, "Postfix's queue to empty")
    assert "status=bounced" not in postfix.log()


# -- the `deliver` pipe, from a package installed as the docs say --------------------------------------------------


def _ensure_system_user(name: str) -> None:
    """The service user of docs/deploy.md (created as it says, when missing)."""
    if subprocess.run(["getent", "passwd", name], capture_output=True).returncode != 0:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--home-dir",
                "/var/lib/jmapmono",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )


@pytest.fixture
def installed_venv(shared_dir: Path) -> Path:
    """``python3 -m venv`` and ``pip install -r requirements.txt .`` from a copy of the source tree."""
    source = copy_source(shared_dir / "source", INSTALL_INPUTS)
    venv = shared_dir / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", venv], check=True, env=env, timeout=300)
    pip = [venv / "bin" / "pip", "install", "-q", "-r", "requirements.txt", "."]
    proc = subprocess.run(pip, cwd=source, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return venv


def test_the_deliver_pipe_of_the_readme_stores_mail_for_the_server(shared_dir: Path, installed_venv: Path):
    _ensure_system_user("jmapmono")
    data = shared_dir / "data"
    data.mkdir()
    shutil.chown(data, "jmapmono", "jmapmono")
    env_file = shared_dir / "env"
    env_file.write_text(f"# as /etc/jmapmono/env\nJMAPMONO_DATA_DIR={data}\n")
    env_file.chmod(0o644)
    jmapmono = str(installed_venv / "bin" / "jmapmono")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JMAPMONO_") and k not in ("DATABASE_URL",)}
    as_service = ["runuser", "-u", "jmapmono", "--", jmapmono, "--env-file", str(env_file)]
    add = subprocess.run(
        [*as_service, "user", "add", "alice@example.org", "--password", PASSWORD],
        cwd="/",
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert add.returncode == 0, add.stderr
    assert f"in {data / 'jmapmono.sqlite3'}" in add.stderr  # says which database it wrote to

    port = free_port()
    serve = subprocess.Popen(
        [*as_service, "serve", "--host", "127.0.0.1", "--port", str(port), "--lmtp", "off"],
        cwd="/",
        env=clean,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    postfix = None
    try:
        wait_for_port(port, 60, serve)
        pipe_block, main_block = readme_blocks("Postfix")[1:3]
        master = "\n".join(pipe_block) + "\n"
        master = master.replace("/srv/jmapmono/venv", str(installed_venv)).replace("/etc/jmapmono/env", str(env_file))
        assert re.search(r"user=jmapmono argv=\S+/bin/jmapmono --env-file \S+ deliver --to \$\{recipient\}", master)
        postfix = start_postfix(shared_dir / "postfix", main_cf(main_block), master)
        with postfix.smtp() as client:
            client.send_message(message("through the pipe", "alice@example.org"))
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: subjects(url, "alice@example.org") == ["through the pipe"], 60, 0.1, "the message over JMAP")
        # The message is stored before the pipe exits, and Postfix logs the delivery only after it has.
        wait_until(lambda: "status=sent" in postfix.log(), 60, 0.1, "Postfix to log the delivery as sent")
        assert "status=bounced" not in postfix.log()
        files = {p.name: p.stat().st_uid for p in data.iterdir()}
        assert set(files.values()) == {int(subprocess.check_output(["id", "-u", "jmapmono"]))}, files
    finally:
        if postfix is not None:
            postfix.stop()
        serve.terminate()
        serve.wait(30)


def test_without_postfix_the_tests_skip_but_fail_under_ci(monkeypatch):
    monkeypatch.setattr(postfix_support, "postfix_unavailable", lambda: "Postfix is not installed")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true and Postfix is not installed"):
        postfix_support.require_postfix()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="Postfix is not installed"):
        postfix_support.require_postfix()

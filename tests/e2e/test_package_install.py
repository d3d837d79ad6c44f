"""The package as an operator installs it: ``pip install`` into a new virtualenv, then the ``jmapmono`` script.

A wheel is built from a copy of what the build reads (``pyproject.toml``, ``README.md``, ``jmapmono/``)
and installed into a virtualenv made with ``python -m venv`` in a temporary directory; dependencies come
from pip's cache, else the package index. The installed console script then runs from a directory
outside the repository, with its own SQLite file: ``serve`` prints the first user, answers the Session,
serves the web inbox's files, stores a message delivered over LMTP (seen through ``Email/query``), accepts
a user made by ``jmapmono user add`` on the same database and exits 0 on SIGTERM. Nothing here may come from the source
tree: that is what catches a file the package reads but the wheel lacks (``jmapmono/store/schema.sql``).

Cost: about 15 s with a warm pip cache (virtualenv ~3 s, wheel ~3 s, install ~6 s, the server's runs
~3 s); the first run on a machine also downloads the dependencies (~30 MB). It runs once, not once per
backend: it takes neither ``services`` nor ``db``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
import requests

from tests.support.lmtp_client import LMTPClient
from tests.support.servers import free_port, wait_for_port
from tests.support.venvs import PIP_TIMEOUT, clean_env, copy_source, run

ROOT = Path(__file__).resolve().parents[2]
#: What building the wheel reads from the source tree.
BUILD_INPUTS = ("pyproject.toml", "README.md", "jmapmono")
#: Seconds for one pip step; a cold cache downloads every dependency.
USING = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"]
MESSAGE = b"From: bob@example.org\r\nTo: admin@localhost\r\nSubject: installed\r\n\r\nDelivered to a wheel.\r\n"

pytestmark = pytest.mark.timeout(2 * PIP_TIMEOUT + 120)

T = TypeVar("T")


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)


def wait_until(predicate: Callable[[], T], timeout: float, what: str, proc: subprocess.Popen) -> T:
    """Poll ``predicate`` until it returns something true; fail on timeout or when ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    work = tmp_path_factory.mktemp("package")
    source = copy_source(work / "source", BUILD_INPUTS)
    wheels = work / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", wheels, source], work, PIP_TIMEOUT)
    (wheel,) = wheels.glob("jmapmono-*.whl")
    venv = work / "venv"
    run([sys.executable, "-m", "venv", venv], work, PIP_TIMEOUT)
    run([venv / "bin" / "python", "-m", "pip", "install", wheel], work, PIP_TIMEOUT)
    return Installed(wheel, venv)


def test_the_wheel_ships_the_schema_and_the_console_script(installed: Installed):
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = wheel.namelist()
        (entry_points,) = (n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = wheel.read(entry_points).decode()
    assert "jmapmono/store/schema.sql" in names
    static = ROOT / "jmapmono" / "web" / "static"
    page = {f"jmapmono/web/static/{p.name}" for p in static.iterdir() if p.suffix in (".html", ".js", ".css")}
    assert page and page <= set(names), sorted(page - set(names))
    assert "jmapmono/__main__.py" in names
    assert re.search(r"^jmapmono = jmapmono\.main:main$", scripts, re.M), scripts
    assert not [n for n in names if n.startswith(("tests/", "bench/"))]


def test_the_lmtp_child_imports_the_same_package_installed_or_from_the_source_tree(installed: Installed, tmp_path):
    """``serve`` puts the directory holding ``jmapmono`` on its LMTP child's PYTHONPATH only when that is
    not where the interpreter looks anyway (an installed package: site-packages before the standard library)."""
    from jmapmono.cli.supervisor import child_python_path

    assert child_python_path({}) == str(ROOT)
    assert child_python_path({"PYTHONPATH": "/elsewhere"}) == os.pathsep.join([str(ROOT), "/elsewhere"])
    code = (
        "from jmapmono.cli.supervisor import child_python_path as p; print(repr(p({})), repr(p({'PYTHONPATH': '/x'})))"
    )
    assert run([installed.bin("python"), "-c", code], tmp_path, 30).split() == ["''", "'/x'"]


def test_the_installed_server_serves_takes_mail_over_lmtp_and_stops_cleanly(installed: Installed, tmp_path: Path):
    outside = tmp_path / "operator"
    outside.mkdir()
    assert ROOT not in outside.resolve().parents
    env = clean_env(
        JMAPMONO_DATA_DIR=str(outside / "data"),
        DATABASE_URL=f"sqlite:///{outside / 'jmapmono.sqlite3'}",
        BROKER_URL="memory://localhost/",
        JMAPMONO_LOG_LEVEL="INFO",
    )
    where = run([installed.bin("python"), "-c", "import jmapmono; print(jmapmono.__file__)"], outside, 30, env)
    assert Path(where.strip()).is_relative_to(installed.venv), where

    http_port, lmtp_port = free_port(), free_port()
    argv = [installed.bin("jmapmono"), "serve", "--host", "127.0.0.1", "--port", str(http_port)]
    argv += ["--lmtp", f"127.0.0.1:{lmtp_port}"]
    out_path, err_path = tmp_path / "serve.out", tmp_path / "serve.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(argv, cwd=outside, env=env, stdout=out, stderr=err)
    try:
        printed = wait_until(
            lambda: re.search(r"email: +(\S+)\s+password: +(\S+)", out_path.read_text()), 30, "the first user", proc
        )
        email, password = printed[1], printed[2]
        base = f"http://127.0.0.1:{http_port}"
        session = requests.get(f"{base}/.well-known/jmap", auth=(email, password), timeout=10)
        assert session.status_code == 200, session.text
        assert session.json()["username"] == email
        api_url = session.json()["apiUrl"]
        inbox = requests.get(f"{base}/", timeout=10)
        assert inbox.status_code == 200 and '<script type="module" src="/static/main.js">' in inbox.text
        assert requests.get(f"{base}/static/main.js", timeout=10).status_code == 200
        account_id = session.json()["primaryAccounts"]["urn:ietf:params:jmap:mail"]

        wait_for_port(lmtp_port, 30, proc)
        with LMTPClient("127.0.0.1", lmtp_port) as lmtp:
            assert lmtp.lhlo().code == 250
            rcpt, data = lmtp.transaction("bob@example.org", [email], MESSAGE)
            assert [r.code for r in rcpt] == [250] and [r.code for r in data] == [250], (rcpt, data)
            lmtp.quit()

        ids = {"resultOf": "q", "name": "Email/query", "path": "/ids"}
        calls = [
            ["Email/query", {"accountId": account_id}, "q"],
            ["Email/get", {"accountId": account_id, "#ids": ids, "properties": ["subject"]}, "g"],
        ]
        answer = requests.post(api_url, json={"using": USING, "methodCalls": calls}, auth=(email, password), timeout=10)
        assert answer.status_code == 200, answer.text
        responses = answer.json()["methodResponses"]
        assert [name for name, _, _ in responses] == ["Email/query", "Email/get"], responses
        assert len(responses[0][1]["ids"]) == 1, responses
        assert [e["subject"] for e in responses[1][1]["list"]] == ["installed"], responses

        added = subprocess.run(
            [installed.bin("jmapmono"), "user", "add", "x@example.org", "--password", "x-password-1"],
            cwd=outside,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert added.returncode == 0, added.stdout + added.stderr
        as_x = requests.get(f"{base}/.well-known/jmap", auth=("x@example.org", "x-password-1"), timeout=10)
        assert as_x.status_code == 200, as_x.text
        assert as_x.json()["username"] == "x@example.org"

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, err_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in err_path.read_text(), err_path.read_text()

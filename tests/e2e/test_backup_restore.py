"""Back up a running server's SQLite database while mail arrives, restore it, and find everything committed.

``jmapmono backup`` runs against ``serve`` while a second connection delivers over LMTP without pause.
After stopping the server and putting the copy in place (as docs/deploy.md says: the file, without the old
``-wal``/``-shm``), every message acknowledged before the backup began is there, and ``Email/changes``
from a state taken before the backup still answers (no ``cannotCalculateChanges``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import gevent
import requests

from tests.support.jmap import PASSWORD
from tests.support.lmtp_client import LMTPClient
from tests.support.servers import ROOT, add_user, jmapmono_env, start_serve
from tests.support.waiting import wait_until

USING = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"]
AUTH = ("alice@example.org", PASSWORD)


def api(url: str, calls: list) -> list:
    session = requests.get(f"{url}/.well-known/jmap", auth=AUTH, timeout=10).json()
    account = session["primaryAccounts"]["urn:ietf:params:jmap:mail"]
    for call in calls:
        call[1]["accountId"] = account
    r = requests.post(f"{url}/jmap/api", json={"using": USING, "methodCalls": calls}, auth=AUTH, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["methodResponses"]


def subjects(url: str) -> set[str]:
    [_, (_, got, _)] = api(
        url,
        [
            ["Email/query", {}, "q"],
            [
                "Email/get",
                {"#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"}, "properties": ["subject"]},
                "g",
            ],
        ],
    )
    return {e["subject"] for e in got["list"]}


def deliver(port: int, subject: str) -> bool:
    raw = f"From: bob@example.org\r\nTo: alice@example.org\r\nSubject: {subject}\r\n\r\n{subject}\r\n".encode()
    with LMTPClient("127.0.0.1", port) as client:
        client.lhlo()
        _, data = client.transaction("bob@example.org", ["alice@example.org"], raw)
    return [r.code for r in data] == [250]


def test_a_backup_taken_while_mail_arrives_restores_every_committed_message(tmp_path: Path):
    data = tmp_path / "data"
    url = f"sqlite:///{data / 'jmapmono.sqlite3'}"
    env = jmapmono_env(url, data)
    add_user(url, data, "alice@example.org", PASSWORD)
    server = start_serve(url, tmp_path)
    acked: list[str] = []
    stop = False

    def keep_delivering() -> None:
        n = 0
        while not stop:
            n += 1
            if deliver(server.lmtp_port, f"during {n}"):
                acked.append(f"during {n}")

    try:
        for n in range(10):
            assert deliver(server.lmtp_port, f"before {n}")
        [(_, state, _)] = api(server.url, [["Email/get", {"ids": []}, "s"]])
        old_state = state["state"]
        writer = gevent.spawn(keep_delivering)
        wait_until(lambda: len(acked) >= 5, 60, message="deliveries under way")
        committed_before_backup = {f"before {n}" for n in range(10)} | set(acked)
        backup = tmp_path / "backup.sqlite3"
        proc = subprocess.run(
            [sys.executable, "-m", "jmapmono", "backup", str(backup)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        wait_until(lambda: len(acked) >= len(committed_before_backup) - 10 + 5, 60, message="deliveries after it")
        stop = True
        writer.join(60)
        assert writer.successful(), writer.exception
    finally:
        stop = True
        assert server.stop() == 0

    database = data / "jmapmono.sqlite3"
    for suffix in ("-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(backup, database)

    restored = start_serve(url, tmp_path)
    try:
        found = subjects(restored.url)
        assert committed_before_backup <= found, sorted(committed_before_backup - found)
        [(name, changes, _)] = api(restored.url, [["Email/changes", {"sinceState": old_state}, "c"]])
        assert name == "Email/changes", changes
        assert len(changes["created"]) == len(found) - 10
        assert deliver(restored.lmtp_port, "after restore")
        assert "after restore" in subjects(restored.url)
    finally:
        restored.stop()

"""``python -m jmapmono deliver``: the local delivery agent and its sendmail exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.support.servers import ROOT, free_port

MAX_SIZE = 4096
MESSAGE = b"From: bob@example.org\r\nSubject: hi\r\n\r\nHello.\r\n"


def run_deliver(database_url: str, args: list[str], stdin: bytes, **env: str) -> subprocess.CompletedProcess:
    """``deliver ARGS < stdin`` in a fresh process on ``database_url``."""
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith("JMAPMONO_") and k not in ("DATABASE_URL", "PORT")
    }
    environ.update(
        DATABASE_URL=database_url,
        JMAPMONO_DATA_DIR=str(Path(tempfile.gettempdir()) / "jmapmono-test-deliver"),
        JMAPMONO_MAX_MESSAGE_SIZE=str(MAX_SIZE),
        JMAPMONO_LOG_LEVEL="INFO",
    )
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "jmapmono", "deliver", *args],
        input=stdin,
        capture_output=True,
        cwd=ROOT,
        env=environ,
        timeout=60,
    )


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'db.sqlite3'}"


def stored(services, email: str) -> list[bytes]:
    user = services.accounts.get(email)
    with services.db.read() as tx:
        rows = tx.query(
            "SELECT blob_id FROM messages WHERE account_id = ? ORDER BY received_at, id", (user.account_id,)
        )
    return [services.blobs.get(user.account_id, r["blob_id"]) for r in rows]


def assert_clean(result: subprocess.CompletedProcess) -> None:
    assert b"Traceback" not in result.stderr, result.stderr.decode(errors="replace")


def test_delivered_exit_0_and_bytes_kept_exactly(services, config):
    services.accounts.create_user("alice@example.org")
    message = (
        b"Subject: =?x-unknown?B?AAAA?=\r\nContent-Type: multipart/mixed; boundary=none\r\n\r\n"
        b"8-bit \xe9\xff\x00 and a lone\rCR and a bare\nLF in a CRLF message\r\n.\r\n"
    )
    result = run_deliver(config.database_url, ["--to", "Alice@Example.org"], message)
    assert result.returncode == 0, result.stderr
    assert_clean(result)
    assert stored(services, "alice@example.org") == [message]
    assert b"event=deliver " in result.stderr and b"result=ok" in result.stderr


def test_unix_line_endings_become_crlf(services, config):
    services.accounts.create_user("alice@example.org")
    result = run_deliver(config.database_url, ["--to", "alice@example.org"], b"Subject: lf\n\nline one\nline two\n")
    assert result.returncode == 0, result.stderr
    assert stored(services, "alice@example.org") == [b"Subject: lf\r\n\r\nline one\r\nline two\r\n"]


def test_into_a_named_mailbox(services, config):
    services.accounts.create_user("alice@example.org")
    result = run_deliver(config.database_url, ["--to", "alice@example.org", "--mailbox", "Inbox"], MESSAGE)
    assert result.returncode == 0, result.stderr
    assert stored(services, "alice@example.org") == [MESSAGE]


def test_unknown_user_exit_67(services, config):
    result = run_deliver(config.database_url, ["--to", "nobody@example.org"], MESSAGE)
    assert result.returncode == 67
    assert b"no such user: nobody@example.org" in result.stderr
    assert_clean(result)


@pytest.mark.parametrize("message", [b"", b" \r\n\r\n\t\n"], ids=["empty", "blank"])
def test_empty_message_exit_65(services, config, message):
    services.accounts.create_user("alice@example.org")
    result = run_deliver(config.database_url, ["--to", "alice@example.org"], message)
    assert result.returncode == 65
    assert b"empty message" in result.stderr
    assert stored(services, "alice@example.org") == []


def test_message_over_the_limit_exit_65_and_exactly_at_it_delivered(services, config):
    services.accounts.create_user("alice@example.org")
    at_limit = MESSAGE + b"x" * (MAX_SIZE - len(MESSAGE) - 2) + b"\r\n"
    assert len(at_limit) == MAX_SIZE
    result = run_deliver(config.database_url, ["--to", "alice@example.org"], at_limit + b"y")
    assert result.returncode == 65
    assert f"larger than {MAX_SIZE} bytes".encode() in result.stderr
    assert_clean(result)
    assert stored(services, "alice@example.org") == []
    result = run_deliver(config.database_url, ["--to", "alice@example.org"], at_limit)
    assert result.returncode == 0, result.stderr
    assert stored(services, "alice@example.org") == [at_limit]


def test_a_large_input_is_read_to_its_end_without_a_broken_pipe(tmp_path):
    """An MTA writing a huge message into the pipe sees it read, then exit 65, not EPIPE."""
    result = run_deliver(sqlite_url(tmp_path), ["--to", "alice@example.org"], b"z" * (MAX_SIZE * 200))
    assert result.returncode == 65
    assert_clean(result)


def test_database_unavailable_exit_75():
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    result = run_deliver(url, ["--to", "alice@example.org"], MESSAGE)
    assert result.returncode == 75
    assert b"database unavailable" in result.stderr
    assert_clean(result)


@pytest.mark.parametrize("args", [[], ["--to"], ["--to", "a@example.org", "--bogus"]], ids=["no-to", "no-value", "bad"])
def test_usage_errors_exit_64(tmp_path, args):
    result = run_deliver(sqlite_url(tmp_path), args, MESSAGE)
    assert result.returncode == 64
    assert b"usage:" in result.stderr
    assert_clean(result)


def test_bad_configuration_holds_the_mail_exit_75():
    """Postfix bounces on 78 (EX_CONFIG, 5.3.5) but defers on 75: a configuration mistake must not bounce mail."""
    result = run_deliver("mysql://x/y", ["--to", "a@example.org"], MESSAGE)
    assert result.returncode == 75
    assert b"DATABASE_URL" in result.stderr
    assert_clean(result)


def test_delivering_processes_sync_every_commit(config):
    """Mail acknowledged to the MTA must survive a power loss: SQLite's synchronous=FULL (2) there."""
    from jmapmono.runtime import Runtime

    services = Runtime(config, durable_commits=True)
    try:
        if config.is_sqlite:
            assert services.db.conn.execute("PRAGMA synchronous").fetchone() == {"synchronous": 2}
        else:
            with services.db.read() as tx:
                assert tx.value("SHOW synchronous_commit") == "on"
    finally:
        services.close()


def test_over_quota_exit_73_and_nothing_stored(services, config):
    user, _ = services.accounts.create_user("alice@example.org")
    services.mailboxes.set_quota(user.account_id, messages=1)
    assert run_deliver(config.database_url, ["--to", "alice@example.org"], MESSAGE).returncode == 0
    result = run_deliver(config.database_url, ["--to", "alice@example.org"], MESSAGE)
    assert result.returncode == 73
    assert b"mailbox full" in result.stderr and b"result=over_quota" in result.stderr
    assert_clean(result)
    assert stored(services, "alice@example.org") == [MESSAGE]


def test_rejected_by_the_sieve_script_exit_77_and_nothing_stored(services, config):
    """RFC 5429 §2.1: a reject refuses the message in the delivery protocol: for ``deliver``, exit 77
    (EX_NOPERM, a permanent failure the MTA bounces) with the reason; nothing is stored."""
    from tests.support.sieve import activate

    services.accounts.create_user("alice@example.org")
    activate(services, "alice@example.org", 'require "reject";\r\nreject "I do not want this";\r\n')
    result = run_deliver(config.database_url, ["--to", "alice@example.org"], MESSAGE)
    assert result.returncode == 77
    assert b"I do not want this" in result.stderr and b"result=rejected" in result.stderr
    assert_clean(result)
    assert stored(services, "alice@example.org") == []

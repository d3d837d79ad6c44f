"""``python -m jmapmono user …`` as real subprocesses: every action, its output and its exit code."""

from __future__ import annotations

import base64
import fcntl
import os
import select
import subprocess
import sys
import termios
import time
from pathlib import Path

import gevent
import pytest

from jmapmono.accounts.app_passwords import AppPasswords
from jmapmono.accounts.authn import Unauthenticated
from tests.support.servers import ROOT, free_port


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def cli_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JMAPMONO_", "DATABASE_URL", "BROKER_URL"))}
    env.update(DATABASE_URL=database_url, JMAPMONO_DATA_DIR=str(tmp_path / "cli-data"))
    return env


def run(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jmapmono", "user", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )


def logs_in(services, email: str, password: str) -> bool:
    try:
        services.authenticator.authenticate(basic(email, password), "192.0.2.1")
    except Unauthenticated:
        return False
    return True


def together(env: dict[str, str], *commands: tuple[str, ...] | dict) -> list[subprocess.CompletedProcess]:
    """Run independent commands at once (each a process start: most of this file's time); their results in order.
    A command is an argv tuple, or ``{"argv": (...), "stdin": "..."}``."""
    calls = [c if isinstance(c, dict) else {"argv": c} for c in commands]
    jobs = [gevent.spawn(run, env, *c["argv"], stdin=c.get("stdin", "")) for c in calls]
    gevent.joinall(jobs, raise_error=True)
    return [job.value for job in jobs]


def probe(env: dict[str, str], *commands: tuple[str, ...]) -> list[int]:
    """Exit codes of commands that change nothing, run concurrently."""
    return [r.returncode for r in together(env, *commands)]


def test_every_user_action_and_its_exit_code(services, config, tmp_path):
    env = cli_env(config.database_url, tmp_path)
    tokens = AppPasswords(services.db, services.accounts)

    r, r_bob = together(env, ("add", "Alice@Example.org", "--password", "alice pw"), ("add", "bob@example.org"))
    assert (r.returncode, r.stdout) == (0, "") and "alice@example.org" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1  # one message line, no log noise
    generated = r_bob.stdout.strip()
    assert r_bob.returncode == 0 and len(generated) >= 16 and "\n" not in generated
    assert logs_in(services, "bob@example.org", generated)

    # Independent of each other: alice's password, bob's app password, the listing.
    r, r_passwd, r_token = together(
        env,
        ("list",),
        ("passwd", "alice@example.org", "--password", "second pw"),
        ("token", "bob@example.org", "--label", "phone"),
    )
    assert r.returncode == 0
    assert r.stdout.splitlines() == [f"{u.email}\t{u.account_id}" for u in services.accounts.list()]
    assert [line.split("\t")[0] for line in r.stdout.splitlines()] == ["alice@example.org", "bob@example.org"]
    assert r_passwd.returncode == 0
    assert logs_in(services, "alice@example.org", "second pw")
    token = r_token.stdout.strip()
    owner = tokens.check(token)
    assert r_token.returncode == 0 and owner is not None and owner.user.email == "bob@example.org"

    r_passwd, r = together(
        env, {"argv": ("passwd", "alice@example.org"), "stdin": "third pw\nignored\n"}, ("tokens", "bob@example.org")
    )
    assert r_passwd.returncode == 0
    assert logs_in(services, "alice@example.org", "third pw") and not logs_in(
        services, "alice@example.org", "second pw"
    )
    assert r.returncode == 0
    [line] = r.stdout.splitlines()
    token_id, label, created, last_used = line.split("\t")
    assert (token_id, label) == (owner.app_password_id, "phone") and created.endswith("Z") and last_used != ""

    assert probe(
        env,
        ("add", "ALICE@example.org", "--password", "x"),  # already exists
        ("passwd", "alice@example.org", "--password", ""),  # empty password
        ("passwd", "nobody@example.org", "--password", "x"),
        ("tokens", "nobody@example.org"),
        ("revoke", "alice@example.org", token_id),  # bob's, not alice's
        ("delegate", "alice@example.org", "nobody@example.org"),
        ("delegate", "alice@example.org", "alice@example.org"),
    ) == [73, 65, 67, 67, 65, 67, 65]
    assert logs_in(services, "alice@example.org", "third pw") and tokens.check(token) is not None

    alice, bob = services.accounts.require("alice@example.org"), services.accounts.require("bob@example.org")
    r_revoke, r_delegate = together(
        env, ("revoke", "bob@example.org", token_id), ("delegate", "alice@example.org", "bob@example.org")
    )
    assert (r_revoke.returncode, r_delegate.returncode) == (0, 0)
    assert tokens.check(token) is None
    assert alice.account_id in services.accounts.accessible_accounts(bob.id)
    assert run(env, "undelegate", "alice@example.org", "bob@example.org").returncode == 0
    assert alice.account_id not in services.accounts.accessible_accounts(bob.id)

    assert run(env, "delete", "bob@example.org").returncode == 0
    assert services.accounts.get("bob@example.org") is None
    assert run(env, "delete", "bob@example.org").returncode == 67


def _read_until(fd: int, text: str, timeout: float = 20) -> str:
    seen = b""
    deadline = time.monotonic() + timeout
    while text.encode() not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {text!r} on the terminal; got {seen!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            seen += os.read(fd, 1024)
    return seen.decode(errors="replace")


def _passwd_on_a_tty(env: dict[str, str], first: str, second: str) -> int:
    master, slave = os.openpty()

    def controlling_tty() -> None:  # getpass talks to /dev/tty: make the pty the child's terminal
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        [sys.executable, "-m", "jmapmono", "user", "passwd", "alice@example.org"],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
        preexec_fn=controlling_tty,
    )
    os.close(slave)
    try:
        _read_until(master, "New password:")
        os.write(master, first.encode() + b"\n")
        _read_until(master, "Repeat new password:")
        os.write(master, second.encode() + b"\n")
        return proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        os.close(master)


def test_passwd_prompts_twice_on_a_tty(services, config, tmp_path):
    services.accounts.create_user("alice@example.org", "old pw")
    env = cli_env(config.database_url, tmp_path)
    assert _passwd_on_a_tty(env, "tty pw", "tty typo") == 65
    assert logs_in(services, "alice@example.org", "old pw")
    assert _passwd_on_a_tty(env, "tty pw", "tty pw") == 0
    assert logs_in(services, "alice@example.org", "tty pw")


def test_configuration_and_database_failures(tmp_path):
    """No storage is touched: the database is refused or unreachable before anything happens."""
    env = cli_env("mysql://localhost/mail", tmp_path)
    r = run(env, "list")
    assert r.returncode == 78 and "DATABASE_URL" in r.stderr and len(r.stderr.splitlines()) == 1
    r = run(cli_env(f"postgresql://postgres@127.0.0.1:{free_port()}/nothing", tmp_path), "add", "a@example.org")
    assert r.returncode == 75 and "database unavailable" in r.stderr and len(r.stderr.splitlines()) == 1
    assert run(env, "add").returncode == 64  # usage errors win: nothing is opened
    assert run(env, "frobnicate").returncode == 64


@pytest.mark.parametrize("argv", [["add", "x@example.org", "--password", ""], ["add", "bad address"]])
def test_bad_data_is_refused_before_the_database_is_opened(tmp_path, argv):
    env = cli_env(f"postgresql://postgres@127.0.0.1:{free_port()}/nothing", tmp_path)
    assert run(env, *argv).returncode == 65


def test_quota_shows_sets_lifts_and_refuses_bad_values(services, config, tmp_path):
    env = cli_env(config.database_url, tmp_path)
    user, _ = services.accounts.create_user("alice@example.org")
    raw = b"Subject: hi\r\n\r\nHello.\r\n"
    services.mailboxes.deliver(user.email, raw)
    shown = run(env, "quota", "alice@example.org")
    assert shown.returncode == 0 and shown.stdout == f"storage\t{len(raw)}\tnone\nmessages\t1\tnone\n"
    set_ = run(env, "quota", "Alice@example.org", "--storage", "2G", "--messages", "100000")
    assert set_.returncode == 0, set_.stderr
    assert set_.stdout == f"storage\t{len(raw)}\t{2 * 1024**3}\nmessages\t1\t100000\n"
    assert "quota of alice@example.org" in set_.stderr
    account, _ = services.mailboxes.get_quota(user.account_id)
    assert (account.limits.octets, account.limits.messages) == (2 * 1024**3, 100000)
    lifted, default, bad, unknown, bad_count = together(
        env,
        ("quota", "alice@example.org", "--storage", "none"),
        ("quota", "alice@example.org", "--messages", "default"),
        ("quota", "alice@example.org", "--storage", "2 gigs"),
        ("quota", "nobody@example.org"),
        ("quota", "alice@example.org", "--messages", "-3"),
    )
    assert lifted.returncode == 0 and default.returncode == 0
    assert services.mailboxes.get_quota(user.account_id)[0].limits == type(account.limits)(None, None)
    assert bad.returncode == 65 and "--storage '2 gigs'" in bad.stderr and "Traceback" not in bad.stderr
    assert bad_count.returncode == 65 and unknown.returncode == 67

"""``python -m jmapmono mailbox share|shares|unshare`` as real subprocesses: output and exit codes."""

from __future__ import annotations

import subprocess
import sys

from tests.cli.test_users import cli_env
from tests.support.jmap import PASSWORD
from tests.support.servers import ROOT

ALICE, BOB = "alice@example.org", "bob@example.org"


def mailbox(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jmapmono", "mailbox", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )


def test_share_list_and_unshare(services, database_url, tmp_path):
    """draft-ietf-jmap-mail-sharing: the operator grants a mailbox with MailboxRights (RFC 8621 §2)."""
    alice, _ = services.accounts.create_user(ALICE, PASSWORD)
    bob, _ = services.accounts.create_user(BOB, PASSWORD)
    env = cli_env(database_url, tmp_path)

    done = mailbox(env, "share", ALICE, "Archive", BOB, "--rights", "read,seen,add")
    assert done.returncode == 0, done.stderr
    assert mailbox(env, "shares", ALICE).stdout == f"Archive\t{BOB}\tread,add,seen\n"
    access = services.accounts.access(bob.id, alice.account_id)
    assert access is not None and access.shares is not None and not access.is_read_only

    assert mailbox(env, "share", ALICE, "Archive", BOB, "--rights", "read,fly").returncode == 65
    assert mailbox(env, "share", ALICE, "Nowhere", BOB, "--rights", "read").returncode == 65
    assert mailbox(env, "share", ALICE, "Archive", "nobody@example.org", "--rights", "read").returncode == 67
    assert mailbox(env, "share", ALICE, "Archive", ALICE, "--rights", "read").returncode == 65

    done = mailbox(env, "unshare", ALICE, "archive", BOB)
    assert done.returncode == 0, done.stderr
    assert mailbox(env, "shares", ALICE).stdout == ""
    assert services.accounts.access(bob.id, alice.account_id) is None

"""``python -m jmapmono search reindex`` as real subprocesses on mail indexed the old way: what it finds after,
its progress (a bar on a terminal, lines otherwise), a second run, and exit codes. Both backends."""

from __future__ import annotations

import os
import select
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.test_users import cli_env
from tests.support.emails import Box, index_the_old_way
from tests.support.servers import ROOT

JAPANESE = "東京で会議があります"
ENGLISH = "The quarterly report is ready. Please review the report before the meeting on Monday morning."


def reindex(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jmapmono", "search", "reindex", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )


@pytest.fixture
def box(services, alice) -> Box:
    return Box(services, alice)


def test_reindex_makes_old_mail_found_by_words_inside_runs_and_stems(box, bob, services, database_url, tmp_path):
    """RFC 8621 §4.4.1: "Tokens (not part of a phrase) MAY be matched on a whole-word basis using stemming (for
    example, a text search for "bus" would match "buses" but not "business")"; body: "Looks for the text in one of
    the body parts of the message"."""
    ja = box.add(subject="x", body=JAPANESE)
    en = box.add(subject="y", body=ENGLISH)
    bobs_inbox = services.mailboxes.mailbox_by_role(bob.account_id, "inbox").id
    bobs = services.mailboxes.append(bob.account_id, f"Subject: z\r\n\r\n{ENGLISH}\r\n".encode(), [bobs_inbox]).id
    for message_id in (ja, en, bobs):
        index_the_old_way(services.db, message_id)
    assert box.ids({"body": "会議"}) == [] and box.ids({"body": "reports"}) == []
    env = cli_env(database_url, tmp_path)

    done = reindex(env, "--account", "Alice@Example.org")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "reindexed 2 messages\n" and "reindexed 2/2" in done.stderr
    assert box.ids({"body": "会議"}) == [ja] and box.ids({"body": "reports"}) == [en]
    bob_finds = bob.call("Email/query", {"filter": {"body": "reports"}})["ids"]
    assert bob_finds == []  # another account's rows are left as they were

    again = reindex(env)
    assert again.returncode == 0 and again.stdout == "reindexed 1 messages\n", again.stderr
    assert bob.call("Email/query", {"filter": {"body": "reports"}})["ids"] == [bobs]
    assert reindex(env).stdout == "reindexed 0 messages\n"

    unknown = reindex(env, "--account", "nobody@example.org")
    assert unknown.returncode == 67 and "nobody@example.org" in unknown.stderr


def test_reindex_draws_a_bar_on_a_terminal(box, services, database_url, tmp_path):
    """On a terminal the progress is one line redrawn in place, ending at 100%."""
    for i in range(3):
        index_the_old_way(services.db, box.add(subject=f"m{i}", body=JAPANESE))
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "jmapmono", "search", "reindex"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
        env=cli_env(database_url, tmp_path),
        cwd=ROOT,
    )
    os.close(slave)
    seen = b""
    try:
        assert proc.wait(timeout=120) == 0
        while select.select([master], [], [], 0)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the child closed its side
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
        os.close(master)
    text = seen.decode(errors="replace")
    assert "\rreindexing [" in text and "3/3 100%" in text, text
    assert box.ids({"body": "会議"}) != []


def test_the_command_is_listed(tmp_path: Path):
    """``jmapmono search --help`` names the action."""
    env = cli_env("sqlite:///" + str(tmp_path / "x.sqlite3"), tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "jmapmono", "search", "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert out.returncode == 0 and "reindex" in out.stdout

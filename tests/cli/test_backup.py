"""``jmapmono backup PATH`` and ``--env-file`` as real subprocesses: outputs and exit codes."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

from jmapmono.cli.envfile import load_env_file, parse_env_file
from jmapmono.main import command_of, needs_gevent
from tests.support.servers import ROOT


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JMAPMONO_", "DATABASE_URL", "BROKER_URL"))}
    env.update(extra)
    return env


def jmapmono(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jmapmono", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60
    )


def test_backup_copies_a_consistent_database_and_refuses_to_overwrite(tmp_path):
    data = tmp_path / "data"
    env = clean_env(JMAPMONO_DATA_DIR=str(data))
    assert jmapmono(env, "user", "add", "alice@example.org", "--password", "pw").returncode == 0
    target = tmp_path / "backup.sqlite3"

    done = jmapmono(env, "backup", str(target))
    assert done.returncode == 0, done.stderr
    assert str(target) in done.stderr and str(data / "jmapmono.sqlite3") in done.stderr
    copy = sqlite3.connect(target)
    assert copy.execute("SELECT email FROM users").fetchall() == [("alice@example.org",)]
    assert copy.execute("PRAGMA journal_mode").fetchone() == ("delete",)  # one self-contained file
    copy.close()
    assert not list(tmp_path.glob(".*partial"))

    again = jmapmono(env, "backup", str(target))
    assert again.returncode == 73 and "--force" in again.stderr
    assert jmapmono(env, "backup", "--force", str(target)).returncode == 0


def test_backup_exit_codes_without_a_database_and_on_postgres(tmp_path):
    missing = jmapmono(clean_env(JMAPMONO_DATA_DIR=str(tmp_path / "none")), "backup", str(tmp_path / "b"))
    assert missing.returncode == 66 and "no database at" in missing.stderr
    assert not (tmp_path / "none").exists()  # looking did not create one

    pg = jmapmono(clean_env(DATABASE_URL="postgresql://u:secret@db.example:5432/mail"), "backup", str(tmp_path / "b"))
    assert pg.returncode == 69 and "pg_dump" in pg.stderr
    assert "secret" not in pg.stderr and "postgresql://u@db.example:5432/mail" in pg.stderr


def test_the_env_file_configures_the_cli_and_the_environment_wins(tmp_path):
    data = tmp_path / "from-file"
    env_file = tmp_path / "env"
    env_file.write_text(f"# settings\n\nJMAPMONO_DATA_DIR={data}\n; other comment\nJMAPMONO_LOG_LEVEL='WARNING'\n")
    added = jmapmono(clean_env(), "--env-file", str(env_file), "user", "add", "a@example.org", "--password", "p")
    assert added.returncode == 0, added.stderr
    assert f"in {data / 'jmapmono.sqlite3'}" in added.stderr  # says which database it wrote to
    assert (data / "jmapmono.sqlite3").exists()

    by_variable = jmapmono(clean_env(JMAPMONO_ENV_FILE=str(env_file)), "user", "list")
    assert by_variable.stdout.startswith("a@example.org\t")
    other = tmp_path / "other"
    overridden = jmapmono(clean_env(JMAPMONO_DATA_DIR=str(other)), "--env-file", str(env_file), "user", "list")
    assert overridden.stdout == "" and f"no users in {other / 'jmapmono.sqlite3'}" in overridden.stderr

    absent = jmapmono(clean_env(), "--env-file", str(tmp_path / "absent"), "user", "list")
    assert absent.returncode == 78 and "env file" in absent.stderr and "Traceback" not in absent.stderr
    # deliver holds the mail instead (an MTA bounces on 78)
    held = jmapmono(clean_env(), "--env-file", str(tmp_path / "absent"), "deliver", "--to", "a@example.org")
    assert held.returncode == 75 and "env file" in held.stderr and "Traceback" not in held.stderr


def test_env_file_format(tmp_path):
    path = tmp_path / "env"
    path.write_text("A=1\n  B = \"two words\" \nC='x=y'\n#D=4\nE=\n")
    assert parse_env_file(path) == {"A": "1", "B": "two words", "C": "x=y", "E": ""}
    environ = {"A": "kept"}
    load_env_file(path, environ)
    assert environ["A"] == "kept" and environ["B"] == "two words"
    path.write_text("A=1\nnot a setting\n")
    try:
        parse_env_file(path)
    except Exception as e:
        assert "line 2" in str(e)
    else:
        raise AssertionError("a line without = was accepted")


def test_an_env_file_before_the_command_does_not_hide_which_command_runs():
    assert command_of(["--env-file", "/etc/jmapmono/env", "deliver", "--to", "a@example.org"]) == "deliver"
    assert not needs_gevent(["--env-file", "/etc/jmapmono/env", "lmtp"])
    assert needs_gevent(["--env-file", "/etc/jmapmono/env", "serve"])

"""``python -m jmapmono events …`` as an operator runs it (a subprocess), against a bus running here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from jmapmono.config import Config, load_config
from jmapmono.events.bus import Event, EventBus
from jmapmono.events.deadletters import DeadLetterStore
from tests.support.events import FAST, Recorder
from tests.support.servers import ROOT, free_port
from tests.support.waiting import wait_until


@pytest.fixture
def bus(config, db) -> Iterator[EventBus]:
    """The serving process's mailbox bus (memory://), polling often for redelivery requests."""
    bus = EventBus("mailbox", config.broker_url, db, **FAST)
    yield bus
    bus.stop()


def run_cli(config, *args: str, database_url: str | None = None) -> subprocess.CompletedProcess:
    """``python -m jmapmono ARGS…`` on ``config``'s database and broker."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url or config.database_url,
        "BROKER_URL": config.broker_url,
        "JMAPMONO_DATA_DIR": str(config.data_dir),
        "JMAPMONO_LOG_LEVEL": "WARNING",
    }
    return subprocess.run(
        [sys.executable, "-m", "jmapmono", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def offline_config(tmp_path: Path) -> Config:
    """A configuration for commands that fail before they open any storage."""
    return load_config({"JMAPMONO_DATA_DIR": str(tmp_path), "JMAPMONO_LMTP_LISTEN": "off"})


def park(db, bus: str, group: str, event_type: str, error: str = "RuntimeError: boom") -> tuple[int, Event]:
    event = Event.new(event_type, {"accountId": "acc1"})
    return DeadLetterStore(db).park(bus, group, event, error, 4), event


def test_dead_letters_lists_parked_events(config, db):
    done = run_cli(config, "events", "dead-letters")
    assert (done.returncode, done.stdout.strip()) == (0, "no parked events")
    first, event = park(db, "mailbox", "changes", "Added", "ValueError: bad\nsecond line")
    second, _ = park(db, "jmap", "web-push", "StateChange")

    done = run_cli(config, "events", "dead-letters")
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split()[:5] == ["ID", "BUS", "GROUP", "TYPE", "ATTEMPTS"]
    assert rows[0].split()[:5] == [str(first), "mailbox", "changes", "Added", "4"]
    assert event.id in rows[0] and rows[0].endswith("ValueError: bad second line")
    assert rows[1].split()[:4] == [str(second), "jmap", "web-push", "StateChange"]

    done = run_cli(config, "events", "dead-letters", "--bus", "mailbox", "--json")
    [line] = done.stdout.splitlines()
    data = json.loads(line)
    assert (data["id"], data["group"], data["attempts"], data["error"]) == (
        first,
        "changes",
        4,
        "ValueError: bad\nsecond line",
    )
    assert data["event"] == {"id": event.id, "type": "Added", "payload": {"accountId": "acc1"}}
    assert data["failedAt"].endswith("Z") and data["redeliveryRequested"] is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "IDs or --all"),
        (("abc",), "invalid int value"),
        (("1", "--all"), "IDs or --all"),
        (("1", "--bus", "jmap"), "go with --all"),
        (("--all", "--wait", "-1"), "--wait"),
    ],
)
def test_redeliver_usage_errors_exit_64(tmp_path, args, message):
    done = run_cli(offline_config(tmp_path), "events", "redeliver", *args)
    assert done.returncode == 64
    assert message in done.stderr and "Traceback" not in done.stderr


def test_redeliver_unknown_id_exits_65(config, db):
    known, _ = park(db, "mailbox", "changes", "Added")
    done = run_cli(config, "events", "redeliver", str(known), "424242", "--wait", "0")
    assert done.returncode == 65
    assert "no parked event with id 424242" in done.stderr and "Traceback" not in done.stderr
    assert DeadLetterStore(db).get(known).redeliver_requested_at is None  # nothing requested


def test_redeliver_by_id_is_handled_by_the_running_bus(config, db, bus):
    broken = {"on": True}
    handler = Recorder(fail=lambda e: broken["on"])
    listener = Recorder()
    bus.register_group("changes", handler, retries=0)
    bus.register_key("acc1", listener)
    bus.start()
    event = Event.new("Added", {"accountId": "acc1"})
    bus.dispatch(event, ["acc1"])
    assert wait_until(lambda: len(DeadLetterStore(db).list()) == 1)
    [letter] = DeadLetterStore(db).list()

    broken["on"] = False
    done = run_cli(config, "events", "redeliver", str(letter.id))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["redelivery requested for 1 parked event(s)", f"{letter.id}  handled"]
    assert handler.events == [event] and listener.calls == 1
    assert DeadLetterStore(db).list() == []


def test_redeliver_all_reports_what_failed_again(config, db, bus):
    handler = Recorder(fail=lambda e: e.type == "Poison")
    bus.register_group("changes", handler, retries=0)
    bus.start()
    good, _ = park(db, "mailbox", "changes", "Fine")
    bad, _ = park(db, "mailbox", "changes", "Poison")
    other_bus, _ = park(db, "jmap", "changes", "Fine")

    done = run_cli(config, "events", "redeliver", "--all", "--bus", "mailbox")
    assert done.returncode == 75
    lines = done.stdout.splitlines()
    assert lines[0] == "redelivery requested for 2 parked event(s)"
    assert f"{good}  handled" in lines
    assert f"{bad}  failed again (attempts 5): RuntimeError: cannot handle Poison" in lines
    assert "stay parked" in done.stderr
    assert sorted(d.id for d in DeadLetterStore(db).list()) == [bad, other_bus]


def test_redeliver_without_a_running_server(config, db):
    letter, _ = park(db, "mailbox", "changes", "Added")
    done = run_cli(config, "events", "redeliver", str(letter), "--wait", "0.3")
    assert done.returncode == 75
    assert f"{letter}  pending: no running server has handled it yet" in done.stdout
    done = run_cli(config, "events", "redeliver", str(letter), "--wait", "0")
    assert done.returncode == 0
    assert DeadLetterStore(db).get(letter).redeliver_requested_at is not None  # a server will take it


def test_database_unavailable_exits_75(tmp_path):
    done = run_cli(
        offline_config(tmp_path),
        "events",
        "dead-letters",
        database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/none",
    )
    assert done.returncode == 75
    assert "database unavailable" in done.stderr and "Traceback" not in done.stderr

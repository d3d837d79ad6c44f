"""The outbox tail: every committed row of its bus, once, from where it started; ids that commit out of
order (Postgres sequences) are picked up when they appear."""

from __future__ import annotations

import json

from jmapmono.clock import now_ms
from jmapmono.events.bus import Event
from jmapmono.events.outbox_tail import OutboxTail
from jmapmono.store import Database


def write(db: Database, n: int, bus: str = "mailbox", row_id: int | None = None, body: str | None = None) -> int:
    event = body if body is not None else json.dumps({"type": "Added", "event_id": f"e{n}", "n": n})
    with db.transaction() as tx:
        if row_id is None:
            return int(
                tx.value(
                    "INSERT INTO event_outbox (bus, event, created_at) VALUES (?, ?, ?) RETURNING id",
                    (bus, event, now_ms()),
                )
            )
        tx.execute("INSERT INTO event_outbox (id, bus, event, created_at) VALUES (?, ?, ?, ?)", (row_id, bus, event, 0))
        return row_id


def tail_of(db: Database, **options: float) -> tuple[OutboxTail, list[Event]]:
    told: list[Event] = []
    tail = OutboxTail(db, "mailbox", told.append, **options)
    with db.read() as tx:
        tail.cursor = int(tx.value("SELECT COALESCE(MAX(id), 0) FROM event_outbox"))
    return tail, told


def test_every_row_committed_after_the_start_once_in_id_order(db):
    write(db, 0)  # before the start: pushed by whoever ran then
    tail, told = tail_of(db)
    for n in (1, 2, 3):
        write(db, n)
    assert tail.read() == 3
    write(db, 4)
    assert tail.read() == 1
    assert tail.read() == 0
    assert [e.id for e in told] == ["e1", "e2", "e3", "e4"]
    assert told[0].type == "Added" and told[0].payload["n"] == 1
    assert not tail.gaps


def test_an_id_that_commits_after_a_larger_one_is_still_delivered(db):
    tail, told = tail_of(db)
    base = tail.cursor
    write(db, 2, row_id=base + 2)  # committed first, though numbered after a transaction still open
    assert tail.read() == 1
    assert set(tail.gaps) == {base + 1}
    write(db, 1, row_id=base + 1)  # that transaction commits
    assert tail.read() == 1
    assert [e.id for e in told] == ["e2", "e1"]
    assert not tail.gaps and tail.stats["gaps_filled"] == 1


def test_a_gap_that_never_fills_is_given_up(db):
    tail, told = tail_of(db, gap_seconds=0)
    write(db, 3, row_id=tail.cursor + 3)  # ids + 1 and + 2 rolled back
    tail.read()
    tail.read()
    assert not tail.gaps and tail.stats["gaps_expired"] == 2
    assert [e.id for e in told] == ["e3"]


def test_rows_of_other_buses_and_malformed_rows_are_passed_over(db):
    tail, told = tail_of(db)
    write(db, 1, bus="elsewhere")
    write(db, 2, body="not json")
    write(db, 3)
    assert tail.read() == 1
    assert [e.id for e in told] == ["e3"] and tail.stats["malformed"] == 1
    assert not tail.gaps


def test_a_listener_that_fails_does_not_stop_the_others(db):
    told: list[str] = []

    def deliver(event: Event) -> None:
        if event.id == "e1":
            raise RuntimeError("boom")
        told.append(event.id)

    tail = OutboxTail(db, "mailbox", deliver)
    with db.read() as tx:
        tail.cursor = int(tx.value("SELECT COALESCE(MAX(id), 0) FROM event_outbox"))
    write(db, 1)
    write(db, 2)
    assert tail.read() == 1
    assert told == ["e2"] and tail.stats["failed"] == 1


def test_start_begins_at_the_last_committed_id(db):
    last = write(db, 0)
    tail = OutboxTail(db, "mailbox", lambda e: None, poll_interval=60)
    tail.start()
    try:
        assert tail.cursor == last
    finally:
        tail.stop()

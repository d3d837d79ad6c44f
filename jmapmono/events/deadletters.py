"""Event-bus state kept in the database: parked (dead-lettered) events and processed event ids.

Dead letters: a group-listener event that failed every attempt is parked in ``event_dead_letters``
(one row per bus, group and event id; parking it again adds to its attempts). An operator lists them
and asks for a redelivery (``python -m jmapmono events …``); the running buses poll for such requests,
claim a row (so one node handles it), run it through its group listener and delete it once handled.
The database, not the broker, carries the request: it reaches the serving process whatever the
transport (memory:// is per process) and works while the broker is down.

Processed ids: ``event_processed`` remembers, per bus and group, the events handled (``done = 1``)
or being handled (``done = 0`` with a lease), so a duplicate copy of an event (a publisher retry, a
broker redelivery) is skipped, and two nodes never run the same event at the same time. Rows are
pruned after a retention period.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from enum import Enum

from jmapmono.clock import now_ms
from jmapmono.events.event import Event
from jmapmono.store import Database, Row


@dataclass(frozen=True)
class DeadLetter:
    """One parked event."""

    id: int
    bus: str
    group: str
    event: Event
    error: str
    attempts: int
    created_at: int
    failed_at: int
    redeliver_requested_at: int | None

    @classmethod
    def from_row(cls, row: Row) -> DeadLetter:
        requested = row["redeliver_requested_at"]
        return cls(
            id=int(row["id"]),
            bus=row["bus"],
            group=row["group_name"],
            event=Event.from_json(row["event"]),
            error=row["error"],
            attempts=int(row["attempts"]),
            created_at=int(row["created_at"]),
            failed_at=int(row["failed_at"]),
            redeliver_requested_at=None if requested is None else int(requested),
        )


_COLUMNS = "id, bus, group_name, event, error, attempts, created_at, failed_at, redeliver_requested_at"


class DeadLetterStore:
    """The ``event_dead_letters`` table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def park(self, bus: str, group: str, event: Event, error: str, attempts: int) -> int:
        """Park ``event`` for ``group`` (or add to its attempts if already parked); release its
        processing claim in the same transaction so a later redelivery may claim it. Returns the row id."""
        now = now_ms()
        with self.db.transaction() as tx:
            tx.execute(
                "DELETE FROM event_processed WHERE bus = ? AND group_name = ? AND event_id = ? AND done = 0",
                (bus, group, event.id),
            )
            return int(
                tx.value(
                    "INSERT INTO event_dead_letters (bus, group_name, event_id, event_type, event, error, attempts,"
                    " created_at, failed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (bus, group_name, event_id) DO UPDATE SET"
                    " error = excluded.error, attempts = event_dead_letters.attempts + excluded.attempts,"
                    " failed_at = excluded.failed_at, redeliver_requested_at = NULL, claimed_until = NULL"
                    " RETURNING id",
                    (bus, group, event.id, event.type, event.to_json(), error[:2000], attempts, now, now),
                )
            )

    def list(self, bus: str | None = None, group: str | None = None) -> list[DeadLetter]:
        """Parked events, oldest first."""
        sql, params = f"SELECT {_COLUMNS} FROM event_dead_letters WHERE 1 = 1", []
        if bus is not None:
            sql += " AND bus = ?"
            params.append(bus)
        if group is not None:
            sql += " AND group_name = ?"
            params.append(group)
        with self.db.read() as tx:
            return [DeadLetter.from_row(r) for r in tx.query(sql + " ORDER BY id", params)]

    def get(self, dead_letter_id: int) -> DeadLetter | None:
        with self.db.read() as tx:
            row = tx.one(f"SELECT {_COLUMNS} FROM event_dead_letters WHERE id = ?", (dead_letter_id,))
        return None if row is None else DeadLetter.from_row(row)

    def request_redelivery(self, ids: builtins.list[int]) -> builtins.list[int]:
        """Ask the running buses to redeliver these parked events; return the ids that exist."""
        now = now_ms()
        marked = []
        with self.db.transaction() as tx:
            for dead_letter_id in ids:
                if tx.execute(
                    "UPDATE event_dead_letters SET redeliver_requested_at = ?, claimed_until = NULL WHERE id = ?",
                    (now, dead_letter_id),
                ):
                    marked.append(dead_letter_id)
        return marked

    def claim_requested(
        self, bus: str, groups: builtins.list[str], lease_ms: int, limit: int = 100
    ) -> builtins.list[DeadLetter]:
        """Claim up to ``limit`` redelivery requests of ``groups`` for this node (lease ``lease_ms``)."""
        if not groups:
            return []
        now = now_ms()
        marks = ", ".join("?" * len(groups))
        claimed = []
        with self.db.transaction() as tx:
            rows = tx.query(
                f"SELECT {_COLUMNS} FROM event_dead_letters WHERE bus = ? AND redeliver_requested_at IS NOT NULL"
                f" AND (claimed_until IS NULL OR claimed_until < ?) AND group_name IN ({marks}) ORDER BY id LIMIT ?",
                (bus, now, *groups, limit),
            )
            for row in rows:
                if tx.execute(
                    "UPDATE event_dead_letters SET claimed_until = ? WHERE id = ?"
                    " AND redeliver_requested_at IS NOT NULL AND (claimed_until IS NULL OR claimed_until < ?)",
                    (now + lease_ms, row["id"], now),
                ):
                    claimed.append(DeadLetter.from_row(row))
        return claimed

    def prune(self, older_than_ms: int) -> int:
        """Forget events parked before ``older_than_ms`` (never redelivered in the retention period); how many."""
        with self.db.transaction() as tx:
            return tx.execute("DELETE FROM event_dead_letters WHERE failed_at < ?", (older_than_ms,))

    def remove(self, dead_letter_id: int) -> None:
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM event_dead_letters WHERE id = ?", (dead_letter_id,))


class Claim(Enum):
    CLAIMED = "claimed"  # this caller now runs the handler
    DONE = "done"  # already handled: skip
    BUSY = "busy"  # another worker holds a live lease: wait, then try again


class ProcessedIds:
    """The ``event_processed`` table: which events each group has handled."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def claim(self, bus: str, group: str, event_id: str, lease_ms: int) -> Claim:
        """Take the right to handle ``event_id`` for ``group`` (a new claim, or one whose lease ran out).

        One ``lease_write`` (lost in a crash, the event is claimed again: the push need not wait for the
        disk); only a refused claim reads why."""
        now = now_ms()
        if self.db.lease_write(
            "INSERT INTO event_processed (bus, group_name, event_id, done, lease_until, updated_at)"
            " VALUES (?, ?, ?, 0, ?, ?) ON CONFLICT (bus, group_name, event_id) DO UPDATE SET"
            " lease_until = excluded.lease_until, updated_at = excluded.updated_at"
            " WHERE event_processed.done = 0 AND event_processed.lease_until < ? RETURNING done",
            (bus, group, event_id, now + lease_ms, now, now),
        ):
            return Claim.CLAIMED
        rows = self.db.query_alone(
            "SELECT done FROM event_processed WHERE bus = ? AND group_name = ? AND event_id = ?",
            (bus, group, event_id),
        )
        return Claim.DONE if rows and rows[0]["done"] else Claim.BUSY

    def extend(self, bus: str, group: str, event_id: str, lease_ms: int) -> None:
        """Renew this worker's claim (before a retry) so no other node takes over a live handler."""
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE event_processed SET lease_until = ?, updated_at = ?"
                " WHERE bus = ? AND group_name = ? AND event_id = ? AND done = 0",
                (now_ms() + lease_ms, now_ms(), bus, group, event_id),
            )

    def mark_done(self, bus: str, group: str, event_id: str, dead_letter_id: int | None = None) -> None:
        """Record ``event_id`` as handled (and drop its dead letter when it was a redelivery).

        A mark lost in a crash only lets a redelivered copy run the handler again (at least once), so it is a
        ``lease_write``; dropping a dead letter is a transaction of its own."""
        now = now_ms()
        mark = (
            "INSERT INTO event_processed (bus, group_name, event_id, done, lease_until, updated_at)"
            " VALUES (?, ?, ?, 1, 0, ?) ON CONFLICT (bus, group_name, event_id) DO UPDATE SET"
            " done = 1, lease_until = 0, updated_at = excluded.updated_at"
        )
        if dead_letter_id is None:
            self.db.lease_write(mark, (bus, group, event_id, now))
            return
        with self.db.transaction() as tx:
            tx.execute(mark, (bus, group, event_id, now))
            tx.execute("DELETE FROM event_dead_letters WHERE id = ?", (dead_letter_id,))

    def release(self, bus: str, group: str, event_id: str) -> None:
        """Give up an unfinished claim (the handler was interrupted)."""
        with self.db.transaction() as tx:
            tx.execute(
                "DELETE FROM event_processed WHERE bus = ? AND group_name = ? AND event_id = ? AND done = 0",
                (bus, group, event_id),
            )

    def prune(self, older_than_ms: int) -> int:
        """Forget processed ids last touched before ``older_than_ms``; return how many."""
        with self.db.transaction() as tx:
            return tx.execute("DELETE FROM event_processed WHERE updated_at < ?", (older_than_ms,))

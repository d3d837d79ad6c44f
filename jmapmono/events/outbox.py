"""The transactional outbox: events are written in the transaction that made the change.

An event is therefore published if and only if its change committed, even when the
broker is down or the process dies right after the commit. A relay reads the rows
still undispatched (:func:`pending`), publishes them, and marks them
(:func:`mark_dispatched`). Listeners in the writing process (:func:`subscribe`, kept with
the database) are told after commit, so a relay in the same process can wake at once
instead of polling; relays in other processes are woken by the doorbell (doorbell.py).

An event is anything with ``to_json()`` whose JSON has a ``type``; the outbox knows no event
type (the mailbox layer's are in jmapmono/mailbox/events.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from jmapmono.clock import now_ms
from jmapmono.events import doorbell
from jmapmono.store import Database, Transaction

log = logging.getLogger(__name__)


class OutboxEvent(Protocol):
    """What the outbox stores: an event that serialises itself (its JSON names its ``type``)."""

    def to_json(self) -> dict[str, Any]: ...


#: Told after commit with (outbox row id, bus, event) for every event written.
OutboxListener = Callable[[int, str, Any], None]


@dataclass(frozen=True)
class OutboxEntry:
    id: int
    bus: str
    event: dict
    created_at: int


def subscribe(db: Database, listener: OutboxListener) -> Callable[[], None]:
    """Be told after each commit on ``db`` in this process that wrote an event; returns a function that
    unsubscribes."""
    db.local_listeners.append(listener)

    def unsubscribe() -> None:
        if listener in db.local_listeners:
            db.local_listeners.remove(listener)

    return unsubscribe


def write(tx: Transaction, event: OutboxEvent, bus: str) -> int:
    """Write ``event`` into the outbox inside ``tx``; return its row id."""
    body = json.dumps(event.to_json(), separators=(",", ":"), sort_keys=True)
    outbox_id = int(
        tx.value(
            "INSERT INTO event_outbox (bus, event, created_at) VALUES (?, ?, ?) RETURNING id",
            (bus, body, now_ms()),
        )
    )
    if tx.local_listeners:
        listeners = list(tx.local_listeners)
        tx.after_commit(lambda: _notify(listeners, outbox_id, bus, event))
    # Relays in other processes (and on other nodes) wake at commit: NOTIFY on Postgres, a datagram on SQLite.
    doorbell.ring_after_commit(tx)
    return outbox_id


def _notify(listeners: list[OutboxListener], outbox_id: int, bus: str, event: OutboxEvent) -> None:
    for listener in listeners:
        try:
            listener(outbox_id, bus, event)
        except Exception:  # a listener never undoes a committed change
            log.exception("event=outbox_listener_failed listener=%r", listener)


def pending(tx: Transaction, limit: int = 100, bus: str | None = None) -> list[OutboxEntry]:
    """The oldest undispatched events by id (commit order within one account; ids of different
    accounts may commit out of order on Postgres, which is why rows are marked, not a cursor kept)."""
    sql = "SELECT id, bus, event, created_at FROM event_outbox WHERE dispatched_at IS NULL"
    params: list[object] = []
    if bus is not None:
        sql += " AND bus = ?"
        params.append(bus)
    rows = tx.query(sql + " ORDER BY id LIMIT ?", (*params, limit))
    return [OutboxEntry(int(r["id"]), r["bus"], json.loads(r["event"]), int(r["created_at"])) for r in rows]


def mark_dispatched(db: Database, ids: Iterable[int]) -> int:
    """Mark events as published; return how many were still pending. A mark lost in a crash only publishes
    the event again (receivers take one copy per event id), so it is a ``lease_write``."""
    ids = list(ids)
    done = 0
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        done += len(
            db.lease_write(
                "UPDATE event_outbox SET dispatched_at = ? WHERE dispatched_at IS NULL "
                f"AND id IN ({', '.join('?' * len(chunk))}) RETURNING id",
                (now_ms(), *chunk),
            )
        )
    return done

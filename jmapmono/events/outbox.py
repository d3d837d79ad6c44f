"""The transactional outbox: events are written in the transaction that made the change.

An event is therefore published if and only if its change committed, even when the
broker is down or the process dies right after the commit. A relay reads the rows
still undispatched (:func:`pending`), publishes them, and marks them
(:func:`mark_dispatched`). In-process listeners (:func:`subscribe`) are told after
commit, so a relay in the same process can wake at once instead of polling; relays in
other processes are woken by the doorbell (jmapmono/events/doorbell.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from jmapmono.clock import now_ms
from jmapmono.events import doorbell
from jmapmono.mailbox.events import MailboxEvent
from jmapmono.store import Transaction

log = logging.getLogger(__name__)

MAILBOX_BUS = "mailbox"

#: Called after commit with (outbox row id, bus, event) for every event written.
_listeners: list[Callable[[int, str, MailboxEvent], None]] = []


@dataclass(frozen=True)
class OutboxEntry:
    id: int
    bus: str
    event: dict
    created_at: int


def subscribe(listener: Callable[[int, str, MailboxEvent], None]) -> Callable[[], None]:
    """Be told after each commit that wrote an event; returns a function that unsubscribes."""
    _listeners.append(listener)

    def unsubscribe() -> None:
        if listener in _listeners:
            _listeners.remove(listener)

    return unsubscribe


def write(tx: Transaction, event: MailboxEvent, bus: str = MAILBOX_BUS) -> int:
    """Write ``event`` into the outbox inside ``tx``; return its row id."""
    body = json.dumps(event.to_json(), separators=(",", ":"), sort_keys=True)
    outbox_id = int(
        tx.value(
            "INSERT INTO event_outbox (bus, event, created_at) VALUES (?, ?, ?) RETURNING id",
            (bus, body, now_ms()),
        )
    )
    if _listeners:
        tx.after_commit(lambda: _notify(outbox_id, bus, event))
    # Relays in other processes (and on other nodes) wake at commit: NOTIFY on Postgres, a datagram on SQLite.
    doorbell.ring_after_commit(tx)
    return outbox_id


def _notify(outbox_id: int, bus: str, event: MailboxEvent) -> None:
    for listener in list(_listeners):
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


def mark_dispatched(tx: Transaction, ids: Iterable[int]) -> int:
    """Mark events as published; return how many were still pending."""
    ids = list(ids)
    done = 0
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        done += tx.execute(
            "UPDATE event_outbox SET dispatched_at = ? WHERE dispatched_at IS NULL "
            f"AND id IN ({', '.join('?' * len(chunk))})",
            (now_ms(), *chunk),
        )
    return done

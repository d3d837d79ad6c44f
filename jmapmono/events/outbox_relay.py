"""The outbox relay: publishes committed outbox rows on their bus, at least once, in id order.

Every mailbox mutation writes its event into ``event_outbox`` in the mutating transaction
(jmapmono/events/outbox.py), so an event exists if and only if its change committed, whatever
happens to the process or the broker afterwards. The relay turns rows into bus events:

1. claim: in one short transaction, take the oldest pending rows nobody holds (Postgres:
   ``FOR UPDATE SKIP LOCKED``, so relays on several nodes or workers take disjoint batches) and lease
   them (``claimed_until``);
2. publish each, in id order, outside any transaction: ``Event(id=event_id, type, payload=event JSON)``;
3. mark them dispatched in a second transaction (or, when the broker refused one, mark those before it
   and release the rest, then retry with backoff).

A relay that dies between 1 and 3 leaves its lease to lapse (``lease_seconds``); another relay then
publishes the same rows again. Copies of one event id are absorbed downstream: group listeners run
once per event id, key listeners skip ids they were given recently. Rows stay pending for as long as
the broker is unavailable; none is ever dropped.

Wake-up: at once after a commit in this process (``outbox.subscribe``), at once after a commit in
another process (the doorbell: a datagram on SQLite, NOTIFY on Postgres; see doorbell.py), and every
``poll_interval`` seconds in case a ring was lost. Dispatched rows are deleted after ``retention_seconds``.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import gevent
import gevent.event

from jmapmono import metrics
from jmapmono.clock import now_ms
from jmapmono.events import doorbell, outbox
from jmapmono.events.bus import BusUnavailable, Event, EventBus
from jmapmono.log import kv
from jmapmono.store import Database, StoreError

log = logging.getLogger("jmapmono.events.outbox_relay")

MAX_BACKOFF = 5.0
_PRUNE_CHUNK = 1000


def to_event(row_id: int, body: str) -> Event:
    """The bus event of one outbox row: its ``event_id``, ``type``, and the whole event as payload."""
    data = json.loads(body)
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ValueError("an outbox event is a JSON object with a type")
    event_id = data.get("event_id")
    if not isinstance(event_id, str) or not event_id:
        event_id = f"outbox-{row_id}"  # a deterministic id keeps re-publication idempotent
    return Event(event_id, data["type"], data)


class OutboxRelay:
    """Publishes this database's outbox to ``buses`` (outbox bus name -> bus). Run one per serving process;
    several may run against one database."""

    def __init__(
        self,
        db: Database,
        buses: Mapping[str, EventBus],
        *,
        batch_size: int = 100,
        poll_interval: float = 1.0,
        lease_seconds: float = 10.0,
        retention_seconds: float = 3600.0,
        prune_interval: float = 60.0,
    ) -> None:
        if not buses:
            raise ValueError("a relay needs at least one bus")
        self.db = db
        self.buses = dict(buses)
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.lease_ms = int(lease_seconds * 1000)
        self.retention_ms = int(retention_seconds * 1000)
        self.prune_interval = prune_interval
        #: published, batches, publish_failures, store_failures, malformed, pruned, wakeups
        self.stats: Counter[str] = Counter()
        self._wake = gevent.event.Event()
        #: Also called at every wake-up (commit here, doorbell, not the poll): the outbox tail reads then.
        self.on_wake: list[Callable[[], None]] = []
        #: Called with (bus name, event) just before each event is published: an early, best-effort use of it
        #: (the flow dispatches its JMAP event from here). A hook may return the event to publish instead (the
        #: same id, annotated); one that fails never stops publishing.
        self.before_publish: list[Callable[[str, Event], Event | None]] = []
        self._greenlet: gevent.Greenlet | None = None
        self._unsubscribe: Any = None
        self._doorbell: Any = None
        self._stopped = False
        self._marks = ", ".join("?" * len(self.buses))

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start relaying in a background greenlet; also listen for rings from other processes."""
        if self._greenlet is not None:
            return
        self._unsubscribe = outbox.subscribe(self.db, self._on_commit)
        self._doorbell = doorbell.listener_for(self.db, self.wake)
        try:
            self._doorbell.start()
        except OSError as e:  # e.g. a read-only data directory: the safety poll still relays
            log.warning(kv(event="doorbell_unavailable", error=str(e), poll_s=self.poll_interval))
            self._doorbell = None
        self._greenlet = gevent.spawn(self._run)
        log.info(kv(event="relay_started", buses=",".join(sorted(self.buses)), poll_s=self.poll_interval))

    def stop(self) -> None:
        """Stop promptly; rows claimed but not yet published are released for the next relay. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._doorbell is not None:
            self._doorbell.stop()
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=2)
            if not self._greenlet.dead:  # it ends at its next turn of the loop (``_stopped`` is set)
                log.warning(kv(event="relay_stop_slow", timeout_s=2))
            log.info(kv(event="relay_stopped", published=self.stats["published"]))

    def _on_commit(self, _outbox_id: int, bus: str, _event: object) -> None:
        if bus in self.buses:
            self.wake()

    def wake(self) -> None:
        """Look at the outbox now (thread-unsafe: call from the relay's own process and thread)."""
        self.stats["wakeups"] += 1
        self._wake.set()
        for also in self.on_wake:
            also()

    # -- the loop ----------------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.0
        next_prune = time.monotonic() + self.prune_interval
        while not self._stopped:
            self._wake.clear()
            try:
                self.drain()
            except BusUnavailable as e:
                if self._stopped:
                    return
                self.stats["publish_failures"] += 1
                backoff = min(MAX_BACKOFF, backoff * 2 or 0.1)
                log.warning(
                    kv(event="relay_publish_failed", error=str(e), pending=self._pending_hint(), retry_s=backoff)
                )
                gevent.sleep(backoff)  # rings do not shorten a backoff: the broker needs the time
                continue
            except StoreError as e:
                if self._stopped:  # stop() killed a database call: psycopg reports it as a failure
                    return
                self.stats["store_failures"] += 1
                backoff = min(MAX_BACKOFF, backoff * 2 or 0.1)
                log.warning(kv(event="relay_store_unavailable", error=str(e), retry_s=backoff))
                gevent.sleep(backoff)
                continue
            except Exception as e:  # a bug must not end relaying for the life of the process
                if self._stopped:
                    return
                self.stats["errors"] += 1
                backoff = min(MAX_BACKOFF, backoff * 2 or 0.1)
                log.exception(kv(event="relay_failed", error=f"{type(e).__name__}: {e}", retry_s=backoff))
                gevent.sleep(backoff)
                continue
            if backoff:
                log.info(kv(event="relay_recovered"))
                backoff = 0.0
            if time.monotonic() >= next_prune:
                try:
                    self.prune()
                except Exception as e:
                    log.warning(kv(event="relay_prune_failed", error=f"{type(e).__name__}: {e}"))
                next_prune = time.monotonic() + self.prune_interval
            self._wake.wait(self.poll_interval)

    def drain(self) -> int:
        """Publish pending rows until none is left to claim; return how many were published.

        Raises BusUnavailable (the broker refused; rows stay pending) or StoreError.
        """
        total = 0
        while not self._stopped:
            claimed = self._claim()
            if not claimed:
                return total
            total += self._publish(claimed)
            if len(claimed) < self.batch_size:
                return total
            gevent.sleep(0)  # a backlog must not starve the rest of the process
        return total

    def _claim(self) -> list[tuple[int, str, str, int]]:
        """Lease the oldest claimable rows: one statement, one round trip, its commit not waiting for the disk
        (a lease lost in a crash lapses anyway and the row is claimed again). Every push goes through it."""
        now = now_ms()
        lock = " FOR UPDATE SKIP LOCKED" if self.db.dialect == "postgres" else ""
        rows = self.db.lease_write(
            "UPDATE event_outbox SET claimed_until = ? WHERE id IN (SELECT id FROM event_outbox"
            " WHERE dispatched_at IS NULL AND (claimed_until IS NULL OR claimed_until < ?)"
            f" AND bus IN ({self._marks}) ORDER BY id LIMIT ?{lock}) RETURNING id, bus, event, created_at",
            (now + self.lease_ms, now, *self.buses, self.batch_size),
        )
        return sorted((int(r["id"]), r["bus"], r["event"], int(r["created_at"])) for r in rows)

    def _publish(self, claimed: list[tuple[int, str, str, int]]) -> int:
        started = time.monotonic()
        done: list[int] = []
        try:
            for row_id, bus, body, created in claimed:
                try:
                    event = to_event(row_id, body)
                except ValueError as e:  # can never be published: logged with its row id, not retried
                    self.stats["malformed"] += 1
                    log.error(kv(event="relay_malformed_event", outbox_id=row_id, bus=bus, error=str(e)))
                    done.append(row_id)
                    continue
                for hook in self.before_publish:
                    try:
                        event = hook(bus, event) or event
                    except Exception as e:
                        log.warning(kv(event="relay_hook_failed", outbox_id=row_id, error=f"{type(e).__name__}: {e}"))
                self.buses[bus].dispatch(event)
                done.append(row_id)
                metrics.RELAY_LAG.observe(max(0, now_ms() - created) / 1000)
        finally:
            self._settle(claimed, done)
        self.stats["published"] += len(done)
        self.stats["batches"] += 1
        lag = now_ms() - min(c[3] for c in claimed)
        log.info(
            kv(
                event="relay_published",
                events=len(done),
                oldest_lag_ms=lag,
                ms=round((time.monotonic() - started) * 1000, 1),
            )
        )
        return len(done)

    def _settle(self, claimed: list[tuple[int, str, str, int]], done: list[int]) -> None:
        """Mark what was published; release the rest of the claim so any relay may retry it at once.

        Bookkeeping whose loss only repeats work (``lease_write``): a mark lost in a crash publishes the row
        again when its lease lapses, and every receiver takes one copy per event id."""
        published = set(done)
        rest = [c[0] for c in claimed if c[0] not in published]
        try:
            outbox.mark_dispatched(self.db, done)
            if rest:
                self.db.lease_write(
                    "UPDATE event_outbox SET claimed_until = NULL WHERE dispatched_at IS NULL"
                    f" AND id IN ({', '.join('?' * len(rest))})",
                    rest,
                )
        except StoreError as e:  # the lease lapses and the rows are published again: duplicates, never loss
            log.warning(kv(event="relay_mark_failed", rows=len(claimed), error=str(e)))

    # -- housekeeping ------------------------------------------------------------------------------

    def prune(self) -> int:
        """Delete rows dispatched more than ``retention_seconds`` ago; return how many."""
        cutoff = now_ms() - self.retention_ms
        removed = 0
        started = time.monotonic()
        while True:
            with self.db.transaction() as tx:
                n = tx.execute(
                    "DELETE FROM event_outbox WHERE id IN (SELECT id FROM event_outbox"
                    " WHERE dispatched_at IS NOT NULL AND dispatched_at < ? LIMIT ?)",
                    (cutoff, _PRUNE_CHUNK),
                )
            removed += n
            if n < _PRUNE_CHUNK:
                break
            gevent.sleep(0)
        if removed:
            self.stats["pruned"] += removed
            log.info(kv(event="relay_pruned", rows=removed, ms=round((time.monotonic() - started) * 1000, 1)))
        return removed

    def pending(self) -> int:
        """Rows not yet dispatched (any bus)."""
        with self.db.read() as tx:
            return int(tx.value("SELECT COUNT(*) FROM event_outbox WHERE dispatched_at IS NULL") or 0)

    def _pending_hint(self) -> int | None:
        try:
            return self.pending()
        except Exception:
            return None

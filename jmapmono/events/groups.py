"""Group listeners: each event handled once per cluster, at least once, in effect exactly once per event id.

The transports only decide WHICH node gets an event copy (an in-process queue, or a shared RabbitMQ
work queue); this module decides what happens to it, the same way for both:

1. de-duplicate by event id: a claim row in ``event_processed`` (done: skip; leased by another
   worker: wait for it; else take it). Copies of one event inside this process wait for each other.
2. run the handler; on an exception retry with exponential backoff (``retries`` more attempts);
3. success: mark the id done (and drop its dead letter when it was a redelivery);
   every attempt failed: park it in ``event_dead_letters`` (one log line) and release the claim.

Database errors while doing the bookkeeping are retried until they pass: the copy is not
acknowledged meanwhile, so it is never lost.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import gevent
import gevent.event
import gevent.pool

from jmapmono import metrics
from jmapmono.events.deadletters import Claim, DeadLetterStore, ProcessedIds
from jmapmono.events.event import Event
from jmapmono.log import kv
from jmapmono.store import Database, StoreError

log = logging.getLogger("jmapmono.events")

MAX_BACKOFF = 30.0


@dataclass
class GroupSpec:
    """A registered group listener and its retry policy."""

    group: str
    handler: Callable[[Event], None]
    retries: int
    backoff: float
    concurrency: int
    #: Asked before the claim: False means nothing to do for this event (see ``EventBus.register_group``).
    wants: Callable[[Event], bool] | None = None
    pool: gevent.pool.Pool = field(init=False)

    def __post_init__(self) -> None:
        self.pool = gevent.pool.Pool(self.concurrency)

    def delay(self, attempt: int) -> float:
        """Backoff before attempt ``attempt + 1``: doubling, capped, with jitter so nodes spread out."""
        return min(MAX_BACKOFF, self.backoff * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)


def _error_text(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip()
    return text if len(text) <= 2000 else text[:1997] + "..."


class GroupRunner:
    """Runs group listeners for one bus with de-duplication, retries and dead letters."""

    def __init__(self, bus: str, db: Database, stats: Counter[str], lease_seconds: float) -> None:
        self.bus = bus
        self.db = db
        self.stats = stats
        self.lease_ms = int(lease_seconds * 1000)
        self.dead_letters = DeadLetterStore(db)
        self.processed = ProcessedIds(db)
        self._inflight: dict[tuple[str, str], gevent.event.Event] = {}
        #: Set by the bus's stop(): retry loops end even when a kill surfaces as a StoreError
        #: (a query interrupted by the kill fails its rollback).
        self.stopping = False

    def handle(self, spec: GroupSpec, event: Event, dead_letter_id: int | None = None) -> None:
        """Handle one copy of ``event`` for ``spec``; returns once it is done with (handled,
        skipped as a duplicate, or parked). Raises only when interrupted (stop)."""
        key = (spec.group, event.id)
        while (other := self._inflight.get(key)) is not None:
            other.wait()  # the same event is being handled here: the claim below then sees it done
        finished = gevent.event.Event()
        self._inflight[key] = finished
        try:
            self._handle(spec, event, dead_letter_id)
        finally:
            del self._inflight[key]
            finished.set()

    def _handle(self, spec: GroupSpec, event: Event, dead_letter_id: int | None) -> None:
        if not self._wanted(spec, event):
            self.stats["group_declined"] += 1
            if dead_letter_id is not None:  # nothing to do any more
                self._with_db(lambda: self.dead_letters.remove(dead_letter_id))
            return
        if not self._claim(spec, event):
            self.stats["group_duplicates"] += 1
            log.debug(kv(event="bus_duplicate_skipped", bus=self.bus, group=spec.group, event_id=event.id))
            if dead_letter_id is not None:  # handled through another copy meanwhile
                self._with_db(lambda: self.dead_letters.remove(dead_letter_id))
            return
        started = time.monotonic()
        attempts = 0
        completed = False
        try:
            while True:
                attempts += 1
                try:
                    spec.handler(event)
                except Exception as e:
                    self._check_stopping()  # a handler interrupted by stop() did not fail
                    error = _error_text(e)
                    if attempts > spec.retries:
                        break
                    self.stats["group_retries"] += 1
                    log.warning(
                        kv(
                            event="bus_handler_failed",
                            bus=self.bus,
                            group=spec.group,
                            event_id=event.id,
                            type=event.type,
                            attempt=attempts,
                            error=error,
                        )
                    )
                    gevent.sleep(spec.delay(attempts))
                    self._with_db(lambda: self.processed.extend(self.bus, spec.group, event.id, self.lease_ms))
                    continue
                self._with_db(lambda: self.processed.mark_done(self.bus, spec.group, event.id, dead_letter_id))
                completed = True
                self.stats["group_handled"] += 1
                if dead_letter_id is not None:
                    self._log_redelivery(spec, event, dead_letter_id, "handled", attempts, started)
                return
            self._with_db(lambda: self.dead_letters.park(self.bus, spec.group, event, error, attempts))
            completed = True
        finally:
            if not completed:  # interrupted: let another copy claim it at once
                try:
                    self.processed.release(self.bus, spec.group, event.id)
                except Exception:
                    log.debug("event=bus_release_failed", exc_info=True)
        self.stats["dead_lettered"] += 1
        metrics.DEAD_LETTERED.labels(self.bus).inc()
        ms = round((time.monotonic() - started) * 1000, 1)
        if dead_letter_id is not None:
            self._log_redelivery(spec, event, dead_letter_id, "failed", attempts, started, error)
        else:
            log.error(
                kv(
                    event="bus_dead_letter",
                    bus=self.bus,
                    group=spec.group,
                    event_id=event.id,
                    type=event.type,
                    attempts=attempts,
                    error=error,
                    ms=ms,
                )
            )

    def _wanted(self, spec: GroupSpec, event: Event) -> bool:
        """Whether the listener has anything to do for ``event`` (store errors retried; any other failure
        of the check leaves the decision to the handler and its retries)."""
        wants = spec.wants
        if wants is None:
            return True
        try:
            return bool(self._with_db(lambda: wants(event)))
        except Exception as e:
            log.debug(kv(event="bus_wants_failed", bus=self.bus, group=spec.group, error=_error_text(e)))
            return True

    def _claim(self, spec: GroupSpec, event: Event) -> bool:
        """True when this worker should run the handler; False for an already handled event."""
        wait = 0.05
        while True:
            state = self._with_db(lambda: self.processed.claim(self.bus, spec.group, event.id, self.lease_ms))
            if state is Claim.CLAIMED:
                return True
            if state is Claim.DONE:
                return False
            # Another node is handling this very event: wait for its outcome (or its lease to lapse).
            self._check_stopping()
            gevent.sleep(wait)
            wait = min(wait * 2, 1.0)

    def _with_db(self, fn: Callable[[], object]) -> object:
        """Run a bookkeeping step, retrying while the database is unavailable."""
        wait = 0.1
        while True:
            try:
                return fn()
            except StoreError as e:
                self._check_stopping()
                log.warning(kv(event="bus_store_unavailable", bus=self.bus, error=str(e), retry_in_s=wait))
                gevent.sleep(wait)
                wait = min(wait * 2, 5.0)

    def _check_stopping(self) -> None:
        if self.stopping:
            raise gevent.GreenletExit

    def _log_redelivery(
        self,
        spec: GroupSpec,
        event: Event,
        dead_letter_id: int,
        outcome: str,
        attempts: int,
        started: float,
        error: str | None = None,
    ) -> None:
        self.stats["redelivered"] += 1
        log.info(
            kv(
                event="bus_redelivered",
                bus=self.bus,
                group=spec.group,
                dead_letter=dead_letter_id,
                event_id=event.id,
                type=event.type,
                outcome=outcome,
                attempts=attempts,
                error=error,
                ms=round((time.monotonic() - started) * 1000, 1),
            )
        )

    def redeliver_requested(self, groups: dict[str, GroupSpec], spawn: Callable[..., object]) -> int:
        """Claim the redelivery requests for the groups registered here and start handling them."""
        claimed = self.dead_letters.claim_requested(self.bus, sorted(groups), self.lease_ms)
        for letter in claimed:
            spawn(self.handle, groups[letter.group], letter.event, letter.id)
        return len(claimed)

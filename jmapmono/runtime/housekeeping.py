"""Housekeeping: the periodic jobs of every serving process, each run once per cluster per interval.

Every serving process (``serve``, each gunicorn worker, each node) starts the same jobs; before each
run a job takes its lease in the store (jmapmono/store/leases.py) for most of its interval, so on one
database a job runs on one process per interval, whichever asks first, and still runs when that
process dies. Each run logs one line: ``event=housekeeping job=… removed=… ms=… result=ok``.

Jobs (interval): expired uploads and unreferenced blobs (10 min); the change log beyond
``JMAPMONO_CHANGES_RETENTION_DAYS`` (1 h); expired push subscriptions (1 h) and WebSocket tickets
(10 min); processed event ids kept for idempotence (10 min); dead letters beyond
``JMAPMONO_DEAD_LETTER_RETENTION_DAYS`` (1 h); failed logins past their windows and expired known-good
login addresses (10 min). Each first runs a few seconds after the process starts.
``JMAPMONO_HOUSEKEEPING_SECONDS`` runs them all at one interval instead, the first time after one
interval. The outbox relay prunes dispatched outbox rows itself, as it publishes.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import gevent
from gevent.event import Event as Flag

from jmapmono.clock import now_ms
from jmapmono.log import kv
from jmapmono.store import Database, leases

if TYPE_CHECKING:
    from jmapmono.runtime import Runtime

log = logging.getLogger("jmapmono.housekeeping")

#: Processed event ids are kept this long: a redelivery older than that could run a group listener twice.
PROCESSED_IDS_RETENTION_MS = 3 * 86_400_000
#: The first runs start this many seconds after the process (spread over the first seconds, not at once).
FIRST_RUN_DELAY = 5.0


@dataclass(frozen=True)
class Job:
    """A periodic job: its name (and lease), its interval in seconds, and what it does (returns how many
    rows or blobs it removed)."""

    name: str
    interval: float
    run: Callable[[], int]


def jobs_of(runtime: Runtime) -> list[Job]:
    """Every housekeeping job of a serving process."""
    from jmapmono.accounts import throttle
    from jmapmono.events.deadletters import DeadLetterStore, ProcessedIds
    from jmapmono.push import ws_tickets
    from jmapmono.push.subscriptions_store import PushSubscriptions

    db, config = runtime.db, runtime.config
    return [
        Job("blob_gc", 600.0, lambda: runtime.blobs.collect_garbage()),
        Job("changes_retention", 3600.0, lambda: runtime.changes.prune_expired()),
        Job("push_subscriptions_expired", 3600.0, lambda: PushSubscriptions(db).prune_expired()),
        Job("ws_tickets_expired", 600.0, lambda: ws_tickets.prune_expired(db)),
        Job("event_processed_ids", 600.0, lambda: ProcessedIds(db).prune(now_ms() - PROCESSED_IDS_RETENTION_MS)),
        Job(
            "dead_letters",
            3600.0,
            lambda: DeadLetterStore(db).prune(now_ms() - config.dead_letter_retention_days * 86_400_000),
        ),
        Job("login_failures", 600.0, lambda: throttle.prune_expired(db)),
    ]


class Housekeeping:
    """Runs ``jobs``, each in its own greenlet, until stopped."""

    def __init__(self, db: Database, jobs: list[Job], every: float = 0) -> None:
        self.db = db
        self.every = float(every)
        self.jobs = [Job(j.name, self.every, j.run) if every else j for j in jobs]
        #: Who holds a lease: unique per process and start.
        self.holder = f"{os.getpid()}.{secrets.token_hex(4)}"
        self._stopping = Flag()
        self._greenlets: list[gevent.Greenlet] = []

    def start(self) -> None:
        for i, job in enumerate(self.jobs):
            first = self.every or min(job.interval, FIRST_RUN_DELAY + i * 0.5)
            self._greenlets.append(gevent.spawn(self._loop, job, first))

    def stop(self) -> None:
        self._stopping.set()
        gevent.killall(self._greenlets, timeout=2)
        self._greenlets = []

    def _loop(self, job: Job, first: float) -> None:
        delay = first
        while not self._stopping.wait(delay):
            delay = job.interval
            self.run_once(job)

    def run_once(self, job: Job) -> bool:
        """Run ``job`` if its lease is free; True if it ran (a failure is logged and retried next interval)."""
        started = time.monotonic()
        try:
            if not leases.try_acquire(self.db, f"housekeeping:{job.name}", self.holder, job.interval * 0.9):
                return False
            removed = job.run()
            result = "ok"
        except Exception as e:  # a failed run is logged and tried again at the next interval
            removed, result = 0, f"{type(e).__name__}: {e}"
        ms = f"{(time.monotonic() - started) * 1000:.1f}"
        log.info(kv(event="housekeeping", job=job.name, removed=removed, ms=ms, result=result))
        return True

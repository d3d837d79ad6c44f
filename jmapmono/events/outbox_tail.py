"""The outbox tail: every process reads every committed outbox row, for its own key listeners.

On memory:// the bus of one process is the whole cluster: the relay that claims a row publishes it
there, so its group listeners run once per cluster, but only the key listeners of that one process
hear of it. Several serving processes on one database (``serve --workers N``, gunicorn workers) would
each push to a share of the sockets. So each such process also TAILS the outbox: a cursor on
``event_outbox`` ids, advanced by the same wake-ups as its relay (a commit in this process, the
doorbell, the safety poll), hands each row to ``deliver`` (the flow turns it into its JMAP event and
tells this process's key listeners only). The bus gives each (event id, key) to a listener once, so the
copy that the claiming process also delivers through its group listener is absorbed.

Commit order and id order: on SQLite one transaction writes at a time and ids are AUTOINCREMENT
(never reused), so a row with a smaller id is always visible before a larger one: the cursor alone
never misses a row. On Postgres ids come from a sequence and concurrent transactions commit in any
order, so an id skipped by the cursor is a *gap*, looked up again at every pass until it appears or
``gap_seconds`` have passed (a rolled-back transaction leaves a gap that never fills). Rows are deleted
an hour after dispatch (the relay's retention): far behind any tail.

A tail starts at the current last id: what was committed before it started was pushed by the processes
running then, and clients resync with pushState and ``*/changes`` when they reconnect.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

import gevent
import gevent.event

from jmapmono.events.event import Event
from jmapmono.events.outbox_relay import to_event
from jmapmono.log import kv
from jmapmono.store import Database, StoreError

log = logging.getLogger("jmapmono.events.outbox_tail")

#: How long a skipped id may still appear (a Postgres transaction still committing).
GAP_SECONDS = 30.0
#: Skipped ids followed at once; a larger jump (a burst of rollbacks) is not followed beyond it.
MAX_GAPS = 10_000
MAX_BACKOFF = 5.0


class OutboxTail:
    """Reads the outbox rows of ``bus`` in id order as they commit and calls ``deliver`` with each event."""

    def __init__(
        self,
        db: Database,
        bus: str,
        deliver: Callable[[Event], None],
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        gap_seconds: float = GAP_SECONDS,
    ) -> None:
        self.db = db
        self.bus = bus
        self.deliver = deliver
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.gap_seconds = gap_seconds
        #: The highest id read so far (every id at or below it was read, or is a gap below).
        self.cursor = 0
        #: Skipped ids -> when they were first skipped (monotonic seconds).
        self.gaps: dict[int, float] = {}
        #: delivered, malformed, failed, gaps_filled, gaps_expired, passes
        self.stats: Counter[str] = Counter()
        self._wake = gevent.event.Event()
        self._greenlet: gevent.Greenlet | None = None
        self._stopped = False

    def start(self) -> None:
        """Start from the last id committed now; follow in a background greenlet."""
        if self._greenlet is not None:
            return
        with self.db.read() as tx:
            self.cursor = int(tx.value("SELECT COALESCE(MAX(id), 0) FROM event_outbox") or 0)
        self._greenlet = gevent.spawn(self._run)
        log.info(kv(event="outbox_tail_started", bus=self.bus, from_id=self.cursor))

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=2)
            log.info(kv(event="outbox_tail_stopped", delivered=self.stats["delivered"], cursor=self.cursor))

    def wake(self) -> None:
        """Read now (call from this process's hub thread: the relay's wake-ups call it)."""
        self._wake.set()

    def _run(self) -> None:
        backoff = 0.0
        while not self._stopped:
            self._wake.clear()
            try:
                self.read()
            except Exception as e:  # the database is away, or a bug: never end tailing for the process
                if self._stopped:
                    return
                backoff = min(MAX_BACKOFF, backoff * 2 or 0.1)
                level = logging.WARNING if isinstance(e, StoreError) else logging.ERROR
                log.log(level, kv(event="outbox_tail_failed", error=f"{type(e).__name__}: {e}", retry_s=backoff))
                gevent.sleep(backoff)
                continue
            backoff = 0.0
            self._wake.wait(self.poll_interval if not self.gaps else min(self.poll_interval, 0.2))

    def read(self) -> int:
        """Deliver every row committed since the last pass (and any gap that filled); return how many."""
        self.stats["passes"] += 1
        delivered = self._fill_gaps() if self.gaps else 0
        while not self._stopped:
            with self.db.read() as tx:
                rows = tx.query(
                    "SELECT id, bus, event FROM event_outbox WHERE id > ? ORDER BY id LIMIT ?",
                    (self.cursor, self.batch_size),
                )
            now = time.monotonic()
            for row in rows:
                row_id = int(row["id"])
                if row_id > self.cursor + 1 and len(self.gaps) < MAX_GAPS:
                    for missing in range(self.cursor + 1, min(row_id, self.cursor + 1 + MAX_GAPS - len(self.gaps))):
                        self.gaps[missing] = now
                self.cursor = row_id
                delivered += self._hand(row_id, row["bus"], row["event"])
            if len(rows) < self.batch_size:
                break
            gevent.sleep(0)  # a backlog must not starve the sockets of this process
        return delivered

    def _fill_gaps(self) -> int:
        ids = sorted(self.gaps)
        delivered = 0
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            with self.db.read() as tx:
                rows = tx.query(
                    f"SELECT id, bus, event FROM event_outbox WHERE id IN ({', '.join('?' * len(chunk))}) ORDER BY id",
                    chunk,
                )
            for row in rows:
                row_id = int(row["id"])
                if self.gaps.pop(row_id, None) is not None:
                    self.stats["gaps_filled"] += 1
                    delivered += self._hand(row_id, row["bus"], row["event"])
        expired = [i for i, since in self.gaps.items() if time.monotonic() - since > self.gap_seconds]
        for row_id in expired:
            del self.gaps[row_id]
        if expired:
            self.stats["gaps_expired"] += len(expired)
            log.debug(kv(event="outbox_tail_gaps_expired", ids=len(expired)))
        return delivered

    def _hand(self, row_id: int, bus: str, body: str) -> int:
        if bus != self.bus:
            return 0
        try:
            event = to_event(row_id, body)
        except ValueError:  # the relay logs it once, with its row id
            self.stats["malformed"] += 1
            return 0
        try:
            self.deliver(event)
        except Exception as e:  # one event that cannot be told must not stop the others
            self.stats["failed"] += 1
            log.warning(kv(event="outbox_tail_deliver_failed", outbox_id=row_id, error=f"{type(e).__name__}: {e}"))
            return 0
        self.stats["delivered"] += 1
        return 1

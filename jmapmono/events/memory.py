"""The in-process transport (``memory://``): one process is the whole cluster.

No broker and no polling: a dispatched event is put on one gevent queue per group listener, and a
worker greenlet per group hands each to the group's bounded pool. Key listeners are all local, so the
bus's local fast path already delivered to them; there is nothing to bind. Every bus instance is its
own world (two instances in one process do not see each other's events). Events still queued when
the bus stops are dropped: clients catch up through ``*/changes``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import gevent
import gevent.queue

from jmapmono.events.event import Event
from jmapmono.events.groups import GroupSpec

if TYPE_CHECKING:
    from jmapmono.events.transport import TransportHost


class MemoryTransport:
    def __init__(self, bus: TransportHost) -> None:
        self.bus = bus
        self._queues: dict[str, gevent.queue.Queue] = {}
        self._workers: dict[str, gevent.Greenlet] = {}
        self._started = False

    def start(self) -> None:
        self._started = True
        for spec in self.bus.groups.values():
            self._start_worker(spec)
        self.bus.set_ready(True)

    def stop(self) -> None:
        self._started = False
        gevent.killall(list(self._workers.values()), block=True, timeout=1)
        self._workers.clear()

    def add_group(self, spec: GroupSpec) -> None:
        self._queues[spec.group] = gevent.queue.Queue()
        if self._started:
            self._start_worker(spec)

    def _start_worker(self, spec: GroupSpec) -> None:
        if spec.group not in self._workers:
            self._workers[spec.group] = gevent.spawn(self._work, spec, self._queues[spec.group])

    def _work(self, spec: GroupSpec, queue: gevent.queue.Queue) -> None:
        for event in queue:
            spec.pool.spawn(self.bus.run_group, spec, event)  # blocks while the pool is full

    def publish(self, body: str, event: Event, keys: list[str]) -> None:
        # The key listeners are local: the bus called them already.
        for queue in self._queues.values():
            queue.put(Event.from_json(body))  # a private copy per group: handlers cannot disturb each other

    def bind_key(self, key: str) -> None:
        """Nothing to do: every listener is local."""

    def unbind_key(self, key: str) -> None:
        """Nothing to do: every listener is local."""

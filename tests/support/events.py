"""For event bus and event flow tests: a recording listener, fast bus options, waiting for the flow to settle."""

from __future__ import annotations

import time
from collections.abc import Callable

import gevent.event

from jmapmono.events.bus import Event
from tests.support.waiting import wait_until

#: Bus options for tests: retries and redelivery polls in milliseconds, not seconds.
FAST = {"retry_backoff": 0.001, "redelivery_interval": 0.05}


class Recorder:
    """A key listener, or a group handler, that records the events it gets; ``fail`` raises for those it
    says yes to (``calls`` counts them too, ``events`` does not)."""

    def __init__(self, fail: Callable[[Event], bool] | None = None) -> None:
        self.events: list[Event] = []
        self.calls = 0
        self.fail = fail
        self._changed = gevent.event.Event()

    def __call__(self, event: Event) -> None:
        self.calls += 1
        self._changed.set()
        if self.fail is not None and self.fail(event):
            raise RuntimeError(f"cannot handle {event.type}")
        self.events.append(event)
        self._changed.set()

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.events]

    def wait_count(self, n: int, timeout: float = 10.0) -> list[Event]:
        """The events, once there are at least ``n``; AssertionError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while len(self.events) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{len(self.events)} events after {timeout}s, expected {n}: {self.events}")
            self._changed.clear()
            if len(self.events) < n:
                self._changed.wait(remaining)
        return self.events

    def clear(self) -> None:
        self.events.clear()


def group_outcomes(stats) -> int:
    """Group copies a bus is done with: handled, skipped as duplicates, declined by ``wants``, parked."""
    return stats["group_handled"] + stats["group_duplicates"] + stats["group_declined"] + stats["dead_lettered"]


def settle(flow, timeout: float = 10.0) -> None:
    """Wait until everything committed so far went all the way through the flow to the key listeners."""
    wait_until(lambda: flow.relay.pending() == 0, timeout, message="the outbox to be published")
    published = flow.relay.stats["published"]
    stats = flow.mailbox_bus.stats
    wait_until(
        lambda: group_outcomes(stats) >= published,
        timeout,
        message="the MailboxChangeListener to handle every event",
    )  # its key listeners were called inline, before the handler returned

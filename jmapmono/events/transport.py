"""The interface between the event bus and its transports (memory.py, rabbitmq.py).

A transport moves serialized events: group copies to the work queue of each group, key copies to the
processes that bound the key. It reaches its bus only through :class:`TransportHost`, which the bus
implements; the bus reaches it only through :class:`Transport`. Neither imports the other.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Protocol

from jmapmono.events.event import Event
from jmapmono.events.groups import GroupSpec


class TransportHost(Protocol):
    """What a transport may use of the bus it carries."""

    name: str
    #: The broker the bus was configured with (``memory://``, ``amqp://…``).
    broker_url: str
    #: This bus instance on the broker: its own key copies come back and are skipped.
    origin: str
    #: Seconds between broker heartbeats; also how long one call may wait for the broker's answer.
    heartbeat: float
    #: Seconds after its last use the broker deletes this instance's key queue.
    node_queue_expires: float
    groups: dict[str, GroupSpec]
    stats: Counter[str]
    #: Held while keys are bound or re-bound, so that a key registered meanwhile is not missed.
    bind_lock: threading.RLock

    @property
    def ready(self) -> bool: ...

    def keys(self) -> list[str]:
        """Every key a local listener listens to."""
        ...

    def set_ready(self, ready: bool) -> None:
        """The transport is (or no longer is) connected and consuming."""
        ...

    def run_group(self, spec: GroupSpec, event: Event, dead_letter_id: int | None = None) -> None:
        """Hand one group copy to its listener (with retries, dead letters and idempotence)."""
        ...

    def on_remote_key(self, key: str, event: Event, origin: str | None) -> None:
        """A key copy arrived from the broker (skipped when ``origin`` is this bus)."""
        ...


class Transport(Protocol):
    """What the bus asks of a transport."""

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def add_group(self, spec: GroupSpec) -> None: ...
    def publish(self, body: str, event: Event, keys: list[str]) -> None:
        """One copy per key, then the copy of each group."""
        ...

    def bind_key(self, key: str) -> None: ...
    def unbind_key(self, key: str) -> None: ...

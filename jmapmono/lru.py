"""A least-recently-used map bounded by an estimate of the memory its entries hold.

The caches of a process (parsed messages, rendered emails) keep values whose size the caller estimates; one
too big for an eighth of the bound is not kept, so that it cannot flush everything else out. gevent runs one
greenlet at a time, so no lock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SizedLRU(Generic[K, V]):
    """Entries under ``max_bytes`` of estimated memory (0: keep nothing), least recently used out first."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self.held_bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[0]

    def put(self, key: K, value: V, size: int) -> bool:
        """Keep ``value`` (estimated at ``size`` bytes) if it fits its share; whether it was kept."""
        if size > self.max_bytes // 8:
            return False
        old = self._entries.pop(key, None)
        if old is not None:
            self.held_bytes -= old[1]
        self._entries[key] = (value, size)
        self.held_bytes += size
        while self.held_bytes > self.max_bytes:
            _, (_, dropped) = self._entries.popitem(last=False)
            self.held_bytes -= dropped
        return True

    def __len__(self) -> int:
        return len(self._entries)

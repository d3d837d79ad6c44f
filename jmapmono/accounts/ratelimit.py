"""Failed-login rate limiting: a sliding one-minute window per key, per process.

Each key (a client address, a user name) keeps the times of its most recent
failures, at most ``limit`` of them: that is all a sliding window needs to say
whether the key is over its limit and when the oldest failure leaves the
window. Keys are kept in LRU order and the least recently failing ones are
dropped beyond ``max_keys``, so memory stays bounded whatever an attacker sends
(an attacker's own key is the most recently used, so it is never the one dropped).

An attempt takes its slot *before* the password is checked (``begin``) and
gives it back on success (``cancel``): concurrent guesses from one client
cannot all slip in before the first failure is counted, and a success gives
back only its own slot, never another client's failures.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

WINDOW_SECONDS = 60.0


@dataclass
class Attempt:
    """The slots one login attempt holds: ``(limiter, key, timestamp)``."""

    slots: list[tuple[SlidingWindowLimiter, str, float]] = field(default_factory=list)

    def cancel(self) -> None:
        """The attempt succeeded: give its slots back."""
        for limiter, key, stamp in self.slots:
            limiter.release(key, stamp)
        self.slots.clear()


class SlidingWindowLimiter:
    """At most ``limit`` failures per key in any ``window`` seconds."""

    def __init__(
        self,
        limit: int,
        window: float = WINDOW_SECONDS,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = max(1, limit)
        self.window = window
        self.max_keys = max_keys
        self.clock = clock
        self._keys: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._keys)

    def _recent(self, key: str, now: float) -> deque[float] | None:
        stamps = self._keys.get(key)
        if stamps is None:
            return None
        while stamps and stamps[0] <= now - self.window:
            stamps.popleft()
        if not stamps:
            del self._keys[key]
            return None
        return stamps

    def retry_after(self, key: str) -> int:
        """Seconds until ``key`` may try again (0: it may now)."""
        with self._lock:
            now = self.clock()
            stamps = self._recent(key, now)
            if stamps is None or len(stamps) < self.limit:
                return 0
            return max(1, math.ceil(stamps[0] + self.window - now))

    def take(self, key: str) -> float | None:
        """Count one failure for ``key`` now; None (nothing counted) when it is already over its limit."""
        with self._lock:
            now = self.clock()
            stamps = self._recent(key, now)
            if stamps is None:
                stamps = self._keys[key] = deque(maxlen=self.limit)
                while len(self._keys) > self.max_keys:
                    self._keys.popitem(last=False)
            elif len(stamps) >= self.limit:
                return None
            self._keys.move_to_end(key)
            stamps.append(now)
            return now

    def release(self, key: str, stamp: float) -> None:
        """Forget one failure counted by :meth:`take` (the attempt succeeded)."""
        with self._lock:
            stamps = self._keys.get(key)
            if stamps is None:
                return
            try:
                stamps.remove(stamp)
            except ValueError:
                return
            if not stamps:
                del self._keys[key]


class RateLimitExceeded(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry after {retry_after} s")
        self.retry_after = retry_after


def begin(*pairs: tuple[SlidingWindowLimiter, str]) -> Attempt:
    """Take one slot in each ``(limiter, key)``, or none at all when any is over its limit.

    Raises :class:`RateLimitExceeded` with the longest wait among the keys over their limit.
    """
    waits = [limiter.retry_after(key) for limiter, key in pairs]
    if any(waits):
        raise RateLimitExceeded(max(waits))
    attempt = Attempt()
    for limiter, key in pairs:
        stamp = limiter.take(key)
        if stamp is None:  # lost a race to another attempt of the same key
            attempt.cancel()
            raise RateLimitExceeded(max(1, limiter.retry_after(key)))
        attempt.slots.append((limiter, key, stamp))
    return attempt

"""Row ids that sort in the order they were made.

Lists that promise "oldest first" order by a creation time in milliseconds, then by id: two rows made in
the same millisecond tie on the time, so the id must carry the order. An id from :class:`OrderedIds` is a
millisecond stamp followed by a tail that is random when the millisecond is new and counts up while it
lasts, written in an alphabet whose ASCII order is its numeric order. The ids of one process therefore
sort (as strings, in SQL too) in the order they were made, within one millisecond and even if the clock
steps back; ids made by different processes in the same millisecond sort in an arbitrary, fixed order.
"""

from __future__ import annotations

import secrets
import threading

from jmapmono import clock


class OrderedIds:
    """Makes ids of ``length`` characters of ``alphabet`` (a power of two of them, in ASCII order), the
    first ``stamp_chars`` of which hold the milliseconds since the epoch."""

    def __init__(self, alphabet: str, length: int, stamp_chars: int) -> None:
        bits = len(alphabet).bit_length() - 1
        if len(alphabet) != 2**bits or list(alphabet) != sorted(set(alphabet)) or not 0 < stamp_chars < length:
            raise ValueError("the alphabet must be 2**n distinct characters in ASCII order, the stamp shorter")
        self._alphabet = alphabet
        self._bits = bits
        self._length = length
        self._tail_bits = bits * (length - stamp_chars)
        self._last = 0
        self._lock = threading.Lock()

    def __call__(self) -> str:
        # A random tail in the lower half of its range leaves room to count up within the millisecond.
        fresh = (clock.now_ms() << self._tail_bits) | secrets.randbits(self._tail_bits - 1)
        with self._lock:
            value = self._last = max(fresh, self._last + 1)
        mask = (1 << self._bits) - 1
        return "".join(self._alphabet[(value >> (self._bits * i)) & mask] for i in range(self._length - 1, -1, -1))

"""The one clock every layer stamps rows with: milliseconds since the epoch (UTC)."""

from __future__ import annotations

import time


def now_ms() -> int:
    """The current time in whole milliseconds since the epoch."""
    return int(time.time() * 1000)

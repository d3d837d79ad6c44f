"""Making things happen in one millisecond: the wall clock stopped while a test creates several rows.

``jmapmono.clock.now_ms`` (every created_at, send_at, …) and the ids' stamps (jmapmono/ids.py) read the
wall clock; with it stopped, rows made one after the other tie on every time, and only the product's own
ordering can tell them apart. A list that promises "in the order they were made" must still give them so.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


@contextmanager
def one_millisecond(monkeypatch: pytest.MonkeyPatch, at: float | None = None) -> Iterator[None]:
    """Inside: ``time.time()`` returns ``at`` (by default the time of entry: what is made inside does not
    expire the moment the clock moves on), whole milliseconds. Monotonic clocks, gevent's included, run on."""
    stopped = round(time.time() if at is None else at, 3)
    with monkeypatch.context() as patch:
        patch.setattr(time, "time", lambda: stopped)
        yield

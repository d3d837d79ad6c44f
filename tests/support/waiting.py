"""Waiting for a condition: the one way tests wait for something to happen.

A test never sleeps to let something happen, nor checks how fast it happened: it waits until what it
expects is true (``timeout`` is a failure bound, never part of what is asserted). To show that something
did NOT happen, it makes a later thing happen that must come after it (a marker event, a ping, a second
delivery), waits for that, then asserts the unwanted thing is not there.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import gevent

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.005, message: str = "condition"
) -> T:
    """Call ``predicate`` every ``interval`` seconds (yielding to other greenlets meanwhile) until it
    returns something true, and return that. AssertionError naming ``message`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        gevent.sleep(interval)

"""Replies sent in the background after a delivery, and waited for before the process lets go of the store.

A delivery must not wait for an automatic reply (vacation, a Sieve script's vacation): each runs in a thread
of its own (not a daemon, so a ``deliver`` process finishes its reply before it exits), and the runtime waits
for those still running before it closes the database.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from jmapmono.log import kv

log = logging.getLogger(__name__)

#: The longest shutdown waits for replies still being sent, seconds.
CLOSE_TIMEOUT = 30.0


class BackgroundWork:
    """Threads started for one kind of work (``name``, logged with its failures), each tracked until done."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._workers: set[threading.Thread] = set()
        self._lock = threading.Lock()

    def start(self, label: str, fn: Callable[..., Any], *args: Any, **fields: Any) -> None:
        """Run ``fn(*args)`` in a thread; a failure is logged (``event=<name>_failed`` with ``fields``), never
        raised: it must not affect the delivery that caused it."""

        def run() -> None:
            try:
                fn(*args)
            except Exception as e:
                log.warning(kv(event=f"{self.name}_failed", **fields, error=repr(e)))
            finally:
                with self._lock:
                    self._workers.discard(threading.current_thread())

        worker = threading.Thread(target=run, name=f"{self.name}-{label}", daemon=False)
        with self._lock:  # started and registered together: the worker unregisters itself under the same lock
            worker.start()
            self._workers.add(worker)

    def wait_idle(self, timeout: float = CLOSE_TIMEOUT) -> bool:
        """Wait until no work is running (tests; shutdown); True if none is left."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                workers = list(self._workers)
            if not workers:
                return True
            for worker in workers:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                worker.join(remaining)

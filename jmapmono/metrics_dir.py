"""The shared metrics directory of a multi-process server (prometheus_client's multiprocess mode).

The parent prepares it before any serving child starts (gunicorn's ``on_starting`` hook, ``serve``
before its children): every child inherits ``PROMETHEUS_MULTIPROC_DIR`` and writes its own files
there; ``GET /metrics`` in any of them sums all. Files of a previous run are removed at start (their
counts are not this run's), and a child's live gauges go when it exits (:func:`mark_process_dead`,
gunicorn's ``child_exit`` hook). This module does not import prometheus_client at import time: the
environment must be set before the library reads it, in the parent and in every child.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Create (or empty) the directory and export it to this process's future children; returns it.

    ``PROMETHEUS_MULTIPROC_DIR`` when set, else ``<data_dir>/metrics`` (``JMAPMONO_DATA_DIR``, ``data``)."""
    configured = os.environ.get(ENV)
    if configured:
        path = Path(configured)
    else:
        base = data_dir if data_dir is not None else (os.environ.get("JMAPMONO_DATA_DIR") or "data")
        path = Path(base) / "metrics"
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)
    os.environ[ENV] = str(path)
    return path


def mark_process_dead(pid: int) -> None:
    """Forget the live gauges (open connections, listeners) of an exited child; its counters stay summed."""
    if not os.environ.get(ENV):
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)

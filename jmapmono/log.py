"""Logging: one line per event, ``key=value`` pairs, at INFO by default.

Callers log ``event=… user=… ms=…`` so an operator can grep who did what and how
long it took. :func:`kv` quotes values that contain spaces.
"""

from __future__ import annotations

import logging
import sys


def kv(**fields: object) -> str:
    """Format fields as ``k=v`` pairs; values with spaces or quotes are quoted."""
    parts = []
    for key, value in fields.items():
        text = "-" if value is None else str(value)
        if not text or any(c in text for c in ' "=\n'):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
        parts.append(f"{key}={text}")
    return " ".join(parts)


def setup_logging(level: str = "INFO") -> None:
    """Configure the root logger once for the process (idempotent)."""
    root = logging.getLogger()
    if not any(getattr(h, "_jmapmono", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        handler._jmapmono = True  # type: ignore[attr-defined]  # our marker on a stdlib handler
        root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("amqp", "kombu", "mail.log", "werkzeug"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))

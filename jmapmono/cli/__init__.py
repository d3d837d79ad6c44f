"""The operator CLI: one module per group of sub-commands, assembled by :mod:`jmapmono.cli.main`."""

from __future__ import annotations

import sys


def gevent_patched() -> bool:
    """Whether gevent has monkey-patched this process (without importing gevent to find out)."""
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey is not None and monkey.is_module_patched("socket"))

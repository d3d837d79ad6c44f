"""The runtime of a gunicorn worker (``wsgi.py``): built, started and stopped as ``serve`` does it."""

from __future__ import annotations

import atexit
import signal
from typing import Any

import gevent
from flask import Flask

from jmapmono.config import load_config
from jmapmono.log import setup_logging
from jmapmono.runtime import Runtime
from jmapmono.web.app import create_app


def serving_worker() -> Flask:
    """The WSGI app of this worker, on a started Runtime that stops when the worker exits."""
    config = load_config()
    setup_logging(config.log_level)
    runtime = Runtime(config)
    app = create_app(runtime)
    runtime.start()
    _end_connections_on_sigterm(runtime)
    atexit.register(runtime.stop)  # a worker exits through sys.exit after its graceful shutdown
    return app


def _end_connections_on_sigterm(runtime: Runtime) -> None:
    """gunicorn keeps a worker alive while connections are open (up to graceful_timeout): at SIGTERM, close
    every WebSocket (1001) and end every EventSource stream at once, then let the worker's handler run."""
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous):  # not under gunicorn: leave the default behaviour alone
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        gevent.spawn(runtime.end_connections)
        previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)

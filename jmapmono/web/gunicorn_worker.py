"""The gunicorn worker of the Procfile: gunicorn's gevent pywsgi worker on the strict HTTP front.

``gunicorn -k jmapmono.web.gunicorn_worker.StrictGeventWorker wsgi:app`` serves through the same parser as
``serve`` (jmapmono/web/http_front.py) instead of gunicorn's own, so one HTTP/1.1 parser is hardened for
every deployment form. The gunicorn master imports this module before forking: it imports nothing heavy.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from gunicorn.workers.ggevent import GeventPyWSGIWorker  # type: ignore[import-untyped]  # no type information

from jmapmono.web.http_front import StrictHandler, StrictWSGIServer


class StrictGeventWorker(GeventPyWSGIWorker):
    """gunicorn's ``gevent_pywsgi`` worker, serving with :class:`StrictWSGIServer` and :class:`StrictHandler`."""

    wsgi_handler = StrictHandler

    @property
    def server_class(self) -> Any:
        """The server, with the idle timeout of this deployment's configuration."""
        from jmapmono.config import load_config

        return partial(StrictWSGIServer, idle_timeout=load_config().http_idle_timeout)

"""WSGI entry point: ``gunicorn -k jmapmono.web.gunicorn_worker.StrictGeventWorker jmapmono.wsgi:app`` (the
Procfile uses ``wsgi:app``, which imports it). That worker serves through the same strict HTTP/1.1 front as
``serve`` (jmapmono/web/http_front.py); gunicorn's plain ``-k gevent`` parser is more lenient.

gunicorn imports this module in each worker after forking it (no ``--preload``: the runtime must start
in the worker that serves, not in the master). Each worker runs the same Runtime as ``serve``: event
flow, housekeeping, push hubs (jmapmono/runtime/). Several workers on memory:// each tail the outbox
(jmapmono/events/outbox_tail.py), so every worker's sockets hear every change; across nodes, RabbitMQ.
"""

from gevent import monkey

monkey.patch_all()

from jmapmono.runtime.worker import serving_worker  # noqa: E402

app = serving_worker()

"""WSGI entry point: ``gunicorn -k gevent jmapmono.wsgi:app`` (the Procfile uses ``wsgi:app``, which imports it).

gunicorn imports this module in each worker after forking it (no ``--preload``: the runtime must start
in the worker that serves, not in the master). Each worker runs the same Runtime as ``serve``: event
flow, housekeeping, push hubs (jmapmono/runtime/). With more than one worker, use RabbitMQ
(``BROKER_URL``): memory:// is per process.
"""

from gevent import monkey

monkey.patch_all()

from jmapmono.runtime.worker import serving_worker  # noqa: E402

app = serving_worker()

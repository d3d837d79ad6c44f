"""gunicorn's settings for the Procfile's ``web`` process: ``gunicorn -c conf/gunicorn.conf.py wsgi:app``.

Read by gunicorn itself (a plain Python file, not part of the package). What a platform sets goes through the
environment: ``PORT`` (the bind port) and ``WEB_CONCURRENCY`` (the number of workers, also gunicorn's own default).
Options given on the command line win over the ones here.
"""

import os

# One strict HTTP/1.1 front and push connections on gevent: the worker class ``serve`` also uses for its HTTP.
worker_class = "jmapmono.web.gunicorn_worker.StrictGeventWorker"
bind = [f"0.0.0.0:{os.environ.get('PORT', '8080')}"]
# Unset WEB_CONCURRENCY: one worker per CPU, as ``serve``. Every worker hears every change whatever the bus:
# RabbitMQ routes by account, and on memory:// each worker tails the outbox (docs/adr/0006-every-core.md).
workers = int(os.environ.get("WEB_CONCURRENCY") or os.cpu_count() or 1)
# At SIGTERM a worker closes WebSockets (1001), ends EventSource streams and finishes the requests in flight;
# gunicorn kills what is still running after this many seconds.
graceful_timeout = 10
# The worker's heartbeat: a worker that stops notifying the arbiter this long (a blocked hub) is killed.
timeout = 30
# A platform restarts the process; no control socket file is left in a working directory it may not own.
control_socket_disable = True
# Access lines come from the app's own log (one key=value line per request); errors to stderr.
errorlog = "-"

# -- server hooks ----------------------------------------------------------------------------------------------------
# gunicorn calls functions with these names (on_starting, post_fork, child_exit, worker_exit, ...) when defined
# here; add them below.


def on_starting(server: object) -> None:
    """Metrics of every worker in one shared directory (prometheus multiprocess mode), emptied at start."""
    from jmapmono.metrics_dir import prepare_multiprocess_dir

    prepare_multiprocess_dir()


def child_exit(server: object, worker: object) -> None:
    """An exited worker's live gauges (open connections) go with it."""
    from jmapmono.metrics_dir import mark_process_dead

    mark_process_dead(worker.pid)  # type: ignore[attr-defined]

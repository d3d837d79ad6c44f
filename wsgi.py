"""WSGI entry point: ``gunicorn -k gevent wsgi:app`` (see Procfile).

gunicorn imports this module in each worker after forking it (do not use ``--preload``: the event
flow must start in the worker that serves, not in the master). Each worker therefore runs its own
event flow (buses, MailboxChangeListener, outbox relay; jmapmono/events/flow.py), stopped when the
worker exits. With more than one worker, use RabbitMQ (``BROKER_URL``): memory:// is per process.
"""

from gevent import monkey

monkey.patch_all()

import atexit  # noqa: E402
import signal  # noqa: E402

import gevent  # noqa: E402

from jmapmono.config import load_config  # noqa: E402
from jmapmono.events import flow  # noqa: E402
from jmapmono.log import setup_logging  # noqa: E402
from jmapmono.push.eventsource import close_all as close_event_streams  # noqa: E402
from jmapmono.push.ws_session import close_all as close_websockets  # noqa: E402
from jmapmono.runtime import Runtime  # noqa: E402
from jmapmono.web.app import create_app  # noqa: E402

config = load_config()
setup_logging(config.log_level)
services = Runtime(config)
app = create_app(services=services)
event_flow = flow.start(services)


def _close_websockets_on_sigterm() -> None:
    """gunicorn keeps a worker alive while connections are open (up to graceful_timeout): at SIGTERM,
    close every WebSocket at once with 1001, then let the worker's own handler run."""
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous):  # not under gunicorn: leave the default behaviour alone
        return

    def on_sigterm(signum, frame):
        gevent.spawn(close_websockets, services)
        gevent.spawn(close_event_streams, services)
        previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)


_close_websockets_on_sigterm()


@atexit.register
def _shutdown() -> None:
    """A worker exits through sys.exit after its graceful shutdown: stop the flow, then close the store."""
    event_flow.stop()
    services.close()

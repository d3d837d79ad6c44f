"""The Procfile's WSGI entry point from a source checkout: ``gunicorn -k gevent wsgi:app``.

The app itself is :mod:`jmapmono.wsgi` (``gunicorn -k gevent jmapmono.wsgi:app`` when installed with pip).
"""

from jmapmono.wsgi import app

__all__ = ["app"]

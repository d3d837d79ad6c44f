"""The Procfile's WSGI entry point from a source checkout (``gunicorn -k <the Procfile's worker> wsgi:app``).

The app itself is :mod:`jmapmono.wsgi` (``jmapmono.wsgi:app`` when installed with pip).
"""

from jmapmono.wsgi import app

__all__ = ["app"]

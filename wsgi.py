"""WSGI entry point: ``gunicorn -k gevent wsgi:app`` (see Procfile)."""

from gevent import monkey

monkey.patch_all()

from jmapmono.web.app import create_app  # noqa: E402

app = create_app()

"""The Flask application factory."""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from jmapmono.jmap import registry
from jmapmono.log import kv
from jmapmono.push import subscription_methods
from jmapmono.web import health
from jmapmono.web.api import ApiEndpoint
from jmapmono.web.auth import challenge
from jmapmono.web.context import WebServices
from jmapmono.web.proxy import ClientAddress

log = logging.getLogger("jmapmono.http")


def create_app(services: WebServices) -> Flask:
    """Build the WSGI app on ``services`` (the process's runtime)."""
    app = Flask("jmapmono", static_folder=None)
    app.config["SERVICES"] = services
    app.config["MAX_CONTENT_LENGTH"] = None  # each route enforces its own limit
    app.wsgi_app = ApiEndpoint(app.wsgi_app, services)  # type: ignore[method-assign]  # the API skips Flask
    if services.config.trusted_proxies:  # the client address behind them, for every route and log
        app.wsgi_app = ClientAddress(app.wsgi_app, services.config.trusted_proxies)  # type: ignore[method-assign]
    registry.load_all()
    subscription_methods.register()  # PushSubscription/* live with push, above jmap
    services.vapid.current()  # the web push key exists (made once, stored) before the first Session is built

    from jmapmono.web import routes

    for blueprint in routes.BLUEPRINTS:
        app.register_blueprint(blueprint)
    app.register_blueprint(health.bp)

    @app.before_request
    def _start_timer() -> None:
        g.started = time.monotonic()

    @app.after_request
    def _log_request(response: Response) -> Response:
        principal = g.get("principal")
        probe = request.path in health.PROBE_PATHS  # readiness changes are logged by health.py
        log.log(
            logging.DEBUG if probe else logging.INFO,
            kv(
                event="http",
                method=request.method,
                path=request.path,
                status=response.status_code,
                user=principal.email if principal else None,
                ip=request.remote_addr,
                ms=f"{(time.monotonic() - g.get('started', time.monotonic())) * 1000:.1f}",
            ),
        )
        return response

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException) -> Response:
        response = jsonify({"type": "about:blank", "status": e.code, "title": e.name, "detail": e.description})
        response.status_code = e.code or 500
        response.content_type = "application/problem+json"
        if e.code == 401:
            response.headers["WWW-Authenticate"] = challenge()
        return response

    @app.errorhandler(Exception)
    def _unexpected(e: Exception) -> Response:
        log.exception(kv(event="http_error", path=request.path, error=type(e).__name__))
        response = jsonify(
            {"type": "about:blank", "status": 500, "title": "Internal Server Error", "detail": "see the server log"}
        )
        response.status_code = 500
        response.content_type = "application/problem+json"
        return response

    return app

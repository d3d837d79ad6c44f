"""``GET /jmap/eventsource``: the route of push over Server-Sent Events (the streams: jmapmono/push/eventsource.py)."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, g, jsonify, request

from jmapmono.accounts.principal import Principal
from jmapmono.log import kv
from jmapmono.push import slots
from jmapmono.push.eventsource import CONTENT_TYPE, PATH, EventStream, ParameterError, client_socket, parse_params
from jmapmono.store import StoreError
from jmapmono.web.auth import problem_response, require_auth
from jmapmono.web.context import current_services

log = logging.getLogger("jmapmono.push.eventsource")  # the logger name operators grep for

bp = Blueprint("eventsource", __name__)


def _bad_parameter(error: ParameterError) -> Response:
    body = {"type": "about:blank", "status": 400, "title": "Bad Request", "detail": error.detail}
    body["parameter"] = error.parameter
    response = jsonify(body)
    response.status_code = 400
    response.content_type = "application/problem+json"
    return response


@bp.get(PATH)
@require_auth
def eventsource() -> Response:
    """Open a push stream for the authenticated user."""
    services = current_services()
    config = services.config
    principal: Principal = g.principal
    try:
        params = parse_params(request.args, config.eventsource_min_ping, config.eventsource_max_ping)
    except ParameterError as e:
        log.info(kv(event="eventsource_refused", user=principal.email, parameter=e.parameter, detail=e.detail))
        return _bad_parameter(e)
    hub = services.event_streams
    if hub.closing:
        return problem_response(
            503, "Service Unavailable", "the server is shutting down; reconnect", {"Retry-After": "1"}
        )
    last_event_id = (request.headers.get("Last-Event-ID") or "").strip() or None
    stream = EventStream(
        services, principal, params, last_event_id, client_socket(request.environ), request.remote_addr
    )
    if not hub.reserve(stream):
        return problem_response(
            429, "Too Many Requests", hub.slots.refusal_detail(), {"Retry-After": str(slots.RETRY_AFTER)}
        )
    try:
        stream.open()
    except StoreError as e:
        stream._end("unavailable")
        stream.close()
        log.warning(kv(event="eventsource_unavailable", user=principal.email, error=str(e)))
        return problem_response(
            503, "Service Unavailable", "the database is unavailable; try again", {"Retry-After": "5"}
        )
    except BaseException:
        stream.close()
        raise
    hub.add(stream)
    response = Response(iter(stream), status=200, content_type=CONTENT_TYPE)
    response.headers["Cache-Control"] = "no-cache, no-store"
    response.headers["X-Accel-Buffering"] = "no"
    # The WSGI server may never iterate the body (HEAD, a failure before the first write): close then too.
    response.call_on_close(stream.close)
    return response

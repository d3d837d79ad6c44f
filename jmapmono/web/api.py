"""``POST /jmap/api``: the JMAP API over HTTP (RFC 8620 §3.1).

Only the HTTP concerns live here (content type, reading the body within
maxSizeRequest, problem documents); the request semantics are in
:mod:`jmapmono.jmap.api`, shared with the WebSocket front end.
"""

from __future__ import annotations

import json
import logging

from flask import Blueprint, Response, g, request

from jmapmono.jmap.api import check_content_type, dump_response, execute, parse_request, read_body
from jmapmono.jmap.errors import RequestError
from jmapmono.log import kv
from jmapmono.store import StoreError
from jmapmono.web.auth import require_auth
from jmapmono.web.context import current_services

log = logging.getLogger("jmapmono.api")

bp = Blueprint("api", __name__)


def problem(error: RequestError) -> Response:
    """An RFC 7807 problem document for a request-level error."""
    return Response(json.dumps(error.to_json()), status=error.status, content_type="application/problem+json")


def unavailable() -> Response:
    body = {"type": "about:blank", "status": 503, "title": "Service Unavailable", "detail": "try again later"}
    response = Response(json.dumps(body), status=503, content_type="application/problem+json")
    response.headers["Retry-After"] = "5"
    return response


@bp.post("/jmap/api")
@require_auth
def api() -> Response:
    services = current_services()
    principal = g.principal
    try:
        check_content_type(request.headers.get("Content-Type"))
        with services.request_guard.slot(principal.user_id):
            body = read_body(request.stream, services.config.limits.max_size_request, request.content_length)
            result = execute(services, principal, parse_request(body))
    except RequestError as e:
        log.info(kv(event="api_refused", user=principal.email, type=e.kind, status=e.status, detail=e.detail))
        response = problem(e)
    except StoreError as e:
        log.warning(kv(event="api_unavailable", user=principal.email, error=str(e)))
        return unavailable()
    else:
        response = Response(dump_response(result), status=200, content_type="application/json")
    # RFC 8620 §3.8: the language of the user-visible strings (descriptions, details): English only.
    response.headers["Content-Language"] = "en"
    return response

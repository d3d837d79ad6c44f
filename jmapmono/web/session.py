"""The JMAP Session resource (RFC 8620 §2): ``/.well-known/jmap`` and ``/jmap/session``."""

from __future__ import annotations

import json

from flask import Blueprint, Response, g

from jmapmono.store import StoreError
from jmapmono.web.auth import problem_response, require_auth
from jmapmono.web.context import current_services

bp = Blueprint("session", __name__)


@bp.get("/.well-known/jmap")
@bp.get("/jmap/session")
@require_auth
def session() -> Response:
    """Served directly at the well-known URL (no redirect): one round trip for autodiscovery."""
    try:
        document = current_services().sessions.get(g.principal).document
    except StoreError:
        return problem_response(503, "Service Unavailable", "try again later", {"Retry-After": "5"})
    response = Response(json.dumps(document, ensure_ascii=False), content_type="application/json")
    # RFC 8620 §2: the client refetches on a sessionState change, never from an HTTP cache.
    response.headers["Cache-Control"] = "no-cache, no-store, must-revalidate"
    return response

"""A user's own app passwords over HTTP.

``GET /jmap/app-passwords`` → ``{"appPasswords": [{id, label, created, lastUsed}]}``;
``POST`` with ``{"label": …}`` → 201 with the same fields plus ``token`` (shown
this once); ``DELETE /jmap/app-passwords/<id>`` → 204, or 404 when the user has
no app password with that id (another user's ids are not revealed).
Creating, listing and revoking them requires the account password (403
otherwise): a leaked app password must not be able to mint others that outlive
its revocation, see its siblings, or revoke the owner's other devices.
``DELETE /jmap/app-passwords/current`` is the one exception: authenticated by an
app password, it revokes that app password and no other (a browser logging out
holds only its own token); 400 when the request was made with the account password.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from flask import Blueprint, Response, g, jsonify, request

from jmapmono.accounts.app_passwords import AppPassword, AppPasswordError, AppPasswords
from jmapmono.web.auth import challenge, problem_response, require_auth
from jmapmono.web.context import current_services

bp = Blueprint("app_passwords", __name__)

MAX_BODY = 4096


def _app_passwords() -> AppPasswords:
    services = current_services()
    return AppPasswords(services.db, services.accounts)


def utc_date(ms: int | None) -> str | None:
    """Milliseconds since the epoch as a JMAP UTCDate (``2024-05-01T12:00:00Z``)."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json(p: AppPassword) -> dict:
    return {"id": p.id, "label": p.label, "created": utc_date(p.created_at), "lastUsed": utc_date(p.last_used_at)}


def _needs_account_password(action: str) -> Response | None:
    """403 when the request was authenticated by an app password (Basic or Bearer), else None."""
    if g.principal.app_password_id is None:
        return None
    return problem_response(
        403, "Forbidden", f"log in with the account password to {action} app passwords, not with an app password"
    )


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-cache, no-store"
    return response


@bp.get("/jmap/app-passwords")
@require_auth
def list_app_passwords() -> Response:
    refused = _needs_account_password("list")
    if refused is not None:
        return refused
    items = [_json(p) for p in _app_passwords().list(g.principal.user_id)]
    return _no_store(jsonify({"appPasswords": items}))


@bp.post("/jmap/app-passwords")
@require_auth
def create_app_password() -> Response:
    refused = _needs_account_password("create")
    if refused is not None:
        return refused
    if request.content_length is not None and request.content_length > MAX_BODY:
        return problem_response(413, "Content Too Large", f"the request body must be at most {MAX_BODY} bytes")
    raw = request.stream.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        return problem_response(413, "Content Too Large", f"the request body must be at most {MAX_BODY} bytes")
    body: object = {}
    if raw.strip():
        if request.mimetype != "application/json":
            return problem_response(415, "Unsupported Media Type", "send application/json")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return problem_response(400, "Bad Request", "the body is not valid JSON")
    if not isinstance(body, dict):
        return problem_response(400, "Bad Request", 'the body must be a JSON object like {"label": "phone"}')
    services = current_services()
    user = services.accounts.by_id(g.principal.user_id)
    if user is None:
        return problem_response(
            401, "Unauthorized", "valid credentials are required", {"WWW-Authenticate": challenge()}
        )
    try:
        created, token = _app_passwords().create(user, body.get("label"))
    except AppPasswordError as e:
        return problem_response(400, "Bad Request", str(e))
    response = jsonify({**_json(created), "token": token})
    response.status_code = 201
    return _no_store(response)


@bp.delete("/jmap/app-passwords/current")
@require_auth
def revoke_current() -> Response:
    """Revoke the app password this request was authenticated with (logging out), nothing else."""
    own = g.principal.app_password_id
    if own is None:
        return problem_response(
            400, "Bad Request", "this request was not made with an app password: there is nothing to log out"
        )
    if not _app_passwords().revoke(g.principal.user_id, own):
        return problem_response(404, "Not Found", "this app password is already revoked")
    return Response(status=204)


@bp.delete("/jmap/app-passwords/<app_password_id>")
@require_auth
def revoke_app_password(app_password_id: str) -> Response:
    refused = _needs_account_password("revoke")
    if refused is not None:
        return refused
    if not _app_passwords().revoke(g.principal.user_id, app_password_id):
        return problem_response(404, "Not Found", f"no app password {app_password_id!r}")
    return Response(status=204)

"""HTTP authentication: who is making this request.

``require_auth`` authenticates the request (HTTP Basic with the account
password or an app password, or Bearer with an app password; see
:mod:`jmapmono.accounts.authn`), sets ``flask.g.principal`` and runs the view,
or answers 401 (with a Basic challenge) or 429 (with ``Retry-After``) as a
problem document. The checks themselves are framework-free so the WebSocket and
EventSource front ends use the same ones.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import Response, g, jsonify, request

from jmapmono.accounts.authn import AuthError, RateLimited, Unauthenticated
from jmapmono.accounts.principal import Principal
from jmapmono.store import StoreError
from jmapmono.web.context import current_services

F = TypeVar("F", bound=Callable)

CHALLENGE = 'Basic realm="jmapmono", charset="UTF-8"'
#: For a page's script (fetch, XHR): a Basic challenge would make the browser stop everything and show its
#: own password prompt, so the page could not say "wrong password" in words. Bearer is accepted too.
SCRIPT_CHALLENGE = 'Bearer realm="jmapmono"'


def challenge() -> str:
    """The WWW-Authenticate of a 401 to the current request: Basic, or Bearer to a browser's script
    (``Sec-Fetch-Mode`` other than ``navigate``; clients that are not browsers send none)."""
    mode = request.headers.get("Sec-Fetch-Mode")
    return SCRIPT_CHALLENGE if mode is not None and mode != "navigate" else CHALLENGE


def problem_response(status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    """An RFC 7807 problem document, as the rest of the HTTP front end answers errors."""
    response = jsonify({"type": "about:blank", "status": status, "title": title, "detail": detail})
    response.status_code = status
    response.content_type = "application/problem+json"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def auth_error_response(error: AuthError) -> Response:
    """The HTTP answer to a failed authentication: 429 with Retry-After, else 401 with a challenge."""
    if isinstance(error, RateLimited):
        return problem_response(
            429,
            "Too Many Requests",
            f"too many failed logins; try again in {error.retry_after} seconds",
            {"Retry-After": str(error.retry_after)},
        )
    return problem_response(401, "Unauthorized", "valid credentials are required", {"WWW-Authenticate": challenge()})


def authenticate_request() -> Principal:
    """The principal behind the current request; raises Unauthenticated or RateLimited.

    The client address is ``REMOTE_ADDR``: the peer's, or behind trusted proxies the one they forwarded
    (jmapmono/web/proxy.py)."""
    return current_services().authenticator.authenticate(request.headers.get("Authorization"), request.remote_addr)


def authenticate() -> Principal | None:
    """The principal behind the current request's credentials, or None (RateLimited still raises)."""
    try:
        return authenticate_request()
    except Unauthenticated:
        return None


def require_auth(view: F) -> F:
    """Run ``view`` with ``flask.g.principal`` set, or answer 401/429 (503 when the database is down)."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            principal = authenticate_request()
        except AuthError as e:
            return auth_error_response(e)
        except StoreError:
            return problem_response(
                503, "Service Unavailable", "the database is unavailable; try again", {"Retry-After": "5"}
            )
        g.principal = principal
        return view(*args, **kwargs)

    return cast(F, wrapper)  # called like the view (it may answer 401/429/503 instead)

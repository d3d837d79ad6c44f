"""``POST /jmap/api``: the JMAP API over HTTP (RFC 8620 §3.1), answered in plain WSGI.

Every client calls this path more than all the others together, so it does not pay for Flask's request
context, URL routing and hooks (measured: docs/adr/0007-request-path-speed.md): :class:`ApiEndpoint`
sits in front of the Flask app, answers this one path itself and hands every other request on.

Only the HTTP concerns live here (method, authentication, content type, reading the body within
maxSizeRequest, problem documents, the request's log line, the same as every route's); the request
semantics are in :mod:`jmapmono.jmap.api`, shared with the WebSocket front end, and the credentials are
checked by the one authenticator of the process, as on every route.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES  # the reason phrases Flask's responses carried

from jmapmono.accounts.authn import AuthError, RateLimited
from jmapmono.jmap.api import check_content_type, dump_response, execute, parse_request, read_body
from jmapmono.jmap.errors import RequestError
from jmapmono.log import kv
from jmapmono.store import StoreError
from jmapmono.web.auth import CHALLENGE, SCRIPT_CHALLENGE
from jmapmono.web.context import WebServices

log = logging.getLogger("jmapmono.api")
http_log = logging.getLogger("jmapmono.http")  # the request line every route logs (jmapmono/web/app.py)

PATH = "/jmap/api"

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Headers = list[tuple[str, str]]


def _problem(status: int, detail: str, headers: Headers | None = None) -> tuple[int, Headers, bytes]:
    """An RFC 7807 problem document, as every route of the front end answers errors."""
    title = HTTP_STATUS_CODES.get(status, "Error")
    body = json.dumps({"type": "about:blank", "status": status, "title": title, "detail": detail}).encode()
    return status, [("Content-Type", "application/problem+json"), *(headers or [])], body


def _content_length(environ: dict[str, Any]) -> int | None:
    value = environ.get("CONTENT_LENGTH")
    return int(value) if value and value.isdigit() else None  # the HTTP front checked its syntax


class ApiEndpoint:
    """WSGI middleware: ``POST /jmap/api`` answered here, every other request passed to ``app``."""

    def __init__(self, app: WSGIApp, services: WebServices) -> None:
        self.app = app
        self.services = services

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != PATH:
            return self.app(environ, start_response)
        started = time.monotonic()
        user: str | None = None
        try:
            status, headers, body, user = self._answer(environ)
        except HTTPException as e:  # the body's framing broke while it was read (jmapmono/web/http_front.py)
            status, headers, body = _problem(e.code or 400, e.description or "bad request")
        except Exception as e:  # a bug: the client gets a problem document, the log the traceback
            log.exception(kv(event="http_error", path=PATH, error=type(e).__name__))
            status, headers, body = _problem(500, "see the server log")
        headers.append(("Content-Length", str(len(body))))
        start_response(f"{status} {HTTP_STATUS_CODES.get(status, 'Error')}", headers)
        http_log.info(
            kv(
                event="http",
                method=environ.get("REQUEST_METHOD"),
                path=PATH,
                status=status,
                user=user,
                ip=environ.get("REMOTE_ADDR"),
                ms=f"{(time.monotonic() - started) * 1000:.1f}",
            )
        )
        return [body]

    def _answer(self, environ: dict[str, Any]) -> tuple[int, Headers, bytes, str | None]:
        """(status, headers, body, the user's email once authenticated)."""
        if environ.get("REQUEST_METHOD") != "POST":
            return (*_problem(405, "the JMAP API takes POST requests", [("Allow", "POST")]), None)
        services = self.services
        try:
            principal = services.authenticator.authenticate(
                environ.get("HTTP_AUTHORIZATION"), environ.get("REMOTE_ADDR")
            )
        except RateLimited as e:
            detail = f"too many failed logins; try again in {e.retry_after} seconds"
            return (*_problem(429, detail, [("Retry-After", str(e.retry_after))]), None)
        except AuthError:
            mode = environ.get("HTTP_SEC_FETCH_MODE")  # a browser's script: no Basic prompt (web/auth.py)
            challenge = SCRIPT_CHALLENGE if mode is not None and mode != "navigate" else CHALLENGE
            return (*_problem(401, "valid credentials are required", [("WWW-Authenticate", challenge)]), None)
        except StoreError:
            detail = "the database is unavailable; try again"
            return (*_problem(503, detail, [("Retry-After", "5")]), None)
        try:
            check_content_type(environ.get("CONTENT_TYPE"))
            with services.request_guard.slot(principal.user_id):
                raw = read_body(
                    environ["wsgi.input"], services.config.limits.max_size_request, _content_length(environ)
                )
                result = execute(services, principal, parse_request(raw))
        except RequestError as e:
            log.info(kv(event="api_refused", user=principal.email, type=e.kind, status=e.status, detail=e.detail))
            headers: Headers = [("Content-Type", "application/problem+json")]
            body = json.dumps(e.to_json()).encode()
            status = e.status
        except StoreError as e:
            log.warning(kv(event="api_unavailable", user=principal.email, error=str(e)))
            return (*_problem(503, "try again later", [("Retry-After", "5")]), principal.email)
        else:
            status, headers, body = 200, [("Content-Type", "application/json")], dump_response(result)
        # RFC 8620 §3.8: the language of the user-visible strings (descriptions, details): English only.
        headers.append(("Content-Language", "en"))
        return status, headers, body, principal.email

"""``/jmap/ws``: JMAP over WebSocket (RFC 8887), and ``POST /jmap/ws/ticket`` for browsers.

The upgrade is checked in full before anything is switched, so every refusal is a plain HTTP answer
with a problem document and never a 101:

- a GET without ``Upgrade: websocket`` → 426 (this is not a page); a version other than 13 → 426;
- no ``jmap`` among the offered subprotocol tokens (``notjmap`` is not ``jmap``), a bad key → 400;
- an ``Origin`` that is neither the server's own nor in ``JMAPMONO_WS_ALLOWED_ORIGINS`` → 403 (browsers
  always send it, so a page elsewhere cannot ride on the credentials a browser caches); a ticket
  upgrade must carry an allowed Origin (tickets exist for browsers); other clients may send none;
- credentials: ``Authorization`` (Basic or Bearer, as for HTTP) or ``?ticket=`` (single use,
  jmapmono/push/ws_tickets.py) → 401 when missing or wrong, 429 when rate limited, 503 when the
  database is down; authentication happens once, for the life of the connection (a revocation of the
  credential closes the socket with 1008, jmapmono/push/ws_session.py);
- a user who already holds ``JMAPMONO_MAX_PUSH_CONNECTIONS_PER_USER`` push connections in this process
  → 429 with Retry-After (jmapmono/push/slots.py).

Then the 101 (subprotocol exactly ``jmap``, permessage-deflate when offered) is written on the raw
socket of gevent's WSGI server or of gunicorn's gevent worker, and a greenlet of the socket's own serves
it until it ends (jmapmono/push/ws_session.py) while the request's greenlet ends. One log line when it
opens, one when it closes.
"""

from __future__ import annotations

import base64
import binascii
import logging
import socket
import time
from typing import Any

import gevent
from flask import Blueprint, Response, g, jsonify, request

from jmapmono.accounts.authn import AuthError
from jmapmono.accounts.principal import Principal
from jmapmono.config import normalize_origin
from jmapmono.jmap.websocket_capability import WEBSOCKET_PATH
from jmapmono.log import kv
from jmapmono.push import slots as push_slots
from jmapmono.push import ws_tickets
from jmapmono.push.ws_connection import HandshakeError, WebSocket, accept
from jmapmono.push.ws_session import JmapSocket
from jmapmono.store import StoreError
from jmapmono.web.auth import auth_error_response, authenticate_request, problem_response, require_auth
from jmapmono.web.context import WebServices, current_services

log = logging.getLogger("jmapmono.push.websocket")  # the logger name operators grep for

bp = Blueprint("websocket", __name__)

SUBPROTOCOL = "jmap"
TICKET_PATH = WEBSOCKET_PATH + "/ticket"


def _unavailable(detail: str) -> Response:
    return problem_response(503, "Service Unavailable", detail, {"Retry-After": "5"})


def origin_allowed(config: Any, origin: str | None, host: str | None = None) -> bool:
    """Is ``origin`` the server's own (its public base URL, or the ``host`` the request was sent to: a page
    this server served under another of its names), or one of JMAPMONO_WS_ALLOWED_ORIGINS (``*``: any)?"""
    if origin is None:
        return False
    allowed = config.ws_allowed_origins
    if "*" in allowed:
        return True
    normalized = normalize_origin(origin)
    if normalized is None:
        return False
    if host is not None and normalized.split("://", 1)[1] == host.lower():
        return True
    return normalized == normalize_origin(config.public_base_url) or normalized in allowed


def _offered_subprotocols() -> list[str]:
    return [token.strip() for value in request.headers.getlist("Sec-WebSocket-Protocol") for token in value.split(",")]


def _check_handshake() -> Response | None:
    """A 4xx for an upgrade that cannot be a JMAP WebSocket, else None."""
    if request.headers.get("Sec-WebSocket-Version", "").strip() != "13":
        return problem_response(
            426,
            "Upgrade Required",
            "only WebSocket version 13 (RFC 6455) is supported",
            {"Sec-WebSocket-Version": "13"},
        )
    try:
        key_ok = len(base64.b64decode(request.headers.get("Sec-WebSocket-Key", "").strip(), validate=True)) == 16
    except (binascii.Error, ValueError):
        key_ok = False
    if not key_ok:
        return problem_response(400, "Bad Request", "Sec-WebSocket-Key must be 16 bytes in base64 (RFC 6455 §4.1)")
    if SUBPROTOCOL not in _offered_subprotocols():
        return problem_response(
            400, "Bad Request", "offer the jmap subprotocol (Sec-WebSocket-Protocol: jmap), RFC 8887 §4.2"
        )
    return None


def _raw_socket(environ: dict[str, Any]) -> tuple[socket.socket | None, str]:
    """The client socket under the WSGI server, and which server it is (how to end the response)."""
    sock = environ.get("gunicorn.socket")  # gunicorn -k gevent
    if sock is not None:
        return sock, "gunicorn"
    raw = getattr(environ.get("wsgi.input"), "raw", None)  # gevent.pywsgi (serve, gunicorn -k gevent_pywsgi)
    sock = getattr(raw, "_sock", None)
    return (sock, "pywsgi") if sock is not None else (None, "")


class _Upgraded(Response):
    """Handed back to the WSGI server once the socket has ended: there is nothing left to write."""

    def __init__(self, server: str) -> None:
        super().__init__(status=101)
        self.server = server

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if self.server == "gunicorn":
            raise StopIteration  # gunicorn's worker then closes the connection, writing nothing
        # pywsgi writes nothing (start_response was never called) and, its input closed, reads no
        # "next request" out of whatever the client still had in flight.
        environ["wsgi.input"].close()
        return []


@bp.get(WEBSOCKET_PATH)
def not_upgraded() -> Response:
    """A plain GET (a browser tab, a probe): say what this is instead of failing."""
    return problem_response(
        426,
        "Upgrade Required",
        "this is the JMAP WebSocket endpoint (RFC 8887): connect with a WebSocket client offering the jmap subprotocol",
        {"Upgrade": "websocket", "Connection": "Upgrade"},
    )


@bp.route(WEBSOCKET_PATH, websocket=True)
def upgrade() -> Response:
    """Check the upgrade, switch protocols, serve the socket until it ends."""
    services = current_services()
    config = services.config
    refused = _check_handshake()
    if refused is not None:
        return refused
    origin = request.headers.get("Origin")
    ticket = request.args.get("ticket")
    if (origin is not None or ticket is not None) and not origin_allowed(config, origin, request.host):
        detail = f"origin {origin!r} may not open this WebSocket" if origin else "a ticket upgrade must send Origin"
        log.info(kv(event="ws_refused", reason="origin", origin=origin, ip=request.remote_addr))
        return problem_response(403, "Forbidden", detail)
    if services.websockets.closing:
        return _unavailable("the server is shutting down; reconnect")
    try:
        if ticket is not None:
            principal = ws_tickets.redeem(services, ticket)
            if principal is None:
                log.info(kv(event="ws_refused", reason="bad_ticket", ip=request.remote_addr))
                return problem_response(401, "Unauthorized", "the ticket is unknown, used or expired")
            via = "ticket"
        else:
            principal = authenticate_request()
            via = request.headers.get("Authorization", "").strip().partition(" ")[0].lower()
    except AuthError as e:
        return auth_error_response(e)
    except StoreError:
        return _unavailable("the database is unavailable; try again")
    g.principal = principal
    slots = services.websockets.slots
    if not slots.take(principal, "websocket"):
        return problem_response(
            429, "Too Many Requests", slots.refusal_detail(), {"Retry-After": str(push_slots.RETRY_AFTER)}
        )
    handed_over = False
    try:
        response, handed_over = _switch(services, principal, via)
        return response
    finally:
        if not handed_over:
            slots.give_back(principal.user_id)


def _switch(services: WebServices, principal: Principal, via: str) -> tuple[Response, bool]:
    """Switch protocols and hand the socket to a greenlet of its own, which serves it until it ends and then
    gives the user's push slot back; True with the response when that greenlet took over.

    The request's greenlet then ends like any request's, and with it the WSGI server's and Flask's objects
    for the handshake and their deep stack: an idle socket holds only its own (its greenlet's stack is a
    few frames). The connection's descriptor is detached from the server's socket object first: the server
    neither closes it nor reads from it (pywsgi drains a closing connection) when the request ends."""
    config = services.config
    sock, server = _raw_socket(request.environ)
    if sock is None:
        return problem_response(501, "Not Implemented", "this WSGI server cannot hand over its socket"), False
    try:
        limit = config.limits.max_size_request
        response, connection, inflater = accept(request.environ, SUBPROTOCOL, config.ws_deflate, limit)
    except HandshakeError as e:
        return problem_response(400, "Bad Request", str(e)), False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(response)
        own = socket.socket(fileno=sock.detach())
    except OSError:
        return _Upgraded(server), False
    ws = WebSocket(
        own,
        connection,
        max_message=config.limits.max_size_request,
        outbound_limit=config.ws_outbound_bytes,
        inflater=inflater,
    )
    session = JmapSocket(services, principal, ws)
    services.websockets.add(session)  # known to the process before anything else runs
    gevent.spawn(serve, services, session, via, request.remote_addr)
    return _Upgraded(server), True


def serve(services: WebServices, session: JmapSocket, via: str, ip: str | None) -> None:
    """Serve an accepted socket (already added to the process's) until it ends, with its open and close log
    lines; then give the user's push slot back and close the socket."""
    sockets, principal, ws = services.websockets, session.principal, session.ws
    log.info(kv(event="ws_open", user=principal.email, via=via, deflate=ws.deflate, ip=ip))
    try:
        session.run()
    except Exception:
        log.exception(kv(event="ws_error", user=principal.email))
        ws.abort("error")
    finally:
        sockets.discard(session)
        sockets.slots.give_back(principal.user_id)
        ws.sock.close()
        log.info(
            kv(
                event="ws_close",
                user=principal.email,
                ms=f"{(time.monotonic() - ws.opened_at) * 1000:.0f}",
                requests=session.requests,
                pushes=session.pushes,
                code=ws.close_code,
                reason=ws.end_reason,
            )
        )


# -- tickets -----------------------------------------------------------------------------------------------------


@bp.post(TICKET_PATH)
@require_auth
def ticket() -> Response:
    """A single-use ticket for ``/jmap/ws?ticket=…`` (browsers cannot authenticate a WebSocket otherwise)."""
    services = current_services()
    try:
        value, seconds = ws_tickets.issue(services, g.principal)
    except StoreError:
        return _unavailable("the database is unavailable; try again")
    response = jsonify({"ticket": value, "expiresIn": seconds})
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.after_request
def _cors(response: Response) -> Response:
    """Pages of the allowed origins may fetch a ticket (their WebSocket then needs no credentials)."""
    if request.endpoint != "websocket.ticket":
        return response
    origin = request.headers.get("Origin")
    if origin is not None and origin_allowed(current_services().config, origin):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Methods"] = "POST"
        response.headers["Access-Control-Allow-Headers"] = "Authorization"
        response.headers["Access-Control-Max-Age"] = "600"
    response.headers.add("Vary", "Origin")
    return response

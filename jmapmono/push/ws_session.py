"""JMAP over one WebSocket (RFC 8887 §4.3): requests, push enable/disable, errors; and every socket of a process.

:class:`JmapSocket` reads the messages of an accepted :class:`~jmapmono.push.ws_connection.WebSocket`:

- ``Request`` → ``Response`` (``requestId`` = the request's ``id``), each in its own greenlet, so several
  run at once and may answer out of order; they count against maxConcurrentRequests with the user's
  HTTP requests (one guard per process): excess → RequestError ``limit``.
- ``WebSocketPushEnable`` (``dataTypes`` null = all; unknown type names are ignored, as a client may
  know types this server does not push; a later enable replaces the earlier; ``pushState`` → at once one
  StateChange with what changed since, or nothing) and ``WebSocketPushDisable``: no reply.
- Anything else (not I-JSON, not an object, no or unknown ``@type``, an invalid Request, a message over
  maxSizeRequest) → a RequestError, and the connection stays open.

Pushes come from a :class:`~jmapmono.push.channel.PushChannel`, which coalesces them; the socket's
writer pulls one when it can write, so a slow reader gets fewer, fresher StateChanges, never a backlog.

A socket whose credential is revoked (password change, app-password revocation, user deletion: a
``CredentialsRevoked`` on the user's bus key, or the channel's own check of the credential when it starts
listening and after a broker reconnect: push/channel.py) is closed with 1008 (policy violation); the
client must authenticate again.

:class:`Hub` knows every open socket of a process (per PushServices): one greenlet pings them all and
closes silent peers; :meth:`Hub.close_all` ends them with 1001 at shutdown. Its ``slots`` (push/slots.py)
bound the push connections each user holds open in the process.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

import gevent
import gevent.pool

from jmapmono import metrics
from jmapmono.accounts.principal import Principal
from jmapmono.jmap import registry
from jmapmono.jmap.api import dump_response, execute, parse_json, validate_request
from jmapmono.jmap.errors import RequestError
from jmapmono.jmap.session import Session, build_session
from jmapmono.log import kv
from jmapmono.push.channel import PUSH_TYPES, PushChannel
from jmapmono.push.jmap_bus_events import CredentialsRevoked
from jmapmono.push.slots import PushSlots
from jmapmono.push.ws_connection import GOING_AWAY, POLICY_VIOLATION, TOO_LARGE, WebSocket
from jmapmono.store import StoreError

if TYPE_CHECKING:
    from jmapmono.push.context import PushServices

log = logging.getLogger("jmapmono.push.websocket")


def _dumps(value: dict[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _unavailable(request_id: str | None = None) -> dict[str, Any]:
    error = {"type": "about:blank", "status": 503, "title": "Service Unavailable", "detail": "try again later"}
    return _request_error(error, request_id)


def _request_error(problem: dict[str, Any], request_id: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"@type": "RequestError", **problem}
    if request_id is not None:
        out["requestId"] = request_id
    return out


def _on_accounts(request: dict[str, Any]) -> bool:
    """Does a call of ``request`` act on an account (an unknown method is an error that reads none)?"""
    for call in request["methodCalls"]:
        spec = registry.METHODS.get(call[0])
        if spec is not None and spec.needs_account:
            return True
    return False


class JmapSocket:
    """The JMAP side of one WebSocket for one authenticated user."""

    # Thousands of these sit idle in a process: no per-instance dict.
    __slots__ = (
        "services",
        "principal",
        "ws",
        "requests",
        "pushes",
        "channel",
        "_running",
        "_session_state",
        "_session_seen",
    )

    def __init__(self, services: PushServices, principal: Principal, ws: WebSocket) -> None:
        self.services = services
        self.principal = principal
        self.ws = ws
        self.requests = 0
        self.pushes = 0
        self.channel = PushChannel(services, principal, ws.wake, self._revoked)
        #: The greenlets of the requests in progress (made at the first request that needs one).
        self._running: gevent.pool.Group | None = None
        #: The sessionState of the last request read (kept alone: the whole Session weighs kilobytes).
        self._session_state: str | None = None
        #: ``channel.access_changes`` when it was read.
        self._session_seen = 0
        ws.set_push_source(self._take_push)

    def run(self) -> None:
        """Serve the socket until it ends; the push channel is closed however that happens."""
        metrics.WEBSOCKETS_OPEN.inc()
        try:
            self.channel.watch()
            for message in self.ws.messages():
                # Responses still waiting to be written bound what this socket may ask for next: a client
                # that stops reading is no longer read either (TCP back-pressure), never buffered.
                self.ws.wait_for_room()
                if message is TOO_LARGE:
                    limit = self.services.config.limits.max_size_request
                    self._error(
                        RequestError(
                            "limit", f"the message is larger than the limit of {limit} bytes", limit="maxSizeRequest"
                        )
                    )
                else:
                    assert isinstance(message, str)
                    self._handle(message)
        finally:
            metrics.WEBSOCKETS_OPEN.dec()
            self.channel.close()
            self.ws.finish()

    # -- messages --------------------------------------------------------------------------------------------------

    def _handle(self, text: str) -> None:
        try:
            message = parse_json(text)
        except RequestError as e:
            self._error(e)
            return
        if not isinstance(message, dict):
            self._error(RequestError("notRequest", "a message must be a JSON object with an @type"))
            return
        kind = message.get("@type")
        request_id = message.get("id") if isinstance(message.get("id"), str) else None
        if kind == "Request":
            self._request(message, request_id)
        elif kind == "WebSocketPushEnable":
            self._push_enable(message)
        elif kind == "WebSocketPushDisable":
            self.channel.disable()
        elif kind is None:
            self._error(RequestError("notRequest", "the message has no @type"), request_id)
        else:
            detail = f"unknown @type {str(kind)[:64]!r} (Request, WebSocketPushEnable, WebSocketPushDisable)"
            self._error(RequestError("notRequest", detail), request_id)

    def _request(self, message: dict[str, Any], request_id: str | None) -> None:
        if "id" in message and request_id is None:
            self._error(RequestError("notRequest", "'id' must be a string"))
            return
        try:
            request = validate_request(message)
        except RequestError as e:
            self._error(e, request_id)
            return
        slot = self.services.request_guard.slot(self.principal.user_id)
        try:
            slot.__enter__()  # held by the greenlet that runs the request, released when it ends
        except RequestError as e:
            self._error(e, request_id)
            return
        self.requests += 1
        if self._running is None:
            self._running = gevent.pool.Group()
        self._running.spawn(self._execute, request, request_id, slot)

    def _execute(self, request: dict[str, Any], request_id: str | None, slot: Any) -> None:
        try:
            try:
                response = execute(self.services, self.principal, request, self._session_for(request))
            finally:
                slot.__exit__(None, None, None)
        except RequestError as e:
            self._error(e, request_id)
            return
        except StoreError as e:
            log.warning(kv(event="ws_request_unavailable", user=self.principal.email, error=str(e)))
            self.ws.send_text(_dumps(_unavailable(request_id)))
            return
        except Exception:
            log.exception(kv(event="ws_request_failed", user=self.principal.email))
            problem = {"type": "about:blank", "status": 500, "title": "Internal Server Error", "detail": "see log"}
            self.ws.send_text(_dumps(_request_error(problem, request_id)))
            return
        head: dict[str, Any] = {"@type": "Response"}
        if request_id is not None:
            head["requestId"] = request_id
        self.ws.send_text(dump_response({**head, **response}).decode("utf-8"))

    def _session_for(self, request: dict[str, Any]) -> Session:
        """The Session to run ``request`` in. Calls on accounts get one read fresh (the accounts checked are
        the user's now); a request of calls on no account (``Core/echo``) needs no read: it gets the socket's
        last sessionState as long as the channel heard of no access change since (the only change it moves
        with)."""
        state, seen = self._session_state, self.channel.access_changes
        if state is not None and seen == self._session_seen and not _on_accounts(request):
            return Session.of_state(state)
        session = build_session(self.services, self.principal)
        self._session_state, self._session_seen = session.state, seen
        return session

    def _push_enable(self, message: dict[str, Any]) -> None:
        types = message.get("dataTypes")
        if types is not None and (not isinstance(types, list) or not all(isinstance(t, str) for t in types)):
            self._error(RequestError("notRequest", "'dataTypes' must be null or an array of type names"))
            return
        push_state = message.get("pushState")
        if push_state is not None and not isinstance(push_state, str):
            self._error(RequestError("notRequest", "'pushState' must be a string"))
            return
        wanted = None if types is None else [t for t in types if t in PUSH_TYPES]
        try:
            self.channel.enable(wanted, resume_from=push_state)
        except StoreError as e:
            log.warning(kv(event="ws_push_unavailable", user=self.principal.email, error=str(e)))
            self.ws.send_text(_dumps(_unavailable()))

    def _take_push(self) -> str | None:
        since = self.channel.pending_since
        change = self.channel.take()
        if change is None:
            return None
        self.pushes += 1
        metrics.since_ms(since, "websocket")
        return _dumps(change)

    def _revoked(self, revocation: CredentialsRevoked) -> None:
        """The credential this socket was opened with is no longer valid: close it (never blocks)."""
        if self.ws.end_reason is None:
            self.ws.end_reason = "revoked"
        self.ws.close(POLICY_VIOLATION, "credentials revoked")

    def _error(self, error: RequestError, request_id: str | None = None) -> None:
        self.ws.send_text(_dumps(_request_error(error.to_json(), request_id)))


class Hub:
    """Every open JMAP WebSocket of one process: heartbeat and shutdown."""

    def __init__(self, services: PushServices, slots: PushSlots | None = None) -> None:
        self.services = services
        self.sockets: set[JmapSocket] = set()
        #: Open push connections per user (shared with the EventSource streams by the runtime).
        self.slots = slots if slots is not None else PushSlots(services.config.max_push_connections_per_user)
        #: Set by close_all: new upgrades are refused (503) while the process shuts down.
        self.closing = False
        self._ticker: gevent.Greenlet | None = None

    def add(self, sock: JmapSocket) -> None:
        self.sockets.add(sock)
        if self._ticker is None:
            self._ticker = gevent.spawn(self._tick)

    def discard(self, sock: JmapSocket) -> None:
        self.sockets.discard(sock)

    def _tick(self) -> None:
        """Runs while there are sockets: pings, silent peers, overdue closes."""
        config = self.services.config
        interval, timeout = config.ws_ping_seconds, config.ws_ping_timeout_seconds
        period = min(1.0, max(0.02, (interval or 1.0) / 4))
        try:
            while self.sockets:
                gevent.sleep(period)
                now = time.monotonic()
                for sock in list(self.sockets):
                    try:
                        sock.ws.heartbeat(now, interval, timeout)
                    except Exception:  # one socket's trouble must not stop the others' heartbeat
                        log.exception(kv(event="ws_heartbeat_failed", user=sock.principal.email))
                        sock.ws.abort("error")
        finally:
            self._ticker = None

    def close_all(self, code: int = GOING_AWAY, reason: str = "server shutting down", timeout: float = 2.0) -> int:
        """Close every socket with ``code`` and wait (at most ``timeout``) for them to end; returns how many."""
        self.closing = True
        sockets = list(self.sockets)
        for sock in sockets:
            if sock.ws.end_reason is None:
                sock.ws.end_reason = "shutdown"
            sock.ws.close(code, reason, grace=timeout)
        deadline = time.monotonic() + timeout
        while self.sockets and time.monotonic() < deadline:
            gevent.sleep(0.01)
        for sock in list(self.sockets):
            sock.ws.abort("shutdown")
        return len(sockets)

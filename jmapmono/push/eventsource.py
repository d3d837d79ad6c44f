"""Push over Server-Sent Events (RFC 8620 §7.3), with real resume: the streams behind ``GET /jmap/eventsource``
(the route is jmapmono/web/eventsource.py).

The Session's ``eventSourceUrl`` is ``/jmap/eventsource?types={types}&closeafter={closeafter}&ping={ping}``.
The GET is authenticated like any API request (401/429/503 otherwise); then the parameters are checked,
each bad one answered 400 with a problem document naming it. ``ping`` is clamped to
``JMAPMONO_EVENTSOURCE_MIN_PING`` … ``JMAPMONO_EVENTSOURCE_MAX_PING`` (0 stays 0: no pings).

The stream (``text/event-stream``, never cached, never buffered by nginx, no Content-Length) carries:

- ``state`` events: data = the StateChange (``@type``, ``changed``; no ``pushState`` in the data) and
  ``id:`` = the pushState (jmapmono/push/push_state.py), which encodes everything the user can see;
- ``ping`` events: data ``{"interval": N}``, no id, whenever N seconds passed since the last event;
- first, a comment, so that proxies pass the headers on at once. A client that sent no
  ``Last-Event-ID`` also gets the current pushState there as an ``id:`` (a block with no data
  dispatches no event): if the stream drops before anything changed, its reconnect still resumes.

With ``Last-Event-ID`` (browsers send it on reconnect) what changed since that token is sent at once,
exactly the types that moved; nothing if nothing did. Without it, nothing is sent until something
changes. ``closeafter=state`` ends the response after the first state event.

Every event goes to the WSGI server as one piece, which gevent's pywsgi and gunicorn's gevent worker
write as one HTTP chunk. Pushes come from a :class:`~jmapmono.push.channel.PushChannel` (one per
stream) that coalesces them: the stream writes one event at a time and a slow reader gets fewer,
fresher events, never a backlog. The channel is closed on every way a stream ends: the client
disconnects (a greenlet waiting on the socket sees the EOF at once; failing writes end it too),
closeafter, a write blocked longer than ``JMAPMONO_EVENTSOURCE_WRITE_TIMEOUT`` seconds (a client that
stopped reading), the revocation of the credential the stream was opened with (password change,
app-password revocation, user deletion: the response ends, and the browser's reconnect gets a 401; a
stream whose credential was revoked before it listened, or while its node was cut off from the broker,
ends the same way: push/channel.py), or
``Streams.close_all`` at shutdown. One log line when a stream opens, one when it ends. Each stream holds
one of its user's push slots (push/slots.py) from before it opens until it ends.
"""

from __future__ import annotations

import _socket
import json
import logging
import re
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gevent
import gevent.event

from jmapmono import metrics
from jmapmono.accounts.principal import Principal
from jmapmono.log import kv
from jmapmono.push.channel import PUSH_TYPES, PushChannel
from jmapmono.push.jmap_bus_events import CredentialsRevoked
from jmapmono.push.slots import PushSlots

if TYPE_CHECKING:
    from jmapmono.push.context import PushServices

_TYPE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{0,63}")

log = logging.getLogger("jmapmono.push.eventsource")

PATH = "/jmap/eventsource"
CONTENT_TYPE = "text/event-stream; charset=utf-8"
#: Largest UnsignedInt (RFC 8620 §1.3).
MAX_UNSIGNED_INT = 2**53 - 1
#: What a stream starts with (an SSE comment: no event is dispatched).
OPENING_COMMENT = ": jmapmono push"


class ParameterError(ValueError):
    """A bad query parameter: answered 400 with a problem document naming ``parameter``."""

    def __init__(self, parameter: str, detail: str) -> None:
        super().__init__(detail)
        self.parameter = parameter
        self.detail = detail


@dataclass(frozen=True)
class StreamParams:
    """The checked query parameters of one stream."""

    #: None: every type.
    types: frozenset[str] | None
    close_after_state: bool
    #: Seconds between pings after clamping (0: no pings).
    ping: int
    #: The interval the client asked for.
    requested_ping: int


def _single(args: Mapping[str, Any], name: str) -> str:
    getlist = getattr(args, "getlist", None)
    values = getlist(name) if getlist is not None else ([args[name]] if name in args else [])
    if not values:
        raise ParameterError(name, f"the {name} parameter is required (RFC 8620 §7.3)")
    if len(values) > 1:
        raise ParameterError(name, f"the {name} parameter is given more than once")
    return values[0]


def parse_params(args: Mapping[str, Any], min_ping: int, max_ping: int) -> StreamParams:
    """Check ``types``, ``closeafter`` and ``ping``; clamp ping into [min_ping, max_ping]. Raises ParameterError."""
    raw_types = _single(args, "types").strip()
    if raw_types == "*":
        types: frozenset[str] | None = None
    else:
        names = [name.strip() for name in raw_types.split(",")]
        if not raw_types or any(not name for name in names):
            raise ParameterError("types", "types must be * or a comma-separated list of type names")
        malformed = sorted({name for name in names if not _TYPE_NAME.fullmatch(name)})
        if malformed:
            raise ParameterError("types", f"not a type name: {', '.join(malformed)}")
        # Type names this server does not push (e.g. CalendarEvent) are ignored, as on the WebSocket.
        names = [name for name in names if name in PUSH_TYPES]
        types = frozenset(names)
    closeafter = _single(args, "closeafter")
    if closeafter not in ("state", "no"):
        raise ParameterError("closeafter", f"closeafter must be state or no, not {closeafter!r}")
    raw_ping = _single(args, "ping").strip()
    if not raw_ping.isascii() or not raw_ping.isdigit() or len(raw_ping) > 16 or int(raw_ping) > MAX_UNSIGNED_INT:
        raise ParameterError("ping", f"ping must be a whole number of seconds (0: no pings), not {raw_ping!r}")
    requested = int(raw_ping)
    ping = 0 if requested == 0 else max(min_ping, min(max_ping, requested))
    return StreamParams(types, closeafter == "state", ping, requested)


# -- the wire format -------------------------------------------------------------------------------------------------


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def state_event(change: Mapping[str, Any]) -> bytes:
    """A ``state`` event: the StateChange without pushState as data, the pushState as the event id."""
    data = {"@type": "StateChange", "changed": change["changed"]}
    return f"event: state\nid: {change['pushState']}\ndata: {_dumps(data)}\n\n".encode()


def ping_event(interval: int) -> bytes:
    """A ``ping`` event (no id: a ping must not change the client's last event id)."""
    return f'event: ping\ndata: {{"interval":{interval}}}\n\n'.encode()


def opening_block(push_state: str | None) -> bytes:
    """The comment a stream starts with; with ``push_state``, an id-only block (dispatches no event)."""
    return (f"{OPENING_COMMENT}\n" + (f"id: {push_state}\n" if push_state else "") + "\n").encode()


# -- one stream ------------------------------------------------------------------------------------------------------


def client_socket(environ: Mapping[str, Any]) -> socket.socket | None:
    """The client's socket under gunicorn's gevent worker or gevent's pywsgi; None elsewhere."""
    sock = environ.get("gunicorn.socket") or environ.get("gunicorn.sock")
    if sock is not None:
        return sock
    stream = environ.get("wsgi.input")
    rfile = getattr(stream, "rfile", stream)  # pywsgi's Input wraps the socket's buffered reader
    return getattr(getattr(rfile, "raw", None), "_sock", None)


def shutdown_quietly(sock: socket.socket) -> None:
    """Shut the connection down under the greenlets using it: a blocked write then fails with EPIPE, which
    the WSGI server takes as a client gone. (gevent's own ``shutdown`` cancels the waits with EBADF, which
    it reports as an application error.)"""
    try:
        raw = _socket.socket(fileno=sock.fileno())
    except OSError:
        return
    try:
        raw.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        raw.detach()  # the descriptor stays the server's to close


class EventStream:
    """The events of one EventSource response: iterate it (the WSGI body); it ends on every way out."""

    def __init__(
        self,
        services: PushServices,
        principal: Principal,
        params: StreamParams,
        last_event_id: str | None,
        sock: socket.socket | None = None,
        remote_addr: str | None = None,
    ) -> None:
        self.services = services
        self.principal = principal
        self.params = params
        self.last_event_id = last_event_id
        self.sock = sock
        self.remote_addr = remote_addr
        self.opened_at = time.monotonic()
        self.state_events = 0
        self.pings = 0
        #: Why the stream ended, for the log: closeafter, client_gone, disconnected, write_timeout, shutdown, …
        self.end_reason: str | None = None
        #: monotonic time the WSGI server started writing the last event handed to it; None when not writing.
        self.writing_since: float | None = None
        self._wake = gevent.event.Event()
        self._stopping = False
        self._closed = False
        self._watcher: gevent.Greenlet | None = None
        self.channel = PushChannel(services, principal, self._wake.set, self._revoked)

    def open(self) -> None:
        """Listen (and queue what changed since Last-Event-ID); may raise StoreError. Close it on failure."""
        self.channel.enable(self.params.types, resume_from=self.last_event_id)
        if self.sock is not None:
            self._watcher = gevent.spawn(self._watch_socket)
        log.info(
            kv(
                event="eventsource_open",
                user=self.principal.email,
                types="*" if self.params.types is None else ",".join(sorted(self.params.types)),
                closeafter="state" if self.params.close_after_state else "no",
                ping=self.params.ping,
                resume="yes" if self.last_event_id else "no",
                ip=self.remote_addr,
            )
        )

    def __iter__(self) -> Iterator[bytes]:
        return self._events()

    def _events(self) -> Iterator[bytes]:
        ping = self.params.ping
        try:
            yield from self._write(opening_block(None if self.last_event_id else self.channel.push_state()))
            last_sent = time.monotonic()
            while not self._stopping:
                timeout = None if ping == 0 else max(0.0, last_sent + ping - time.monotonic())
                self._wake.wait(timeout)
                self._wake.clear()
                if self._stopping:
                    break
                since = self.channel.pending_since
                change = self.channel.take()
                if change is not None:
                    yield from self._write(state_event(change))
                    metrics.since_ms(since, "eventsource")
                    self.state_events += 1
                    last_sent = time.monotonic()
                    if self.params.close_after_state:
                        self._end("closeafter")
                        return
                elif ping and time.monotonic() - last_sent >= ping:
                    yield from self._write(ping_event(ping))
                    self.pings += 1
                    last_sent = time.monotonic()
        except GeneratorExit:  # the WSGI server stopped iterating: a write failed (client gone) or it closed
            self._end("disconnected")
            raise
        except gevent.GreenletExit:  # the server killed the request (its stop timeout ran out)
            self._end("server_stop")
            raise
        finally:
            self.close()

    def _write(self, block: bytes) -> Iterator[bytes]:
        self.writing_since = time.monotonic()
        yield block
        self.writing_since = None

    def _end(self, reason: str) -> None:
        if self.end_reason is None:
            self.end_reason = reason

    def stop(self, reason: str) -> None:
        """End the stream soon (from another greenlet): it finishes the response cleanly."""
        self._end(reason)
        self._stopping = True
        self._wake.set()

    def abort(self, reason: str) -> None:
        """Cut the connection now (a write blocked on a client that does not read)."""
        self.stop(reason)
        if self.sock is not None:
            shutdown_quietly(self.sock)

    def _revoked(self, revocation: CredentialsRevoked) -> None:
        """The credential this stream was opened with is no longer valid: end it now, even mid-write."""
        if self.writing_since is not None:
            self.abort("revoked")
        else:
            self.stop("revoked")

    def close(self) -> None:
        """Unregister the push listeners and log the end (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._stopping = True
        self.channel.close()
        if self._watcher is not None and self._watcher is not gevent.getcurrent():
            # Gone before the response ends: the server reads the connection's next request right after.
            self._watcher.kill(block=True, timeout=1)
        self.services.event_streams.discard(self)
        self._end("closed")
        log.info(
            kv(
                event="eventsource_close",
                user=self.principal.email,
                ms=f"{(time.monotonic() - self.opened_at) * 1000:.0f}",
                events=self.state_events,
                pings=self.pings,
                reason=self.end_reason,
            )
        )

    def _watch_socket(self) -> None:
        """Wait for the client to hang up: it sends nothing after its GET, so readable means EOF (or a
        pipelined request, which is left unread and ends the watch: failing writes still end the stream)."""
        assert self.sock is not None
        try:
            data = self.sock.recv(1, socket.MSG_PEEK)
        except OSError:
            data = b""
        if not data and not self._closed:
            self.stop("client_gone")


# -- every stream of a process ---------------------------------------------------------------------------------------


class Streams:
    """Every open EventSource stream of one process: stuck writes and shutdown."""

    def __init__(self, services: PushServices, slots: PushSlots | None = None) -> None:
        self.services = services
        self.streams: set[EventStream] = set()
        #: Open push connections per user (shared with the WebSockets by the runtime).
        self.slots = slots if slots is not None else PushSlots(services.config.max_push_connections_per_user)
        self._holding: set[EventStream] = set()
        #: Set by close_all: new streams are refused (503) while the process shuts down.
        self.closing = False
        self._ticker: gevent.Greenlet | None = None

    def __len__(self) -> int:
        return len(self.streams)

    def add(self, stream: EventStream) -> None:
        metrics.EVENTSOURCE_OPEN.inc()
        self.streams.add(stream)
        if self._ticker is None:
            self._ticker = gevent.spawn(self._tick)

    def reserve(self, stream: EventStream) -> bool:
        """Take a push slot for ``stream`` before it opens; False when its user already holds the limit."""
        if not self.slots.take(stream.principal, "eventsource"):
            return False
        self._holding.add(stream)
        return True

    def discard(self, stream: EventStream) -> None:
        """Forget an ended stream and free its slot."""
        if stream in self.streams:
            metrics.EVENTSOURCE_OPEN.dec()
        self.streams.discard(stream)
        if stream in self._holding:
            self._holding.discard(stream)
            self.slots.give_back(stream.principal.user_id)

    def _tick(self) -> None:
        """Runs while there are streams: cuts those whose write has been blocked too long."""
        limit = self.services.config.eventsource_write_timeout_seconds
        period = min(1.0, limit / 4)
        try:
            while self.streams:
                gevent.sleep(period)
                now = time.monotonic()
                for stream in list(self.streams):
                    since = stream.writing_since
                    if since is not None and now - since > limit:
                        log.info(kv(event="eventsource_write_timeout", user=stream.principal.email))
                        stream.abort("write_timeout")
        finally:
            self._ticker = None

    def close_all(self, timeout: float = 2.0) -> int:
        """End every stream (clients reconnect elsewhere) and wait at most ``timeout``; returns how many."""
        self.closing = True
        streams = list(self.streams)
        for stream in streams:
            stream.stop("shutdown")
        deadline = time.monotonic() + timeout
        while self.streams and time.monotonic() < deadline:
            gevent.sleep(0.01)
        for stream in list(self.streams):
            stream.abort("shutdown")
        return len(streams)

"""One WebSocket connection on a gevent socket: wsproto speaks the protocol, this module schedules the I/O.

wsproto (RFC 6455 handshake, framing, masking, incremental UTF-8 validation, close handshake, RFC 7692
permessage-deflate) is the only protocol code; here are only the greenlets and the bounds:

- The reader is the caller's greenlet: :meth:`WebSocket.messages` yields each complete text message
  (or :data:`TOO_LARGE` once, as soon as a message grows past the limit: the rest of it is read and
  dropped, never buffered). Binary messages close the connection with 1003 (JMAP is text only).
- One writer at a time encodes frames and writes the socket, by priority: control frames (pong, ping,
  close), then one push pulled from the push source (already coalesced upstream), then queued
  messages. It is the greenlet that queued a message when that one may block (a request's), else a
  greenlet spawned for the purpose; it returns when nothing is left (an idle connection holds none).
- Queued messages are bounded in bytes: :meth:`send_text` waits for room, so a client that stops
  reading stops its own requests through TCP back-pressure instead of growing this process.
- Liveness: :meth:`heartbeat`, called periodically, sends pings and closes a peer that stays silent.
- :meth:`finish` flushes the close handshake (bounded) and shuts the TCP connection down.

Deflate is negotiated with no context takeover in either direction, so between messages a connection
keeps no zlib state at all (see docs/adr/0003-websocket-library.md for the figures); a compressed
message is inflated no further than the limit (ws_deflate.py), then it is TOO_LARGE as a plain one.
"""

from __future__ import annotations

import socket
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import gevent
import gevent.event
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    Request,
    TextMessage,
)
from wsproto.extensions import Extension
from wsproto.handshake import H11Handshake
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from jmapmono.push.ws_deflate import BoundedDeflate

#: Yielded by :meth:`WebSocket.messages` when a message is larger than the limit.
TOO_LARGE = object()
#: Bytes read from the socket at once.
RECV_SIZE = 65536
#: Seconds the peer gets to answer our close frame (or a closing writer to flush) before the TCP
#: connection is cut.
CLOSE_TIMEOUT = 2.0

# Close codes (RFC 6455 §7.4.1).
NORMAL = 1000
GOING_AWAY = 1001
UNSUPPORTED_DATA = 1003
ABNORMAL = 1006
POLICY_VIOLATION = 1008

#: The handshake headers wsproto needs; nothing else of the request is handed to it.
_HANDSHAKE_HEADERS = (
    "Host",
    "Connection",
    "Upgrade",
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
    "Sec-WebSocket-Protocol",
    "Sec-WebSocket-Extensions",
)


class HandshakeError(Exception):
    """The upgrade request is not a valid WebSocket opening handshake (answer 400)."""


def accept(
    environ: dict[str, Any], subprotocol: str, deflate: bool, max_message: int
) -> tuple[bytes, Connection, BoundedDeflate | None]:
    """The 101 answer to the upgrade request in ``environ`` and the open connection.

    Returns (the response bytes to write, the wsproto connection, the permessage-deflate extension if
    it was negotiated: it inflates no message past ``max_message`` bytes). Raises HandshakeError for a
    request wsproto refuses.
    """
    lines = [b"GET / HTTP/1.1"]
    for name in _HANDSHAKE_HEADERS:
        value = environ.get("HTTP_" + name.upper().replace("-", "_"))
        if value is not None:
            lines.append(name.encode("ascii") + b": " + value.encode("latin-1"))
    handshake = H11Handshake(ConnectionType.SERVER)
    inflater = BoundedDeflate(max_message)
    extensions: list[Extension] = [inflater] if deflate else []
    try:
        handshake.receive_data(b"\r\n".join(lines) + b"\r\n\r\n")
        request = next((e for e in handshake.events() if isinstance(e, Request)), None)
        if request is None:
            raise HandshakeError("incomplete WebSocket opening handshake")
        response = handshake.send(AcceptConnection(subprotocol=subprotocol, extensions=extensions))
    except (RemoteProtocolError, LocalProtocolError, ValueError, UnicodeError) as e:
        raise HandshakeError(f"invalid WebSocket opening handshake: {e}") from None
    connection = handshake.connection
    assert connection is not None
    return response, connection, inflater if inflater.enabled() else None


def _size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


class WebSocket:
    """An accepted WebSocket: read with :meth:`messages`, write with :meth:`send_text` / the push source."""

    def __init__(
        self,
        sock: socket.socket,
        connection: Connection,
        *,
        max_message: int,
        outbound_limit: int,
        inflater: BoundedDeflate | None = None,
    ) -> None:
        self.sock = sock
        self.conn = connection
        self.max_message = max_message
        self.outbound_limit = outbound_limit
        #: The negotiated permessage-deflate (None: none), bounded by the same limit (ws_deflate.py).
        self.inflater = inflater
        self.deflate = inflater is not None
        now = time.monotonic()
        self.opened_at = now
        self.last_heard = now
        self.last_ping = now
        #: The close code sent or received first (1006: none, the TCP connection just ended).
        self.close_code: int | None = None
        #: Why the connection ended, for the log (client_close, server_close, ping_timeout, eof, …).
        self.end_reason: str | None = None
        self.messages_in = 0
        self.messages_out = 0
        self._close_deadline: float | None = None
        self._aborted = False
        # What waits to be written, and the event requests wait on for room in the queue: made when needed
        # and dropped once empty (an idle connection holds none of them).
        self._control: deque[Any] | None = None
        self._queue: deque[str] | None = None
        self._queued = 0
        self._room: gevent.event.Event | None = None
        self._pull: Callable[[], str | None] | None = None
        self._pull_wanted = False
        self._writer: Any = None  # the greenlet writing now, if any

    # -- state -----------------------------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """True until a close starts (either side) or the connection is cut."""
        return not self._aborted and self._close_deadline is None and self.conn.state is ConnectionState.OPEN

    @property
    def queued_bytes(self) -> int:
        return self._queued

    # -- reading ---------------------------------------------------------------------------------------------------

    def messages(self) -> Iterator[str | object]:
        """Each complete text message as it arrives (or TOO_LARGE); ends when the connection does."""
        parts: list[str] = []
        size = 0
        discarding = False
        while not self._aborted:
            try:
                data = self.sock.recv(RECV_SIZE)
            except OSError:
                data = b""
            if not data:
                self._ended("eof", ABNORMAL)
                return
            self.last_heard = time.monotonic()
            try:
                self.conn.receive_data(data)
            except LocalProtocolError:  # bytes after the closing handshake
                return
            for event in self.conn.events():
                if isinstance(event, TextMessage):
                    if self._close_deadline is not None:
                        continue  # closing: what the peer still sends is not acted upon
                    if not discarding:
                        size += _size(event.data)
                        if size > self.max_message or (self.inflater is not None and self.inflater.too_large):
                            discarding = True
                            parts = []
                            yield TOO_LARGE
                        else:
                            parts.append(event.data)
                    if event.message_finished:
                        if not discarding:
                            self.messages_in += 1
                            yield parts[0] if len(parts) == 1 else "".join(parts)
                        parts, size, discarding = [], 0, False
                elif isinstance(event, BytesMessage):
                    self.close(UNSUPPORTED_DATA, "JMAP messages are UTF-8 text")
                elif isinstance(event, Ping):
                    self._send_control(event.response())
                elif isinstance(event, Pong):
                    pass  # last_heard is already up to date
                elif isinstance(event, CloseConnection):
                    state = self.conn.state
                    if state is ConnectionState.REMOTE_CLOSING:  # the peer closes: answer with its code
                        self._ended("client_close", event.code)
                        self._send_control(event.response())
                    elif state is ConnectionState.OPEN:  # wsproto found a protocol error in what came in
                        self._ended("protocol_error", event.code)
                        self.close(event.code, (event.reason or "")[:120])
                    else:
                        self._ended("closed", event.code)  # the answer to our close
                    return

    # -- writing ---------------------------------------------------------------------------------------------------

    def send_text(self, text: str) -> bool:
        """Queue ``text``; waits while the queue is over its bound. False when the connection is closing or gone."""
        size = _size(text)
        while self._queued and self._queued + size > self.outbound_limit and self.is_open:
            self._wait_room()
        if not self.is_open:
            return False
        if self._queue is None:
            self._queue = deque()
        self._queue.append(text)
        self._queued += size
        self._kick(inline=True)
        return True

    def wait_for_room(self) -> None:
        """Wait while the queue is at its bound: the caller (the reader) stops reading, TCP pushes back."""
        while self._queued >= self.outbound_limit and self.is_open:
            self._wait_room()

    def set_push_source(self, pull: Callable[[], str | None]) -> None:
        """Where the writer takes a push when :meth:`wake` was called (one coalesced message, or None)."""
        self._pull = pull

    def wake(self) -> None:
        """A push is pending: the writer pulls it when it can write. Never blocks (safe from any greenlet)."""
        self._pull_wanted = True
        self._kick()

    def close(self, code: int = NORMAL, reason: str = "", grace: float = CLOSE_TIMEOUT) -> None:
        """Start the closing handshake; the connection is cut if it has not ended ``grace`` seconds later."""
        if self._aborted or self._close_deadline is not None:
            return
        self._close_deadline = time.monotonic() + grace
        if self.close_code is None:
            self.close_code = code
        if self.end_reason is None:
            self.end_reason = "server_close"
        self._give_room()  # requests waiting for room give up
        self._send_control(CloseConnection(code=code, reason=reason))

    def abort(self, reason: str) -> None:
        """Cut the TCP connection now (the reader sees the end, a blocked writer fails)."""
        if self.end_reason is None:
            self.end_reason = reason
        self._shutdown()

    def finish(self) -> None:
        """Let the writer flush the close handshake (at most CLOSE_TIMEOUT), then end the TCP connection."""
        writer = self._writer
        if isinstance(writer, gevent.Greenlet) and writer is not gevent.getcurrent() and not self._aborted:
            writer.join(timeout=CLOSE_TIMEOUT)
        self._shutdown()

    def heartbeat(self, now: float, interval: float, timeout: float) -> None:
        """Ping every ``interval`` seconds; close a peer silent for ``interval + timeout``; cut an overdue close."""
        if self._aborted:
            return
        if self._close_deadline is not None:
            if now >= self._close_deadline:
                self.abort("close_timeout")
            return
        if interval <= 0:
            return
        if now - self.last_heard > interval + timeout:
            self.end_reason = "ping_timeout"
            self.close(POLICY_VIOLATION, "no answer to ping", grace=min(CLOSE_TIMEOUT, timeout))
        elif now - self.last_ping >= interval:
            self.last_ping = now
            self._send_control(Ping(payload=b"jmapmono"))

    # -- internals -------------------------------------------------------------------------------------------------

    def _ended(self, reason: str, code: int | None) -> None:
        if self.end_reason is None:
            self.end_reason = reason
        if self.close_code is None:
            self.close_code = code if code is not None else ABNORMAL

    def _wait_room(self) -> None:
        if self._room is None:
            self._room = gevent.event.Event()
        self._room.clear()
        self._room.wait()

    def _give_room(self) -> None:
        if self._room is not None:
            self._room.set()

    def _send_control(self, event: Any) -> None:
        if self._control is None:
            self._control = deque()
        elif isinstance(event, Ping | Pong):  # one of each waiting at most (RFC 6455 §5.5.3: the latest pong)
            kind = type(event)
            self._control = deque(e for e in self._control if type(e) is not kind)
        self._control.append(event)
        self._kick()

    def _kick(self, inline: bool = False) -> None:
        """Make sure a writer runs: the calling greenlet itself when it may block (``inline``: saves a
        greenlet switch per message), else a new one (the bus and the hub must never block)."""
        if self._writer is not None or self._aborted:
            return
        if inline:
            self._writer = gevent.getcurrent()
            self._write_loop()
        else:
            self._writer = gevent.spawn(self._write_loop)

    def _next_frame(self) -> bytes | None:
        """The next bytes to write, by priority; None when there is nothing to write."""
        while True:
            if self._control:
                event = self._control.popleft()
            elif self._pull_wanted and self._pull is not None:
                self._pull_wanted = False
                text = self._pull()
                if text is None:
                    continue
                event = TextMessage(data=text)
            elif self._queue:
                text = self._queue.popleft()
                self._queued -= _size(text)
                self._give_room()
                event = TextMessage(data=text)
            else:
                self._control = self._queue = None
                return None
            try:
                data = self.conn.send(event)
            except LocalProtocolError:  # closing: data frames can no longer be sent
                continue
            if isinstance(event, TextMessage):
                self.messages_out += 1
            return data

    def _write_loop(self) -> None:
        try:
            while not self._aborted:
                data = self._next_frame()
                if data is None:
                    return
                self.sock.sendall(data)
        except OSError:
            self.abort("write_error")
        finally:
            self._writer = None

    def _shutdown(self) -> None:
        if self._aborted:
            return
        self._aborted = True
        if self.close_code is None:
            self.close_code = ABNORMAL
        self._queue = None
        self._queued = 0
        self._give_room()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

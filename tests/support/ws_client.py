"""A JMAP WebSocket test client on a real socket (wsproto, so tests control every frame).

``WsClient`` answers pings while it reads (unless ``answer_pings=False``), keeps messages it was not
waiting for (``pending``), and exposes its raw socket for tests that inspect frames themselves. The
server it talks to is started by tests/support/servers.py (``start_app``, ``start_serve``).
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate

from tests.support.jmap import ALL, PASSWORD


def basic(email: str, password: str = PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{email}:{password}".encode()).decode()


class Rejected(Exception):
    """The server answered the upgrade with an HTTP error."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        super().__init__(f"{status} {body[:200]!r}")
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


class Closed(Exception):
    """The server closed the WebSocket."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"closed {code} {reason}")
        self.code = code
        self.reason = reason


class WsClient:
    def __init__(
        self,
        port: int,
        authorization: str | None = None,
        *,
        path: str = "/jmap/ws",
        subprotocols: list[str] | None = None,
        headers: dict[str, str] | None = None,
        deflate: bool = False,
        answer_pings: bool = True,
        timeout: float = 10.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """With ``tls``, the socket speaks TLS (wss://, e.g. through a TLS-terminating proxy)."""
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # no resolver round trip for a literal
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle + delayed-ACK stalls
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname="127.0.0.1")
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.answer_pings = answer_pings
        self.pending: list[dict] = []
        self.pings = 0
        self.close_code: int | None = None
        self.close_reason = ""
        extra = dict(headers or {})
        if authorization is not None:
            extra["Authorization"] = authorization
        request = Request(
            host=f"127.0.0.1:{port}",
            target=path,
            subprotocols=["jmap"] if subprotocols is None else subprotocols,
            extensions=[PerMessageDeflate()] if deflate else [],
            extra_headers=[(k.encode(), v.encode()) for k, v in extra.items()],
        )
        self.sock.sendall(self.ws.send(request))
        self.accepted: AcceptConnection | None = None
        self._messages: list[Any] = []
        self._text: list[str] = []
        status, rheaders, body = 0, {}, b""
        while self.accepted is None:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed the connection during the handshake")
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, AcceptConnection):
                    self.accepted = event
                elif isinstance(event, RejectConnection):
                    status = event.status_code
                    rheaders = {k.decode().lower(): v.decode() for k, v in event.headers}
                    if not event.has_body:
                        self.sock.close()
                        raise Rejected(status, rheaders, body)
                elif isinstance(event, RejectData):
                    body += event.data
                    if event.body_finished:
                        self.sock.close()
                        raise Rejected(status, rheaders, body)
                else:
                    self._absorb(event)
        self.subprotocol = self.accepted.subprotocol
        self.extensions = self.accepted.extensions

    # -- sending ---------------------------------------------------------------------------------------------------

    def send_text(self, text: str) -> None:
        self.sock.sendall(self.ws.send(Message(data=text)))

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(self.ws.send(Message(data=data)))

    def send_json(self, value: Any) -> None:
        self.send_text(json.dumps(value))

    def send_request(self, calls: list, request_id: str | None = None, using: list[str] | None = None) -> None:
        message: dict[str, Any] = {"@type": "Request", "using": using or ALL, "methodCalls": calls}
        if request_id is not None:
            message["id"] = request_id
        self.send_json(message)

    def enable_push(self, types: list[str] | None = None, push_state: str | None = None, sync: bool = True) -> None:
        """Enable push; with ``sync``, wait until the server has acted on it (an echo sent after it came back:
        the server handles one socket's messages in order)."""
        message: dict[str, Any] = {"@type": "WebSocketPushEnable", "dataTypes": types}
        if push_state is not None:
            message["pushState"] = push_state
        self.send_json(message)
        if sync:
            self.barrier()

    def barrier(self) -> None:
        """Return once the server has read everything sent before (a Core/echo round trip)."""
        self._barriers = getattr(self, "_barriers", 0) + 1
        request_id = f"barrier-{self._barriers}"
        self.send_request([["Core/echo", {}, "b"]], request_id, ["urn:ietf:params:jmap:core"])
        self.response(request_id)

    # -- receiving -------------------------------------------------------------------------------------------------

    def _absorb(self, event: Any) -> None:
        if isinstance(event, TextMessage):
            self._text.append(event.data)
            if event.message_finished:
                self._messages.append(json.loads("".join(self._text)))
                self._text = []
        elif isinstance(event, BytesMessage):
            self._messages.append(bytes(event.data))
        elif isinstance(event, Ping):
            self.pings += 1
            if self.answer_pings:
                self.sock.sendall(self.ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            self.close_code, self.close_reason = event.code, event.reason
            try:
                self.sock.sendall(self.ws.send(event.response()))
            except Exception:
                pass

    def _read_some(self, deadline: float) -> None:
        if self.close_code is not None:
            raise Closed(self.close_code, self.close_reason)
        self.sock.settimeout(max(0.001, deadline - time.monotonic()))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return
        if not data:
            self.close_code = self.close_code or 1006
            raise Closed(self.close_code, "connection ended")
        self.ws.receive_data(data)
        for event in self.ws.events():
            self._absorb(event)

    def recv(self, timeout: float = 10.0, where: Callable[[Any], bool] | None = None) -> Any:
        """The next message (matching ``where``); others stay in ``pending``. AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            for i, message in enumerate(self.pending + self._messages):
                if where is None or where(message):
                    everything = self.pending + self._messages
                    del everything[i]
                    self.pending, self._messages = everything, []
                    return message
            self.pending, self._messages = self.pending + self._messages, []
            if time.monotonic() >= deadline:
                raise AssertionError(f"no matching message within {timeout}s; pending: {self.pending[:5]}")
            self._read_some(deadline)

    def response(self, request_id: str, timeout: float = 10.0) -> dict:
        return self.recv(timeout, lambda m: isinstance(m, dict) and m.get("requestId") == request_id)

    def push(self, timeout: float = 10.0, where: Callable[[dict], bool] | None = None) -> dict:
        return self.recv(
            timeout, lambda m: isinstance(m, dict) and m.get("@type") == "StateChange" and (where is None or where(m))
        )

    def call(self, calls: list, request_id: str = "r", using: list[str] | None = None) -> list:
        """Send a Request and return its methodResponses."""
        self.send_request(calls, request_id, using)
        response = self.response(request_id)
        assert response["@type"] == "Response", response
        return response["methodResponses"]

    def read_until(self, predicate: Callable[[], Any], timeout: float = 10.0) -> None:
        """Keep reading (answering pings, keeping messages) until ``predicate()`` is true."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                raise AssertionError(f"condition not met within {timeout}s")
            self._read_some(deadline)
        self.pending, self._messages = self.pending + self._messages, []

    def wait_closed(self, timeout: float = 10.0) -> int | None:
        """Read until the server closes; the close code (1006 when the TCP connection just ended)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self._read_some(deadline)
            except Closed as e:
                return e.code
            except OSError:
                return 1006
        raise AssertionError(f"still open after {timeout}s")

    def close(self, code: int = 1000) -> None:
        try:
            self.sock.sendall(self.ws.send(CloseConnection(code=code)))
        except Exception:
            pass
        self.sock.close()

"""Many push-enabled JMAP WebSockets at once, at the byte level (for fan-out tests and benchmarks).

``WsClient`` (ws_client.py) is a full client: one wsproto connection per socket, every frame parsed.
A fan-out of thousands of sockets needs less: open the WebSocket (HTTP upgrade, Basic credentials, no
extension), send ``WebSocketPushEnable``, then read frames until the first text one (a StateChange;
pings are skipped). No greenlet or buffer per socket is kept between those steps.
"""

from __future__ import annotations

import base64
import json
import os
import socket
from typing import Any

#: The one message every socket sends: push every data type.
PUSH_ENABLE = json.dumps({"@type": "WebSocketPushEnable", "dataTypes": None}).encode()


def _masked_text(payload: bytes) -> bytes:
    """A client text frame (FIN, opcode 1, masked as RFC 6455 §5.3 requires)."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        head = bytes([0x81, 0x80 | length])
    elif length < 65536:
        head = bytes([0x81, 0x80 | 126]) + length.to_bytes(2, "big")
    else:
        head = bytes([0x81, 0x80 | 127]) + length.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"the server closed the socket ({len(data)} of {n} bytes read)")
        data += chunk
    return data


#: A request after the enable: its response says the server has acted on the enable (one socket's
#: messages are handled in order).
ECHO = json.dumps(
    {
        "@type": "Request",
        "id": "enabled",
        "using": ["urn:ietf:params:jmap:core"],
        "methodCalls": [["Core/echo", {}, "e"]],
    }
).encode()


def open_push_socket(port: int, authorization: str, timeout: float = 30.0, sync: bool = False) -> socket.socket:
    """A WebSocket to ``/jmap/ws`` on 127.0.0.1:``port``, upgraded, with WebSocketPushEnable sent; with
    ``sync``, returned once the server has enabled push (a request after it was answered)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /jmap/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: jmap\r\n"
        f"Authorization: {authorization}\r\n\r\n"
    )
    sock.sendall(request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"the server closed the socket during the upgrade: {head[:200]!r}")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        sock.close()
        raise ConnectionError(f"upgrade refused: {head[:200]!r}")
    # Nothing follows the 101 until the socket is sent something: the rest of ``head`` is empty.
    sock.sendall(_masked_text(PUSH_ENABLE) + (_masked_text(ECHO) if sync else b""))
    if sync:
        answer = read_text(sock)
        if answer.get("requestId") != "enabled":
            raise ConnectionError(f"expected the echo's response, got {answer!r}")
    return sock


def read_text(sock: socket.socket) -> Any:
    """The next text message (a single frame), JSON-decoded; control frames are skipped."""
    while True:
        first, second = _exactly(sock, 2)
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(_exactly(sock, 2), "big")
        elif length == 127:
            length = int.from_bytes(_exactly(sock, 8), "big")
        payload = _exactly(sock, length)
        opcode = first & 0x0F
        if opcode == 0x8:
            raise ConnectionError(f"closed by the server: {payload[:2].hex()} {payload[2:]!r}")
        if opcode == 0x1:
            return json.loads(payload)

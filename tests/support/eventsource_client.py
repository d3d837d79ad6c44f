"""An EventSource (RFC 8620 §7.3) client on a raw socket, and the server the tests stream from."""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tests.support.events import settle
from tests.support.jmap import basic_auth
from tests.support.servers import AppServer

#: Every type, never closed, no pings.
ALL = "/jmap/eventsource?types=*&closeafter=no&ping=0"


class Stream:
    """An EventSource client on a raw socket: reads the response one HTTP chunk at a time."""

    def __init__(
        self,
        port: int,
        path: str,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """With ``tls``, over TLS (through a TLS-terminating proxy)."""
        self.sock: socket.socket = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname="127.0.0.1")
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Accept: text/event-stream"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.file = self.sock.makefile("rb")
        status_line = self.file.readline().decode()
        self.status = int(status_line.split()[1])
        self.headers: dict[str, str] = {}
        while (line := self.file.readline().decode().rstrip("\r\n")) != "":
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self.ended = False

    def body(self) -> bytes:
        return self.file.read(int(self.headers["content-length"]))

    def chunk(self) -> bytes | None:
        """The next chunk's payload; None for the last (zero-size) chunk."""
        size = int(self.file.readline().strip(), 16)
        data = self.file.read(size)
        assert self.file.read(2) == b"\r\n"
        if size == 0:
            self.ended = True
            return None
        return data

    def block(self) -> dict[str, str] | None:
        """The next chunk, which must hold exactly one whole SSE block: its fields (``:`` = the comment)."""
        data = self.chunk()
        if data is None:
            return None
        text = data.decode("utf-8")
        assert text.endswith("\n\n") and "\n\n" not in text[:-2], f"not one whole event per chunk: {text!r}"
        fields: dict[str, str] = {}
        for line in text[:-2].split("\n"):
            name, _, value = line.partition(":")
            assert name not in fields, f"field {name!r} twice in {text!r}"
            fields[name] = value[1:] if value.startswith(" ") else value
        return fields

    def event(self) -> dict[str, str] | None:
        """The next block that is an event (comments and id-only blocks are skipped)."""
        while True:
            fields = self.block()
            if fields is None or "data" in fields:
                return fields

    def state(self) -> tuple[dict, str]:
        """The next event, which must be a state event: (its data, its id)."""
        fields = self.event()
        assert fields is not None and fields.get("event") == "state", fields
        return json.loads(fields["data"]), fields["id"]

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@contextmanager
def stream_server(services, app) -> Iterator[Callable[..., Stream]]:
    """The app on a real HTTP server (the one ``serve`` builds) with the event flow running; yields
    ``connect(path=ALL, user="alice@example.org", **headers)`` (its ``port`` attribute: the server's).
    Streams still open at the end are closed, then the server stops."""
    server = AppServer(services, app=app, port=0)
    server.flow.wait_ready(10)
    settle(server.flow)  # what the fixtures committed (the users' provisioning) goes through before any stream
    streams: list[Stream] = []

    def connect(path: str = ALL, user: str = "alice@example.org", **headers: str) -> Stream:
        stream = Stream(server.port, path, {**basic_auth(user), **headers})
        streams.append(stream)
        return stream

    connect.port = server.port  # type: ignore[attr-defined]
    try:
        yield connect
    finally:
        for stream in streams:
            stream.close()
        server.stop(timeout=1)


def listening(services, key: str) -> int:
    """How many listeners ``key`` (an account id, a user key) has on the JMAP bus of ``services``."""
    return services.jmap_bus.listener_count(key)

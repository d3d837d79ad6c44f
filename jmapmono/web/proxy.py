"""The client's address behind trusted reverse proxies (``JMAPMONO_TRUSTED_PROXIES``).

Each proxy appends the address it received the request from to ``X-Forwarded-For``, so with ``hops``
trusted proxies in front of jmapmono (the peer of the connection is the nearest one) the rightmost
``hops - 1`` entries were written by the other trusted proxies, and the entry before them, the
``hops``-th from the right, by the farthest trusted proxy: the client it saw. Everything left of it
was sent by the client and is not believed. With 1 the client is the last entry; with 2 the one
before. The peer address stays when ``hops`` is 0 (the header is then ignored: anyone can send it),
when the header is missing, has fewer entries than ``hops``, or that entry is not an IP address.

:class:`ClientAddress` applies this to ``REMOTE_ADDR`` before the app sees the request, so every use
of the client address (authentication and its throttling, request and WebSocket logs) gets the same
one; the connection's own peer stays in ``environ["jmapmono.peer_addr"]``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import Any

PEER_KEY = "jmapmono.peer_addr"
#: Longer headers are not parsed (a proxy chain is a few entries).
MAX_HEADER_LENGTH = 4096


def forwarded_entry(entry: str) -> str | None:
    """The IP address in one ``X-Forwarded-For`` entry (``192.0.2.1``, ``2001:db8::1``, and with a port
    ``192.0.2.1:443`` or ``[2001:db8::1]:443``), normalised; None if there is none."""
    text = entry.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        text = host
    elif text.count(":") == 1:  # IPv4 with a port
        host, _, port = text.partition(":")
        if not port.isdigit():
            return None
        text = host
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def client_address(peer: str | None, forwarded_for: str | None, hops: int) -> str | None:
    """The client's address given the connection's ``peer``, the ``X-Forwarded-For`` value and the number
    of trusted proxies (see the module's docstring)."""
    if hops <= 0 or not forwarded_for or len(forwarded_for) > MAX_HEADER_LENGTH:
        return peer
    entries = forwarded_for.split(",")
    if len(entries) < hops:
        return peer
    client = forwarded_entry(entries[-hops])
    return client if client is not None else peer


class ClientAddress:
    """WSGI middleware: ``REMOTE_ADDR`` becomes the client's address behind ``hops`` trusted proxies."""

    def __init__(self, app: Callable[..., Iterable[bytes]], hops: int) -> None:
        self.app = app
        self.hops = hops

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        peer = environ.get("REMOTE_ADDR")
        environ[PEER_KEY] = peer
        client = client_address(peer, environ.get("HTTP_X_FORWARDED_FOR"), self.hops)
        if client is not None:
            environ["REMOTE_ADDR"] = client
        return self.app(environ, start_response)

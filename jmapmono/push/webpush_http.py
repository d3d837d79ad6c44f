"""The HTTP side of web push: which URLs we accept, which addresses we connect to, one bounded POST.

A push subscription makes the server POST to a URL a client chose: without care that is a way to
make the server probe or attack its own network (RFC 8620 §8.6). So unless
``JMAPMONO_PUSH_ALLOW_PRIVATE_TARGETS`` is on (tests, labs):

- only ``https://`` URLs are accepted (``http://`` too when private targets are allowed);
- the host is resolved and EVERY address it resolves to must be global: private, loopback,
  link-local, unspecified, multicast, reserved or shared (CGNAT) addresses refuse the target,
  IPv4-mapped IPv6 addresses included. This is checked at subscription time AND before every POST
  (DNS may change), and the POST connects to an address that was just checked (no second lookup
  that a rebinding DNS server could answer differently); TLS still verifies the host name.

Every POST has a deadline (connect, TLS, write, read together), follows no redirect and reads at
most a small part of the answer.

Host names are looked up by a :class:`Resolver`: threads of its own (not gevent's hub pool, which
password hashing uses, so a slow or hostile DNS server delays no login), each look-up bounded by a
deadline. What a client is told of a refused host is one sentence whatever the reason (no such name,
a private address, a time-out): telling them apart would make subscriptions a DNS oracle on internal
names. The reason goes to the log (:attr:`TargetRefused.detail`).
"""

from __future__ import annotations

import _socket
import email.utils
import http.client
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import gevent
import gevent.pool
import gevent.threadpool

#: Longest URL accepted for a subscription.
MAX_URL_LENGTH = 2048
#: Most of an answer's body read (then the connection is dropped).
MAX_ANSWER_BYTES = 65536
#: Longest wait a Retry-After may ask for (seconds).
MAX_RETRY_AFTER = 3600

#: Threads of one process's :class:`Resolver` (the most look-ups waiting on DNS at once).
RESOLVER_THREADS = 8
#: What a client is told of a host that cannot be pushed to, whatever the reason.
HOST_REFUSED = "url: its host does not resolve to an address this server may push to"

_TLS = ssl.create_default_context()


class TargetRefused(Exception):
    """The URL or the addresses its host resolves to may not be pushed to. The message may be shown to the
    client; ``detail`` (for the log) may name addresses and DNS answers."""

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail or message


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    #: Path and query, as sent in the request line.
    path: str


@dataclass(frozen=True)
class Answer:
    status: int
    #: Seconds from a Retry-After header (delta or HTTP-date), capped; None when absent or unreadable.
    retry_after: float | None


def parse_url(url: object, allow_private: bool) -> Target:
    """Check a subscription URL's form; TargetRefused with a description the client can read."""
    if not isinstance(url, str) or not url:
        raise TargetRefused("url must be a non-empty string")
    if len(url) > MAX_URL_LENGTH:
        raise TargetRefused(f"url is longer than {MAX_URL_LENGTH} characters")
    if not url.isascii() or any(c.isspace() or not c.isprintable() for c in url):
        raise TargetRefused("url must be printable ASCII without spaces")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise TargetRefused(f"url is not a valid URL: {e}") from None
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme.lower() not in schemes:
        raise TargetRefused("url must begin with https://")
    if not parts.hostname:
        raise TargetRefused("url has no host")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("url must not contain credentials")
    if parts.fragment:
        raise TargetRefused("url must not contain a fragment")
    scheme = parts.scheme.lower()
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(scheme, parts.hostname, port or (443 if scheme == "https" else 80), path)


def refused_reason(address: str) -> str | None:
    """Why pushing to this IP address is refused (None: it is a global unicast address)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for name in ("unspecified", "loopback", "link_local", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{name}"):
            return name.replace("_", "-")
    if not ip.is_global:
        return "not global"
    return None


class Resolver:
    """Looks up push hosts on a small thread pool of its own, each look-up within a deadline.

    A look-up that outlives its deadline still holds its thread until the system resolver gives up, so the
    pool's size bounds what DNS can hold here; a task whose deadline passed while it queued never starts.
    """

    def __init__(self, threads: int = RESOLVER_THREADS) -> None:
        self.threads = threads
        self._pool: gevent.threadpool.ThreadPool | None = None

    def _submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._pool is None:  # made on first use: most runtimes (tests, CLI commands) never push
            self._pool = gevent.threadpool.ThreadPool(self.threads)
        return self._pool.spawn(fn, *args)

    def resolve(self, target: Target, allow_private: bool, deadline: float) -> list[str]:
        """The addresses to connect to, every one checked, looked up before ``deadline`` (``time.monotonic``);
        TargetRefused (the generic :data:`HOST_REFUSED`) when the name has none, any is refused, or time ran out."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TargetRefused(HOST_REFUSED, f"no time left to resolve {target.host}")
        try:
            infos = self._submit(_getaddrinfo, target.host, target.port, deadline).get(timeout=remaining)
        except gevent.Timeout:
            raise TargetRefused(HOST_REFUSED, f"resolving {target.host} timed out") from None
        except (OSError, UnicodeError) as e:
            raise TargetRefused(HOST_REFUSED, f"cannot resolve {target.host}: {e}") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos or ()))  # an IPv4 or IPv6 address
        if not addresses:
            raise TargetRefused(HOST_REFUSED, f"{target.host} has no address")
        if not allow_private:
            for address in addresses:
                reason = refused_reason(address)
                if reason is not None:
                    raise TargetRefused(HOST_REFUSED, f"{target.host} resolves to {address}, a {reason} address")
        return addresses

    def resolve_all(
        self, targets: list[Target], allow_private: bool, deadline: float, concurrency: int
    ) -> list[list[str] | TargetRefused]:
        """:meth:`resolve` for each target, at most ``concurrency`` at once, all before ``deadline``."""

        def one(target: Target) -> list[str] | TargetRefused:
            try:
                return self.resolve(target, allow_private, deadline)
            except TargetRefused as e:
                return e

        return list(gevent.pool.Pool(max(1, concurrency)).imap(one, targets))

    def close(self) -> None:
        """Drop the threads (a look-up still in the system resolver finishes on its own)."""
        if self._pool is not None:
            self._pool.kill()
            self._pool = None


def _getaddrinfo(host: str, port: int, deadline: float) -> list[Any] | None:
    """The system resolver, unpatched (in a pool thread); nothing when the deadline passed while queued."""
    if time.monotonic() >= deadline:
        return None
    return _socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds from now (RFC 9110 §10.2.3: delay-seconds or an HTTP-date), capped."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(min(int(value), MAX_RETRY_AFTER))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, min(when.timestamp() - time.time(), MAX_RETRY_AFTER))


def post(
    url: str, body: bytes, headers: dict[str, str], *, allow_private: bool, timeout: float, resolver: Resolver
) -> Answer:
    """POST ``body`` to ``url`` within ``timeout`` seconds overall. Raises TargetRefused (refused address)
    or OSError (TimeoutError included), ssl.SSLError, http.client.HTTPException (could not talk to it)."""
    target = parse_url(url, allow_private)
    deadline = time.monotonic() + timeout
    addresses = resolver.resolve(target, allow_private, deadline)
    last_error: Exception | None = None
    for address in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        conn = _connection(target, address, remaining)
        try:
            with gevent.Timeout(remaining, TimeoutError(f"no answer from {target.host} within {timeout:g} s")):
                conn.request("POST", target.path, body=body, headers={**headers, "Content-Length": str(len(body))})
                response = conn.getresponse()
                response.read(MAX_ANSWER_BYTES)
                return Answer(response.status, parse_retry_after(response.getheader("Retry-After")))
        except ConnectionRefusedError as e:  # this address is down: the next one may not be
            last_error = e
        finally:
            conn.close()
    if last_error is not None:
        raise last_error
    raise TimeoutError(f"no answer from {target.host} within {timeout:g} s")


def _connection(target: Target, address: str, timeout: float) -> http.client.HTTPConnection:
    """A connection to ``target`` that connects to the checked ``address`` (TLS verifies ``target.host``)."""
    if target.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            target.host, target.port, timeout=timeout, context=_TLS
        )
    else:
        conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout)

    def connect_checked(
        _address: tuple[str, int], timeout: float | None = timeout, source_address: tuple[str, int] | None = None
    ) -> socket.socket:
        return socket.create_connection((address, target.port), timeout, source_address)

    conn._create_connection = connect_checked  # type: ignore[attr-defined]  # set in __init__; not in the stubs
    return conn

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
"""

from __future__ import annotations

import email.utils
import http.client
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import gevent

#: Longest URL accepted for a subscription.
MAX_URL_LENGTH = 2048
#: Most of an answer's body read (then the connection is dropped).
MAX_ANSWER_BYTES = 65536
#: Longest wait a Retry-After may ask for (seconds).
MAX_RETRY_AFTER = 3600

_TLS = ssl.create_default_context()


class TargetRefused(Exception):
    """The URL or the addresses its host resolves to may not be pushed to; the message says why."""


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


def resolve(target: Target, allow_private: bool, timeout: float) -> list[str]:
    """The addresses to connect to, every one checked; TargetRefused when any is refused or none found."""
    try:
        with gevent.Timeout(timeout):
            infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except gevent.Timeout:
        raise TargetRefused(f"resolving {target.host} timed out") from None
    except (OSError, UnicodeError) as e:
        raise TargetRefused(f"cannot resolve {target.host}: {e}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))  # an IPv4 or IPv6 address
    if not addresses:
        raise TargetRefused(f"{target.host} has no address")
    if not allow_private:
        for address in addresses:
            reason = refused_reason(address)
            if reason is not None:
                raise TargetRefused(f"{target.host} resolves to {address}, a {reason} address: not a push target")
    return addresses


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


def post(url: str, body: bytes, headers: dict[str, str], *, allow_private: bool, timeout: float) -> Answer:
    """POST ``body`` to ``url`` within ``timeout`` seconds overall. Raises TargetRefused (refused address)
    or OSError (TimeoutError included), ssl.SSLError, http.client.HTTPException (could not talk to it)."""
    target = parse_url(url, allow_private)
    deadline = time.monotonic() + timeout
    addresses = resolve(target, allow_private, timeout)
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

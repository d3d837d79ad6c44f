"""A real web push receiver for tests: an HTTP server on 127.0.0.1 recording every POST, with
scripted answers, and a user agent's RFC 8291 key pair to decrypt what it received."""

from __future__ import annotations

import base64
import json
import time
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import http_ece
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.support.servers import start_http
from tests.support.waiting import wait_until


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def b64url_decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def check_vapid(received: Received, application_server_key: str, push_url: str) -> dict:
    """Check a push's ``Authorization: vapid t=…, k=…`` as a push service does (RFC 8292 §2–§3) against the
    key the subscription was made for; its JWT claims. AssertionError on anything wrong."""
    scheme, _, params = received.headers.get("authorization", "").partition(" ")
    assert scheme == "vapid", received.headers
    fields = dict(part.strip().split("=", 1) for part in params.split(","))
    assert fields["k"] == application_server_key, "signed with another key than the subscription's"
    header_b64, claims_b64, signature_b64 = fields["t"].split(".")
    assert json.loads(b64url_decode(header_b64)) == {"typ": "JWT", "alg": "ES256"}
    signature = b64url_decode(signature_b64)
    assert len(signature) == 64, "ES256 signatures are r || s, 32 octets each (RFC 7518 §3.4)"
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(fields["k"]))
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        public.verify(der, f"{header_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise AssertionError("the VAPID JWT's signature does not verify") from None
    claims = json.loads(b64url_decode(claims_b64))
    origin = urlsplit(push_url)
    assert claims["aud"] == f"{origin.scheme}://{origin.netloc}", claims
    assert time.time() < claims["exp"] <= time.time() + 86400, claims  # RFC 8292 §2: no more than 24 hours
    assert claims["sub"].startswith(("mailto:", "https://")), claims
    return claims


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class UserAgentKeys:
    """What a browser or phone holds for one subscription: a P-256 key pair and an auth secret."""

    private: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    auth: bytes = field(default_factory=lambda: __import__("os").urandom(16))

    @property
    def keys(self) -> dict[str, str]:
        raw = self.private.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        return {"p256dh": b64url(raw), "auth": b64url(self.auth)}

    def decrypt(self, received: Received) -> dict:
        assert received.headers.get("content-encoding") == "aes128gcm", received.headers
        plain = http_ece.decrypt(received.body, private_key=self.private, auth_secret=self.auth, version="aes128gcm")
        return json.loads(plain)


class PushReceiver:
    """Records POSTs per path; answers each with the next scripted (status, headers), else 201."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.answers: deque[tuple[int, dict[str, str]]] = deque()
        self.server = start_http(self._app)

    def url(self, path: str = "/push") -> str:
        return self.server.url + path

    def answer(self, *answers: int | tuple[int, dict[str, str]]) -> None:
        for a in answers:
            self.answers.append(a if isinstance(a, tuple) else (a, {}))

    def _app(self, environ, start_response):
        body = environ["wsgi.input"].read()
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        for name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if environ.get(name):
                headers[name.replace("_", "-").lower()] = environ[name]
        self.received.append(Received(environ.get("PATH_INFO", ""), headers, body))
        status, extra = self.answers.popleft() if self.answers else (201, {})
        start_response(f"{status} Scripted", [("Content-Length", "0"), *extra.items()])
        return [b""]

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    def wait(self, path: str, count: int = 1, timeout: float = 10.0) -> list[Received]:
        """The requests to ``path`` once there are at least ``count``; AssertionError after ``timeout``."""
        enough = lambda: found if len(found := self.at(path)) >= count else None  # noqa: E731
        return wait_until(enough, timeout, message=f"{count} pushes to {path}")

    def stop(self) -> None:
        self.server.stop(timeout=1)

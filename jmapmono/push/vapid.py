"""VAPID (RFC 8292) for web push, advertised as RFC 9749 describes.

Push services such as the browsers' accept a push only from the application server whose public key the
user agent named when it subscribed. The server's key pair is made once and kept in the store
(``vapid_keys``), so every process and node signs with the same key and a restart changes nothing. The
newest generation is the one the Session advertises (``urn:ietf:params:jmap:webpush-vapid``); each push
subscription records the generation it was made under and is signed with that key, so a process that
still advertised the previous key for a moment after a rotation makes subscriptions that keep working.

Rotation (``jmapmono vapid rotate``) adds a generation and destroys every push subscription in the same
transaction (RFC 9749 §5: the push service would refuse pushes signed with the new key for endpoints
bound to the old one); clients see the Session's state change and subscribe again.

Each push carries ``Authorization: vapid t=<JWT>, k=<public key>`` (RFC 8292 §3): an ES256 JWT whose
``aud`` is the push resource's origin, ``exp`` 12 hours ahead (at most 24 are allowed), ``sub`` the
operator's contact. Tokens are cached per generation and origin until an hour before they expire.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from jmapmono.clock import now_ms
from jmapmono.jmap.registry import capability
from jmapmono.push.context import push_services

if TYPE_CHECKING:
    from jmapmono.jmap.context import JmapServices
    from jmapmono.store import Database

#: The capability of RFC 9749 §3.
WEBPUSH_VAPID = "urn:ietf:params:jmap:webpush-vapid"
#: How long a JWT is valid (RFC 8292 §2: no more than 24 hours), and how long before its end a new one is made.
TOKEN_LIFETIME = 12 * 3600
TOKEN_RENEW_BEFORE = 3600
#: How long a process keeps advertising the generation it read before it looks again (a rotation made
#: by another process is seen within this time).
CURRENT_CACHE_SECONDS = 60.0
#: Most cached tokens (one per generation and push service origin).
MAX_CACHED_TOKENS = 1024


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


@dataclass(frozen=True)
class VapidKey:
    generation: int
    private_key: ec.EllipticCurvePrivateKey
    #: The uncompressed P-256 point, base64url without padding (RFC 8292 §3.2): the applicationServerKey.
    public_key: str


def _new_key_pair() -> tuple[str, str]:
    """A fresh P-256 key pair as (PKCS#8 PEM, base64url public point)."""
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    point = private.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return pem, b64url(point)


def _key(row: dict[str, Any]) -> VapidKey:
    private = serialization.load_pem_private_key(row["private_key"].encode("ascii"), password=None)
    if not isinstance(private, ec.EllipticCurvePrivateKey):
        raise ValueError(f"VAPID key generation {row['generation']} is not an EC key")
    return VapidKey(int(row["generation"]), private, row["public_key"])


class VapidKeys:
    """The server's VAPID keys (one per process; every process reads the same rows)."""

    def __init__(self, db: Database, subject: str) -> None:
        self.db = db
        #: The JWT's ``sub``: how a push service reaches the operator (``mailto:`` or ``https:``).
        self.subject = subject
        self._lock = threading.Lock()
        self._current: tuple[float, VapidKey] | None = None
        self._generations: dict[int, VapidKey] = {}
        self._tokens: dict[tuple[int, str], tuple[float, str]] = {}

    # -- keys ------------------------------------------------------------------------------------------

    def current(self) -> VapidKey:
        """The newest generation (made on first use), read again at most every CURRENT_CACHE_SECONDS."""
        cached = self._current
        if cached is not None and time.monotonic() - cached[0] < CURRENT_CACHE_SECONDS:
            return cached[1]
        key = self._newest() or self._create_first()
        self._current = (time.monotonic(), key)
        self._generations[key.generation] = key
        return key

    def generation(self, generation: int | None) -> VapidKey:
        """The key of ``generation`` (None: a subscription made before VAPID existed, signed with the newest)."""
        if generation is None:
            return self.current()
        key = self._generations.get(generation)
        if key is None:
            with self.db.read() as tx:
                row = tx.one("SELECT * FROM vapid_keys WHERE generation = ?", (generation,))
            key = _key(row) if row else self.current()
            self._generations[generation] = key
        return key

    def _newest(self) -> VapidKey | None:
        with self.db.read() as tx:
            row = tx.one("SELECT * FROM vapid_keys ORDER BY generation DESC LIMIT 1")
        return _key(row) if row else None

    def _create_first(self) -> VapidKey:
        """Generation 1; when several processes race, the first insert wins and all read the same row."""
        pem, public = _new_key_pair()
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO vapid_keys (generation, private_key, public_key, created_at) VALUES (1, ?, ?, ?) "
                "ON CONFLICT (generation) DO NOTHING",
                (pem, public, now_ms()),
            )
        key = self._newest()
        assert key is not None
        return key

    def rotate(self) -> tuple[VapidKey, int]:
        """A new generation, and every push subscription destroyed with it (RFC 9749 §5); returns the new
        key and how many subscriptions went."""
        pem, public = _new_key_pair()
        with self.db.transaction() as tx:
            row = tx.one("SELECT MAX(generation) AS g FROM vapid_keys")
            generation = int(row["g"] or 0) + 1 if row else 1
            tx.execute(
                "INSERT INTO vapid_keys (generation, private_key, public_key, created_at) VALUES (?, ?, ?, ?)",
                (generation, pem, public, now_ms()),
            )
            destroyed = tx.execute("DELETE FROM push_subscriptions")
        self._current = None
        return self.generation(generation), destroyed

    # -- signing ---------------------------------------------------------------------------------------

    def authorization(self, generation: int | None, url: str) -> str:
        """The ``Authorization`` header of a push to ``url`` (RFC 8292 §3.1)."""
        key = self.generation(generation)
        parts = urlsplit(url)
        audience = f"{parts.scheme}://{parts.netloc}"
        now = time.time()
        cached = self._tokens.get((key.generation, audience))
        if cached is None or cached[0] - TOKEN_RENEW_BEFORE < now:
            expires = int(now) + TOKEN_LIFETIME
            token = self._jwt(key, {"aud": audience, "exp": expires, "sub": self.subject})
            with self._lock:
                if len(self._tokens) >= MAX_CACHED_TOKENS:
                    self._tokens.clear()
                self._tokens[(key.generation, audience)] = (expires, token)
            cached = (expires, token)
        return f"vapid t={cached[1]}, k={key.public_key}"

    @staticmethod
    def _jwt(key: VapidKey, claims: dict[str, Any]) -> str:
        """An ES256 JWS in compact form (RFC 7515; the signature is r ‖ s, 32 octets each)."""
        header = b64url(json.dumps({"typ": "JWT", "alg": "ES256"}, separators=(",", ":")).encode())
        payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{header}.{payload}".encode("ascii")
        r, s = decode_dss_signature(key.private_key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        return f"{header}.{payload}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def _session_value(services: JmapServices) -> dict[str, Any]:
    return {"applicationServerKey": push_services(services).vapid.current().public_key}


def register_capability() -> None:
    """Advertise RFC 9749's capability (by the front end that serves push subscriptions)."""
    capability(WEBPUSH_VAPID, _session_value, None, primary=False)

"""Web push delivery (RFC 8620 §7.2, RFC 8030 application server, RFC 8291 message encryption).

The :class:`WebPushSender` is a GROUP listener (``WebPush``) on the JMAP bus: each StateChange
(keyed by account) is handled once per cluster, at least once. For an event it reads the verified,
unexpired subscriptions of every user who can see the account (owner and delegates) and hands each
one the account's changed states (only the types the subscription asked for). That is all the
group handler does (one indexed read): the POSTs happen in one worker greenlet per subscription, so
a slow or failing push service delays no other subscription and no bus worker.

Per subscription, what is pending coalesces: while a POST is in flight or waiting to be retried,
newer changes merge into the next StateChange (per account and type the newest state wins), so a
push service answering 429 or 5xx gets fewer, not more, requests. A retry waits (doubling backoff,
or the Retry-After the service sent, whichever is longer) and gives up after ``max_attempts``;
404/410 mean the subscription is gone: it is deleted. The subscription is re-read before every
attempt: one destroyed, expired or re-scoped meanwhile is honoured at once. Pending pushes live in
memory: a process that dies loses them, which RFC 8620 §7 allows (the client catches up with its
next */changes).

Nothing but the PushVerification is ever sent to an unverified subscription (§7.2.2). With
``keys``, every body is encrypted (aes128gcm, RFC 8291, a fresh ephemeral key per message); without,
it is the JSON itself. Headers: ``TTL``, ``Urgency`` (``high`` when mail arrived, else ``normal``),
``Content-Type: application/json`` and ``Content-Encoding: aes128gcm`` when encrypted.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import random
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gevent
import gevent.lock
import gevent.pool
import http_ece
from cryptography.hazmat.primitives.asymmetric import ec

from jmapmono.clock import now_ms
from jmapmono.events.event import Event
from jmapmono.log import kv
from jmapmono.mailbox.changes import parse_token
from jmapmono.push import webpush_http
from jmapmono.push.jmap_bus_events import StateChange
from jmapmono.push.subscriptions_store import PushSubscriptions, Subscription
from jmapmono.push.webpush_http import Answer, TargetRefused

if TYPE_CHECKING:
    from jmapmono.config import Config
    from jmapmono.events.bus import EventBus
    from jmapmono.push.context import PushServices

log = logging.getLogger("jmapmono.push.webpush")

GROUP = "WebPush"
DELIVERY_TYPE = "EmailDelivery"
#: POSTs at once per process (the rest wait their turn).
MAX_CONCURRENT_POSTS = 50

Changed = dict[str, dict[str, str]]


# --- RFC 8291 keys and encryption --------------------------------------------------------------------------------


def b64url_decode(value: str) -> bytes:
    """URL-safe base64 with or without padding (RFC 4648 §5); ValueError otherwise."""
    if not isinstance(value, str) or not value.isascii() or any(c in value for c in "+/ \n"):
        raise ValueError("not URL-safe base64")
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def check_keys(keys: Any) -> tuple[str, str]:
    """``keys`` of a PushSubscription as (p256dh, auth); ValueError saying what is wrong."""
    if not isinstance(keys, dict) or set(keys) != {"p256dh", "auth"}:
        raise ValueError("keys must be null or an object with exactly p256dh and auth")
    p256dh, auth = keys["p256dh"], keys["auth"]
    try:
        point = b64url_decode(p256dh)
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        if len(point) != 65:
            raise ValueError("not an uncompressed point")
    except (ValueError, TypeError) as e:  # binascii.Error is a ValueError
        raise ValueError(f"keys.p256dh is not a URL-safe base64 uncompressed P-256 public key ({e})") from None
    try:
        secret = b64url_decode(auth)
    except (ValueError, TypeError):
        secret = b""
    if len(secret) != 16:
        raise ValueError("keys.auth must be 16 bytes in URL-safe base64")
    return p256dh, auth


def encrypt(
    body: bytes,
    p256dh: str,
    auth: str,
    *,
    salt: bytes | None = None,
    sender_key: ec.EllipticCurvePrivateKey | None = None,
) -> bytes:
    """The aes128gcm (RFC 8188) body of RFC 8291: one record, ECDH with a fresh key pair and a fresh random
    salt, the sender's public key in the header. ``salt`` and ``sender_key`` are for known-answer tests only:
    reusing them would repeat a key and nonce."""
    return http_ece.encrypt(
        body,
        salt=salt,
        private_key=sender_key if sender_key is not None else ec.generate_private_key(ec.SECP256R1()),
        dh=b64url_decode(p256dh),
        auth_secret=b64url_decode(auth),
        version="aes128gcm",
    )


# --- coalescing ----------------------------------------------------------------------------------------------------


def merge(into: Changed, changed: Mapping[str, Mapping[str, str]]) -> Changed:
    """Merge ``changed`` into ``into`` (in place): per account and type, the newest state wins."""
    for account, states in changed.items():
        current = into.setdefault(account, {})
        for type, state in states.items():
            old = current.get(type)
            old_seq, new_seq = parse_token(old), parse_token(state)
            if old is None or old_seq is None or new_seq is None or new_seq >= old_seq:
                current[type] = state
    return into


def _for(sub: Subscription, changed: Changed) -> Changed:
    """Only the types ``sub`` asked for; accounts left with none are dropped."""
    out = {}
    for account, states in changed.items():
        kept = {t: s for t, s in states.items() if sub.wants(t)}
        if kept:
            out[account] = kept
    return out


@dataclass
class _Pending:
    changed: Changed = field(default_factory=dict)
    worker: gevent.Greenlet | None = None


# --- the sender ----------------------------------------------------------------------------------------------------


class WebPushSender:
    """Sends PushVerification and StateChange objects to push subscriptions (one per PushServices)."""

    def __init__(self, services: PushServices) -> None:
        self.services = services
        self.store = PushSubscriptions(services.db)
        #: Retry policy and deadline; tests shorten them.
        self.max_attempts = 5
        self.retry_backoff = 2.0
        self.max_backoff = 300.0
        self.timeout = float(services.config.push_timeout_seconds)
        #: handled (StateChange events), sent, failed (attempts), gave_up, gone, refused: for operators and tests.
        self.stats: dict[str, int] = {"handled": 0, "sent": 0, "failed": 0, "gave_up": 0, "gone": 0, "refused": 0}
        self._pending: dict[str, _Pending] = {}
        self._workers = gevent.pool.Group()
        self._posts = gevent.lock.BoundedSemaphore(MAX_CONCURRENT_POSTS)
        #: Host look-ups for subscriptions and pushes, off the hub's thread pool (see webpush_http).
        self.resolver = webpush_http.Resolver()
        self._stopped = False

    @property
    def config(self) -> Config:  # read each time: settings may be replaced at run time (tests)
        return self.services.config

    # -- lifecycle -------------------------------------------------------------------------------------

    def register(self, jmap_bus: EventBus) -> None:
        """Add the group listener to the JMAP bus (before it starts). Expired rows go at housekeeping."""
        jmap_bus.register_group(GROUP, self, wants=self.wants)

    def stop(self) -> None:
        """Drop what is pending and stop every worker (a push is never worth holding shutdown for)."""
        self._stopped = True
        self._workers.kill(block=True, timeout=1)
        self._pending.clear()
        self.resolver.close()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no push is pending or in flight (tests); True if so."""
        return self._workers.join(timeout=timeout, raise_error=False) and not self._pending

    # -- the group handler -----------------------------------------------------------------------------

    def wants(self, event: Event) -> bool:
        """Whether anyone may get ``event`` by web push (one query): most accounts have no subscription, and
        for their StateChanges the group then claims and marks nothing."""
        change = StateChange.from_event(event)
        return change is not None and bool(change.changed) and self.store.has_targets(change.account_id)

    def __call__(self, event: Event) -> None:
        """Queue a StateChange for every subscription that should get it. Raises on a store error
        (the bus retries the event)."""
        change = StateChange.from_event(event)
        if change is None:
            return
        self.stats["handled"] += 1
        account, states = change.account_id, change.changed
        if not states:
            return
        for sub in self.store.targets(account):
            wanted = _for(sub, {account: states})
            if wanted:
                self.enqueue(sub.id, wanted)

    def enqueue(self, sub_id: str, changed: Changed) -> None:
        """Coalesce ``changed`` into what is pending for ``sub_id``; start its worker if none runs."""
        if self._stopped:
            return
        pending = self._pending.get(sub_id)
        if pending is None:
            pending = self._pending[sub_id] = _Pending()
        merge(pending.changed, changed)
        if pending.worker is None:
            pending.worker = self._workers.spawn(self._run, sub_id, pending)

    def _run(self, sub_id: str, pending: _Pending) -> None:
        try:
            while pending.changed and not self._stopped:
                changed, pending.changed = pending.changed, {}
                self._deliver_state_change(sub_id, pending, changed)
        except Exception as e:  # e.g. the database is away: this push is lost, the next one starts afresh
            self._worker_failed(sub_id, "StateChange", e)
            pending.changed.clear()
        finally:
            pending.worker = None
            if self._pending.get(sub_id) is pending and not pending.changed:
                del self._pending[sub_id]

    def _deliver_state_change(self, sub_id: str, pending: _Pending, changed: Changed) -> None:
        for attempt in range(1, self.max_attempts + 1):
            sub = self.store.by_id(sub_id)
            if sub is None or not sub.verified or sub.expires_at <= now_ms():
                log.info(kv(event="webpush_dropped", subscription=sub_id, reason="gone, unverified or expired"))
                pending.changed.clear()
                return
            changed = merge(changed, pending.changed)  # what arrived while we waited goes along
            pending.changed = {}
            body = _for(sub, changed)
            if not body:
                return
            payload = {"@type": "StateChange", "changed": body}
            delay = self._attempt(sub, payload, attempt, urgent=any(DELIVERY_TYPE in s for s in body.values()))
            if delay is None:
                return
            gevent.sleep(delay)

    # -- verification ----------------------------------------------------------------------------------

    def send_verification(self, sub: Subscription) -> gevent.Greenlet:
        """POST the PushVerification (§7.2.2) in the background, retried like any push."""
        return self._workers.spawn(self._verify_logged, sub)

    def _verify_logged(self, sub: Subscription) -> None:
        try:
            self._verify(sub)
        except Exception as e:  # the client sees no verification and creates the subscription again
            self._worker_failed(sub.id, "PushVerification", e)

    def _worker_failed(self, sub_id: str, kind: str, e: Exception) -> None:
        self.stats["gave_up"] += 1
        log.warning(
            kv(event="webpush_failed", subscription=sub_id, kind=kind, error=f"{type(e).__name__}: {e}", retry="no")
        )

    def _verify(self, sub: Subscription) -> None:
        payload = {"@type": "PushVerification", "pushSubscriptionId": sub.id, "verificationCode": sub.verification_code}
        for attempt in range(1, self.max_attempts + 1):
            current = self.store.by_id(sub.id)
            if current is None or current.expires_at <= now_ms():
                return
            if current.verified:
                return  # verified meanwhile (the client got an earlier copy)
            delay = self._attempt(current, payload, attempt, urgent=False)
            if delay is None:
                return
            gevent.sleep(delay)

    # -- one POST --------------------------------------------------------------------------------------

    def _attempt(self, sub: Subscription, payload: dict[str, Any], attempt: int, urgent: bool) -> float | None:
        """POST ``payload`` once; None when done with it (sent, gone, refused or given up), else the delay
        before the next attempt."""
        kind = payload["@type"]
        body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "TTL": str(self.config.push_ttl_seconds),
            "Urgency": "high" if urgent else "normal",
            "Authorization": self.services.vapid.authorization(sub.vapid_generation, sub.url),
        }
        if sub.p256dh is not None and sub.auth is not None:
            body = encrypt(body, sub.p256dh, sub.auth)
            headers["Content-Encoding"] = "aes128gcm"
        started = time.monotonic()
        fields = {"subscription": sub.id, "user_id": sub.user_id, "kind": kind, "attempt": attempt}
        try:
            with self._posts:
                answer = webpush_http.post(
                    sub.url,
                    body,
                    headers,
                    allow_private=self.config.push_allow_private_targets,
                    timeout=self.timeout,
                    resolver=self.resolver,
                )
        except TargetRefused as e:
            self.stats["refused"] += 1
            log.warning(kv(event="webpush_refused", **fields, error=e.detail, ms=_ms(started)))
            return None
        except (OSError, ssl.SSLError, http.client.HTTPException) as e:
            return self._failed(fields, started, attempt, None, f"{type(e).__name__}: {e}")
        status = answer.status
        if 200 <= status < 300:
            self.stats["sent"] += 1
            log.info(kv(event="webpush_sent", **fields, status=status, bytes=len(body), ms=_ms(started)))
            return None
        if status in (404, 410):
            self.stats["gone"] += 1
            self.store.delete(sub.id)
            self._pending.pop(sub.id, None)
            log.info(kv(event="webpush_gone", **fields, status=status, ms=_ms(started)))
            return None
        if status == 429 or status >= 500:
            return self._failed(fields, started, attempt, answer, f"HTTP {status}")
        self.stats["gave_up"] += 1
        log.warning(kv(event="webpush_failed", **fields, status=status, retry="no", ms=_ms(started)))
        return None

    def _failed(
        self, fields: dict[str, Any], started: float, attempt: int, answer: Answer | None, error: str
    ) -> float | None:
        self.stats["failed"] += 1
        status = None if answer is None else answer.status
        if attempt >= self.max_attempts:
            self.stats["gave_up"] += 1
            log.warning(kv(event="webpush_failed", **fields, status=status, error=error, retry="no", ms=_ms(started)))
            return None
        delay = min(self.max_backoff, self.retry_backoff * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)
        if answer is not None and answer.retry_after is not None:
            delay = max(delay, answer.retry_after)  # 429 MUST slow us down (§7.2); so may a 503
        log.warning(
            kv(
                event="webpush_failed",
                **fields,
                status=status,
                error=error,
                retry_in_s=round(delay, 2),
                ms=_ms(started),
            )
        )
        return delay

    # -- housekeeping ----------------------------------------------------------------------------------


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)

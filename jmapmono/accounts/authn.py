"""Authentication independent of any web framework.

:func:`authenticate_headers` turns an ``Authorization`` header and a client
address into a :class:`Principal` or raises :class:`Unauthenticated` /
:class:`RateLimited`; the Flask decorator, and later the WebSocket and
EventSource front ends, only map those to HTTP answers.

Accepted: ``Basic`` with the account password or an app password, and
``Bearer`` with an app password. Clients send credentials on every request, so
a successful password check is remembered for ``auth_cache_seconds`` under an
HMAC (with a key that lives only in this process) of the email, the password
and the stored hash: a password change or a deletion changes or removes the
stored hash and so invalidates the entry at once, and nothing kept in memory
can be replayed elsewhere. Failures are never cached.

Before any of that, :class:`RecentLogins` answers a repeat of an accepted ``Authorization`` header from
the same client address without reading the store, as long as nothing was committed since it was
accepted (the store's change stamp): a password change, a revocation, a deletion or a failed login
anywhere is a commit, so the next request is checked in full, at once in this process and on SQLite,
and on Postgres as soon as the commit's NOTIFY reaches this process.

Failed logins are throttled by :mod:`jmapmono.accounts.throttle`: an address
over its limit is refused before anything is verified (no KDF run, not even a
credential-cache hit, which would otherwise tell a refused guesser that a guess
is right); a user's failures only delay attempts from addresses that are not
known-good for them, and never refuse anyone. App passwords and Bearer tokens
(256-bit secrets) are exempt from both: a bad one counts against its address.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

import gevent

from jmapmono import metrics
from jmapmono.accounts import passwords
from jmapmono.accounts.app_passwords import AppPasswords, TokenOwner, looks_like_token
from jmapmono.accounts.principal import Principal
from jmapmono.accounts.throttle import LoginState, LoginThrottle, TooManyInFlight, address_key, user_delay
from jmapmono.accounts.users import Accounts, User
from jmapmono.clock import now_ms
from jmapmono.config import Config
from jmapmono.log import kv

if TYPE_CHECKING:
    from jmapmono.store import Database

log = logging.getLogger("jmapmono.auth")

#: Longest user name or token we look at; longer ones are refused unread.
MAX_CREDENTIAL_LENGTH = 1024
CACHE_MAX_ENTRIES = 10_000


class AuthError(Exception):
    """Authentication failed; ``reason`` is for the log, never for the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Unauthenticated(AuthError):
    """No usable credentials: answer 401 with a Basic challenge."""


class RateLimited(AuthError):
    """Too many failed logins from this client address: answer 429 with Retry-After."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("rate_limited")
        self.retry_after = retry_after


class CredentialCache:
    """Successful password checks, keyed by an HMAC with a per-process random key; bounded, LRU."""

    def __init__(
        self, ttl_seconds: float, max_entries: int = CACHE_MAX_ENTRIES, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self.clock = clock
        self._key = secrets.token_bytes(32)
        self._entries: OrderedDict[bytes, tuple[float, Principal]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def key(self, email: str, password: str, stored_hash: str) -> bytes:
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        for part in (email, password, stored_hash):
            data = part.encode("utf-8", "surrogatepass")
            mac.update(len(data).to_bytes(4, "big") + data)
        return mac.digest()

    def get(self, key: bytes) -> Principal | None:
        if self.ttl <= 0:
            return None
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= self.clock():
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def drop_user(self, user_id: int) -> int:
        """Forget every entry of ``user_id`` (its credentials were revoked); how many there were."""
        with self._lock:
            stale = [key for key, (_, principal) in self._entries.items() if principal.user_id == user_id]
            for key in stale:
                del self._entries[key]
        return len(stale)

    def put(self, key: bytes, principal: Principal) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            self._entries[key] = (self.clock() + self.ttl, principal)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)


class RecentLogins:
    """Logins this process accepted, by client address and ``Authorization`` header (under an HMAC with a
    per-process key), each with the store's change stamp taken before it was checked.

    A repeat is accepted without a round trip while the stamp is unchanged: every event that could turn the
    answer (a password change, a revocation, a deletion, a failed login from anywhere, which would count
    against the address) is a commit, and a commit changes the stamp (in this process at once; from other
    processes as the store sees them: SQLite at once, Postgres when the doorbell's NOTIFY arrives)."""

    def __init__(
        self, ttl_seconds: float, max_entries: int = CACHE_MAX_ENTRIES, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self.clock = clock
        self._key = secrets.token_bytes(32)
        self._entries: OrderedDict[bytes, tuple[float, object, Principal]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def key(self, address: str, authorization: str) -> bytes:
        data = address.encode("utf-8", "surrogatepass") + b"\0" + authorization.encode("utf-8", "surrogatepass")
        return hmac.new(self._key, data, hashlib.sha256).digest()

    def get(self, key: bytes, stamp: object) -> Principal | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= self.clock() or entry[1] != stamp:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry[2]

    def put(self, key: bytes, stamp: object, principal: Principal) -> None:
        with self._lock:
            self._entries[key] = (self.clock() + self.ttl, stamp, principal)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def drop_user(self, user_id: int) -> int:
        with self._lock:
            stale = [key for key, (_, _, principal) in self._entries.items() if principal.user_id == user_id]
            for key in stale:
                del self._entries[key]
        return len(stale)


def parse_authorization(header: str | None) -> tuple[str, str | tuple[str, str]]:
    """``("bearer", token)`` or ``("basic", (user, password))``; raises Unauthenticated otherwise."""
    if not header or not header.strip():
        raise Unauthenticated("missing")
    scheme, _, value = header.strip().partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if len(value) > 4 * MAX_CREDENTIAL_LENGTH:
        raise Unauthenticated("malformed")
    if scheme == "bearer":
        if not value or " " in value:
            raise Unauthenticated("malformed")
        return "bearer", value
    if scheme != "basic":
        raise Unauthenticated("unsupported_scheme")
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise Unauthenticated("malformed") from None
    user, sep, password = decoded.partition(":")
    if not sep or not user.strip() or not password:
        raise Unauthenticated("malformed")
    return "basic", (user.strip(), password)


def _principal(user: User, app_password_id: str | None = None, password_epoch: int = 0) -> Principal:
    return Principal(user.id, user.email, user.account_id, app_password_id, password_epoch)


class Authenticator:
    """Per-process authentication state (credential cache, failure throttle); one per process (its runtime's)."""

    def __init__(
        self,
        config: Config,
        db: Database,
        accounts: Accounts,
        clock: Callable[[], int] = now_ms,
        sleep: Callable[[float], object] = gevent.sleep,
    ) -> None:
        self.db = db
        self.accounts = accounts
        self.app_passwords = AppPasswords(db, accounts)
        self.cache = CredentialCache(config.auth_cache_seconds)
        self.recent = RecentLogins(config.auth_cache_seconds)
        self.throttle = LoginThrottle(db, config.login_failures_per_minute, clock=clock)
        #: How a delayed attempt waits: a greenlet sleep, holding no KDF slot and no transaction.
        self.sleep = sleep
        passwords.run_kdf(passwords.dummy_hash)  # computed now, so the first unknown user costs no more than later ones

    def authenticate(self, authorization: str | None, remote_addr: str | None) -> Principal:
        """The principal behind the credentials; raises Unauthenticated or RateLimited."""
        address = remote_addr or "-"
        if self.recent.ttl <= 0 or not authorization or len(authorization) > 5 * MAX_CREDENTIAL_LENGTH:
            return self._authenticate(authorization, address)
        stamp = self.db.change_stamp()  # before anything is read: a commit meanwhile makes the entry stale
        key = self.recent.key(address, authorization)
        principal = self.recent.get(key, stamp)
        if principal is None:
            principal = self._authenticate(authorization, address)
            self.recent.put(key, stamp, principal)
        return principal

    def forget_user(self, user_id: int) -> int:
        """Forget every remembered check of ``user_id`` (its credentials were revoked); how many there were."""
        return self.cache.drop_user(user_id) + self.recent.drop_user(user_id)

    def _authenticate(self, authorization: str | None, address: str) -> Principal:
        started = time.monotonic()
        try:
            scheme, creds = parse_authorization(authorization)
        except Unauthenticated as e:
            if e.reason != "missing":  # no credentials at all is the normal first step of Basic
                self._log_failure(None, address, e.reason, started)
            raise
        if scheme == "bearer":
            assert isinstance(creds, str)
            return self._bearer(creds, address, started)
        assert isinstance(creds, tuple)
        return self._basic(creds[0], creds[1], address, started)

    def _bearer(self, token: str, address: str, started: float) -> Principal:
        """A valid token is accepted from any address (it cannot be guessed); a bad one counts against the
        address, and an address over its limit is answered 429."""
        owner = self.app_passwords.check(token) if looks_like_token(token) else None
        if owner is not None:
            return _principal(owner.user, owner.app_password_id)
        if not self.throttle.record_failure_unless_limited(address):
            self._refuse(None, address, self.throttle.address_retry_after(address), started)
        self._log_failure(None, address, "bad_token", started)
        raise Unauthenticated("bad_token")

    def _basic(self, email: str, password: str, address: str, started: float) -> Principal:
        if len(email) > MAX_CREDENTIAL_LENGTH or len(password) > MAX_CREDENTIAL_LENGTH:
            self._log_failure(email[:100], address, "malformed", started)
            raise Unauthenticated("malformed")
        if looks_like_token(password):  # an app password: no per-user counting, no delay
            owner: TokenOwner | None = self.app_passwords.check(password)
            if owner is not None and owner.user.email == email.lower():
                return _principal(owner.user, owner.app_password_id)
            # Not this user's app password: it may still be a password that starts with the prefix.
        state = self._login_state(email, address, started)
        if state.user is not None and state.password_hash is not None:
            principal = self.cache.get(self.cache.key(state.user.email, password, state.password_hash))
            if principal is not None:
                return principal
        try:
            with self.throttle.in_flight.slot(state.address, state.address_failures, self.throttle.limit) as waited:
                if waited:  # other attempts of this address ended meanwhile: count again
                    state = self._login_state(email, address, started)
                return self._verify(state, email, password, address, started)
        except TooManyInFlight:
            self._refuse(email, address, 1, started, "address_busy")

    def _login_state(self, email: str, address: str, started: float) -> LoginState:
        state = self.throttle.login_state(email, address)
        if state.retry_after:
            self._refuse(email, address, state.retry_after, started)
        return state

    def _verify(self, state: LoginState, email: str, password: str, address: str, started: float) -> Principal:
        """Check the password (after the user's delay, if any); count a failure, learn a known-good address."""
        if not state.known_good:
            delay = user_delay(state.user_failures, self.throttle.limit)
            if delay:
                log.info(
                    kv(
                        event="login_throttled",
                        ip=address,
                        prefix=state.address,
                        user=email,
                        reason="user_failures",
                        failures=state.user_failures,
                        delay=f"{delay:g}",
                        retry_after=0,
                    )
                )
                metrics.LOGINS_THROTTLED.labels("user_failures").inc()
                self.sleep(delay)
        if state.user is None or state.password_hash is None:
            passwords.run_kdf(passwords.verify_password, passwords.dummy_hash(), password)
            return self._fail(email, address, "unknown_user", started)
        user, stored = state.user, state.password_hash
        if not passwords.run_kdf(passwords.verify_password, stored, password):
            return self._fail(email, address, "bad_password", started)
        if state.user_failures and not state.known_good:
            self.throttle.record_known_good(user.id, address)
        principal = _principal(user, password_epoch=state.password_epoch)
        stored = self._rehash_if_needed(user, stored, password)
        self.cache.put(self.cache.key(user.email, password, stored), principal)
        log.info(kv(event="login", user=user.email, ip=address, via="password", ms=_ms(started)))
        return principal

    def _fail(self, email: str, address: str, reason: str, started: float) -> NoReturn:
        self.throttle.record_failure(address, email)
        self._log_failure(email, address, reason, started)
        raise Unauthenticated(reason)

    def _refuse(
        self, user: str | None, address: str, retry_after: int, started: float, reason: str = "address_failures"
    ) -> NoReturn:
        log.info(
            kv(
                event="login_throttled",
                ip=address,
                prefix=address_key(address),
                user=user,
                reason=reason,
                retry_after=retry_after,
                ms=_ms(started),
            )
        )
        metrics.LOGINS_THROTTLED.labels(reason).inc()
        raise RateLimited(retry_after)

    def _rehash_if_needed(self, user: User, stored: str, password: str) -> str:
        """Upgrade a hash made with older parameters; return the hash now stored."""
        if not passwords.needs_rehash(stored):
            return stored
        new_hash = passwords.run_kdf(passwords.hash_password, password)
        if not self.accounts.upgrade_hash(user.id, stored, new_hash):
            return stored
        log.info(kv(event="password_rehashed", user=user.email))
        return new_hash

    def _log_failure(self, user: str | None, address: str, reason: str, started: float) -> None:
        log.info(kv(event="login_failed", user=user, ip=address, reason=reason, ms=_ms(started)))


def _ms(started: float) -> str:
    return f"{(time.monotonic() - started) * 1000:.1f}"

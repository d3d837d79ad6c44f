"""App passwords: per-device secrets a user can list and revoke.

A token is ``jmm_<id>_<secret>``: the id finds the row, the 256-bit secret
proves possession. Only the SHA-256 of the secret is stored; a secret this
long needs no slow KDF, so checking a token costs one indexed read. Tokens are
accepted as a Bearer token and as the password of HTTP Basic (what mail
clients can send). ``last_used_at`` is written at most once a minute per token.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass

from jmapmono.accounts.users import APP_PASSWORD, Accounts, Revocation, User
from jmapmono.clock import now_ms
from jmapmono.ids import OrderedIds
from jmapmono.log import kv
from jmapmono.store import Database, StoreError

log = logging.getLogger(__name__)

PREFIX = "jmm_"
LABEL_MAX = 100
#: How often ``last_used_at`` may be written for one token.
TOUCH_INTERVAL_MS = 60_000
_TOKEN_RE = re.compile(r"^jmm_(p[a-z2-7]{12})_([A-Za-z0-9_-]{43})$")


class AppPasswordError(Exception):
    """An app-password request was refused (bad label, unknown id)."""


@dataclass(frozen=True)
class AppPassword:
    id: str
    user_id: int
    label: str
    created_at: int
    last_used_at: int | None


@dataclass(frozen=True)
class TokenOwner:
    """Who a valid token belongs to."""

    app_password_id: str
    user: User


#: Id tails: base 32 in ASCII order, a millisecond stamp then a counter, so that ``list`` (ordered by
#: creation time, then id) gives app passwords made in the same millisecond in the order they were made.
_ORDERED_IDS = OrderedIds("234567abcdefghijklmnopqrstuvwxyz", 12, 9)


def _new_id() -> str:
    return "p" + _ORDERED_IDS()


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def looks_like_token(value: str) -> bool:
    return value.startswith(PREFIX)


def parse_token(token: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed token, else None."""
    m = _TOKEN_RE.match(token)
    return (m.group(1), m.group(2)) if m else None


def clean_label(label: object) -> str:
    if label is None:
        return ""
    if not isinstance(label, str):
        raise AppPasswordError("label must be a string")
    label = label.strip()
    if len(label) > LABEL_MAX:
        raise AppPasswordError(f"label must be at most {LABEL_MAX} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in label):
        raise AppPasswordError("label must not contain control characters")
    return label


def _row(r: dict) -> AppPassword:
    return AppPassword(r["id"], r["user_id"], r["label"], r["created_at"], r["last_used_at"])


class AppPasswords:
    """Create, list, revoke and check app passwords."""

    def __init__(self, db: Database, accounts: Accounts) -> None:
        self.db = db
        self.accounts = accounts

    def create(self, user: User, label: object = "") -> tuple[AppPassword, str]:
        """A new app password for ``user``; the token is returned here once and never again."""
        label = clean_label(label)
        secret = secrets.token_urlsafe(32)
        with self.db.transaction() as tx:
            if not tx.one("SELECT id FROM users WHERE id = ?", (user.id,)):
                raise AppPasswordError(f"no such user: {user.email}")
            while True:
                pid = _new_id()
                row = tx.one(
                    "INSERT INTO app_passwords (id, user_id, secret_hash, label, created_at) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (id) DO NOTHING RETURNING id, user_id, label, created_at, last_used_at",
                    (pid, user.id, _digest(secret), label, now_ms()),
                )
                if row:
                    break
        log.info(kv(event="app_password_created", user=user.email, id=pid, label=label))
        return _row(row), f"{PREFIX}{pid}_{secret}"

    def list(self, user_id: int) -> list[AppPassword]:
        """The user's app passwords, oldest first (in the order they were made)."""
        with self.db.read() as tx:
            rows = tx.query(
                "SELECT id, user_id, label, created_at, last_used_at FROM app_passwords "
                "WHERE user_id = ? ORDER BY created_at, id",
                (user_id,),
            )
        return [_row(r) for r in rows]

    def revoke(self, user_id: int, app_password_id: str) -> bool:
        """Delete one of the user's app passwords; False when the user has none with that id. The sessions
        opened with it end (``Accounts.on_credentials_revoked``, in the same transaction)."""
        with self.db.transaction() as tx:
            changed = tx.execute("DELETE FROM app_passwords WHERE id = ? AND user_id = ?", (app_password_id, user_id))
            if changed:
                self.accounts.credentials_revoked(tx, Revocation(user_id, APP_PASSWORD, app_password_id))
        if changed:
            log.info(kv(event="app_password_revoked", user_id=user_id, id=app_password_id))
        return bool(changed)

    def check(self, token: str) -> TokenOwner | None:
        """The owner of a valid, unrevoked token, else None. Touches ``last_used_at`` at most once a minute."""
        parsed = parse_token(token)
        if parsed is None:
            return None
        pid, secret = parsed
        with self.db.read() as tx:
            row = tx.one(
                "SELECT p.secret_hash, p.last_used_at, u.id, u.email, u.account_id, u.created_at "
                "FROM app_passwords p JOIN users u ON u.id = p.user_id WHERE p.id = ?",
                (pid,),
            )
        if row is None or not hmac.compare_digest(row["secret_hash"], _digest(secret)):
            return None
        now = now_ms()
        if row["last_used_at"] is None or now - row["last_used_at"] >= TOUCH_INTERVAL_MS:
            self._touch(pid, now)
        return TokenOwner(pid, User(row["id"], row["email"], row["account_id"], row["created_at"]))

    def _touch(self, pid: str, now: int) -> None:
        # Conditional: several processes (or greenlets) racing write it once. Best effort: a busy
        # database must not turn a valid login into an error.
        try:
            with self.db.transaction() as tx:
                tx.execute(
                    "UPDATE app_passwords SET last_used_at = ? "
                    "WHERE id = ? AND (last_used_at IS NULL OR last_used_at <= ?)",
                    (now, pid, now - TOUCH_INTERVAL_MS),
                )
        except StoreError as e:
            log.warning(kv(event="app_password_touch_failed", id=pid, error=str(e)))

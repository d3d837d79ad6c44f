"""Storage of PushSubscriptions (RFC 8620 §7.2): table ``push_subscriptions`` (see store/schema.sql).

A subscription belongs to a user AND to the credential that created it (RFC 8620 §7.2: "tied to the
credentials used to authenticate the API request that created it"; /get returns only those of the
same credentials): the app password's id, or the account password of one epoch (``users.password_epoch``,
counted up by every password change). When the credential is revoked, the subscriptions made with it are
destroyed in the revoking transaction (:func:`revoke`, wired by the runtime; an app password's and a
user's also go by cascade). A subscription whose password was replaced all the same (its creation raced
the change) is treated as gone everywhere, as an expired one is: never listed, updated or pushed to; both
are deleted by :meth:`PushSubscriptions.prune_expired`.
"""

from __future__ import annotations

import builtins
import json
from dataclasses import dataclass
from typing import Any

from jmapmono.accounts.principal import Principal
from jmapmono.accounts.users import APP_PASSWORD, PASSWORD, USERS_WITH_ACCESS, Revocation
from jmapmono.clock import now_ms
from jmapmono.ids import OrderedIds
from jmapmono.store import Database, Transaction

#: Most subscriptions one user may hold (each costs a verification POST when created).
MAX_PER_USER = 50

_COLUMNS = (
    "id, user_id, app_password_id, device_client_id, url, p256dh, auth, verification_code, verified, "
    "expires_at, types_json, created_at, password_epoch, vapid_generation"
)
#: The row's credential is still the one in force: an app password (revoking it deletes the row), or the
#: user's current account password.
_CURRENT = (
    "(app_password_id IS NOT NULL OR password_epoch = "
    "(SELECT w.password_epoch FROM users w WHERE w.id = push_subscriptions.user_id))"
)
#: Subscriptions that get the pushes of an account (``?``: the time, then the account id for each user clause).
_TARGETS = (
    f"FROM push_subscriptions WHERE verified = 1 AND expires_at > ? AND {_CURRENT} "
    f"AND user_id IN ({USERS_WITH_ACCESS}) ORDER BY id"
)


def _targets_params(account_id: str) -> tuple[object, ...]:
    return (now_ms(), *(account_id,) * USERS_WITH_ACCESS.count("?"))


#: 32 hex digits, as before, that sort in creation order: ``list`` is oldest first within a millisecond too.
_ORDERED_IDS = OrderedIds("0123456789abcdef", 32, 12)


def new_id() -> str:
    return "S" + _ORDERED_IDS()


@dataclass(frozen=True)
class Subscription:
    """One push subscription as stored. ``types`` None = every type; ``p256dh``/``auth`` None = unencrypted."""

    id: str
    user_id: int
    app_password_id: str | None
    device_client_id: str
    url: str
    p256dh: str | None
    auth: str | None
    verification_code: str
    verified: bool
    expires_at: int
    types: tuple[str, ...] | None
    created_at: int
    #: The account password's epoch it was made with; None when made with an app password.
    password_epoch: int | None = None
    #: The VAPID key generation advertised when it was made (jmapmono/push/vapid.py); None: made before.
    vapid_generation: int | None = None

    def wants(self, type: str) -> bool:
        return self.types is None or type in self.types


def _row(r: dict[str, Any]) -> Subscription:
    types = r["types_json"]
    return Subscription(
        id=r["id"],
        user_id=int(r["user_id"]),
        app_password_id=r["app_password_id"],
        device_client_id=r["device_client_id"],
        url=r["url"],
        p256dh=r["p256dh"],
        auth=r["auth"],
        verification_code=r["verification_code"],
        verified=bool(r["verified"]),
        expires_at=int(r["expires_at"]),
        types=None if types is None else tuple(json.loads(types)),
        created_at=int(r["created_at"]),
        password_epoch=None if r["password_epoch"] is None else int(r["password_epoch"]),
        vapid_generation=None if r["vapid_generation"] is None else int(r["vapid_generation"]),
    )


def _types_json(types: tuple[str, ...] | list[str] | None) -> str | None:
    return None if types is None else json.dumps(list(types))


def _credential(principal: Principal) -> tuple[str, tuple[Any, ...]]:
    """The SQL condition (and its parameters) matching the credential ``principal`` authenticated with."""
    if principal.app_password_id is None:
        return "app_password_id IS NULL AND password_epoch = ?", (principal.password_epoch,)
    return "app_password_id = ?", (principal.app_password_id,)


def credential_of(principal: Principal) -> dict[str, Any]:
    """The credential fields of a subscription made by ``principal``."""
    if principal.app_password_id is None:
        return {"app_password_id": None, "password_epoch": principal.password_epoch}
    return {"app_password_id": principal.app_password_id, "password_epoch": None}


def revoke(tx: Transaction, revocation: Revocation) -> int:
    """Inside the revoking transaction, destroy the subscriptions made with the revoked credential (url and
    keys go with the rows); how many."""
    params: tuple[Any, ...]
    if revocation.what == PASSWORD:
        sql, params = "user_id = ? AND app_password_id IS NULL", (revocation.user_id,)
    elif revocation.what == APP_PASSWORD:
        sql, params = "user_id = ? AND app_password_id = ?", (revocation.user_id, revocation.app_password_id)
    else:
        sql, params = "user_id = ?", (revocation.user_id,)
    return tx.execute(f"DELETE FROM push_subscriptions WHERE {sql}", params)


class OverQuota(Exception):
    """The user already holds :data:`MAX_PER_USER` subscriptions."""


class CredentialRevoked(Exception):
    """The credential of the creating request was revoked while the request ran."""


class PushSubscriptions:
    """Reads and writes push subscriptions; every user-facing call is scoped to one credential."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- the client's view (one user, one credential) ----------------------------------------------

    def list(self, principal: Principal) -> list[Subscription]:
        """The unexpired subscriptions of the credential ``principal`` authenticated with, oldest first."""
        cond, params = _credential(principal)
        with self.db.read() as tx:
            rows = tx.query(
                f"SELECT {_COLUMNS} FROM push_subscriptions WHERE user_id = ? AND {cond} AND expires_at > ? "
                "ORDER BY created_at, id",
                (principal.user_id, *params, now_ms()),
            )
        return [_row(r) for r in rows]

    def room(self, user_id: int) -> int:
        """How many more subscriptions the user may create now (checked again at insert)."""
        with self.db.read() as tx:
            count = tx.value(
                "SELECT COUNT(*) FROM push_subscriptions WHERE user_id = ? AND expires_at > ?", (user_id, now_ms())
            )
        return max(0, MAX_PER_USER - int(count or 0))

    def create(self, tx: Transaction, sub: Subscription) -> None:
        """Insert ``sub`` in the caller's transaction; OverQuota when the user holds too many, CredentialRevoked
        when its credential is no longer the one in force (changed while the request ran)."""
        if sub.app_password_id is None:
            valid = tx.one("SELECT 1 FROM users WHERE id = ? AND password_epoch = ?", (sub.user_id, sub.password_epoch))
        else:
            valid = tx.one(
                "SELECT 1 FROM app_passwords WHERE id = ? AND user_id = ?", (sub.app_password_id, sub.user_id)
            )
        if valid is None:
            raise CredentialRevoked("the credentials of this request were revoked")
        count = tx.value(
            "SELECT COUNT(*) FROM push_subscriptions WHERE user_id = ? AND expires_at > ?", (sub.user_id, now_ms())
        )
        if int(count or 0) >= MAX_PER_USER:
            raise OverQuota(f"at most {MAX_PER_USER} push subscriptions per user")
        tx.execute(
            f"INSERT INTO push_subscriptions ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                sub.id,
                sub.user_id,
                sub.app_password_id,
                sub.device_client_id,
                sub.url,
                sub.p256dh,
                sub.auth,
                sub.verification_code,
                1 if sub.verified else 0,
                sub.expires_at,
                _types_json(sub.types),
                sub.created_at,
                sub.password_epoch,
                sub.vapid_generation,
            ),
        )

    def update(self, tx: Transaction, sub: Subscription) -> bool:
        """Write the mutable fields (verified, expires_at, types) of ``sub``; False when it is gone."""
        changed = tx.execute(
            "UPDATE push_subscriptions SET verified = ?, expires_at = ?, types_json = ? WHERE id = ? AND user_id = ?",
            (1 if sub.verified else 0, sub.expires_at, _types_json(sub.types), sub.id, sub.user_id),
        )
        return bool(changed)

    def destroy(self, tx: Transaction, principal: Principal, sub_id: str) -> bool:
        """Delete one of the credential's subscriptions (url and keys go with the row); False if none."""
        cond, params = _credential(principal)
        return bool(
            tx.execute(
                f"DELETE FROM push_subscriptions WHERE id = ? AND user_id = ? AND {cond}",
                (sub_id, principal.user_id, *params),
            )
        )

    # -- the sender's view -------------------------------------------------------------------------

    def by_id(self, sub_id: str) -> Subscription | None:
        """One subscription, verified or not, expired or not, while its credential is in force (the sender
        re-reads it before every attempt)."""
        with self.db.read() as tx:
            row = tx.one(f"SELECT {_COLUMNS} FROM push_subscriptions WHERE id = ? AND {_CURRENT}", (sub_id,))
        return None if row is None else _row(row)

    def targets(self, account_id: str) -> builtins.list[Subscription]:
        """Verified, unexpired subscriptions in force of every user who can see ``account_id`` (owner, delegates,
        sharees of its mailboxes)."""
        return [_row(r) for r in self.db.query_alone(f"SELECT {_COLUMNS} {_TARGETS}", _targets_params(account_id))]

    def has_targets(self, account_id: str) -> bool:
        """Whether :meth:`targets` would return any (one query)."""
        return bool(self.db.query_alone(f"SELECT 1 {_TARGETS} LIMIT 1", _targets_params(account_id)))

    def delete(self, sub_id: str) -> bool:
        """Remove a subscription the push service says is gone (404/410)."""
        with self.db.transaction() as tx:
            return bool(tx.execute("DELETE FROM push_subscriptions WHERE id = ?", (sub_id,)))

    def prune_expired(self) -> int:
        """Delete every expired subscription, and those of a replaced password (url and keys with them); how many."""
        with self.db.transaction() as tx:
            return tx.execute(f"DELETE FROM push_subscriptions WHERE expires_at <= ? OR NOT {_CURRENT}", (now_ms(),))

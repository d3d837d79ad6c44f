"""Users, their accounts and delegation.

A user logs in with an email address; their own JMAP account has an opaque,
stable id. A delegate gets full access to an owner's account, which then
appears in the delegate's Session.
"""

from __future__ import annotations

import builtins
import logging
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from jmapmono.accounts import share_rights
from jmapmono.accounts.principal import Principal
from jmapmono.clock import now_ms
from jmapmono.config import Config
from jmapmono.store import Database, Transaction

log = logging.getLogger(__name__)

#: What a :class:`Revocation` ended.
PASSWORD = "password"
APP_PASSWORD = "appPassword"
USER_DELETED = "userDeleted"

#: Users whose accessible accounts are kept in memory (least recently used beyond that are forgotten).
ACCESS_CACHE_ENTRIES = 10_000

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$|^[^@\s]+@localhost$")


class AccountError(Exception):
    """A user-level operation was refused (unknown user, duplicate, invalid address)."""


class UnknownUser(AccountError):
    pass


class UserExists(AccountError):
    pass


class InvalidEmail(AccountError):
    pass


@dataclass(frozen=True)
class User:
    id: int
    email: str
    account_id: str
    created_at: int


@dataclass(frozen=True)
class Revocation:
    """Credentials of a user that stop being valid, told to the hooks inside the revoking transaction.

    ``what``: :data:`PASSWORD` (the account password changed), :data:`APP_PASSWORD` (``app_password_id``
    was revoked) or :data:`USER_DELETED` (every credential of the user)."""

    user_id: int
    what: str
    app_password_id: str | None = None


@dataclass(frozen=True)
class AccountAccess:
    """One account a user can see, as listed in their Session."""

    account_id: str
    name: str
    owner_user_id: int
    is_personal: bool
    is_read_only: bool = False
    #: None: full access (the owner, a delegate). Else the mailboxes shared with the user: id -> rights.
    shares: Mapping[str, frozenset[str]] | None = None


#: The ids of every user who can see an account (its id bound to each ``?``): the owner, its delegates and the
#: sharees of its mailboxes. One text, for whoever needs that set (push targets too).
USERS_WITH_ACCESS = (
    "SELECT u.id FROM users u WHERE u.account_id = ? "
    "UNION SELECT d.delegate_id FROM delegations d JOIN users o ON o.id = d.owner_id WHERE o.account_id = ? "
    "UNION SELECT s.sharee_user_id FROM mailbox_shares s WHERE s.account_id = ?"
)


def normalize_email(email: str) -> str:
    email = email.strip().lower()
    if not EMAIL_RE.match(email):
        raise InvalidEmail(f"{email!r} is not an email address")
    return email


def new_account_id() -> str:
    """``a`` + 16 random base32 characters: opaque, URL-safe, never reused."""
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    return "a" + "".join(secrets.choice(alphabet) for _ in range(16))


def generate_password() -> str:
    return secrets.token_urlsafe(15)


def _user(row: dict) -> User:
    return User(row["id"], row["email"], row["account_id"], row["created_at"])


class Accounts:
    """User and delegation records. Password checks live in :mod:`jmapmono.accounts.passwords`."""

    def __init__(self, db: Database, config: Config) -> None:
        self.db = db
        self.config = config
        #: Called inside the creating transaction (e.g. the mailbox layer provisions mailboxes).
        self.on_user_created: list[Callable[[Transaction, User], None]] = []
        #: Called inside the deleting transaction, before the user row goes (clean up what it owned).
        self.on_user_deleted: list[Callable[[Transaction, User], None]] = []
        #: Called inside the transaction that grants or takes back access to an owner's account:
        #: (tx, owner, delegate user id, granted). The runtime writes it to the outbox, so push re-reads
        #: the delegate's accounts (a user's deletion takes back what was delegated to them, too).
        self.on_access_changed: list[Callable[[Transaction, User, int, bool], None]] = []
        #: Called inside the transaction that revokes credentials (password change, app-password revocation,
        #: user deletion). The runtime writes it to the outbox, so every node ends the sessions they opened.
        self.on_credentials_revoked: list[Callable[[Transaction, Revocation], None]] = []
        #: Called after commit when delegation changes: (owner, delegate, granted).
        self.on_delegation_changed: list[Callable[[User, User, bool], None]] = []
        #: user id -> (change stamp, accessible accounts), least recently used first.
        self._access: OrderedDict[int, tuple[object, dict[str, AccountAccess]]] = OrderedDict()
        self._access_lock = threading.Lock()

    def create_user(self, email: str, password: str | None = None) -> tuple[User, str]:
        """Create a user; return it with its password (generated when not given)."""
        from jmapmono.accounts.passwords import hash_password

        email = normalize_email(email)
        password = password or generate_password()
        hashed = hash_password(password)
        with self.db.transaction() as tx:
            row = tx.one(
                "INSERT INTO users (email, account_id, password_hash, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (email) DO NOTHING RETURNING id, email, account_id, created_at",
                (email, new_account_id(), hashed, now_ms()),
            )
            if row is None:
                raise UserExists(f"user {email} already exists")
            user = _user(row)
            for hook in self.on_user_created:
                hook(tx, user)
        log.info("event=user_created user=%s account=%s", user.email, user.account_id)
        return user, password

    def get(self, email: str) -> User | None:
        try:
            email = normalize_email(email)
        except AccountError:
            return None
        return self._one_user("email", email)

    def require(self, email: str) -> User:
        user = self.get(email)
        if user is None:
            raise UnknownUser(f"no such user: {email}")
        return user

    def by_id(self, user_id: int) -> User | None:
        return self._one_user("id", user_id)

    def by_account_id(self, account_id: str) -> User | None:
        return self._one_user("account_id", account_id)

    def _one_user(self, column: Literal["email", "id", "account_id"], value: object) -> User | None:
        """The user whose unique ``column`` is ``value``: one statement alone (one round trip)."""
        rows = self.db.query_alone(f"SELECT id, email, account_id, created_at FROM users WHERE {column} = ?", (value,))
        return _user(rows[0]) if rows else None

    def list(self) -> list[User]:
        with self.db.read() as tx:
            rows = tx.query("SELECT id, email, account_id, created_at FROM users ORDER BY email")
        return [_user(r) for r in rows]

    def delete(self, email: str) -> User:
        """Delete a user; their app passwords and delegations go with them (cascade)."""
        user = self.require(email)
        with self.db.transaction() as tx:
            # Delegations go with the user (cascade): each delegate of this account loses it.
            for row in tx.query("SELECT delegate_id FROM delegations WHERE owner_id = ?", (user.id,)):
                self._access_changed(tx, user, int(row["delegate_id"]), False)
            for row in tx.query(
                "SELECT DISTINCT sharee_user_id FROM mailbox_shares WHERE account_id = ?", (user.account_id,)
            ):
                self._access_changed(tx, user, int(row["sharee_user_id"]), False)
            for hook in self.on_user_deleted:
                hook(tx, user)
            self.credentials_revoked(tx, Revocation(user.id, USER_DELETED))
            if not tx.execute("DELETE FROM users WHERE id = ?", (user.id,)):
                raise UnknownUser(f"no such user: {email}")
        log.info("event=user_deleted user=%s account=%s", user.email, user.account_id)
        return user

    def set_password(self, email: str, password: str) -> None:
        from jmapmono.accounts.passwords import hash_password

        user = self.require(email)
        hashed = hash_password(password)  # outside the transaction: ~0.1 s of CPU
        with self.db.transaction() as tx:
            changed = tx.execute(
                "UPDATE users SET password_hash = ?, password_epoch = password_epoch + 1 WHERE id = ?",
                (hashed, user.id),
            )
            if not changed:
                raise UnknownUser(f"no such user: {email}")
            self.credentials_revoked(tx, Revocation(user.id, PASSWORD))
        log.info("event=password_changed user=%s", user.email)

    def check_credential(self, principal: Principal) -> Revocation | None:
        """None while the credential ``principal`` authenticated with is valid; else what ended it. For a
        connection that may have missed the ``CredentialsRevoked`` event (one read, by primary keys)."""
        with self.db.read() as tx:
            row = tx.one(
                "SELECT u.password_epoch, p.id AS app_password_id FROM users u "
                "LEFT JOIN app_passwords p ON p.id = ? AND p.user_id = u.id WHERE u.id = ?",
                (principal.app_password_id, principal.user_id),
            )
        if row is None:
            return Revocation(principal.user_id, USER_DELETED)
        if principal.app_password_id is not None:
            if row["app_password_id"] is None:
                return Revocation(principal.user_id, APP_PASSWORD, principal.app_password_id)
            return None
        if int(row["password_epoch"]) != principal.password_epoch:
            return Revocation(principal.user_id, PASSWORD)
        return None

    def upgrade_hash(self, user_id: int, old_hash: str, new_hash: str) -> bool:
        """Replace ``old_hash`` by ``new_hash`` unless the password changed meanwhile."""
        with self.db.transaction() as tx:
            return bool(
                tx.execute(
                    "UPDATE users SET password_hash = ? WHERE id = ? AND password_hash = ?",
                    (new_hash, user_id, old_hash),
                )
            )

    def delegate(self, owner_email: str, delegate_email: str) -> bool:
        """Give DELEGATE full access to OWNER's account; False if it already had it."""
        owner, delegate = self.require(owner_email), self.require(delegate_email)
        if owner.id == delegate.id:
            raise AccountError("a user cannot delegate to themselves")
        with self.db.transaction() as tx:
            changed = tx.execute(
                "INSERT INTO delegations (owner_id, delegate_id, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (owner_id, delegate_id) DO NOTHING",
                (owner.id, delegate.id, now_ms()),
            )
            if changed:
                self._access_changed(tx, owner, delegate.id, True)
        if changed:
            log.info("event=delegation_granted owner=%s delegate=%s", owner.email, delegate.email)
            for hook in self.on_delegation_changed:
                hook(owner, delegate, True)
        return bool(changed)

    def undelegate(self, owner_email: str, delegate_email: str) -> bool:
        owner, delegate = self.require(owner_email), self.require(delegate_email)
        with self.db.transaction() as tx:
            changed = tx.execute(
                "DELETE FROM delegations WHERE owner_id = ? AND delegate_id = ?", (owner.id, delegate.id)
            )
            if changed:
                self._access_changed(tx, owner, delegate.id, False)
        if changed:
            log.info("event=delegation_revoked owner=%s delegate=%s", owner.email, delegate.email)
            for hook in self.on_delegation_changed:
                hook(owner, delegate, False)
        return bool(changed)

    def accessible_accounts(self, user_id: int) -> dict[str, AccountAccess]:
        """Every account the user can see: their own first, then those delegated to them, then those with
        mailboxes shared with them (``AccountAccess.shares``).

        Read on every request (the Session), so kept in memory under the store's change stamp: a grant,
        a revocation or a deletion anywhere is a commit that changes the stamp, and the next call reads again."""
        stamp = self.db.change_stamp()
        with self._access_lock:
            kept = self._access.get(user_id)
            if kept is not None and kept[0] == stamp:
                self._access.move_to_end(user_id)
                return dict(kept[1])
        access = self._read_accessible_accounts(user_id)
        with self._access_lock:
            self._access[user_id] = (stamp, access)
            self._access.move_to_end(user_id)
            while len(self._access) > ACCESS_CACHE_ENTRIES:
                self._access.popitem(last=False)
        return dict(access)

    def _read_accessible_accounts(self, user_id: int) -> dict[str, AccountAccess]:
        with self.db.read() as tx:
            rows = tx.query(
                "SELECT u.id, u.email, u.account_id, 1 AS personal FROM users u WHERE u.id = ? "
                "UNION ALL "
                "SELECT o.id, o.email, o.account_id, 0 AS personal FROM delegations d "
                "JOIN users o ON o.id = d.owner_id WHERE d.delegate_id = ? ORDER BY personal DESC, email",
                (user_id, user_id),
            )
            shared = tx.query(
                f"SELECT o.id, o.email, s.account_id, s.mailbox_id, {share_rights.SELECT_COLUMNS} "
                "FROM mailbox_shares s JOIN users o ON o.account_id = s.account_id "
                "WHERE s.sharee_user_id = ? ORDER BY o.email",
                (user_id,),
            )
        access = {
            r["account_id"]: AccountAccess(r["account_id"], r["email"], r["id"], bool(r["personal"])) for r in rows
        }
        partial: dict[str, tuple[dict, dict[str, frozenset[str]]]] = {}
        for r in shared:
            if r["account_id"] not in access:  # full access wins over a share
                partial.setdefault(r["account_id"], (r, {}))[1][r["mailbox_id"]] = share_rights.from_row(r)
        for account_id, (r, shares) in partial.items():
            writable = any(rights & share_rights.WRITE_RIGHTS for rights in shares.values())
            access[account_id] = AccountAccess(account_id, r["email"], r["id"], False, not writable, shares)
        return access

    def access(self, user_id: int, account_id: str) -> AccountAccess | None:
        """The user's access to ``account_id``, or None when they cannot see it."""
        return self.accessible_accounts(user_id).get(account_id)

    def users_with_access(self, account_id: str) -> builtins.list[int]:
        """Ids of every user who can see ``account_id`` (the owner, its delegates and sharees)."""
        with self.db.read() as tx:
            rows = tx.query(USERS_WITH_ACCESS, (account_id,) * USERS_WITH_ACCESS.count("?"))
        return [r["id"] for r in rows]

    def credentials_revoked(self, tx: Transaction, revocation: Revocation) -> None:
        """Tell the hooks, inside ``tx``, that credentials of a user stop being valid when it commits."""
        tx.announce_change()
        for hook in self.on_credentials_revoked:
            hook(tx, revocation)

    def access_changed(self, tx: Transaction, owner: User, user_id: int, granted: bool) -> None:
        """Tell the hooks, inside ``tx``, that ``user_id``'s access to ``owner``'s account changes when it commits
        (a share granted, changed or revoked: push re-reads that user's accounts)."""
        self._access_changed(tx, owner, user_id, granted)

    def _access_changed(self, tx: Transaction, owner: User, delegate_id: int, granted: bool) -> None:
        tx.announce_change()
        for hook in self.on_access_changed:
            hook(tx, owner, delegate_id, granted)

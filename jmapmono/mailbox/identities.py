"""Identities: the addresses an account sends as (RFC 8621 §6), stored like mail is.

Every account has a default identity for its login address (name "", may not be deleted), created on
first use, so accounts made before this existed get one too. A user may only send as their own
address: an identity for any other address is refused with ``forbiddenFrom`` (RFC 8621 §9.6).

Each mutation is one transaction that locks the account's change log, records its changes and writes
ONE :class:`~jmapmono.mailbox.events.StatesChanged` event to the outbox; the helpers at the bottom
(:func:`record_states`, :class:`SetOutcome`, :class:`StateMismatch`) are shared with the
EmailSubmission and VacationResponse stores.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jmapmono.accounts.users import Accounts
from jmapmono.clock import now_ms
from jmapmono.log import kv
from jmapmono.mailbox import changes
from jmapmono.mailbox.events import StatesChanged
from jmapmono.mailbox.model import Forbidden, InvalidProperties, MailboxError, NotFound, new_id
from jmapmono.mailbox.mutation import Mutation
from jmapmono.store import Database, Transaction

log = logging.getLogger(__name__)

TYPE = "Identity"
#: Longest name or signature kept (characters).
MAX_TEXT = 64 * 1024
MAX_ADDRESSES = 100
_ADDRESS = re.compile(r'[^\s@<>()\[\],;:\\"]+@[^\s@<>()\[\],;:\\"]+')
_COLUMNS = "id, account_id, name, email, reply_to_json, bcc_json, text_signature, html_signature, is_default"


class StateMismatch(MailboxError):
    """The state the caller expected (JMAP ``ifInState``) is not the current one: nothing was changed."""

    set_error = "stateMismatch"


class ForbiddenFrom(MailboxError):
    """The user may not send as this address (RFC 8621 ``forbiddenFrom``)."""

    set_error = "forbiddenFrom"


def is_address(value: object) -> bool:
    """A plausible addr-spec (``local@domain``): no spaces, brackets or specials, at most 254 octets."""
    if not isinstance(value, str) or len(value.encode()) > 254 or _ADDRESS.fullmatch(value) is None:
        return False
    domain = value.rsplit("@", 1)[1]
    return not domain.startswith(".") and not domain.endswith(".") and ".." not in domain


def may_send_as(allowed: str, address: str) -> bool:
    """Whether ``address`` is covered by an identity address (``*@domain`` covers the whole domain)."""
    allowed, address = allowed.lower(), address.lower()
    if allowed.startswith("*@"):
        return address.endswith(allowed[1:]) and address.count("@") == 1
    return allowed == address


@dataclass(frozen=True)
class Identity:
    id: str
    account_id: str
    name: str
    email: str
    reply_to: list[dict] | None
    bcc: list[dict] | None
    text_signature: str
    html_signature: str
    may_delete: bool


@dataclass(frozen=True)
class IdentityFields:
    """A new identity as the client describes it (``email`` is checked against what the user may send as)."""

    email: str
    name: str = ""
    reply_to: list[dict] | None = None
    bcc: list[dict] | None = None
    text_signature: str = ""
    html_signature: str = ""


#: The properties an update may change (``email`` is immutable).
MUTABLE = ("name", "reply_to", "bcc", "text_signature", "html_signature")


@dataclass
class SetOutcome:
    """What one /set-style operation did: per key the object (or id) done, or the error that refused it."""

    old_state: str
    new_state: str
    created: dict[str, Any] = field(default_factory=dict)
    updated: dict[str, Any] = field(default_factory=dict)
    destroyed: list[str] = field(default_factory=list)
    not_created: dict[str, MailboxError] = field(default_factory=dict)
    not_updated: dict[str, MailboxError] = field(default_factory=dict)
    not_destroyed: dict[str, MailboxError] = field(default_factory=dict)


def record_states(
    m: Mutation, type: str, created: Iterable[str] = (), updated: Iterable[str] = (), destroyed: Iterable[str] = ()
) -> dict[str, str]:
    """Log one operation's changes of ``type`` and write its one StatesChanged event; the new states."""
    created, updated, destroyed = list(created), list(updated), list(destroyed)
    m.created(type, created)
    m.updated(type, updated)
    m.destroyed(type, destroyed)
    event = StatesChanged(
        account_id=m.account_id, changes={type: {"created": created, "updated": updated, "destroyed": destroyed}}
    )
    return m.finish(event)


def check_state(tx: Transaction, account_id: str, type: str, expected: str | None) -> str:
    """The current state of ``type``; StateMismatch when ``expected`` is given and differs."""
    current = changes.state(tx, account_id, type)
    if expected is not None and expected != current:
        raise StateMismatch(f"the {type} state is {current!r}, not {expected!r}")
    return current


# --- validation ---------------------------------------------------------------------------------------------------


def validate_text(value: object, prop: str) -> str:
    if not isinstance(value, str):
        raise InvalidProperties(f"{prop} must be a string", [prop])
    if len(value) > MAX_TEXT:
        raise InvalidProperties(f"{prop} is longer than {MAX_TEXT} characters", [prop])
    return value


def validate_addresses(value: object, prop: str) -> list[dict] | None:
    """An ``EmailAddress[]|null``: each ``{"name": String|null, "email": String}`` with a valid address."""
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_ADDRESSES:
        raise InvalidProperties(f"{prop} must be an array of at most {MAX_ADDRESSES} EmailAddress objects", [prop])
    out = []
    for item in value:
        if not isinstance(item, dict) or set(item) - {"name", "email"}:
            raise InvalidProperties(f"{prop} items are {{name, email}} objects", [prop])
        name = item.get("name")
        if name is not None and (not isinstance(name, str) or len(name) > 1000 or "\n" in name or "\r" in name):
            raise InvalidProperties(f"{prop}: a name is a one-line string or null", [prop])
        if not is_address(item.get("email")):
            raise InvalidProperties(f"{prop}: {item.get('email')!r} is not an email address", [prop])
        out.append({"name": name, "email": item["email"]})
    return out


# --- the store ----------------------------------------------------------------------------------------------------


def _identity(r: Mapping[str, Any]) -> Identity:
    return Identity(
        id=r["id"],
        account_id=r["account_id"],
        name=r["name"],
        email=r["email"],
        reply_to=None if r["reply_to_json"] is None else json.loads(r["reply_to_json"]),
        bcc=None if r["bcc_json"] is None else json.loads(r["bcc_json"]),
        text_signature=r["text_signature"],
        html_signature=r["html_signature"],
        may_delete=not r["is_default"],
    )


def _json(value: list[dict] | None) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


def delete_account_data(tx: Transaction, account_id: str) -> None:
    """Forget the account's identities (inside the transaction deleting its user)."""
    tx.execute("DELETE FROM identities WHERE account_id = ?", (account_id,))


class Identities:
    """Reads and mutations of identities; mutations are one transaction and one event each."""

    def __init__(self, db: Database, accounts: Accounts) -> None:
        self.db = db
        self.accounts = accounts

    def owner_email(self, account_id: str) -> str:
        """The login address of the account's owner: the one address its users may send as."""
        user = self.accounts.by_account_id(account_id)
        if user is None:
            raise NotFound(f"no account {account_id}")
        return user.email

    def ensure_default(self, account_id: str) -> None:
        """Create the account's default identity (its login address) unless it has one."""
        with self.db.read() as tx:
            if tx.value("SELECT id FROM identities WHERE account_id = ? AND is_default = 1", (account_id,)):
                return
        email = self.owner_email(account_id)
        with self.db.transaction() as tx:
            m = Mutation(tx, account_id)  # serialises with other writers of the account: created once
            if tx.value("SELECT id FROM identities WHERE account_id = ? AND is_default = 1", (account_id,)):
                return
            identity_id = self._insert(tx, account_id, IdentityFields(email), default=True)
            record_states(m, TYPE, created=[identity_id])
        log.info(kv(event="identity_default_created", account=account_id, identity=identity_id))

    def get(self, account_id: str, ids: Iterable[str] | None = None) -> tuple[list[Identity], str]:
        """The account's identities (all, oldest first, or those of ``ids`` that exist) and the Identity state."""
        self.ensure_default(account_id)
        with self.db.read() as tx:
            state = changes.state(tx, account_id, TYPE)
            rows = tx.query(
                f"SELECT {_COLUMNS} FROM identities WHERE account_id = ? ORDER BY is_default DESC, created_at, id",
                (account_id,),
            )
        found = [_identity(r) for r in rows]
        if ids is not None:
            wanted = set(ids)
            found = [i for i in found if i.id in wanted]
        return found, state

    def find(self, account_id: str, identity_id: str) -> Identity | None:
        with self.db.read() as tx:
            row = tx.one(
                f"SELECT {_COLUMNS} FROM identities WHERE account_id = ? AND id = ?", (account_id, identity_id)
            )
        return None if row is None else _identity(row)

    def apply(
        self,
        account_id: str,
        create: Mapping[str, IdentityFields],
        update: Mapping[str, Mapping[str, Any]],
        destroy: Iterable[str],
        if_in_state: str | None = None,
    ) -> SetOutcome:
        """Create, update (``MUTABLE`` fields) and destroy identities in ONE transaction and event.

        Errors are per item (forbiddenFrom, invalidProperties, notFound, forbidden for the default
        identity); StateMismatch, raised before anything changes, is for the whole call.
        """
        started = time.monotonic()
        self.ensure_default(account_id)
        owner = self.owner_email(account_id)
        with self.db.transaction() as tx:
            m = Mutation(tx, account_id)
            state = check_state(tx, account_id, TYPE, if_in_state)
            out = SetOutcome(state, state)
            for key, fields in create.items():
                try:
                    identity_id = self._create(tx, account_id, owner, fields)
                except MailboxError as e:
                    out.not_created[key] = e
                    continue
                out.created[key] = self._load(tx, account_id, identity_id)
            changed: list[str] = []
            for identity_id, values in update.items():
                try:
                    out.updated[identity_id], did_change = self._update(tx, account_id, identity_id, values)
                except MailboxError as e:
                    out.not_updated[identity_id] = e
                    continue
                if did_change:
                    changed.append(identity_id)
            for identity_id in destroy:
                try:
                    self._destroy(tx, account_id, identity_id)
                except MailboxError as e:
                    out.not_destroyed[identity_id] = e
                    continue
                out.destroyed.append(identity_id)
            created = [i.id for i in out.created.values()]
            states = record_states(m, TYPE, created, changed, out.destroyed)
            out.new_state = states.get(TYPE, state)
        log.info(
            kv(
                event="identities_set",
                account=account_id,
                created=len(out.created),
                updated=len(out.updated),
                destroyed=len(out.destroyed),
                refused=len(out.not_created) + len(out.not_updated) + len(out.not_destroyed),
                ms=_ms(started),
            )
        )
        return out

    # -- inside the transaction ---------------------------------------------------------------------------------

    @staticmethod
    def _load(tx: Transaction, account_id: str, identity_id: str) -> Identity | None:
        row = tx.one(f"SELECT {_COLUMNS} FROM identities WHERE account_id = ? AND id = ?", (account_id, identity_id))
        return None if row is None else _identity(row)

    @staticmethod
    def _insert(tx: Transaction, account_id: str, f: IdentityFields, default: bool = False) -> str:
        identity_id = new_id("I")
        tx.execute(
            "INSERT INTO identities (id, account_id, name, email, reply_to_json, bcc_json, text_signature, "
            "html_signature, is_default, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                identity_id,
                account_id,
                f.name,
                f.email,
                _json(f.reply_to),
                _json(f.bcc),
                f.text_signature,
                f.html_signature,
                1 if default else 0,
                now_ms(),
            ),
        )
        return identity_id

    def _create(self, tx: Transaction, account_id: str, owner: str, f: IdentityFields) -> str:
        if not is_address(f.email):
            raise InvalidProperties(f"{f.email!r} is not an email address", ["email"])
        if not may_send_as(owner, f.email):
            raise ForbiddenFrom(f"this account may only send as {owner}, not {f.email}", ["email"])
        fields = IdentityFields(
            email=f.email,
            name=validate_text(f.name, "name"),
            reply_to=validate_addresses(f.reply_to, "replyTo"),
            bcc=validate_addresses(f.bcc, "bcc"),
            text_signature=validate_text(f.text_signature, "textSignature"),
            html_signature=validate_text(f.html_signature, "htmlSignature"),
        )
        return self._insert(tx, account_id, fields)

    def _update(
        self, tx: Transaction, account_id: str, identity_id: str, values: Mapping[str, Any]
    ) -> tuple[Identity, bool]:
        """The identity after the update, and whether anything actually changed."""
        current = self._load(tx, account_id, identity_id)
        if current is None:
            raise NotFound(f"no identity {identity_id}")
        unknown = sorted(set(values) - set(MUTABLE))
        if unknown:
            raise InvalidProperties(f"cannot change {', '.join(unknown)}", unknown)
        checks = {
            "name": lambda v: validate_text(v, "name"),
            "reply_to": lambda v: _json(validate_addresses(v, "replyTo")),
            "bcc": lambda v: _json(validate_addresses(v, "bcc")),
            "text_signature": lambda v: validate_text(v, "textSignature"),
            "html_signature": lambda v: validate_text(v, "htmlSignature"),
        }
        column = {"reply_to": "reply_to_json", "bcc": "bcc_json"}
        new = {column.get(k, k): checks[k](v) for k, v in values.items()}
        old = {
            "name": current.name,
            "reply_to_json": _json(current.reply_to),
            "bcc_json": _json(current.bcc),
            "text_signature": current.text_signature,
            "html_signature": current.html_signature,
        }
        new = {c: v for c, v in new.items() if v != old[c]}
        if not new:
            return current, False
        tx.execute(
            f"UPDATE identities SET {', '.join(f'{c} = ?' for c in new)} WHERE id = ?", (*new.values(), identity_id)
        )
        updated = self._load(tx, account_id, identity_id)
        assert updated is not None  # the row was just updated, in this transaction
        return updated, True

    @staticmethod
    def _destroy(tx: Transaction, account_id: str, identity_id: str) -> None:
        row = tx.one("SELECT is_default FROM identities WHERE account_id = ? AND id = ?", (account_id, identity_id))
        if row is None:
            raise NotFound(f"no identity {identity_id}")
        if row["is_default"]:
            raise Forbidden("the identity of the account's own address cannot be destroyed (mayDelete is false)")
        tx.execute("DELETE FROM identities WHERE id = ?", (identity_id,))

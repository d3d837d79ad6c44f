"""Per-account quotas (RFC 9425): the octets and the number of an account's messages, and their limits.

Usage is one row per account (``quota_usage``), moved by the :class:`~jmapmono.mailbox.mutation.Mutation`
of every operation that appends or destroys a message, in that operation's transaction: reading it never
recounts. A message counts its full size once, whatever number of mailboxes it is in. Limits are the
operator's (``quota_limits``: NULL the configured default, -1 none).

A Quota object exists for a resource only while it has a limit (``hardLimit`` is required by RFC 9425
§4.1); its id is fixed (:data:`STORAGE`, :data:`MESSAGES`). The change log records a quota when its usage or
limit moves while it exists, and its creation and destruction when a limit is set or lifted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jmapmono.mailbox.model import MailboxError
from jmapmono.store import Transaction

if TYPE_CHECKING:
    from jmapmono.mailbox.mutation import Mutation

#: The data type name in the change log, the Session and StateChange pushes.
TYPE = "Quota"
#: Quota ids: stored octets, and number of messages.
STORAGE = "storage"
MESSAGES = "messages"
IDS = (STORAGE, MESSAGES)
#: Stored limit meaning "none, whatever the default".
UNLIMITED = -1


class OverQuota(MailboxError):
    """Adding this mail would take the account past a hard limit (RFC 8620 §5.3: SetError ``overQuota``)."""

    set_error = "overQuota"


@dataclass(frozen=True)
class Usage:
    octets: int = 0
    messages: int = 0


@dataclass(frozen=True)
class Limits:
    """Limits in force (None: no limit)."""

    octets: int | None = None
    messages: int | None = None

    def quota_ids(self) -> list[str]:
        """The ids of the Quota objects these limits make exist."""
        return [i for i, limit in ((STORAGE, self.octets), (MESSAGES, self.messages)) if limit is not None]

    def refusal(self, usage: Usage, octets: int, messages: int = 1) -> str | None:
        """Why adding ``messages`` of ``octets`` in all to ``usage`` is refused; None when it fits."""
        if self.octets is not None and usage.octets + octets > self.octets:
            return f"the account's storage quota ({self.octets} octets, {usage.octets} used) would be exceeded"
        if self.messages is not None and usage.messages + messages > self.messages:
            return f"the account's message quota ({self.messages} messages) would be exceeded"
        return None


@dataclass(frozen=True)
class Account:
    """An account's usage, its own stored limits (None: default, -1: none) and the limits in force."""

    usage: Usage
    stored: tuple[int | None, int | None]
    limits: Limits

    def objects(self) -> dict[str, dict[str, Any]]:
        """The RFC 9425 §4.1 Quota objects of the account, by id."""
        out: dict[str, dict[str, Any]] = {}
        if self.limits.octets is not None:
            out[STORAGE] = _object(STORAGE, "octets", self.usage.octets, self.limits.octets, "Mail storage")
        if self.limits.messages is not None:
            out[MESSAGES] = _object(MESSAGES, "count", self.usage.messages, self.limits.messages, "Messages")
        return out


def _object(quota_id: str, resource: str, used: int, hard: int, name: str) -> dict[str, Any]:
    return {
        "id": quota_id,
        "resourceType": resource,
        "used": used,
        "hardLimit": hard,
        "scope": "account",
        "name": name,
        "types": ["Email"],
        "warnLimit": None,
        "softLimit": None,
        "description": None,
    }


def _in_force(stored: int | None, default: int | None) -> int | None:
    if stored is None:
        return default
    return None if stored == UNLIMITED else stored


def read(tx: Transaction, account_id: str, defaults: Limits) -> Account:
    """The account's usage and limits in one query."""
    row = tx.one(
        "SELECT u.octets AS used_octets, u.messages AS used_messages, l.octets, l.messages "
        "FROM (SELECT CAST(? AS TEXT) AS account_id) a "
        "LEFT JOIN quota_usage u ON u.account_id = a.account_id "
        "LEFT JOIN quota_limits l ON l.account_id = a.account_id",
        (account_id,),
    )
    assert row is not None
    usage = Usage(int(row["used_octets"] or 0), int(row["used_messages"] or 0))
    stored = (row["octets"], row["messages"])
    stored = (None if stored[0] is None else int(stored[0]), None if stored[1] is None else int(stored[1]))
    limits = Limits(_in_force(stored[0], defaults.octets), _in_force(stored[1], defaults.messages))
    return Account(usage, stored, limits)


def add_usage(tx: Transaction, account_id: str, octets: int, messages: int) -> None:
    """Move the account's usage (inside the transaction that appended or destroyed the messages)."""
    tx.execute(
        "INSERT INTO quota_usage (account_id, octets, messages) VALUES (?, ?, ?) ON CONFLICT (account_id) "
        "DO UPDATE SET octets = quota_usage.octets + excluded.octets, "
        "messages = quota_usage.messages + excluded.messages",
        (account_id, octets, messages),
    )


def recount(tx: Transaction, account_id: str) -> Usage:
    """The usage counted from the messages themselves (what the kept usage must equal)."""
    row = tx.one("SELECT SUM(size) AS octets, COUNT(*) AS n FROM messages WHERE account_id = ?", (account_id,))
    return Usage(int(row["octets"] or 0), int(row["n"] or 0)) if row else Usage()


#: Passed to :func:`set_limits` for a limit to leave as it is.
KEEP = object()


def set_limits(
    m: Mutation, defaults: Limits, octets: Any = KEEP, messages: Any = KEEP
) -> tuple[Account, dict[str, list[str]]]:
    """Store the account's limits (None: the default, :data:`UNLIMITED`: none) and record the Quota
    objects that appear, change or disappear (also returned by kind); the caller finishes ``m``."""
    tx, account_id = m.tx, m.account_id
    before = read(tx, account_id, defaults)
    new = (
        before.stored[0] if octets is KEEP else octets,
        before.stored[1] if messages is KEEP else messages,
    )
    tx.execute(
        "INSERT INTO quota_limits (account_id, octets, messages) VALUES (?, ?, ?) ON CONFLICT (account_id) "
        "DO UPDATE SET octets = excluded.octets, messages = excluded.messages",
        (account_id, *new),
    )
    after = read(tx, account_id, defaults)
    changed = difference(before, after)
    record(m, changed)
    return after, changed


def difference(before: Account, after: Account) -> dict[str, list[str]]:
    """The Quota objects that appear, change or disappear between two readings of an account."""
    old_objects, new_objects = before.objects(), after.objects()
    return {
        "created": [i for i in new_objects if i not in old_objects],
        "updated": [i for i in new_objects if i in old_objects and old_objects[i] != new_objects[i]],
        "destroyed": [i for i in old_objects if i not in new_objects],
    }


def record(m: Mutation, changed: dict[str, list[str]]) -> None:
    m.created(TYPE, changed["created"])
    m.updated(TYPE, changed["updated"])
    m.destroyed(TYPE, changed["destroyed"])


#: Stands for "no limit" where SQL compares limits (NULL equals nothing).
_NONE = -2


def claim_defaults(tx: Transaction, defaults: Limits) -> Limits | None:
    """Record ``defaults`` as the configured limits in force. Returns the previous ones when they differed and
    this call is the one that recorded the change (compare-and-set: of several processes starting together,
    one), so that its caller records the accounts' Quota changes; None otherwise (also the first time)."""
    row = tx.one("SELECT octets, messages FROM quota_defaults_applied WHERE id = 1")
    if row is None:
        tx.execute(
            "INSERT INTO quota_defaults_applied (id, octets, messages) VALUES (1, ?, ?) ON CONFLICT (id) DO NOTHING",
            (defaults.octets, defaults.messages),
        )
        return None
    old = Limits(
        None if row["octets"] is None else int(row["octets"]), None if row["messages"] is None else int(row["messages"])
    )
    if old == defaults:
        return None
    claimed = tx.execute(
        "UPDATE quota_defaults_applied SET octets = ?, messages = ? "
        "WHERE id = 1 AND COALESCE(octets, ?) = ? AND COALESCE(messages, ?) = ?",
        (
            defaults.octets,
            defaults.messages,
            _NONE,
            _NONE if old.octets is None else old.octets,
            _NONE,
            _NONE if old.messages is None else old.messages,
        ),
    )
    return old if claimed == 1 else None

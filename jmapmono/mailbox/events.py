"""Mailbox events: one per MailboxManager operation, JSON-serialisable for the broker.

Every event carries the account, the ids it touched, the new counts of every mailbox
whose counts moved, and the NEW STATE of every data type the operation changed, so a
listener (push to clients) needs no database round trip. A bulk operation over 50
messages is one event.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar

from jmapmono.clock import now_ms

#: The outbox bus the mailbox layer's events are written to and published on.
MAILBOX_BUS = "mailbox"


def _event_id() -> str:
    return uuid.uuid4().hex


@dataclass(kw_only=True)
class MailboxEvent:
    """What every mailbox event carries."""

    registry: ClassVar[dict[str, type[MailboxEvent]]] = {}

    account_id: str
    #: Data type -> its state token after the operation, for every type that changed.
    states: dict[str, str] = field(default_factory=dict)
    mailbox_ids: list[str] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)
    thread_ids: list[str] = field(default_factory=list)
    #: Mailbox id -> {"totalEmails", "unreadEmails", "totalThreads", "unreadThreads"} after the operation.
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    event_id: str = field(default_factory=_event_id)
    at: int = field(default_factory=now_ms)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        MailboxEvent.registry[cls.__name__] = cls

    @property
    def type(self) -> str:
        return type(self).__name__

    def to_json(self) -> dict[str, Any]:
        """The fields as they are (no deep copy like ``dataclasses.asdict``, a tenth of a delivery's CPU):
        the outbox serialises the dict at once."""
        out: dict[str, Any] = {"type": self.type}
        for f in dataclasses.fields(self):
            out[f.name] = getattr(self, f.name)
        return out

    @staticmethod
    def from_json(data: dict[str, Any]) -> MailboxEvent:
        """Rebuild an event from :meth:`to_json` output; unknown keys are ignored (newer senders)."""
        cls = MailboxEvent.registry.get(data.get("type", ""))
        if cls is None:
            raise ValueError(f"unknown mailbox event type {data.get('type')!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(kw_only=True)
class MailboxAdded(MailboxEvent):
    #: [{"id", "name", "parentId", "role", "sortOrder"}] (several when an account is provisioned).
    mailboxes: list[dict[str, Any]] = field(default_factory=list)


@dataclass(kw_only=True)
class MailboxRenamed(MailboxEvent):
    """A mailbox's name, parent, role or sort order changed (``old``/``new`` hold the changed ones)."""

    mailbox_id: str = ""
    old: dict[str, Any] = field(default_factory=dict)
    new: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class MailboxDeleted(MailboxEvent):
    mailbox_id: str = ""
    name: str = ""
    #: Messages that left the mailbox but live on in another one.
    removed_message_ids: list[str] = field(default_factory=list)
    #: Messages that were only in the mailbox, destroyed with it.
    destroyed_message_ids: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class MailboxSubscriptionChanged(MailboxEvent):
    mailbox_id: str = ""
    user_id: int = 0
    subscribed: bool = False


@dataclass(kw_only=True)
class MailboxesChanged(MailboxEvent):
    """Several mailbox changes made together (one Mailbox/set): creations, updates, destructions, subscriptions."""

    #: [{"id", "name", "parentId", "role", "sortOrder"}]
    created: list[dict[str, Any]] = field(default_factory=list)
    #: [{"id", "old": {changed properties}, "new": {changed properties}}]
    updated: list[dict[str, Any]] = field(default_factory=list)
    #: [{"id", "name", "removed_message_ids", "destroyed_message_ids"}]
    destroyed: list[dict[str, Any]] = field(default_factory=list)
    #: [{"id", "user_id", "subscribed"}] (subscriptions are per user)
    subscriptions: list[dict[str, Any]] = field(default_factory=list)


@dataclass(kw_only=True)
class Added(MailboxEvent):
    """Messages appended; ``delivery`` is true only for mail new to the account from outside it (LMTP, deliver,
    Email/import, Email/copy), not for the user's own drafts."""

    delivery: bool = False
    #: [{"id", "threadId", "mailboxIds", "keywords", "size", "receivedAt"}]
    messages: list[dict[str, Any]] = field(default_factory=list)


@dataclass(kw_only=True)
class MessagesUpdated(MailboxEvent):
    """Keywords and/or mailbox memberships changed. Subclasses name the common pure cases."""

    #: [{"id", "old": [keywords], "new": [keywords]}]
    flags: list[dict[str, Any]] = field(default_factory=list)
    #: [{"id", "old": [mailbox ids], "new": [mailbox ids]}]
    moves: list[dict[str, Any]] = field(default_factory=list)


@dataclass(kw_only=True)
class FlagsUpdated(MessagesUpdated):
    """Only keywords changed."""


@dataclass(kw_only=True)
class Moved(MessagesUpdated):
    """Only mailbox memberships changed (move, copy within the account, remove from one)."""


@dataclass(kw_only=True)
class Expunged(MailboxEvent):
    #: [{"id", "threadId", "mailboxIds"}]
    messages: list[dict[str, Any]] = field(default_factory=list)


@dataclass(kw_only=True)
class StatesChanged(MailboxEvent):
    """Data other than mail changed (Identity, EmailSubmission, VacationResponse): push needs only ``states``."""

    #: Data type -> {"created": [ids], "updated": [ids], "destroyed": [ids]}
    changes: dict[str, dict[str, list[str]]] = field(default_factory=dict)


@dataclass(kw_only=True)
class AccessChanged(MailboxEvent):
    """A delegation of ``account_id`` (the owner's account) to another user was granted or revoked.

    Carries no states: push front ends re-read the delegate's accounts (jmapmono/push/change_listener.py).
    """

    owner_user_id: int = 0
    delegate_user_id: int = 0
    granted: bool = False


@dataclass(kw_only=True)
class SharesChanged(MailboxEvent):
    """A mailbox of ``account_id`` was shared with a user, its rights changed, or the share was revoked
    (``rights`` empty). The mailbox and its emails are logged as updated, so the sharee's ``*/changes``
    report what appeared or went."""

    mailbox_id: str = ""
    sharee_user_id: int = 0
    rights: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class ShareNotified(MailboxEvent):
    """ShareNotifications of ``account_id`` (a sharee's account) were written or destroyed."""

    notification_ids: list[str] = field(default_factory=list)

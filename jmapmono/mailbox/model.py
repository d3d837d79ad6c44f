"""The mail data model: mailboxes, messages, their ids, validation rules and typed errors.

The mailbox layer knows nothing of JMAP request syntax, but its errors carry the
JMAP SetError type they stand for (``set_error``) so the JMAP layer maps them
without a table of its own.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

from jmapmono.ids import OrderedIds

# Ids: a type letter, then 10 base-32 characters of the creation time (so new ids sort
# after old ones in a B-tree) and 8 that are random, then count up within a millisecond
# (so ids sort in the order they were made: jmapmono/ids.py). JMAP-safe, opaque, never reused.
_ALPHABET = "0123456789abcdefghijklmnopqrstuv"
_ORDERED_IDS = OrderedIds(_ALPHABET, 18, 10)

#: Largest mailbox name, in UTF-8 bytes (advertised as maxSizeMailboxName).
MAX_MAILBOX_NAME = 255
#: sortOrder must be below 2^31 (RFC 8621 §2).
MAX_SORT_ORDER = 2**31 - 1
#: Roles from the IANA "IMAP Mailbox Name Attributes" registry that make sense on a mailbox.
ROLES = frozenset(
    {
        "all",
        "archive",
        "drafts",
        "flagged",
        "important",
        "inbox",
        "junk",
        "memos",
        "scheduled",
        "sent",
        "snoozed",
        "trash",
    }
)
#: Created with every new account: (name, role, sortOrder).
DEFAULT_MAILBOXES: tuple[tuple[str, str, int], ...] = (
    ("Inbox", "inbox", 1),
    ("Drafts", "drafts", 2),
    ("Sent", "sent", 3),
    ("Archive", "archive", 4),
    ("Junk", "junk", 5),
    ("Trash", "trash", 6),
)
_KEYWORD_FORBIDDEN = set('(){]%*"\\')


def new_id(prefix: str) -> str:
    """A fresh opaque id: ``prefix`` + base-32 that sorts in creation order (within a millisecond too)."""
    return prefix + _ORDERED_IDS()


class MailboxError(Exception):
    """A refused mail mutation. ``set_error`` is the JMAP SetError type it maps to."""

    set_error = "invalidProperties"

    def __init__(self, description: str, properties: Iterable[str] = ()) -> None:
        super().__init__(description)
        self.description = description
        self.properties = list(properties)


class NotFound(MailboxError):
    set_error = "notFound"


class InvalidProperties(MailboxError):
    set_error = "invalidProperties"


class AlreadyExists(MailboxError):
    """A sibling mailbox already has this name (RFC 8620 ``alreadyExists``, naming it in ``existingId``)."""

    set_error = "alreadyExists"

    def __init__(self, description: str, properties: Iterable[str] = (), existing_id: str | None = None) -> None:
        super().__init__(description, properties)
        self.existing_id = existing_id


class MailboxHasChild(MailboxError):
    set_error = "mailboxHasChild"


class MailboxHasEmail(MailboxError):
    set_error = "mailboxHasEmail"


class Forbidden(MailboxError):
    set_error = "forbidden"


@dataclass(frozen=True)
class Counts:
    """The four server-set counts of a mailbox."""

    total_emails: int = 0
    unread_emails: int = 0
    total_threads: int = 0
    unread_threads: int = 0

    def to_json(self) -> dict[str, int]:
        return {
            "totalEmails": self.total_emails,
            "unreadEmails": self.unread_emails,
            "totalThreads": self.total_threads,
            "unreadThreads": self.unread_threads,
        }


@dataclass(frozen=True)
class Mailbox:
    id: str
    account_id: str
    name: str
    parent_id: str | None
    role: str | None
    sort_order: int
    created_at: int
    counts: Counts = field(default_factory=Counts)
    #: For the user the mailbox was read for; None when read without a user.
    is_subscribed: bool | None = None


@dataclass(frozen=True)
class Message:
    """One email as stored (the JMAP Email metadata and header summary)."""

    id: str
    account_id: str
    blob_id: str
    thread_id: str
    size: int
    received_at: int
    sent_at: int | None
    subject: str | None
    from_: list[dict]
    sender: list[dict]
    to: list[dict]
    cc: list[dict]
    bcc: list[dict]
    reply_to: list[dict]
    message_id: list[str]
    in_reply_to: list[str]
    references: list[str]
    preview: str
    has_attachment: bool
    keywords: frozenset[str] = frozenset()
    mailbox_ids: frozenset[str] = frozenset()
    #: What parsing noted (``mime.parse_message``'s problems), e.g. which address fields are present but empty.
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class NewMessage:
    """One message to append: raw bytes exactly as kept, where, with which keywords and date."""

    raw: bytes
    mailbox_ids: frozenset[str] | set[str] | tuple[str, ...]
    keywords: frozenset[str] | set[str] | tuple[str, ...] = ()
    received_at: int | None = None


@dataclass(frozen=True)
class MessageUpdate:
    """Changes to one message. ``keywords``/``mailbox_ids`` replace; ``add_*``/``remove_*`` patch."""

    keywords: Iterable[str] | None = None
    add_keywords: Iterable[str] = ()
    remove_keywords: Iterable[str] = ()
    mailbox_ids: Iterable[str] | None = None
    add_mailboxes: Iterable[str] = ()
    remove_mailboxes: Iterable[str] = ()


@dataclass(frozen=True)
class Appended:
    id: str
    blob_id: str
    thread_id: str
    size: int
    received_at: int


@dataclass
class AppendResult:
    """Per input position: the appended message or the error that refused it."""

    created: dict[int, Appended] = field(default_factory=dict)
    errors: dict[int, MailboxError] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)


@dataclass
class UpdateResult:
    updated: list[str] = field(default_factory=list)
    errors: dict[str, MailboxError] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)


@dataclass
class DestroyResult:
    destroyed: list[str] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)
    states: dict[str, str] = field(default_factory=dict)


def normalize_keyword(keyword: str) -> str:
    """Lower-case ``keyword`` or raise InvalidProperties when IMAP could not carry it."""
    if (
        not isinstance(keyword, str)
        or not 1 <= len(keyword) <= 255
        or any(not 0x21 <= ord(c) <= 0x7E or c in _KEYWORD_FORBIDDEN for c in keyword)
    ):
        raise InvalidProperties(f"invalid keyword: {keyword!r}", ["keywords"])
    return keyword.lower()


def normalize_keywords(keywords: Iterable[str]) -> frozenset[str]:
    return frozenset(normalize_keyword(k) for k in keywords)


def is_unread(keywords: Iterable[str]) -> bool:
    """Unread in the RFC 8621 sense: neither ``$seen`` nor ``$draft``."""
    ks = set(keywords)
    return "$seen" not in ks and "$draft" not in ks


def validate_mailbox_name(name: object) -> str:
    """Return ``name`` in NFC or raise InvalidProperties (empty, too long, control characters)."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidProperties("a mailbox name must be a non-empty string", ["name"])
    name = unicodedata.normalize("NFC", name)
    if len(name.encode()) > MAX_MAILBOX_NAME:
        raise InvalidProperties(f"a mailbox name is at most {MAX_MAILBOX_NAME} bytes", ["name"])
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name):
        raise InvalidProperties("a mailbox name cannot contain control characters", ["name"])
    return name


def name_key(name: str) -> str:
    """What sibling names are compared on: case-insensitive, so delivery by name is unambiguous."""
    return unicodedata.normalize("NFC", name).casefold()


def validate_role(role: object) -> str | None:
    if role is None:
        return None
    if not isinstance(role, str) or role.lower() not in ROLES:
        raise InvalidProperties(f"unknown mailbox role: {role!r}", ["role"])
    return role.lower()


def validate_sort_order(sort_order: object) -> int:
    if not isinstance(sort_order, int) or isinstance(sort_order, bool) or not 0 <= sort_order <= MAX_SORT_ORDER:
        raise InvalidProperties("sortOrder must be an integer in 0..2^31-1", ["sortOrder"])
    return sort_order

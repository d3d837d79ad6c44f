"""The Email object's properties (RFC 8621 §4.1) and the fetch arguments Email/get and Email/parse share.

A stored email is rendered from two sources: the metadata and header summary in the database (fast:
id, blobId, threadId, mailboxIds, keywords, size, receivedAt, the convenience header properties,
hasAttachment, preview) and, only when a requested property needs it (headers, ``header:…``, the body
properties), the raw message parsed once. Email/parse renders from the parsed message alone.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from jmapmono.jmap.email_body import BodyProperty, email_body, parse_body_properties
from jmapmono.jmap.email_headers import (
    CONVENIENCE,
    HeaderProperty,
    convenience_value,
    header_value,
    headers_list,
    is_header_property,
    parse_header_property,
)
from jmapmono.jmap.errors import MethodError
from jmapmono.jmap.method_args import arg_bool, arg_unsigned_int, invalid
from jmapmono.jmap.rendered_cache import MUTABLE
from jmapmono.mailbox.mime import DATE_OFFSET, EMPTY_ADDRESS_LIST
from jmapmono.mailbox.mime_fields import offset_date, utc_date
from jmapmono.mailbox.mime_tree import MimeMessage
from jmapmono.mailbox.model import Message

METADATA = ("id", "blobId", "threadId", "mailboxIds", "keywords", "size", "receivedAt")
#: Computed from the body; the last two are also kept in the stored summary.
BODY = ("bodyStructure", "textBody", "htmlBody", "attachments", "bodyValues", "hasAttachment", "preview")
EMAIL_PROPERTIES = frozenset([*METADATA, *CONVENIENCE, "headers", *BODY])
#: Properties that need the raw message (besides ``header:…``).
NEEDS_MESSAGE = frozenset(["headers", "bodyStructure", "textBody", "htmlBody", "attachments", "bodyValues"])
#: RFC 8621 §4.2: the default when ``properties`` is null (not "all").
DEFAULT_GET_PROPERTIES = [
    "id",
    "blobId",
    "threadId",
    "mailboxIds",
    "keywords",
    "size",
    "receivedAt",
    "messageId",
    "inReplyTo",
    "references",
    "sender",
    "from",
    "to",
    "cc",
    "bcc",
    "replyTo",
    "subject",
    "sentAt",
    "hasAttachment",
    "preview",
    "bodyValues",
    "textBody",
    "htmlBody",
    "attachments",
]
#: RFC 8621 §4.9: Email/parse's default.
DEFAULT_PARSE_PROPERTIES = DEFAULT_GET_PROPERTIES[7:]
#: The fetch arguments both methods take, besides ``properties``.
FETCH_ARGUMENTS = (
    "bodyProperties",
    "fetchTextBodyValues",
    "fetchHTMLBodyValues",
    "fetchAllBodyValues",
    "maxBodyValueBytes",
)
_ADDRESS_FIELDS = {
    "from": ("from_", "from"),
    "sender": ("sender", "sender"),
    "to": ("to", "to"),
    "cc": ("cc", "cc"),
    "bcc": ("bcc", "bcc"),
    "replyTo": ("reply_to", "reply-to"),
}
_ID_FIELDS = {"messageId": "message_id", "inReplyTo": "in_reply_to", "references": "references"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: The properties the stored summary answers (when parsing at storage time succeeded).
_FROM_SUMMARY = frozenset([*CONVENIENCE, "hasAttachment", "preview"])


def utc_date_ms(ms: int) -> str:
    """A stored time (ms since the epoch) as an RFC 8620 UTCDate, to the second like IMAP's internal date."""
    return utc_date(_EPOCH + timedelta(seconds=ms // 1000))


def offset_date_ms(ms: int, problems: tuple[str, ...]) -> str:
    """The stored sentAt as an RFC 8620 Date in the Date field's own zone (as ``header:Date:asDate`` shows it)."""
    offset = next((p[len(DATE_OFFSET) :] for p in problems if p.startswith(DATE_OFFSET)), "0")
    return offset_date(_EPOCH + timedelta(seconds=ms // 1000), int(offset) if offset.lstrip("-").isdigit() else 0)


@dataclass(frozen=True)
class EmailFetch:
    """What to render of each Email: the validated properties and fetch arguments."""

    properties: list[str]
    #: The ``header:…`` properties among ``properties``, parsed.
    headers: dict[str, HeaderProperty]
    body_properties: list[BodyProperty] | None
    fetch_text_body_values: bool
    fetch_html_body_values: bool
    fetch_all_body_values: bool
    max_body_value_bytes: int

    @property
    def needs_message(self) -> bool:
        """Whether some requested property can only come from the raw message."""
        return bool(self.headers) or not NEEDS_MESSAGE.isdisjoint(self.properties)

    def key(self) -> Hashable:
        """What was asked, as a key: two fetches with equal keys render an email the same."""
        body = None if self.body_properties is None else tuple(self.body_properties)
        flags = (self.fetch_text_body_values, self.fetch_html_body_values, self.fetch_all_body_values)
        return (tuple(self.properties), body, flags, self.max_body_value_bytes)

    def needs_message_for(self, meta: Message) -> bool:
        """Whether rendering the stored email ``meta`` needs its raw message parsed."""
        if self.needs_message:
            return True
        # A message the store could not parse has no summary: its header properties come from the bytes.
        return not summary_is_complete(meta) and not _FROM_SUMMARY.isdisjoint(self.properties)


def _optional(args: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """The arguments with a null ``name`` treated as omitted (its default applies)."""
    return {k: v for k, v in args.items() if k != name} if args.get(name, 0) is None else args


def parse_fetch(args: Mapping[str, Any], default: list[str], *, with_id: bool) -> EmailFetch:
    """Validate ``properties`` (null → ``default``; ``header:…`` forms checked; unknown names, forbidden
    forms → invalidArguments) and the body fetch arguments. ``with_id``: ``id`` is always returned."""
    value = args.get("properties")
    if value is None:
        chosen = list(default)
    else:
        if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
            raise invalid("'properties' must be an array of property names or null")
        unknown = [p for p in value if p not in EMAIL_PROPERTIES and not is_header_property(p)]
        if unknown:
            raise MethodError("invalidArguments", f"unknown properties: {', '.join(unknown)}", properties=unknown)
        chosen = list(dict.fromkeys(value))
    if with_id and "id" not in chosen:
        chosen.insert(0, "id")
    headers = {p: parse_header_property(p) for p in chosen if is_header_property(p)}
    body_properties = args.get("bodyProperties")
    if body_properties is not None and not isinstance(body_properties, list):
        raise invalid("'bodyProperties' must be an array of property names or null")
    flags = {
        name: arg_bool(_optional(args, name), name, False)
        for name in ("fetchTextBodyValues", "fetchHTMLBodyValues", "fetchAllBodyValues")
    }
    max_bytes = arg_unsigned_int(_optional(args, "maxBodyValueBytes"), "maxBodyValueBytes", 0)
    return EmailFetch(
        properties=chosen,
        headers=headers,
        body_properties=parse_body_properties(body_properties),
        fetch_text_body_values=flags["fetchTextBodyValues"],
        fetch_html_body_values=flags["fetchHTMLBodyValues"],
        fetch_all_body_values=flags["fetchAllBodyValues"],
        max_body_value_bytes=max_bytes or 0,
    )


def summary_is_complete(meta: Message) -> bool:
    """False when the message could not be parsed at storage time (its summary holds defaults only)."""
    return not any(p.startswith("unparsable") for p in meta.problems)


def _stored(meta: Message, prop: str) -> Any:
    """A convenience, hasAttachment or preview property from the stored summary."""
    if prop in _ADDRESS_FIELDS:
        attr, field = _ADDRESS_FIELDS[prop]
        value = getattr(meta, attr)
        # [] is stored for both an absent field (null) and a present one naming no address ([]).
        return value if value or EMPTY_ADDRESS_LIST + field in meta.problems else None
    if prop in _ID_FIELDS:
        return list(getattr(meta, _ID_FIELDS[prop])) or None  # MessageIds: null when absent or unparsable
    if prop == "subject":
        return meta.subject
    if prop == "sentAt":
        return None if meta.sent_at is None else offset_date_ms(meta.sent_at, meta.problems)
    if prop == "hasAttachment":
        return meta.has_attachment
    if prop == "preview":
        return meta.preview
    raise KeyError(prop)


def render(
    fetch: EmailFetch,
    blob_id: str,
    message: MimeMessage | None,
    meta: Message | None = None,
    size: int | None = None,
) -> dict[str, Any]:
    """One Email object with exactly ``fetch.properties``.

    ``meta`` is the stored email (Email/get) or None (Email/parse: metadata properties are null, the rest
    comes from ``message``). ``message`` is the parsed raw message, or None when nothing requested needs it
    (``fetch.needs_message_for(meta)`` is false).
    """
    from_summary = meta is not None and (message is None or summary_is_complete(meta))
    body_wanted = [
        p for p in fetch.properties if p in BODY and not (from_summary and p in ("hasAttachment", "preview"))
    ]
    body: dict[str, Any] = {}
    if body_wanted:
        assert message is not None, "body properties need the parsed message"
        body = email_body(
            message,
            blob_id,
            body_wanted,
            fetch.body_properties,
            fetch.fetch_text_body_values,
            fetch.fetch_html_body_values,
            fetch.fetch_all_body_values,
            fetch.max_body_value_bytes,
        )
    out: dict[str, Any] = {}
    for prop in fetch.properties:
        if prop in body:
            out[prop] = body[prop]
        elif prop in fetch.headers:
            assert message is not None, "header properties need the parsed message"
            out[prop] = header_value(message, fetch.headers[prop])
        elif prop == "headers":
            assert message is not None, "header properties need the parsed message"
            out[prop] = headers_list(message)
        elif prop == "blobId":
            out[prop] = blob_id
        elif prop == "size":
            out[prop] = meta.size if meta is not None else size
        elif prop in METADATA:
            out[prop] = None if meta is None else _metadata(meta, prop)
        elif from_summary:
            assert meta is not None  # from_summary implies it
            out[prop] = _stored(meta, prop)
        else:
            assert message is not None, "header properties need the parsed message"
            out[prop] = convenience_value(message, prop)
    return out


def with_mutable(fetch: EmailFetch, kept: dict[str, Any], meta: Message) -> dict[str, Any]:
    """The Email object from its kept immutable properties (rendered earlier with the same ``fetch``) and the
    mutable ones of its row as read now, in the order asked."""
    return {p: _metadata(meta, p) if p in MUTABLE else kept[p] for p in fetch.properties}


def _metadata(meta: Message, prop: str) -> Any:
    if prop == "id":
        return meta.id
    if prop == "threadId":
        return meta.thread_id
    if prop == "mailboxIds":
        return {m: True for m in sorted(meta.mailbox_ids)}
    if prop == "keywords":
        return {k: True for k in sorted(meta.keywords)}
    if prop == "receivedAt":
        return utc_date_ms(meta.received_at)
    raise KeyError(prop)

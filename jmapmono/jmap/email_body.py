"""The body of the JMAP Email (RFC 8621 §4.1.4): EmailBodyPart, the body lists, bodyValues, part blobs.

A part's blob id is ``<message blob id>_<partId>`` (part ids are "1", "2", … in depth-first order,
so the id stays within [A-Za-z0-9_-]); :func:`resolve_blob_id` turns it back into the decoded bytes
a download must return, also for parts of attached messages (``…_9_2``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from jmapmono.jmap.email_headers import (
    HeaderProperty,
    header_value,
    headers_list,
    is_header_property,
    parse_header_property,
)
from jmapmono.jmap.errors import invalid_arguments
from jmapmono.mailbox.mime import has_attachment, preview_of
from jmapmono.mailbox.mime_tree import MimeMessage, MimePart, body_lists, parse_mime, part_content, part_text

DEFAULT_BODY_PROPERTIES = [
    "partId",
    "blobId",
    "size",
    "name",
    "type",
    "charset",
    "disposition",
    "cid",
    "language",
    "location",
]
BODY_PART_PROPERTIES = frozenset([*DEFAULT_BODY_PROPERTIES, "headers", "subParts"])
#: The Email properties this module computes.
EMAIL_BODY_PROPERTIES = frozenset(
    ["bodyStructure", "textBody", "htmlBody", "attachments", "bodyValues", "hasAttachment", "preview"]
)

BodyProperty = str | HeaderProperty
#: How many attached-message levels a part blob id may go down.
MAX_NESTING = 8


def parse_body_properties(names: Iterable[str] | None) -> list[BodyProperty] | None:
    """Validate ``bodyProperties``; None means the default. Unknown names → invalidArguments."""
    if names is None:
        return None
    if isinstance(names, (str, bytes)) or not isinstance(names, Iterable):
        raise invalid_arguments("bodyProperties must be a list of strings")
    out: list[BodyProperty] = []
    for name in names:
        if is_header_property(name):
            out.append(parse_header_property(name))
        elif isinstance(name, str) and name in BODY_PART_PROPERTIES:
            out.append(name)
        else:
            raise invalid_arguments(f"unknown body part property {name!r}")
    return out


def part_blob_id(message_blob_id: str, part_id: str) -> str:
    return f"{message_blob_id}_{part_id}"


def split_part_blob_id(blob_id: str) -> tuple[str, str] | None:
    """(containing blob id, part id) for a part blob id, else None."""
    base, sep, part_id = blob_id.rpartition("_")
    if not sep or not base or not part_id.isascii() or not part_id.isdigit():
        return None
    return base, part_id


@dataclass
class _View:
    message: MimeMessage
    blob_id: str
    properties: list[BodyProperty]
    sizes: dict[str, int]

    def size(self, part: MimePart) -> int:
        if part.part_id is None:
            return part.body_end - part.body_start
        if part.part_id not in self.sizes:
            self.sizes[part.part_id] = len(part_content(self.message, part)[0])
        return self.sizes[part.part_id]

    def part(self, part: MimePart) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for prop in self.properties:
            if isinstance(prop, HeaderProperty):
                out[prop.key] = header_value(part, prop)
            elif prop == "partId":
                out["partId"] = part.part_id
            elif prop == "blobId":
                out["blobId"] = None if part.part_id is None else part_blob_id(self.blob_id, part.part_id)
            elif prop == "size":
                out["size"] = self.size(part)
            elif prop == "headers":
                out["headers"] = headers_list(part)
            elif prop == "subParts":
                out["subParts"] = None if part.subparts is None else [self.part(p) for p in part.subparts]
            else:
                out[prop] = getattr(part, prop)
        return out


def body_values(
    message: MimeMessage,
    parts: Iterable[MimePart],
    max_bytes: int = 0,
) -> dict[str, dict[str, Any]]:
    """EmailBodyValue for each text/* part in ``parts`` (by partId), truncated to ``max_bytes`` octets."""
    out: dict[str, dict[str, Any]] = {}
    for part in parts:
        if part.part_id is None or part.part_id in out or not part.type.startswith("text/"):
            continue
        text, problem = part_text(message, part)
        truncated = False
        if max_bytes > 0:
            text, truncated = truncate_utf8(text, max_bytes, html=part.type == "text/html")
        out[part.part_id] = {"value": text, "isEncodingProblem": problem, "isTruncated": truncated}
    return out


def truncate_utf8(text: str, max_bytes: int, html: bool = False) -> tuple[str, bool]:
    """Cut ``text`` to at most ``max_bytes`` UTF-8 octets on a character boundary (outside a tag for HTML)."""
    if len(text) * 4 <= max_bytes:
        return text, False
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text, False
    cut = encoded[:max_bytes].decode("utf-8", "ignore")
    if html:
        lt = cut.rfind("<")
        if lt > cut.rfind(">"):
            cut = cut[:lt]
    return cut, True


def email_body(
    message: MimeMessage | bytes,
    blob_id: str,
    properties: Iterable[str],
    body_properties: list[BodyProperty] | None = None,
    fetch_text_body_values: bool = False,
    fetch_html_body_values: bool = False,
    fetch_all_body_values: bool = False,
    max_body_value_bytes: int = 0,
) -> dict[str, Any]:
    """The requested body properties of an Email (bodyStructure, textBody, htmlBody, attachments,
    bodyValues, hasAttachment, preview); other names in ``properties`` are ignored.

    With the default ``bodyProperties``, bodyStructure also carries subParts (else it would show
    the root part alone); an explicit list is followed exactly.
    """
    if not isinstance(message, MimeMessage):
        message = parse_mime(bytes(message))
    wanted = EMAIL_BODY_PROPERTIES.intersection(properties)
    if not wanted:
        return {}
    props = DEFAULT_BODY_PROPERTIES if body_properties is None else body_properties
    view = _View(message, blob_id, list(props), {})
    text_body, html_body, attachments = body_lists(message)
    out: dict[str, Any] = {}
    if "bodyStructure" in wanted:
        structure_props = [*props, "subParts"] if body_properties is None else props
        out["bodyStructure"] = _View(message, blob_id, list(structure_props), view.sizes).part(message.root)
    if "textBody" in wanted:
        out["textBody"] = [view.part(p) for p in text_body]
    if "htmlBody" in wanted:
        out["htmlBody"] = [view.part(p) for p in html_body]
    if "attachments" in wanted:
        out["attachments"] = [view.part(p) for p in attachments]
    if "bodyValues" in wanted:
        chosen: list[MimePart] = []
        if fetch_all_body_values:
            chosen = list(message.leaves.values())
        else:
            if fetch_text_body_values:
                chosen += text_body
            if fetch_html_body_values:
                chosen += html_body
        out["bodyValues"] = body_values(message, chosen, max_body_value_bytes)
    if "hasAttachment" in wanted:
        out["hasAttachment"] = has_attachment(attachments)
    if "preview" in wanted:
        out["preview"] = preview_of(message, text_body)
    return out


def resolve_part_blob(raw: bytes, part_id: str) -> tuple[bytes, str, str | None] | None:
    """The decoded content, type and name of part ``part_id`` of the message ``raw``; None if no such part."""
    message = parse_mime(raw)
    part = message.leaves.get(part_id)
    if part is None:
        return None
    return part_content(message, part)[0], part.type, part.name


def resolve_blob_id(
    blob_id: str, fetch: Callable[[str], bytes | None], _depth: int = 0
) -> tuple[bytes, str, str | None] | None:
    """Resolve a part blob id (possibly nested: ``G…_9_2``) with ``fetch`` reading stored blobs.

    ``fetch`` is called with the id of the stored message blob (and must enforce access); None when
    the id is no part blob id, the stored blob is unreadable or the part does not exist.
    """
    split = split_part_blob_id(blob_id)
    if split is None or _depth > MAX_NESTING:
        return None
    base, part_id = split
    raw = fetch(base)
    if raw is None:
        inner = resolve_blob_id(base, fetch, _depth + 1)
        if inner is None:
            return None
        raw = inner[0]
    return resolve_part_blob(raw, part_id)

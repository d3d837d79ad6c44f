"""MIME parsing for storage, threading and search: ``parse_message(raw) -> ParsedMessage``.

The MIME tree itself lives in ``mime_tree`` (shared with the JMAP Email view, so that hasAttachment
and preview agree with textBody/attachments); header field decoding in ``mime_fields`` and
``mime_addresses``. Nothing here raises on bad input: defects are listed in ``problems``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from jmapmono.mailbox.mime_addresses import addresses
from jmapmono.mailbox.mime_fields import fold_whitespace, html_to_text, message_ids, parse_date_offset, text_form
from jmapmono.mailbox.mime_tree import MimeMessage, MimePart, body_lists, parse_mime, part_text

PREVIEW_LENGTH = 256
SEARCH_TEXT_LIMIT = 256 * 1024
_HTML_SOURCE_LIMIT = 2 * 1024 * 1024
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def is_downloadable(part: MimePart) -> bool:
    """Whether an attachment counts for hasAttachment: not inline, not an embedded related image."""
    if part.disposition == "inline":
        return False
    if part.disposition is None and part.parent_type == "multipart/related" and (part.cid or part.location):
        return False
    return True


def has_attachment(attachments: list[MimePart]) -> bool:
    return any(is_downloadable(part) for part in attachments)


def readable_text(
    message: MimeMessage, part: MimePart, limit: int = SEARCH_TEXT_LIMIT, problems: list[str] | None = None
) -> str:
    """Plain text of a text/* part for previews and search (about ``limit`` characters at most)."""
    text, problem = part_text(message, part)
    if problem and problems is not None:
        problems.append(f"encoding-problem:{part.part_id}")
    if part.type == "text/html":
        text = html_to_text(text[:_HTML_SOURCE_LIMIT])
    return _CONTROL.sub(" ", text[: limit + 1024])


def preview_of(message: MimeMessage, text_body: list[MimePart], texts: dict[str, str] | None = None) -> str:
    """RFC 8621 preview: ≤ 256 characters of the first non-empty text part, whitespace folded."""
    for part in text_body:
        if part.type in ("text/plain", "text/html"):
            text = texts[part.part_id] if texts and part.part_id in texts else readable_text(message, part)
            text = fold_whitespace(text[: PREVIEW_LENGTH * 16])
            if text:
                return text[:PREVIEW_LENGTH].rstrip()
    return ""


def _texts(
    message: MimeMessage, text_body: list[MimePart], attachments: list[MimePart], problems: list[str]
) -> dict[str, str]:
    """Readable text of the body's text parts and text attachments, in order, within the search bound."""
    texts: dict[str, str] = {}
    size = 0
    for part in [*text_body, *attachments]:
        if part.part_id is None or part.part_id in texts or not part.type.startswith("text/"):
            continue
        if size >= SEARCH_TEXT_LIMIT:
            break
        texts[part.part_id] = text = readable_text(message, part, SEARCH_TEXT_LIMIT - size, problems)
        size += len(text)
    return texts


def _search_text(texts: dict[str, str]) -> str:
    folded = (fold_whitespace(text) for text in texts.values())
    return "\n".join(text for text in folded if text)[:SEARCH_TEXT_LIMIT]


# --- base subject (RFC 5256 §2.1) --------------------------------------------------------------------

_BLOB = r"\[[^\[\]]*\][ \t]*"
_LEADER = re.compile(r"(?:(?:" + _BLOB + r")*(?:re|fwd?)[ \t]*(?:" + _BLOB + r")?:|[ \t]+)", re.IGNORECASE)
_TRAILER = re.compile(r"(?:\(fwd\)|[ \t])+$", re.IGNORECASE)
_BLOB_PREFIX = re.compile(_BLOB)


def base_subject(subject: str | None) -> str:
    """The RFC 5256 §2.1 base subject, lower-cased, for threading and sorting."""
    text = fold_whitespace(subject or "")
    while True:
        text = _TRAILER.sub("", text)  # step 2
        while True:  # steps 3-5
            before = text
            while (m := _LEADER.match(text)) and m.end() > 0:
                text = text[m.end() :]
            blob = _BLOB_PREFIX.match(text)
            if blob and text[blob.end() :].strip():
                text = text[blob.end() :]
            if text == before:
                break
        if text[:5].lower() == "[fwd:" and text.endswith("]"):  # step 6
            text = text[5:-1]
            continue
        break
    return text.strip().lower()


# --- the parsed summary ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedMessage:
    """What storage, threading and search need from a message (JMAP-agnostic)."""

    message_ids: list[str]
    in_reply_to: list[str]
    references: list[str]
    subject: str | None
    base_subject: str
    sent_at: int | None
    from_: list[dict]
    sender: list[dict]
    to: list[dict]
    cc: list[dict]
    bcc: list[dict]
    reply_to: list[dict]
    has_attachment: bool
    preview: str
    size: int
    problems: list[str]
    search_text: str


def _ids(message: MimeMessage, name: str) -> list[str]:
    value = message.header(name)
    return (message_ids(value) or []) if value is not None else []


def _addresses(message: MimeMessage, name: str) -> list[dict]:
    value = message.header(name)
    return addresses(value) if value is not None else []


#: Noted in ``problems`` (``empty-address-list:to``) when an address field is present but names no address
#: ("To: undisclosed-recipients:;"), so that readers of the stored summary can tell [] (present) from null.
EMPTY_ADDRESS_LIST = "empty-address-list:"
_ADDRESS_FIELDS = ("From", "Sender", "To", "Cc", "Bcc", "Reply-To")
#: Noted in ``problems`` (``date-offset:3600``) with the Date field's zone offset in seconds when it is not 0,
#: so that readers of the stored summary can show sentAt in the sender's zone as the Date form does.
DATE_OFFSET = "date-offset:"


def parse_message(raw: bytes) -> ParsedMessage:
    """Parse ``raw`` as far as it goes; never raises for malformed mail."""
    message = parse_mime(raw)
    subject_raw = message.header("Subject")
    subject = text_form(subject_raw) if subject_raw is not None else None
    date_raw = message.header("Date")
    dated = parse_date_offset(date_raw) if date_raw is not None else None
    when = None if dated is None else dated[0]
    problems = message.problems
    if date_raw is None:
        problems.append("no-date")
    elif dated is None:
        problems.append("invalid-date")
    elif dated[1]:
        problems.append(f"{DATE_OFFSET}{dated[1]}")
    if message.header("Message-ID") is None:
        problems.append("no-message-id")
    if message.header("From") is None:
        problems.append("no-from")
    for name, value in message.headers:
        if not value.isascii() and len(problems) < 100:
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                problems.append(f"8bit-header:{name}")
    text_body, _, attachments = body_lists(message)
    texts = _texts(message, text_body, attachments, problems)
    found = {name: _addresses(message, name) for name in _ADDRESS_FIELDS}
    problems += [EMPTY_ADDRESS_LIST + n.lower() for n, v in found.items() if not v and message.header(n) is not None]
    return ParsedMessage(
        message_ids=_ids(message, "Message-ID"),
        in_reply_to=_ids(message, "In-Reply-To"),
        references=_ids(message, "References"),
        subject=subject,
        base_subject=base_subject(subject),
        sent_at=None if when is None else int(when.timestamp() * 1000),
        from_=found["From"],
        sender=found["Sender"],
        to=found["To"],
        cc=found["Cc"],
        bcc=found["Bcc"],
        reply_to=found["Reply-To"],
        has_attachment=has_attachment(attachments),
        preview=preview_of(message, text_body, texts),
        size=len(raw),
        problems=problems,
        search_text=_search_text(texts),
    )

"""Message Disposition Notifications (RFC 8098) as JMAP sends and reads them (RFC 9007): the wire format only.

An MDN is a ``multipart/report; report-type=disposition-notification``: a human-readable part, a
``message/disposition-notification`` part of fields (Reporting-UA, Original-Recipient, Final-Recipient,
Original-Message-ID, Disposition, Error, extensions) and, if asked for, the original message. It goes to
the addresses of the original's ``Disposition-Notification-To`` with a null envelope sender (RFC 8098
§2.1, §3). What an MDN says is the user's to choose (the client asks); this module refuses what would make
a malformed notification or a header injection.
"""

from __future__ import annotations

import email
import email.header
import email.policy
import re
import secrets
from dataclasses import dataclass, field
from email.message import Message
from email.utils import formatdate, getaddresses
from typing import Any

ACTION_MODES = ("manual-action", "automatic-action")
SENDING_MODES = ("mdn-sent-manually", "mdn-sent-automatically")
TYPES = ("deleted", "dispatched", "displayed", "processed")
#: Most addresses an MDN is sent to (a Disposition-Notification-To naming more is refused).
MAX_RECIPIENTS = 10
#: Most extension fields, and the longest value of any field the client gives.
MAX_EXTENSION_FIELDS = 20
MAX_FIELD_LENGTH = 998
_FIELD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,75}$")
_RESERVED = {
    "reporting-ua",
    "mdn-gateway",
    "original-recipient",
    "final-recipient",
    "original-message-id",
    "disposition",
    "error",
}


class MdnInvalid(ValueError):
    """What the client asked for cannot be an MDN; ``properties`` are the MDN properties at fault."""

    def __init__(self, description: str, properties: list[str]) -> None:
        super().__init__(description)
        self.properties = properties


@dataclass(frozen=True)
class Disposition:
    action_mode: str
    sending_mode: str
    type: str

    def field(self) -> str:
        """The Disposition field's value (RFC 8098 §3.2.6: case as registered, e.g. ``MDN-sent-manually``)."""
        sending = self.sending_mode.replace("mdn-", "MDN-", 1)
        return f"{self.action_mode}/{sending}; {self.type}"

    def to_json(self) -> dict[str, str]:
        return {"actionMode": self.action_mode, "sendingMode": self.sending_mode, "type": self.type}


@dataclass(frozen=True)
class Report:
    """One MDN to send or as read back: the RFC 9007 §2 properties but ``forEmailId``."""

    disposition: Disposition
    subject: str | None = None
    text_body: str | None = None
    include_original_message: bool = False
    reporting_ua: str | None = None
    mdn_gateway: str | None = None
    original_recipient: str | None = None
    final_recipient: str | None = None
    original_message_id: str | None = None
    error: list[str] | None = None
    extension_fields: dict[str, str] | None = field(default=None)

    def to_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "textBody": self.text_body,
            "includeOriginalMessage": self.include_original_message,
            "reportingUA": self.reporting_ua,
            "disposition": self.disposition.to_json(),
            "mdnGateway": self.mdn_gateway,
            "originalRecipient": self.original_recipient,
            "finalRecipient": self.final_recipient,
            "originalMessageId": self.original_message_id,
            "error": self.error,
            "extensionFields": self.extension_fields,
        }


def disposition_from_json(value: Any) -> Disposition:
    if not isinstance(value, dict):
        raise MdnInvalid("disposition must be an object of actionMode, sendingMode and type", ["disposition"])
    parts = (value.get("actionMode"), value.get("sendingMode"), value.get("type"))
    allowed = (ACTION_MODES, SENDING_MODES, TYPES)
    wrong = any(p not in a for p, a in zip(parts, allowed, strict=True))
    if wrong or set(value) - {"actionMode", "sendingMode", "type"}:
        raise MdnInvalid(
            f"disposition: actionMode one of {ACTION_MODES}, sendingMode one of {SENDING_MODES}, type one of {TYPES}",
            ["disposition"],
        )
    return Disposition(*parts)  # type: ignore[arg-type]


def one_line(value: str, prop: str) -> str:
    if any(c in value for c in "\r\n\0") or len(value) > MAX_FIELD_LENGTH:
        raise MdnInvalid(f"{prop} must be one line of at most {MAX_FIELD_LENGTH} characters", [prop])
    return value


def check_extension_fields(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > MAX_EXTENSION_FIELDS:
        what = f"extensionFields must map at most {MAX_EXTENSION_FIELDS} names to strings"
        raise MdnInvalid(what, ["extensionFields"])
    for name, text in value.items():
        if not _FIELD_NAME.match(name) or name.lower() in _RESERVED or not isinstance(text, str):
            raise MdnInvalid(f"extensionFields: {name!r} is not an extension field name", ["extensionFields"])
        one_line(text, "extensionFields")
    return dict(value)


def recipients(original: Message) -> list[str]:
    """Where the original asks for its MDN (Disposition-Notification-To), empty when it asks for none."""
    values = [str(v) for v in original.get_all("Disposition-Notification-To") or []]
    addresses = [a for _, a in getaddresses(values) if a and "@" in a]
    return list(dict.fromkeys(addresses))


def compose(
    original: Message,
    original_raw: bytes,
    report: Report,
    from_header: str,
    to: list[str],
    hostname: str,
) -> bytes:
    """The MDN as sent (CRLF line ends)."""
    boundary = "mdn-" + secrets.token_hex(12)
    original_subject = str(original.get("Subject", "") or "")
    subject = report.subject if report.subject is not None else f"Read: {original_subject}".strip()
    text = report.text_body if report.text_body is not None else default_text(report.disposition, original_subject)
    fields = []
    if report.reporting_ua:
        fields.append(f"Reporting-UA: {report.reporting_ua}")
    if report.original_recipient:
        fields.append(f"Original-Recipient: rfc822;{report.original_recipient}")
    fields.append(f"Final-Recipient: rfc822;{report.final_recipient}")
    if report.original_message_id:
        fields.append(f"Original-Message-ID: {report.original_message_id}")
    fields.append(f"Disposition: {report.disposition.field()}")
    for name, value in (report.extension_fields or {}).items():
        fields.append(f"{name}: {value}")
    head = [
        f"From: {from_header}",
        f"To: {', '.join(to)}",
        f"Subject: {_encoded(subject)}",
        f"Date: {formatdate(localtime=False, usegmt=True)}",
        f"Message-ID: <{secrets.token_hex(16)}@{hostname}>",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=disposition-notification; boundary="{boundary}"',
    ]
    if report.original_message_id:
        head.append(f"References: {report.original_message_id}")
    if report.disposition.sending_mode == "mdn-sent-automatically":
        head.append("Auto-Submitted: auto-replied")  # RFC 3834: keeps responders from answering it
    parts = [
        "\r\n".join(head),
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        text.replace("\r\n", "\n").replace("\n", "\r\n"),
        f"--{boundary}",
        "Content-Type: message/disposition-notification",
        "",
        "\r\n".join(fields),
        "",
    ]
    body = "\r\n".join(parts).encode("utf-8")
    if report.include_original_message:
        part = f"--{boundary}\r\nContent-Type: message/rfc822\r\n\r\n".encode()
        body += part + original_raw.rstrip(b"\r\n") + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


def default_text(disposition: Disposition, original_subject: str) -> str:
    what = {
        "displayed": "was displayed",
        "deleted": "was deleted without being displayed",
        "dispatched": "was handled without being displayed",
        "processed": "was processed",
    }[disposition.type]
    return f'The message "{original_subject}" {what} by the recipient. This is no guarantee that it was read.'


def _encoded(text: str) -> str:
    return text if text.isascii() else email.header.Header(text, "utf-8").encode()


# -- reading an MDN back (MDN/parse) ---------------------------------------------------------------------------


def parse(raw: bytes) -> Report | None:
    """The MDN ``raw`` carries, or None when it is not one (RFC 8098 §3)."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    if message.get_content_type() != "multipart/report":
        return None
    report_type = message.get_param("report-type")
    if not isinstance(report_type, str) or report_type.lower() != "disposition-notification":
        return None
    payload = message.get_payload()
    if not isinstance(payload, list):
        return None
    parts: list[Message] = [p for p in payload if isinstance(p, Message)]
    notification = next((p for p in parts if p.get_content_type() == "message/disposition-notification"), None)
    if notification is None:
        return None
    fields = _notification_fields(notification)
    if fields is None or "disposition" not in fields:
        return None
    disposition = _disposition(fields["disposition"][0])
    if disposition is None:
        return None
    text_part = next((p for p in parts if p.get_content_type() == "text/plain"), None)
    text = None
    if text_part is not None:
        payload = text_part.get_payload(decode=True)
        if isinstance(payload, bytes):
            text = payload.decode(text_part.get_content_charset() or "utf-8", "replace")
    extensions = {name: values[0] for name, values in fields.items() if name not in _RESERVED}
    subject = message.get("Subject")
    return Report(
        disposition=disposition,
        subject=None if subject is None else str(email.header.make_header(email.header.decode_header(subject))),
        text_body=text,
        include_original_message=any(p.get_content_type() == "message/rfc822" for p in parts),
        reporting_ua=_first(fields, "reporting-ua"),
        mdn_gateway=_address(_first(fields, "mdn-gateway")),
        original_recipient=_address(_first(fields, "original-recipient")),
        final_recipient=_address(_first(fields, "final-recipient")),
        original_message_id=_first(fields, "original-message-id"),
        error=fields.get("error"),
        extension_fields={_field_case(k): v for k, v in extensions.items()} or None,
    )


def _notification_fields(part: Message) -> dict[str, list[str]] | None:
    payload = part.get_payload()
    if isinstance(payload, list):  # the standard library parses message/* bodies as messages
        source = payload[0] if payload else None
        items = list(source.items()) if isinstance(source, Message) else []
    elif isinstance(payload, str):
        items = list(email.message_from_string(payload, policy=email.policy.compat32).items())
    else:
        return None
    fields: dict[str, list[str]] = {}
    for name, value in items:
        fields.setdefault(name.lower(), []).append(" ".join(str(value).split()))
    return fields


def _disposition(value: str) -> Disposition | None:
    match = re.match(r"^\s*([\w-]+)\s*/\s*([\w-]+)\s*;\s*([\w-]+)", value)
    if not match:
        return None
    action, sending, kind = (g.lower() for g in match.groups())
    if action not in ACTION_MODES or sending not in SENDING_MODES or kind not in TYPES:
        return None
    return Disposition(action, sending, kind)


def _first(fields: dict[str, list[str]], name: str) -> str | None:
    values = fields.get(name)
    return values[0] if values else None


def _address(value: str | None) -> str | None:
    """``rfc822;user@example.org`` → ``user@example.org`` (other address types kept whole)."""
    if value is None:
        return None
    kind, sep, address = value.partition(";")
    return address.strip() if sep and kind.strip().lower() == "rfc822" else value


def _field_case(name: str) -> str:
    return "-".join(word[:1].upper() + word[1:] for word in name.split("-"))

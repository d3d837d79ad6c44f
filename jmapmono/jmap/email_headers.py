"""Header fields of the JMAP Email and EmailBodyPart (RFC 8621 §4.1.2–4.1.3).

``header:{name}[:as{Form}][:all]`` properties, the parsed forms, which forms a field allows, the
``headers`` list and the convenience properties (messageId, from, subject, sentAt, …).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jmapmono.jmap.errors import MethodError
from jmapmono.mailbox.mime_addresses import addresses, grouped_addresses
from jmapmono.mailbox.mime_fields import date_form, message_ids, raw_form, text_form, urls
from jmapmono.mailbox.mime_tree import MimeMessage, MimePart, parse_mime

FORMS: dict[str, Callable[[bytes], Any]] = {
    "Raw": raw_form,
    "Text": text_form,
    "Addresses": addresses,
    "GroupedAddresses": grouped_addresses,
    "MessageIds": message_ids,
    "Date": date_form,
    "URLs": urls,
}

# Fields defined by RFC 5322 or RFC 2369, and the forms each allows besides Raw (§4.1.2.2–4.1.2.7).
# Any other field may be fetched in every form.
_ADDRESS = {"Addresses", "GroupedAddresses"}
_FIELD_FORMS: dict[str, set[str]] = {
    "date": {"Date"},
    "resent-date": {"Date"},
    "from": _ADDRESS,
    "sender": _ADDRESS,
    "reply-to": _ADDRESS,
    "to": _ADDRESS,
    "cc": _ADDRESS,
    "bcc": _ADDRESS,
    "resent-from": _ADDRESS,
    "resent-sender": _ADDRESS,
    "resent-to": _ADDRESS,
    "resent-cc": _ADDRESS,
    "resent-bcc": _ADDRESS,
    "message-id": {"MessageIds"},
    "in-reply-to": {"MessageIds"},
    "references": {"MessageIds"},
    "resent-message-id": {"MessageIds"},
    "subject": {"Text"},
    "comments": {"Text"},
    "keywords": {"Text"},
    "return-path": set(),
    "received": set(),
    "list-help": {"URLs"},
    "list-unsubscribe": {"URLs"},
    "list-subscribe": {"URLs"},
    "list-post": {"URLs"},
    "list-owner": {"URLs"},
    "list-archive": {"URLs"},
}

_PROPERTY = re.compile(r"header:([!-9;-~]+)(?::as([A-Za-z]+))?(:all)?")

#: Email convenience properties: (field, form), all single-instance (RFC 8621 §4.1.3).
CONVENIENCE: dict[str, tuple[str, str]] = {
    "messageId": ("Message-ID", "MessageIds"),
    "inReplyTo": ("In-Reply-To", "MessageIds"),
    "references": ("References", "MessageIds"),
    "sender": ("Sender", "Addresses"),
    "from": ("From", "Addresses"),
    "to": ("To", "Addresses"),
    "cc": ("Cc", "Addresses"),
    "bcc": ("Bcc", "Addresses"),
    "replyTo": ("Reply-To", "Addresses"),
    "subject": ("Subject", "Text"),
    "sentAt": ("Date", "Date"),
}


class InvalidHeaderProperty(MethodError):
    """A malformed ``header:`` property or a form the field does not allow: invalidArguments."""

    def __init__(self, description: str) -> None:
        super().__init__("invalidArguments", description)


@dataclass(frozen=True)
class HeaderProperty:
    """A validated ``header:`` property; ``key`` is the property name exactly as requested."""

    key: str
    field: str
    form: str
    all: bool

    def value(self, message: MimeMessage | MimePart | bytes) -> Any:
        return header_value(message, self)


def form_allowed(field: str, form: str) -> bool:
    """Whether RFC 8621 §4.1.2 lets ``field`` be fetched or set in ``form``."""
    if form == "Raw":
        return True
    allowed = _FIELD_FORMS.get(field.lower())
    return form in FORMS if allowed is None else form in allowed


def check_form(field: str, form: str) -> None:
    """Raise InvalidHeaderProperty unless ``field`` may be parsed as ``form``."""
    if form not in FORMS:
        raise InvalidHeaderProperty(f"unknown header form as{form}")
    if not form_allowed(field, form):
        raise InvalidHeaderProperty(f"header field {field} cannot be fetched as{form}")


def is_header_property(name: str) -> bool:
    return isinstance(name, str) and name.startswith("header:")


def parse_header_property(name: str) -> HeaderProperty:
    """Validate ``header:{field}[:as{Form}][:all]``; raises InvalidHeaderProperty (invalidArguments)."""
    m = _PROPERTY.fullmatch(name) if isinstance(name, str) else None
    if m is None:
        raise InvalidHeaderProperty(f"invalid header property {name!r}")
    form = m.group(2) or "Raw"
    check_form(m.group(1), form)
    return HeaderProperty(key=name, field=m.group(1), form=form, all=m.group(3) is not None)


def _headers_of(message: MimeMessage | MimePart | bytes) -> list[tuple[str, bytes]]:
    if isinstance(message, (bytes, bytearray, memoryview)):
        message = parse_mime(bytes(message))
    return message.headers


def header_value(message: MimeMessage | MimePart | bytes, prop: HeaderProperty | str) -> Any:
    """The JSON value of a ``header:`` property: null (or [] with :all) when the field is absent."""
    if isinstance(prop, str):
        prop = parse_header_property(prop)
    field = prop.field.lower()
    parse = FORMS[prop.form]
    values = [value for name, value in _headers_of(message) if name.lower() == field]
    if prop.all:
        return [parse(value) for value in values]
    return parse(values[-1]) if values else None


def headers_list(message: MimeMessage | MimePart | bytes) -> list[dict[str, str]]:
    """The ``headers`` property: every field in order, name as written, value in Raw form."""
    return [{"name": name, "value": raw_form(value)} for name, value in _headers_of(message)]


def convenience_value(message: MimeMessage | bytes, prop: str) -> Any:
    """messageId, inReplyTo, references, sender, from, to, cc, bcc, replyTo, subject or sentAt."""
    field, form = CONVENIENCE[prop]
    return header_value(message, HeaderProperty(key=prop, field=field, form=form, all=False))

"""An Email object to create (RFC 8621 §4.6) checked and turned into an RFC 5322 message.

The rules of §4.6 are enforced here (no ``headers``, one property per header field, only allowed
forms, no top-level ``Content-*``, ``bodyStructure`` XOR ``textBody``/``htmlBody``/``attachments``,
one text/plain and one text/html part, ``partId`` XOR ``blobId``, no charset/size with a partId, no
Content-Transfer-Encoding, bodyValues neither truncated nor with an encoding problem); every
violation is an ``invalidProperties`` SetError naming the top-level properties at fault, blobs that
cannot be read are ``blobNotFound`` with their ids. The message itself is written by
:mod:`jmapmono.mailbox.compose`. The value checks shared with Email/import and Email/copy
(mailboxIds, keywords, UTCDate) live here too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from email.utils import collapse_rfc2231_value
from typing import Any

from jmapmono.jmap import sharing
from jmapmono.jmap.email_headers import CONVENIENCE, is_header_property, parse_header_property
from jmapmono.jmap.errors import MethodError, SetError
from jmapmono.jmap.method_args import is_id
from jmapmono.jmap.registry import Invocation
from jmapmono.mailbox import compose
from jmapmono.mailbox.model import MailboxError, normalize_keyword

SERVER_SET = ("id", "blobId", "threadId", "size", "hasAttachment", "preview")
BODY_INPUT = ("bodyStructure", "textBody", "htmlBody", "attachments", "bodyValues")
PART_PROPERTIES = frozenset(
    ["partId", "blobId", "size", "name", "type", "charset", "disposition", "cid", "language", "location", "subParts"]
)
#: Header fields a body part property stands for: a ``header:`` property for them would say it twice.
_PART_FIELD_PROPERTIES = {
    "content-disposition": ("disposition", "name"),
    "content-id": ("cid",),
    "content-language": ("language",),
    "content-location": ("location",),
}
#: Fields the server writes itself on a body part.
_SERVER_FIELDS = {
    "content-transfer-encoding": "the server chooses the transfer encoding",
    "content-type": "set type, charset and name instead",
}
MAX_PART_DEPTH = 16
MAX_PARTS = 500
_UTC_DATE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")
_MEDIA_TYPE = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+/[!#$%&'*+.^_`|~0-9a-z-]+")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class Bad(Exception):
    """One invalid property (``prop`` is the top-level property name reported to the client)."""

    def __init__(self, prop: str, reason: str, *also: str) -> None:
        super().__init__(reason)
        self.prop = prop
        self.reason = reason
        #: Every property at fault (two properties setting one header field are both reported).
        self.props = [prop, *also]


def invalid_properties(problems: list[Bad]) -> SetError:
    props = list(dict.fromkeys(name for p in problems for name in p.props))
    return SetError("invalidProperties", "; ".join(p.reason for p in problems), properties=props)


# --- values shared with Email/import and Email/copy ----------------------------------------------------------------


def parse_date(value: Any, prop: str, utc: bool) -> datetime:
    """An RFC 3339 ``UTCDate`` (``utc``: must end in Z) or ``Date``; Bad otherwise."""
    pattern = _UTC_DATE if utc else _DATE
    if not isinstance(value, str) or not pattern.fullmatch(value):
        kind = "a UTCDate (YYYY-MM-DDThh:mm:ssZ)" if utc else "a Date (RFC 3339 with an offset)"
        raise Bad(prop, f"{prop} must be {kind}")
    head, tail = value[:19], value[19:]
    micro = 0
    if tail.startswith("."):
        digits = tail[1:].rstrip("Z").split("+")[0].split("-")[0]
        micro, tail = int((digits + "000000")[:6]), tail[1 + len(digits) :]
    try:
        return datetime.fromisoformat(head + ("+00:00" if tail == "Z" else tail)).replace(microsecond=micro)
    except ValueError:
        raise Bad(prop, f"{prop} is not a valid date: {value!r}") from None


def received_at_ms(value: Any, prop: str = "receivedAt") -> int:
    """A UTCDate as milliseconds since the epoch."""
    return round(parse_date(value, prop, utc=True).timestamp() * 1000)


def parse_mailbox_ids(inv: Invocation, value: Any, prop: str = "mailboxIds") -> list[str]:
    """An ``Id[Boolean]`` of mailboxes (``#creationId`` keys resolved); each value must be true."""
    if not isinstance(value, dict):
        raise Bad(prop, f"{prop} must be an object of mailbox ids to true")
    out = []
    for key, flag in value.items():
        if flag is not True:
            raise Bad(prop, f"{prop}/{key} must be true")
        out.append(resolve_mailbox_id(inv, key, prop))
    return out


def resolve_mailbox_id(inv: Invocation, key: Any, prop: str = "mailboxIds") -> str:
    if isinstance(key, str) and key.startswith("#"):
        if key[1:] not in inv.created_ids:
            raise Bad(prop, f"{key} names no mailbox created in this request")
        return inv.created_ids[key[1:]]
    if not is_id(key):
        raise Bad(prop, f"{key!r} is not a mailbox id")
    return key


def parse_keywords(value: Any, prop: str = "keywords") -> list[str]:
    """A ``String[Boolean]`` of keywords (each value true, valid IMAP characters), lower-cased."""
    if not isinstance(value, dict):
        raise Bad(prop, f"{prop} must be an object of keywords to true")
    out = []
    for key, flag in value.items():
        if flag is not True:
            raise Bad(prop, f"{prop}/{key} must be true")
        out.append(keyword(key, prop))
    return out


def keyword(value: str, prop: str = "keywords") -> str:
    try:
        return normalize_keyword(value)
    except MailboxError:
        raise Bad(prop, f'{value!r} is not a valid keyword (1-255 of %x21-7E except ( ) {{ ] % * " \\)') from None


# --- header fields -------------------------------------------------------------------------------------------------


@dataclass
class _Field:
    prop: str
    name: str
    form: str
    all: bool
    value: Any


def _header_fields(obj: dict[str, Any], props: list[str], where: str) -> list[_Field]:
    """The header fields that ``props`` of ``obj`` set (null values set nothing); Bad on a bad property name."""
    out = []
    for prop in props:
        if prop in CONVENIENCE:
            name, form = CONVENIENCE[prop]
            out.append(_Field(prop, name, form, False, obj[prop]))
            continue
        try:
            parsed = parse_header_property(prop)
        except MethodError as e:
            raise Bad(where or prop, e.description or f"invalid header property {prop!r}") from None
        out.append(_Field(prop, parsed.field, parsed.form, parsed.all, obj[prop]))
    seen: dict[str, _Field] = {}
    for f in out:
        other = seen.setdefault(f.name.lower(), f)
        if other is not f:
            reason = f"{other.prop} and {f.prop} set the same header field"
            raise Bad(where, reason) if where else Bad(other.prop, reason, f.prop)
    return out


def _format(f: _Field, where: str) -> list[tuple[str, str]]:
    """The (name, value) lines for a field: one, or one per item with ``:all``; none for null."""
    if f.value is None:
        return []
    if f.all:
        if not isinstance(f.value, list):
            raise Bad(where or f.prop, f"{f.prop} must be an array (it ends in :all)")
        values = [v for v in f.value if v is not None]
    else:
        values = [f.value]
    try:
        return [(f.name, _form_value(f, v)) for v in values]
    except compose.ComposeError as e:
        raise Bad(where or f.prop, f"{f.prop}: {e}") from None


def _strings(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise compose.ComposeError(f"must be an array of {what}")
    return value


def _addresses(value: Any) -> list[dict]:
    if not isinstance(value, list):
        raise compose.ComposeError("must be an array of EmailAddress objects")
    for item in value:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("email"), str)
            or not isinstance(item.get("name"), (str, type(None)))
            or set(item) - {"name", "email"}
        ):
            raise compose.ComposeError("each EmailAddress is {name: String|null, email: String}")
    return value


def _form_value(f: _Field, value: Any) -> str:
    if f.form == "Raw":
        if not isinstance(value, str):
            raise compose.ComposeError("a Raw value must be a string")
        return compose.raw_value(value)
    if f.form == "Text":
        if not isinstance(value, str):
            raise compose.ComposeError("a Text value must be a string")
        return compose.text_value(f.name, value)
    if f.form == "Addresses":
        return compose.addresses_value(f.name, _addresses(value))
    if f.form == "GroupedAddresses":
        if not isinstance(value, list) or not all(
            isinstance(g, dict) and isinstance(g.get("name"), (str, type(None))) and not set(g) - {"name", "addresses"}
            for g in value
        ):
            raise compose.ComposeError("must be an array of {name: String|null, addresses: EmailAddress[]}")
        return compose.grouped_addresses_value(
            f.name, [{"name": g.get("name"), "addresses": _addresses(g.get("addresses"))} for g in value]
        )
    if f.form == "MessageIds":
        return compose.message_ids_value(f.name, _strings(value, "message ids"))
    if f.form == "Date":
        try:
            return compose.date_value(parse_date(value, f.prop, utc=False))
        except Bad as e:
            raise compose.ComposeError(e.reason) from None
    return compose.urls_value(f.name, _strings(value, "URLs"))  # URLs


# --- body parts ----------------------------------------------------------------------------------------------------


@dataclass
class _Body:
    """The body being read: parts that need a blob, and how many parts so far."""

    values: dict[str, str]
    blobs: list[tuple[compose.Part, str, bool, bool]] = field(default_factory=list)
    count: int = 0


def _body_values(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Bad("bodyValues", "bodyValues must be an object of partId to EmailBodyValue")
    out = {}
    for part_id, body_value in value.items():
        if not isinstance(body_value, dict) or not isinstance(body_value.get("value"), str):
            raise Bad("bodyValues", f"bodyValues/{part_id} must be an EmailBodyValue with a string value")
        unknown = set(body_value) - {"value", "isEncodingProblem", "isTruncated"}
        if unknown:
            raise Bad("bodyValues", f"bodyValues/{part_id} has unknown properties {sorted(unknown)}")
        for flag in ("isEncodingProblem", "isTruncated"):
            if body_value.get(flag, False) is not False:
                raise Bad("bodyValues", f"bodyValues/{part_id}/{flag} must be false or omitted")
        out[part_id] = body_value["value"]
    return out


def _opt_str(obj: dict, key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise Bad(where, f"{key} must be a string or null")
    return value


def _media_type(value: str, where: str) -> str:
    media = value.strip().lower()
    if not _MEDIA_TYPE.fullmatch(media):
        raise Bad(where, f"type {value!r} is not a media type (type/subtype, without parameters)")
    return media


def _part(obj: Any, where: str, body: _Body, depth: int = 0) -> compose.Part:
    """An EmailBodyPart to create; leaves with a blobId are filled in later (see :func:`_fetch_blobs`)."""
    body.count += 1
    if depth > MAX_PART_DEPTH or body.count > MAX_PARTS:
        raise Bad(where, f"the body may have at most {MAX_PARTS} parts, {MAX_PART_DEPTH} levels deep")
    if not isinstance(obj, dict):
        raise Bad(where, "an EmailBodyPart must be an object")
    headers = [p for p in obj if is_header_property(p)]
    for prop in obj:
        if prop == "headers":
            raise Bad(where, "headers cannot be set: set each header field as its own header: property")
        if prop not in PART_PROPERTIES and prop not in headers:
            raise Bad(where, f"unknown EmailBodyPart property {prop!r}")
    type_given = _opt_str(obj, "type", where)
    sub_parts = obj.get("subParts")
    media = _media_type(type_given, where) if type_given is not None else None
    if sub_parts is not None and media is None:
        media = "multipart/mixed"
    part = compose.Part(type=media or "text/plain")
    part.name = _opt_str(obj, "name", where)
    part.disposition = _opt_str(obj, "disposition", where)
    if part.disposition is not None and not _TOKEN.fullmatch(part.disposition):
        raise Bad(where, f"disposition {part.disposition!r} is not a token")
    part.cid = _opt_str(obj, "cid", where)
    if part.cid is not None:
        part.cid = part.cid.strip().removeprefix("<").removesuffix(">")
        if not part.cid or any(c.isspace() or c in "<>" for c in part.cid):
            raise Bad(where, f"cid {obj['cid']!r} is not a Content-ID")
    part.location = _opt_str(obj, "location", where)
    if part.location is not None and any(c.isspace() for c in part.location):
        raise Bad(where, "location cannot contain white space")
    language = obj.get("language")
    if language is not None:
        if not isinstance(language, list) or not all(isinstance(t, str) and _TOKEN.fullmatch(t) for t in language):
            raise Bad(where, "language must be an array of language tags or null")
        part.language = list(language)
    for f in _header_fields(obj, headers, where):
        lname = f.name.lower()
        if lname in _SERVER_FIELDS:
            raise Bad(where, f"{f.prop} cannot be set on a body part: {_SERVER_FIELDS[lname]}")
        clash = [p for p in _PART_FIELD_PROPERTIES.get(lname, ()) if obj.get(p) is not None]
        if clash:
            raise Bad(where, f"{f.prop} and {clash[0]} set the same header field")
        part.fields += _format(f, where)
    if part.type.startswith("multipart/"):
        for prop in ("partId", "blobId", "charset"):
            if obj.get(prop) is not None:
                raise Bad(where, f"a multipart part has no {prop}")
        if not isinstance(sub_parts, list) or not sub_parts:
            raise Bad(where, f"a {part.type} part needs a non-empty subParts array")
        part.subparts = [_part(p, where, body, depth + 1) for p in sub_parts]
        return part
    if sub_parts is not None:
        raise Bad(where, f"only multipart/* parts have subParts, not {part.type}")
    part_id, blob_id = obj.get("partId"), obj.get("blobId")
    if (part_id is None) == (blob_id is None):
        raise Bad(where, "a body part needs either a partId or a blobId")
    charset = _opt_str(obj, "charset", where)
    if part_id is not None:
        if not isinstance(part_id, str) or part_id not in body.values:
            raise Bad(where, f"partId {part_id!r} is not in bodyValues")
        for prop in ("charset", "size"):
            if obj.get(prop) is not None:
                raise Bad(where, f"{prop} must be omitted when a partId is given")
        part.text = body.values[part_id]
        return part
    if not is_id(blob_id):
        raise Bad(where, f"blobId {blob_id!r} is not an Id")
    if charset is not None and not _TOKEN.fullmatch(charset):
        raise Bad(where, f"charset {charset!r} is not a charset name")
    part.charset = charset
    body.blobs.append((part, blob_id, media is None, "name" not in obj))
    return part


def _fetch_blobs(inv: Invocation, body: _Body) -> None:
    """Read every referenced blob (uploads, or parts of emails the account holds); blobNotFound if any is missing."""
    blobs = inv.services.blobs
    contents = {}
    for blob_id in dict.fromkeys(b for _, b, _, _ in body.blobs):
        readable = sharing.blob_readable(inv.services, inv.principal, inv.account_id, blob_id)
        contents[blob_id] = blobs.read(inv.account_id, blob_id, inv.principal.user_id) if readable else None
    missing = [b for b, c in contents.items() if c is None]
    if missing:
        raise SetError("blobNotFound", f"blobs not found: {', '.join(missing)}", notFound=missing)
    for part, blob_id, default_type, default_name in body.blobs:
        content = contents[blob_id]
        assert content is not None
        part.data = content.data
        if default_type:
            params = Message()
            params["content-type"] = content.type or "application/octet-stream"
            part.type = params.get_content_type()
            if part.charset is None and part.type.startswith("text/"):
                charset = params.get_param("charset")  # an RFC 2231 value (charset*=…) comes as a tuple
                part.charset = (collapse_rfc2231_value(charset) if isinstance(charset, tuple) else charset) or None
        if default_name and content.name:
            part.name = content.name
        if part.charset is None and part.type.startswith("text/") and not content.data.isascii():
            try:
                content.data.decode("utf-8")
                part.charset = "utf-8"
            except UnicodeDecodeError:
                pass


def _single(obj: dict, prop: str, media: str, body: _Body) -> compose.Part | None:
    value = obj.get(prop)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 1:
        raise Bad(prop, f"{prop} must contain exactly one body part")
    if isinstance(value[0], dict) and "type" not in value[0]:
        value = [{**value[0], "type": media}]
    part = _part(value[0], prop, body)
    if part.type != media:
        raise Bad(prop, f"the {prop} part must be of type {media}")
    return part


def _from_lists(obj: dict, body: _Body) -> compose.Part:
    """The body from textBody/htmlBody/attachments: alternative text+html, related inline parts, mixed attachments."""
    text = _single(obj, "textBody", "text/plain", body)
    html = _single(obj, "htmlBody", "text/html", body)
    attachments = obj.get("attachments")
    if attachments is not None and not isinstance(attachments, list):
        raise Bad("attachments", "attachments must be an array of EmailBodyPart")
    parts = [_part(a, "attachments", body) for a in attachments or []]
    if any(p.subparts is not None for p in parts):
        raise Bad("attachments", "attachments cannot be multipart")
    inline = [p for p in parts if html is not None and p.cid and p.disposition != "attachment"]
    others = [p for p in parts if p not in inline]
    for p in others:
        if p.disposition is None:
            p.disposition = "attachment"
    # Inline parts exist only beside an HTML body.
    html_block = compose.Part("multipart/related", subparts=[html, *inline]) if html is not None and inline else html
    main = compose.Part("multipart/alternative", subparts=[text, html_block]) if text and html_block else None
    main = main or text or html_block
    if others:
        return compose.Part("multipart/mixed", subparts=[main, *others] if main else others)
    return main or compose.Part("text/plain", text="")


# --- the whole draft -----------------------------------------------------------------------------------------------


@dataclass
class Draft:
    raw: bytes
    mailbox_ids: list[str]
    keywords: list[str]
    received_at: int | None


def build_draft(inv: Invocation, obj: dict[str, Any]) -> Draft:
    """Check an Email create object and write its message; raises the SetError that refuses it."""
    problems: list[Bad] = []

    def check(fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Bad as e:
            problems.append(e)
            return None

    header_props = []
    for prop in obj:
        if prop in ("mailboxIds", "keywords", "receivedAt", *BODY_INPUT):
            continue
        if prop in CONVENIENCE or is_header_property(prop):
            header_props.append(prop)
        elif prop == "headers":
            problems.append(Bad(prop, "headers cannot be set: set each header field as its own header: property"))
        elif prop in SERVER_SET:
            problems.append(Bad(prop, f"{prop} is set by the server"))
        else:
            problems.append(Bad(prop, f"unknown Email property {prop!r}"))
    mailbox_ids = None
    if obj.get("mailboxIds") is None:
        problems.append(Bad("mailboxIds", "mailboxIds is required: an email is in at least one mailbox"))
    else:
        mailbox_ids = check(parse_mailbox_ids, inv, obj["mailboxIds"])
    if mailbox_ids == []:
        problems.append(Bad("mailboxIds", "an email must be in at least one mailbox"))
    keywords = check(parse_keywords, obj.get("keywords") or {})
    received = obj.get("receivedAt")
    received_at = check(received_at_ms, received) if received is not None else None
    fields = check(_header_fields, obj, header_props, "") or []
    headers: list[tuple[str, str]] = []
    for f in fields:
        if f.name.lower().startswith("content-"):
            problems.append(Bad(f.prop, f"{f.prop}: Content-* header fields belong on body parts"))
        else:
            headers += check(_format, f, "") or []
    root = check(_body, obj)
    if root is not None and obj.get("bodyStructure") is not None:
        top = {f.name.lower() for f in fields}
        twice = [n for n, _ in root[0].fields if n.lower() in top]
        if twice:
            problems.append(Bad("bodyStructure", f"{twice[0]} is set both on the Email and its bodyStructure"))
    if problems:
        raise invalid_properties(problems)
    part, body = root
    _fetch_blobs(inv, body)
    # An empty Date or Message-ID (``messageId: []``) is none at all: the server sets one (RFC 8621 §4.6).
    headers = [(n, v) for n, v in headers if v.strip() or n.lower() not in ("date", "message-id")]
    names = {name.lower() for name, _ in headers}
    if "date" not in names:
        headers.insert(0, ("Date", compose.date_value(datetime.now(UTC))))
    if "message-id" not in names:
        domain = _domain(obj.get("from")) or inv.principal.email.rpartition("@")[2]
        headers.insert(0, ("Message-ID", f" <{compose.new_message_id(domain)}>"))
    raw = compose.build_message(headers, part)
    limit = inv.services.config.max_message_size
    if len(raw) > limit:
        raise SetError("tooLarge", f"the message would be {len(raw)} octets; the limit is {limit}")
    return Draft(raw, mailbox_ids or [], keywords or [], received_at)


def _body(obj: dict) -> tuple[compose.Part, _Body]:
    body = _Body(_body_values(obj.get("bodyValues")))
    if obj.get("bodyStructure") is not None:
        given = [p for p in ("textBody", "htmlBody", "attachments") if obj.get(p) is not None]
        if given:
            raise Bad("bodyStructure", f"bodyStructure cannot be given with {', '.join(given)}")
        return _part(obj["bodyStructure"], "bodyStructure", body), body
    return _from_lists(obj, body), body


def _domain(addresses: Any) -> str | None:
    if isinstance(addresses, list) and addresses and isinstance(addresses[0], dict):
        email = addresses[0].get("email")
        if isinstance(email, str) and "@" in email:
            domain = email.rpartition("@")[2].strip()
            return domain if domain and all(c.isalnum() or c in ".-" for c in domain) else None
    return None

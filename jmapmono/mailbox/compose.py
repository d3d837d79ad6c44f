"""Building an RFC 5322 message: what a new draft is made of.

Mailbox-layer code with no JMAP request syntax: header values arrive as plain values (text,
address dicts shaped like ``mime_addresses`` output, message ids, datetimes, URLs) and the body
as a small :class:`Part` tree; the JMAP layer validates a request and translates it into these.

Header lines and the MIME skeleton are written here so that a Raw value lands exactly as given and
folding only ever inserts CRLF before existing white space (unfolding restores the value); the
encodings come from the stdlib ``email`` package (RFC 2047 words, RFC 2231 parameters,
quoted-printable, dates, Message-ID). Text is UTF-8 and 7bit when it can be, quoted-printable
otherwise; octets (uploaded blobs) stay byte-exact: 7bit when already canonical ASCII text,
base64 otherwise, identity for attached messages (RFC 2046 §5.2.1 forbids encoding them).
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from email import quoprimime
from email.header import Header
from email.utils import encode_rfc2231, format_datetime, make_msgid

CRLF = "\r\n"
#: Lines are folded before this length when white space allows (RFC 5322 §2.1.1 SHOULD 78).
FOLD_AT = 78
#: Longest line allowed in a 7bit/8bit body or a header (RFC 5322 §2.1.1 MUST 998).
MAX_LINE = 998
_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_MSG_ID = re.compile(r"[^\s<>()\x00-\x1f\x7f]+")
_BREAK = re.compile(r"\r\n|\r|\n")


class ComposeError(ValueError):
    """A value that cannot be written into a message as asked (the caller names the property)."""


# --- header field values -------------------------------------------------------------------------------------------
# Each returns the text after "Name:" (leading space included, folded with CRLF + WSP where needed).


def _fold_tokens(name: str, tokens: list[str], sep: str) -> str:
    """Join ``tokens`` with ``sep`` (", " or " "), breaking lines before a token when the line gets long."""
    out = ""
    length = len(name) + 1
    for i, token in enumerate(tokens):
        lead = " " if i == 0 else sep
        first = len(token.split(CRLF, 1)[0])
        if i > 0 and length + len(lead) + first > FOLD_AT:
            lead = lead.rstrip(" ") + CRLF + " "
            length = 1 + first
        else:
            length += len(lead) + first
        out += lead + token
        if CRLF in token:
            length = len(token.rsplit(CRLF, 1)[-1])
    return out


def _encoded_words(text: str, name: str = "") -> str:
    """RFC 2047 encoded words for ``text`` (UTF-8), folded between words."""
    return Header(text, "utf-8", header_name=name or None).encode(linesep=CRLF, maxlinelen=76)


def raw_value(value: str) -> str:
    """A Raw form value, as given: line breaks must be folds (followed by WSP); a space is added after the colon
    when the value does not start with white space (as RFC 8621 §4.6's example does)."""
    if "\x00" in value:
        raise ComposeError("a header value cannot contain NUL")
    lines = _BREAK.split(value)
    if any(not line or line[0] not in " \t" for line in lines[1:]):
        raise ComposeError("a line break in a raw header value must be followed by white space")
    if any(len(line.encode()) > MAX_LINE for line in lines):
        raise ComposeError(f"a raw header line is longer than {MAX_LINE} octets")
    text = CRLF.join(lines)
    return text if not text or text[0] in " \t" else " " + text


def text_value(name: str, value: str) -> str:
    """A Text form value (RFC 8621 §4.1.2.2 in reverse): encoded words when not plain ASCII, folded."""
    value = _BREAK.sub(" ", value.replace("\x00", ""))
    words = value.split(" ")
    if value.isascii() and "=?" not in value and all(len(w) < MAX_LINE - 100 for w in words):
        return _fold_tokens(name, [w for w in words], " ") if value else ""
    return " " + _encoded_words(value, name)


def _phrase(text: str) -> str:
    """A display name as an RFC 5322 phrase: atoms, a quoted string, or encoded words."""
    if text.isascii() and "=?" not in text:
        words = text.split(" ")
        if all(_ATOM.fullmatch(w) for w in words):
            return text
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return _encoded_words(text)


def _mailbox(item: dict) -> str:
    name, email = item.get("name"), item["email"]
    if any(c in email for c in "\r\n\x00"):
        raise ComposeError("an email address cannot contain line breaks")
    if not name:
        return email
    return f"{_phrase(_BREAK.sub(' ', name))} <{email}>"


def addresses_value(name: str, items: Iterable[dict]) -> str:
    """An Addresses form value: ``[{"name": str|None, "email": str}]`` as an address-list."""
    return _fold_tokens(name, [_mailbox(i) for i in items], ", ")


def grouped_addresses_value(name: str, groups: Iterable[dict]) -> str:
    """A GroupedAddresses form value: groups with a name become ``name: a, b;``, the others plain mailboxes."""
    tokens: list[str] = []
    for group in groups:
        members = [_mailbox(i) for i in group["addresses"]]
        if group.get("name") is None:
            tokens += members
        else:
            label = _phrase(_BREAK.sub(" ", group["name"])) + ":"
            if members:
                tokens += [label + " " + members[0], *members[1:]]
                tokens[-1] += ";"
            else:
                tokens.append(label + ";")
    return _fold_tokens(name, tokens, ", ")


def message_ids_value(name: str, ids: Iterable[str]) -> str:
    """A MessageIds form value: each id in angle brackets."""
    tokens = []
    for i in ids:
        if not _MSG_ID.fullmatch(i):
            raise ComposeError(f"{i!r} is not a message id (no white space, <, > or parentheses)")
        tokens.append(f"<{i}>")
    return _fold_tokens(name, tokens, " ")


def date_value(when: datetime) -> str:
    """A Date form value: RFC 5322 date-time in the given offset."""
    return " " + format_datetime(when.replace(microsecond=0))


def urls_value(name: str, urls: Iterable[str]) -> str:
    """A URLs form value (RFC 2369): each URL in angle brackets."""
    tokens = []
    for url in urls:
        if not url or any(c.isspace() or c in "<>" for c in url):
            raise ComposeError(f"{url!r} is not a URL")
        tokens.append(f"<{url}>")
    return _fold_tokens(name, tokens, ", ")


def new_message_id(domain: str) -> str:
    """A fresh, globally unique Message-ID value (without brackets)."""
    return make_msgid(domain=domain or "localhost")[1:-1]


# --- MIME parts ----------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Part:
    """One MIME entity to write. A leaf holds ``text`` (written as UTF-8) or ``data`` (octets, kept exact);
    a multipart holds ``subparts``. ``fields`` are extra header fields, already formatted (name, value)."""

    type: str
    fields: list[tuple[str, str]] = field(default_factory=list)
    charset: str | None = None
    name: str | None = None
    disposition: str | None = None
    cid: str | None = None
    language: list[str] | None = None
    location: str | None = None
    text: str | None = None
    data: bytes | None = None
    subparts: list[Part] | None = None


def _param(name: str, value: str) -> str:
    if _TOKEN.fullmatch(value):
        return f"{name}={value}"
    if value.isascii() and not any(c in value for c in "\r\n\x00"):
        return name + '="' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name}*={encode_rfc2231(_BREAK.sub(' ', value), 'utf-8')}"


def _with_params(name: str, value: str, params: list[str]) -> str:
    return _fold_tokens(name, [value + (";" if params else "")] + [p + ";" for p in params[:-1]] + params[-1:], " ")


def _lines_ok(data: bytes, crlf_only: bool) -> bool:
    """Whether ``data`` may go as 7bit/8bit: no NUL, no line over 998 octets, (``crlf_only``) no bare CR or LF."""
    if b"\x00" in data:
        return False
    if crlf_only and (data.count(b"\n") != data.count(b"\r\n") or data.count(b"\r") != data.count(b"\r\n")):
        return False
    return all(len(line) <= MAX_LINE for line in data.split(b"\n"))


def _encode_leaf(part: Part) -> tuple[str, bytes, str | None]:
    """(Content-Transfer-Encoding, encoded body, charset to declare) of a leaf part."""
    if part.text is not None:
        text = _BREAK.sub("\n", part.text)
        data = text.encode("utf-8")
        if data.isascii() and _lines_ok(data, False):
            return "7bit", text.replace("\n", CRLF).encode("ascii"), part.charset or "utf-8"
        encoded = quoprimime.body_encode(data.decode("latin-1"), 76, CRLF)
        return "quoted-printable", encoded.encode("ascii"), part.charset or "utf-8"
    data = part.data or b""
    if part.type.startswith("message/") or part.type.startswith("multipart/"):
        if data.isascii() and _lines_ok(data, False):
            return "7bit", data, part.charset
        return ("8bit" if _lines_ok(data, False) else "binary"), data, part.charset
    if data.isascii() and _lines_ok(data, True):
        return "7bit", data, part.charset
    return "base64", base64.encodebytes(data).replace(b"\n", b"\r\n").rstrip(b"\r\n"), part.charset


def _content_fields(part: Part, boundary: str | None, cte: str | None, charset: str | None) -> list[tuple[str, str]]:
    given = {name.lower() for name, _ in part.fields}
    out: list[tuple[str, str]] = []
    if "content-type" not in given:
        params = [_param("boundary", boundary)] if boundary else []
        if charset:
            params.append(_param("charset", charset))
        if part.name and part.disposition is None:
            params.append(_param("name", part.name))
        out.append(("Content-Type", _with_params("Content-Type", part.type, params)))
    if cte and cte != "7bit":
        out.append(("Content-Transfer-Encoding", " " + cte))
    if part.disposition and "content-disposition" not in given:
        params = [_param("filename", part.name)] if part.name else []
        out.append(("Content-Disposition", _with_params("Content-Disposition", part.disposition, params)))
    if part.cid and "content-id" not in given:
        out.append(("Content-ID", f" <{part.cid}>"))
    if part.language and "content-language" not in given:
        out.append(("Content-Language", _fold_tokens("Content-Language", [*part.language], ", ")))
    if part.location and "content-location" not in given:
        out.append(("Content-Location", " " + part.location))
    return out + part.fields


def _boundary(children: list[bytes]) -> str:
    while True:
        boundary = "=_" + secrets.token_hex(12)
        marker = b"--" + boundary.encode()
        if not any(marker in child for child in children):
            return boundary


def _entity(part: Part, extra: list[tuple[str, str]]) -> bytes:
    """Header fields (``extra`` first) and body of ``part``."""
    if part.subparts is not None:
        children = [_entity(p, []) for p in part.subparts]
        boundary = _boundary(children)
        delimiter = b"--" + boundary.encode()
        body = b"".join(delimiter + b"\r\n" + child + b"\r\n" for child in children) + delimiter + b"--\r\n"
        fields = _content_fields(part, boundary, None, None)
    else:
        cte, body, charset = _encode_leaf(part)
        fields = _content_fields(part, None, cte, charset if part.type.startswith("text/") else part.charset)
    head = "".join(f"{name}:{value}{CRLF}" for name, value in [*extra, *fields])
    return head.encode("utf-8") + b"\r\n" + body


def build_message(headers: list[tuple[str, str]], body: Part) -> bytes:
    """The message: ``headers`` (formatted (name, value) pairs, in order), MIME-Version unless given, then the
    body's own fields and content."""
    fields = list(headers)
    if not any(name.lower() == "mime-version" for name, _ in fields):
        fields.append(("MIME-Version", " 1.0"))
    return _entity(body, fields)

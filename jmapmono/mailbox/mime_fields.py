"""Decoding of header field values and text: charsets, RFC 2047 words, message ids, dates, URLs, HTML.

Every function here is total: real-world mail carries unknown charsets, 8-bit headers and broken
encoded words, and none of that may stop a message from being stored or shown. Bad input degrades
to U+FFFD or to a best-effort value, never to an exception.
"""

from __future__ import annotations

import binascii
import codecs
import html
import re
import unicodedata
from datetime import UTC, datetime, timedelta, timezone
from email.utils import parsedate_tz

REPLACEMENT = "\ufffd"

# Labels seen in real mail that Python does not know, or knows as a narrower charset.
_CHARSET_ALIASES = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "euc-kr": "cp949",
    "iso-8859-8-i": "iso-8859-8",
    "iso-8859-6-i": "iso-8859-6",
    "windows-874": "cp874",
    "tis-620": "cp874",
    "x-sjis": "cp932",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "x-mac-roman": "mac_roman",
    "macintosh": "mac_roman",
    "unicode-1-1-utf-7": "utf-7",
    "x-unicode20utf8": "utf-8",
    "ansi_x3.4-1968": "ascii",
    "us": "ascii",
    "iso-646-us": "ascii",
    "x-user-defined": "cp1252",
}
# Codecs Python has but that are no charsets a message can declare.
_REFUSED_CODECS = {"unicode_escape", "raw_unicode_escape", "idna", "punycode", "undefined", "utf-7-imap"}
_SURROGATES = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def codec_for(charset: str | None) -> str | None:
    """The Python codec for a MIME charset label, or None when unknown (or not a text charset)."""
    if not charset:
        return None
    label = charset.strip().strip("\"'").split("*", 1)[0].strip().lower()
    if not label or len(label) > 64:
        return None
    label = _CHARSET_ALIASES.get(label, label)
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in _REFUSED_CODECS:
        return None
    return info.name


def clean(text: str) -> str:
    """Drop NUL and replace lone surrogates (neither can be stored as UTF-8 text in the database)."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    if _SURROGATES.search(text):
        text = _SURROGATES.sub(REPLACEMENT, text)
    return text


def _legacy(data: bytes) -> str:
    """8-bit text of unknown origin: Windows-1252 where it defines the byte, else Latin-1."""
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def decode_bytes(data: bytes, charset: str | None) -> tuple[str, bool]:
    """Decode text bytes declared in ``charset``; returns (text, encoding_problem). Never raises.

    No charset or us-ascii is read as UTF-8 (a superset; 8-bit "ascii" mail is nearly always UTF-8),
    then as Windows-1252. ISO-8859-1 is read as Windows-1252 (as browsers do). An unknown charset is
    a problem; its text is still recovered as UTF-8 or Windows-1252 rather than thrown away.
    """
    name = codec_for(charset) if charset else "ascii"
    problem = name is None
    if name is None or name == "ascii":
        try:
            return clean(data.decode("utf-8")), problem
        except UnicodeDecodeError:
            return clean(_legacy(data)), True
    if name == "iso8859-1":
        return clean(_legacy(data)), False
    try:
        return clean(data.decode(name)), False
    except UnicodeDecodeError:
        pass
    except Exception:  # a broken codec must not stop parsing
        return clean(data.decode("utf-8", "replace")), True
    try:
        return clean(data.decode(name, "replace")), True
    except Exception:
        return clean(data.decode("utf-8", "replace")), True


def header_text(value: bytes) -> str:
    """A header value as text for parsing: UTF-8 (RFC 6532), else the legacy 8-bit fallback."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        text = _legacy(value)
    return clean(text)


def raw_form(value: bytes) -> str:
    """RFC 8621 §4.1.2.1 Raw: invalid UTF-8 → U+FFFD, NUL dropped, folding kept."""
    return clean(value.decode("utf-8", "replace"))


def unfold(text: str) -> str:
    """RFC 5322 §2.2.3: a line break inside a field value is always followed by WSP; drop it."""
    if "\n" in text or "\r" in text:
        text = text.replace("\r", "").replace("\n", "")
    return text


# --- RFC 2047 encoded words ---------------------------------------------------------------------

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([QqBb])\?([^?\s]*)\?=")
_QP_HEX = re.compile(rb"=([0-9A-Fa-f]{2})")
_WSP_SPLIT = re.compile(r"([ \t]+)")
_BASE64_CLEAN = re.compile(rb"[A-Za-z0-9+/\s]*(?:=\s*){0,2}")


def _word_bytes(encoding: str, text: str) -> tuple[bytes, bool]:
    """The octets of one encoded word's encoded-text; (octets, problem)."""
    data = text.encode("ascii", "replace")
    if encoding in "Qq":
        return _QP_HEX.sub(lambda m: bytes([int(m.group(1), 16)]), data.replace(b"_", b" ")), False
    return b64decode_lenient(data)


def b64decode_lenient(data: bytes) -> tuple[bytes, bool]:
    """Base64 with garbage characters skipped and missing padding tolerated; (octets, problem)."""
    problem = _BASE64_CLEAN.fullmatch(data) is None
    try:
        return binascii.a2b_base64(data), problem
    except (binascii.Error, ValueError):
        pass
    kept = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
    kept = kept[: len(kept) - len(kept) % 4] if len(kept) % 4 == 1 else kept
    kept += b"=" * (-len(kept) % 4)
    try:
        return binascii.a2b_base64(kept), True
    except (binascii.Error, ValueError):
        return b"", True


def _decode_word_run(run: list[re.Match[str]]) -> str:
    """Decode adjacent encoded words; same-charset neighbours are joined as octets first, because
    senders split multi-byte characters across words."""
    out: list[str] = []
    pending = b""
    pending_charset: str | None = None
    for m in run:
        charset = m.group(1).split("*", 1)[0].lower()
        data, bad = _word_bytes(m.group(2), m.group(3))
        if pending_charset is not None and charset != pending_charset:
            out.append(decode_bytes(pending, pending_charset)[0])
            pending = b""
        pending_charset = charset
        pending += data
        if bad:
            out.append(decode_bytes(pending, pending_charset)[0] + REPLACEMENT)
            pending, pending_charset = b"", None
    if pending_charset is not None:
        out.append(decode_bytes(pending, pending_charset)[0])
    return _CONTROL.sub("", "".join(out).replace("\r", "").replace("\n", "").replace("\t", " "))


def decode_words(text: str) -> str:
    """Decode RFC 2047 encoded words that stand as whole whitespace-separated tokens.

    Whitespace between two encoded words is dropped (RFC 2047 §6.2); text that merely looks like an
    encoded word but touches other characters is left alone (RFC 8621 §4.1.2.2 step 4).
    """
    if "=?" not in text:
        return text
    pieces = _WSP_SPLIT.split(text)
    out: list[str] = []
    run: list[re.Match[str]] = []
    held_space = ""
    for i, piece in enumerate(pieces):
        if i % 2 == 1:  # whitespace separator
            if run:
                held_space = piece
            else:
                out.append(piece)
            continue
        m = _ENCODED_WORD.fullmatch(piece) if piece.startswith("=?") else None
        if m is not None:
            run.append(m)
            held_space = ""
            continue
        if run:
            out.append(_decode_word_run(run))
            run = []
        if held_space:
            out.append(held_space)
            held_space = ""
        out.append(piece)
    if run:
        out.append(_decode_word_run(run))
    out.append(held_space)
    return "".join(out)


def text_form(value: bytes) -> str:
    """RFC 8621 §4.1.2.2 Text: unfolded, leading SP removed, encoded words decoded, NFC."""
    text = unfold(header_text(value)).lstrip(" ")
    return unicodedata.normalize("NFC", decode_words(text))


# --- message ids, dates, URLs ---------------------------------------------------------------------

_ANGLED = re.compile(r"<([^<>]*)>")
_COMMENT_FREE = re.compile(r"\([^()]*\)")


def strip_comments(text: str) -> str:
    """Remove RFC 5322 comments (a few levels of nesting) from a structured field value."""
    if "(" not in text:
        return text
    for _ in range(8):  # nested comments, a few levels deep
        stripped = _COMMENT_FREE.sub(" ", text)
        if stripped == text:
            break
        text = stripped
    return text


def message_ids(value: bytes | str) -> list[str] | None:
    """RFC 8621 §4.1.2.5 MessageIds: the msg-ids without <> and CFWS; None if there are none.

    A lone bare id ("abc@example.com" with no brackets, common from broken senders) is accepted.
    """
    text = strip_comments(unfold(header_text(value) if isinstance(value, bytes) else value))
    ids = _ANGLED.findall(text)
    if any(" " in i or "\t" in i for i in ids):
        ids = ["".join(i.split()) for i in ids]
    ids = [i for i in ids if i]
    if ids:
        return ids
    bare = text.strip()
    if bare and "<" not in bare and ">" not in bare and len(bare.split()) == 1 and "@" in bare:
        return [bare]
    return None


def parse_date(value: bytes | str) -> datetime | None:
    """RFC 5322 date-time as an aware UTC datetime; None when unparsable or out of range."""
    parsed = parse_date_offset(value)
    return None if parsed is None else parsed[0]


def parse_date_offset(value: bytes | str) -> tuple[datetime, int] | None:
    """RFC 5322 date-time as (aware UTC datetime, the field's zone offset in seconds); None when unparsable.

    The offset is kept so that the Date form can show the sender's local time as written; ``-0000`` (no
    zone information, RFC 5322 §3.3) and offsets of a day or more are 0.
    """
    text = strip_comments(unfold(header_text(value) if isinstance(value, bytes) else value)).strip()
    if not text or len(text) > 200:
        return None
    try:
        parsed = parsedate_tz(text)
        if parsed is None:
            return None
        year = parsed[0]
        if not 1 <= year <= 9999:
            return None
        naive = datetime(*parsed[:5], min(parsed[5], 59))
        offset = parsed[9] or 0
        stamp = naive.replace(tzinfo=UTC).timestamp() - offset
        if not -62135596800 <= stamp <= 253402300799:
            return None
        return datetime.fromtimestamp(stamp, UTC), offset if abs(offset) < 86400 else 0
    except Exception:  # an unparsable date is null, whatever the parser trips on
        return None


def utc_date(when: datetime) -> str:
    """RFC 3339 in the UTC "Z" form RFC 8620 asks for, to the second. ``isoformat`` and not ``strftime``: the
    latter writes the year 999 as "999", which no RFC 3339 reader takes."""
    return when.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def offset_date(when: datetime, offset: int) -> str:
    """An RFC 8620 ``Date``: RFC 3339 in the zone ``offset`` seconds east of UTC ("Z" when 0), no fraction."""
    if not offset:
        return utc_date(when)
    try:
        local = when.astimezone(timezone(timedelta(seconds=offset)))
    except (OverflowError, ValueError):  # the local time would fall outside years 1-9999
        return utc_date(when)
    minutes = abs(offset) // 60
    zone = f"{'+' if offset > 0 else '-'}{minutes // 60:02d}:{minutes % 60:02d}"
    return local.replace(tzinfo=None).isoformat(timespec="seconds") + zone


def date_form(value: bytes | str) -> str | None:
    """RFC 8621 §4.1.2.6 Date: the date-time with the offset the field was written in."""
    parsed = parse_date_offset(value)
    return None if parsed is None else offset_date(*parsed)


def urls(value: bytes | str) -> list[str] | None:
    """RFC 8621 §4.1.2.7 URLs: the RFC 2369 <url> list without brackets or comments; None if none."""
    text = strip_comments(unfold(header_text(value) if isinstance(value, bytes) else value))
    found = ["".join(u.split()) for u in _ANGLED.findall(text)]
    found = [u for u in found if u]
    return found or None


# --- HTML to text -------------------------------------------------------------------------------

# Inline flags keep the leading "<" a literal, so the engine can skip ahead with a fast search.
_HIDDEN_OPEN = re.compile(r"<(?:!--|(?i:(script|style|title))\b)")
_HIDDEN_CLOSE = {
    "script": re.compile(r"</script", re.IGNORECASE),
    "style": re.compile(r"</style", re.IGNORECASE),
    "title": re.compile(r"</title", re.IGNORECASE),
}
_BLOCK_TAG = re.compile(r"<\s*/?\s*(?i:br|p|div|tr|li|h[1-6]|table|blockquote|hr|ul|ol|pre)\b[^>]*>")
_ANY_TAG = re.compile(r"<[^>]*>")
_BLANK_LINES = re.compile(r"\n[ \t\r\n]*\n")
_SPACES = re.compile(r"[ \t\r\f\v\xa0]+")


def html_to_text(source: str) -> str:
    """Readable text of an HTML body: hidden elements and tags removed, entities decoded.

    Linear in the input (closers are found with str.find, no backtracking regex over the document).
    """
    out: list[str] = []
    pos = 0
    while True:
        m = _HIDDEN_OPEN.search(source, pos)
        if m is None:
            out.append(source[pos:])
            break
        out.append(source[pos : m.start()])
        if m.group(0) == "<!--":
            end = source.find("-->", m.end())
            if end < 0:
                break  # an unterminated comment hides the rest, as in a browser
            pos = end + 3
            continue
        close = _HIDDEN_CLOSE[m.group(1).lower()].search(source, m.end())
        if close is None:
            pos = m.end()  # unterminated: drop only the opening tag
            continue
        gt = source.find(">", close.end())
        pos = len(source) if gt < 0 else gt + 1
    text = "".join(out)
    text = _BLOCK_TAG.sub("\n", text)
    text = _ANY_TAG.sub("", text)
    text = html.unescape(text)
    text = _SPACES.sub(" ", text)
    return _BLANK_LINES.sub("\n\n", text).strip()


def fold_whitespace(text: str) -> str:
    """Every run of whitespace becomes one space; leading and trailing whitespace removed."""
    return " ".join(text.split())

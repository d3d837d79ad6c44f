"""Search text: how mail is indexed for Email/query, and how search input matches it.

Matching is the same on SQLite and Postgres:

- header fields (``header``, ``from``, ``to``, ``cc``, ``bcc``, ``subject`` and the header part of
  ``text``) match by case- and accent-insensitive *substring*: each field's decoded value is kept
  folded (:func:`fold`) in ``message_headers``, one row per field name, and searched with LIKE.
- bodies (``body`` and the body part of ``text``) match by *word*, a search token matching the
  start of a word ("foo" finds "Foosball", RFC 8621 §5.2), a quoted phrase matching exact words in
  sequence. SQLite indexes ``message_search.text`` with FTS5 (unicode61 tokenizer, diacritics
  removed: triggers in jmapmono/store/schema.sql keep it in sync); Postgres with a tsvector built
  here from the same words (:func:`tsvector`), so neither depends on the database's locale or text
  parser.

Search input follows RFC 8621 §4.4.1: white space separates terms that must all match, text in
matched single or double quotes is a phrase (``\\"``, ``\\'``, ``\\\\`` escapes).

:func:`index_row` computes a message's search row, sort keys and header rows before the appending
transaction, :func:`index_messages` writes them inside it (called by ``messages.append_all``); deletes
follow the message (foreign key cascade, FTS triggers).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jmapmono.mailbox.mime_fields import text_form
from jmapmono.mailbox.mime_tree import header_fields
from jmapmono.store import Transaction, multirow

if TYPE_CHECKING:
    from jmapmono.mailbox.messages import Summary

#: Header block bytes indexed per message, and folded characters kept per field name.
HEADER_BLOCK_LIMIT = 256 * 1024
HEADER_VALUE_LIMIT = 4000
#: Distinct field names indexed per message (the first ones; bounds the insert's parameters).
HEADER_NAMES_LIMIT = 200
#: Postgres: a tsvector is at most 1 MB; positions above 16383 are clamped, 256 kept per word.
_TSVECTOR_BUDGET = 900_000
_MAX_POSITION = 16383
_MAX_POSITIONS = 256
#: Longer words are not indexed (Postgres refuses lexemes over 2047 bytes).
MAX_WORD_BYTES = 2000

_WORD = re.compile(r"[^\W_]+")
#: The combining diacritical marks removed after canonical decomposition (as FTS5 unicode61 does).
_DIACRITIC = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_QUOTES = "\"'"


# --- folding -------------------------------------------------------------------------------------------------------


def _strip_accents(text: str) -> str:
    if text.isascii():
        return text
    return unicodedata.normalize("NFC", _DIACRITIC.sub("", unicodedata.normalize("NFD", text)))


def fold(text: str) -> str:
    """What matching compares: lower case, accents removed, every run of white space one space."""
    return " ".join(_strip_accents(text).lower().split())


def words(text: str) -> list[str]:
    """The indexed words of ``text``: runs of letters and digits, folded."""
    return _WORD.findall(_strip_accents(text).lower())


def fold_map(text: str) -> tuple[str, list[int]]:
    """:func:`fold` of ``text`` and, for each folded character, the index of the character it came from."""
    out: list[str] = []
    origin: list[int] = []
    space = True  # drops leading white space, as fold() does
    for i, c in enumerate(text):
        if c.isspace():
            if not space:
                out.append(" ")
                origin.append(i)
            space = True
            continue
        space = False
        for f in _strip_accents(c).lower() if not c.isascii() else c.lower():
            out.append(f)
            origin.append(i)
    if out and out[-1] == " ":
        out.pop()
        origin.pop()
    return "".join(out), origin


# --- search input --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    """One search term: a token or a quoted phrase, folded, with its words."""

    text: str
    words: tuple[str, ...]
    phrase: bool


def parse_terms(text: str) -> list[Term]:
    """Split search input into terms (RFC 8621 §4.4.1); terms with nothing to match are dropped."""
    raw: list[tuple[str, bool]] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if c in _QUOTES:
            j, buf = i + 1, []
            while j < n and text[j] != c:
                if text[j] == "\\" and j + 1 < n and text[j + 1] in "'\"\\":
                    j += 1
                buf.append(text[j])
                j += 1
            if j < n:  # a matched quote: a phrase
                raw.append(("".join(buf), True))
                i = j + 1
                continue
        j = i
        while j < n and not text[j].isspace():
            j += 1
        raw.append((text[i:j], False))
        i = j
    terms = []
    for value, phrase in raw:
        folded = fold(value)
        if folded:
            terms.append(Term(folded, tuple(words(folded)), phrase))
    return terms


def like_pattern(term: Term) -> str:
    """A LIKE pattern (escape character ``\\``) finding the term anywhere in a folded value."""
    escaped = term.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def fts5_query(terms: Iterable[Term]) -> str | None:
    """An FTS5 MATCH expression requiring every term (tokens match word prefixes); None if nothing to match."""
    parts = []
    for t in terms:
        if t.words:
            parts.append('"' + " ".join(t.words) + '"' + ("" if t.phrase else " *"))
    return " AND ".join(parts) or None


def tsquery(terms: Iterable[Term]) -> str | None:
    """The Postgres tsquery (literal syntax) equivalent of :func:`fts5_query`."""
    parts = []
    for t in terms:
        if t.words:
            quoted = [f"'{w}'" for w in t.words]
            if not t.phrase:
                quoted[-1] += ":*"
            parts.append("(" + " <-> ".join(quoted) + ")")
    return " & ".join(parts) or None


def tsvector(text: str) -> str:
    """The Postgres tsvector literal of ``text``'s words with their positions (bounded to fit 1 MB)."""
    positions: dict[str, list[int]] = {}
    budget = _TSVECTOR_BUDGET
    for n, w in enumerate(words(text), 1):
        ps = positions.get(w)
        if ps is None:
            size = len(w.encode())
            if size > MAX_WORD_BYTES or size + 16 > budget:
                continue
            budget -= size + 8
            positions[w] = ps = []
        if len(ps) < _MAX_POSITIONS and budget > 4:
            ps.append(min(n, _MAX_POSITION))
            budget -= 4
    return " ".join(f"'{w}':{','.join(map(str, dict.fromkeys(ps)))}" for w, ps in positions.items())


# --- matches for highlighting --------------------------------------------------------------------------------------


def substring_spans(value: str, terms: Iterable[Term]) -> list[tuple[int, int]]:
    """Where the terms occur in ``value`` as header matching finds them: (start, end) in ``value``, merged."""
    folded, origin = fold_map(value)
    spans = []
    for t in terms:
        start = folded.find(t.text)
        while start >= 0:
            end = start + len(t.text)
            spans.append(_original(value, origin, start, end))
            start = folded.find(t.text, end)
    return _merge(spans)


def word_spans(text: str, terms: Iterable[Term], limit: int | None = None) -> list[tuple[int, int]]:
    """Where the terms match ``text`` as body search finds them (word prefixes, phrases), merged.

    ``limit`` stops after that many matches (a preview needs only the first few); words are read
    lazily, so a long body costs only as far as its last needed match.
    """
    wanted = [t for t in terms if t.words]
    if not wanted:
        return []
    folded = _strip_accents(text).lower()
    origin = None
    if len(folded) != len(text):  # some character folded to several, or none: map back one by one
        folded, origin = fold_map(text)
    found = _WORD.finditer(folded)
    tokens: list[tuple[int, str]] = []

    def token(j: int) -> tuple[int, str] | None:
        while len(tokens) <= j:
            m = next(found, None)
            if m is None:
                return None
            tokens.append((m.start(), m.group()))
        return tokens[j]

    spans: list[tuple[int, int]] = []
    i = 0
    while token(i) is not None and (limit is None or len(spans) < limit):
        for t in wanted:
            found_tokens = [token(i + j) for j in range(len(t.words))]
            seq = [x for x in found_tokens if x is not None]
            if len(seq) < len(found_tokens):
                continue
            words_ = [x[1] for x in seq]
            if words_[:-1] != list(t.words[:-1]):
                continue
            last = words_[-1]
            if last != t.words[-1] and (t.phrase or not last.startswith(t.words[-1])):
                continue
            start, end = seq[0][0], seq[-1][0] + len(t.words[-1])
            spans.append((start, end) if origin is None else _original(text, origin, start, end))
            break
        i += 1
    return _merge(spans)


def _original(text: str, origin: list[int], start: int, end: int) -> tuple[int, int]:
    """The span of ``text`` behind folded span [start, end), with the accents that trail its last letter."""
    stop = origin[end - 1] + 1
    while stop < len(text) and unicodedata.combining(text[stop]):
        stop += 1
    return origin[start], stop


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(end, out[-1][1]))
        else:
            out.append((start, end))
    return out


# --- the index -----------------------------------------------------------------------------------------------------


def header_rows(raw: bytes) -> dict[str, str]:
    """Lower-cased field name → its folded, decoded values (one line each) from the top-level header block."""
    m = _HEADER_END.search(raw, 0, HEADER_BLOCK_LIMIT)
    block = raw[: m.end()] if m else raw[:HEADER_BLOCK_LIMIT] + b"\r\n\r\n"
    rows: dict[str, list[str]] = {}
    for name, value in header_fields(block):
        key = name.lower()
        if key not in rows and len(rows) >= HEADER_NAMES_LIMIT:
            continue
        rows.setdefault(key, []).append(fold(text_form(value))[:HEADER_VALUE_LIMIT])
    return {name: "\n".join(values)[:HEADER_VALUE_LIMIT] for name, values in rows.items()}


def _first_name(addresses: list[dict]) -> str:
    """Sort key of from/to (RFC 8621 §4.4.2): the first address's name, else its email, else ""."""
    if not addresses:
        return ""
    first = addresses[0]
    return (first.get("name") or first.get("email") or "").strip()


@dataclass(frozen=True)
class IndexRow:
    """What a message's search row and header rows hold, computed before the appending transaction."""

    text: str
    #: Sort keys: base subject, first From name, first To name.
    keys: tuple[str, str, str]
    headers: dict[str, str]
    #: The Postgres tsvector literal of ``text`` (None on SQLite, whose FTS triggers index the text).
    vector: str | None


def index_row(raw: bytes, summary: Summary, text: str, dialect: str) -> IndexRow:
    """The index rows of a new message (pure: parse and fold outside any transaction).

    ``text`` is the body text (bounded by the caller).
    """
    keys = (
        summary.base_subject or "",
        _first_name(summary.addresses.get("from", [])),
        _first_name(summary.addresses.get("to", [])),
    )
    return IndexRow(text, keys, header_rows(raw), tsvector(text) if dialect == "postgres" else None)


def index_messages(tx: Transaction, account_id: str, rows: list[tuple[str, IndexRow]]) -> None:
    """Index new messages (inside the appending transaction): their search rows and header rows,
    many per statement. SQLite's FTS triggers index the text; on Postgres the tsvector is written with the row.
    """
    headers = [(mid, name, value) for mid, row in rows for name, value in sorted(row.headers.items())]
    headers_head = "INSERT INTO message_headers (message_id, name, value)"
    search_rows: list[tuple[str, ...]]
    if tx.dialect == "postgres":
        head = "INSERT INTO message_search (message_id, account_id, text, subject_key, from_key, to_key, search_vector)"
        one = "(?, ?, ?, ?, ?, ?, CAST(? AS tsvector))"
        search_rows = [(mid, account_id, row.text, *row.keys, row.vector or "") for mid, row in rows]
        if headers and multirow.fits_one([*search_rows, *headers]):
            # One round trip for both (a data-modifying WITH): the usual case of a delivery.
            values = ", ".join([one] * len(search_rows))
            tx.execute(
                f"WITH s AS ({head} VALUES {values}) {headers_head} VALUES {', '.join(['(?, ?, ?)'] * len(headers))}",
                [v for r in search_rows for v in r] + [v for r in headers for v in r],
            )
            return
    else:
        head = "INSERT INTO message_search (message_id, account_id, text, subject_key, from_key, to_key)"
        one = ""
        search_rows = [(mid, account_id, row.text, *row.keys) for mid, row in rows]
    multirow.insert(tx, head, search_rows, row=one)
    multirow.insert(tx, headers_head, headers)

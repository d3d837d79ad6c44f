"""Search text: how mail is indexed for Email/query, and how search input matches it.

Matching is the same on SQLite and Postgres:

- header fields (``header``, ``from``, ``to``, ``cc``, ``bcc``, ``subject`` and the header part of
  ``text``) match by case- and accent-insensitive *substring*: each field's decoded value is kept
  folded (:func:`fold`) in ``message_headers``, one row per field name, and searched with LIKE; for
  the fields of ``text`` (:data:`TEXT_FIELDS`), only in the messages whose indexed trigrams of those
  fields include every trigram of the term (search_sql.py), so a rare or missing term reads few rows.
- bodies (``body`` and the body part of ``text``) match by *word*, a search token matching the
  start of a word ("foo" finds "Foosball", RFC 8621 §5.2), a quoted phrase matching exact words in
  sequence. The tokens are made here (search_tokens.py: CJK runs as bigrams, language-tagged stems
  apart from the words), so neither backend depends on its locale or text parser: SQLite feeds them,
  space-separated, to FTS5 (``message_search_terms``, unicode61 only splitting them), Postgres to a
  tsvector (:func:`tsvector_of`). Rows indexed before that (``message_search.tokenizer`` 0: the words
  alone, in ``message_search_fts`` on SQLite) are still found as they were until reindexed
  (:mod:`jmapmono.mailbox.search_reindex`).

Search input follows RFC 8621 §4.4.1: white space separates terms that must all match, text in
matched single or double quotes is a phrase (``\\"``, ``\\'``, ``\\\\`` escapes).

:func:`index_row` computes a message's search row, sort keys and header rows before the appending
transaction, :func:`index_messages` writes them inside it (called by ``messages.append_all``); deletes
follow the message (foreign key cascade, FTS triggers).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from jmapmono.mailbox import search_tokens
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
#: The tokenizer the index rows written now were made by (``message_search.tokenizer``; 0: words only).
TOKENIZER = 1
#: Postgres: extras lexemes start with this (never a word's first character), so no word query meets them.
EXTRA_MARK = "~"
#: Postgres: the lexemes of header trigrams start with this.
FIELD_MARK = "^"
#: The header fields the ``text`` condition searches (RFC 8621 §4.4.1: MUST); their trigrams are indexed.
TEXT_FIELDS = ("from", "to", "cc", "bcc", "subject")

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
    #: The term as typed, lower-cased but not folded (stemmers know their language's accents).
    raw: str = field(default="", compare=False)

    @functools.cached_property
    def tokens(self) -> tuple[str, ...]:
        """The words-stream tokens to find in sequence (CJK runs as bigrams)."""
        return tuple(search_tokens.stream(self.words))

    @functools.cached_property
    def trigrams(self) -> tuple[str, ...]:
        """The header trigrams every field value containing the term holds."""
        return tuple(search_tokens.trigrams([self.text]))

    @functools.cached_property
    def extras(self) -> tuple[str, ...]:
        """Extras tokens any of which also finds an unquoted one-word term: its tagged stems, or, for one CJK
        character, the end of a run."""
        if self.phrase or len(self.words) != 1:
            return ()
        word = self.words[0]
        if search_tokens.has_cjk(word):
            return (word,) if len(word) == 1 else ()
        raw = self.raw if self.raw and len(words(self.raw)) == 1 else word
        stems = dict.fromkeys([*search_tokens.query_stems(raw), *search_tokens.query_stems(word)])
        # A stem that is the word itself adds nothing: the word already finds every word it begins.
        return tuple(x for x in stems if x[2:] != word)


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
            terms.append(Term(folded, tuple(words(folded)), phrase, raw=value.strip().lower()))
    return terms


def like_pattern(term: Term) -> str:
    """A LIKE pattern (escape character ``\\``) finding the term anywhere in a folded value."""
    escaped = term.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def fts5_query(terms: Iterable[Term]) -> str | None:
    """The FTS5 MATCH expression of rows indexed by words alone (``message_search_fts``, tokenizer 0):
    every term (tokens match word prefixes); None if nothing to match."""
    parts = []
    for t in terms:
        if t.words:
            parts.append('"' + " ".join(t.words) + '"' + ("" if t.phrase else " *"))
    return " AND ".join(parts) or None


def terms_query(terms: Iterable[Term]) -> str | None:
    """The FTS5 MATCH expression of ``message_search_terms``: every term, found as its tokens in sequence
    (the last a prefix unless quoted) or as one of its extras; None if nothing to match."""
    parts = []
    for t in terms:
        options = []
        if t.tokens:
            options.append('words : "' + " ".join(t.tokens) + '"' + ("" if t.phrase else " *"))
        if t.extras:
            options.append("extras : (" + " OR ".join(f'"{x}"' for x in t.extras) + ")")
        if options:
            parts.append("(" + " OR ".join(options) + ")")
    return " AND ".join(parts) or None


def _sequence(tokens: Iterable[str], phrase: bool) -> str:
    quoted = [f"'{w}'" for w in tokens]
    if not phrase:
        quoted[-1] += ":*"
    return "(" + " <-> ".join(quoted) + ")"


def tsquery(terms: Iterable[Term]) -> str | None:
    """The Postgres tsquery (literal syntax) of every term, as :func:`terms_query` finds it; a row indexed
    by words alone is found as before (the term's words, when they differ from its tokens)."""
    parts = []
    for t in terms:
        options = []
        if t.tokens:
            options.append(_sequence(t.tokens, t.phrase))
        if t.words and t.words != t.tokens:
            options.append(_sequence(t.words, t.phrase))
        options += [f"'{EXTRA_MARK}{x}'" for x in t.extras]
        if options:
            parts.append(options[0] if len(options) == 1 else "(" + " | ".join(options) + ")")
    return " & ".join(parts) or None


def tsvector(text: str) -> str:
    """The Postgres tsvector literal of ``text``'s words with their positions (bounded to fit 1 MB)."""
    return tsvector_of(words(text))


def tsvector_of(tokens: Iterable[str], extras: Iterable[str] = (), fields: Iterable[str] = ()) -> str:
    """The Postgres tsvector literal of a words stream with positions, extras and header trigrams without
    (bounded to fit 1 MB; every trigram is kept, header values being bounded, as a search relies on them)."""
    positions: dict[str, list[int]] = {}
    head = [f"'{FIELD_MARK}{x}'" for x in fields]
    budget = _TSVECTOR_BUDGET - sum(len(x.encode()) + 4 for x in head)
    for n, w in enumerate(tokens, 1):
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
    out = [f"'{w}':{','.join(map(str, dict.fromkeys(ps)))}" for w, ps in positions.items()]
    out += head
    for x in extras:
        size = len(x.encode()) + 4
        if size > MAX_WORD_BYTES or size > budget:
            break
        budget -= size
        out.append(f"'{EXTRA_MARK}{x}'")
    return " ".join(out)


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


def word_spans(
    text: str, terms: Iterable[Term], limit: int | None = None, languages: tuple[str, ...] | None = None
) -> list[tuple[int, int]]:
    """Where the terms match ``text`` as body search finds them (word prefixes, phrases, CJK bigrams, stems in
    ``languages`` or, None, the text's detected one), merged.

    ``limit`` stops after that many matches (a preview needs only the first few); words are read
    lazily, so a long body costs only as far as its last needed match.
    """
    wanted = [t for t in terms if t.tokens]
    if not wanted:
        return []
    folded = _strip_accents(text).lower()
    origin = None
    if len(folded) != len(text):  # some character folded to several, or none: map back one by one
        folded, origin = fold_map(text)
    found = search_tokens.offsets(folded)
    tokens: list[tuple[int, str, bool]] = []

    def token(j: int) -> tuple[int, str, bool] | None:
        while len(tokens) <= j:
            t = next(found, None)
            if t is None:
                return None
            tokens.append(t)
        return tokens[j]

    def original(start: int, end: int) -> tuple[int, int]:
        return (start, end) if origin is None else _original(text, origin, start, end)

    stems = _stem_matcher(text, wanted, languages)
    spans: list[tuple[int, int]] = []
    i = 0
    while token(i) is not None and (limit is None or len(spans) < limit):
        for t in wanted:
            span = _match_at(t, i, token, stems)
            if span is not None:
                spans.append(original(*span))
                break
        i += 1
    return _merge(spans)


def _match_at(
    t: Term,
    i: int,
    token: Callable[[int], tuple[int, str, bool] | None],
    stems: Callable[[Term, str], bool] | None,
) -> tuple[int, int] | None:
    """The folded span where term ``t`` matches from token ``i``, if it does."""
    found_tokens = [token(i + j) for j in range(len(t.tokens))]
    seq = [x for x in found_tokens if x is not None]
    if len(seq) == len(found_tokens):
        last = seq[-1][1]
        if [x[1] for x in seq[:-1]] == list(t.tokens[:-1]) and (
            last == t.tokens[-1] or (not t.phrase and last.startswith(t.tokens[-1]))
        ):
            return seq[0][0], seq[-1][0] + len(t.tokens[-1])
    first = token(i)
    if first is None:
        return None
    start, word, run_end = first
    if t.extras and len(t.tokens) == 1 and len(t.tokens[0]) == 1 and run_end and word[-1:] == t.tokens[0]:
        return start + len(word) - 1, start + len(word)  # one CJK character ending a run
    if stems is not None and t.extras and stems(t, word):
        return start, start + len(word)
    return None


def _stem_matcher(
    text: str, terms: list[Term], languages: tuple[str, ...] | None
) -> Callable[[Term, str], bool] | None:
    """Whether a word of ``text`` has a term's stem in a language ``text`` is stemmed in, as indexing does (None
    when no term has stems or the text is not stemmed)."""
    if not any(t.extras and not search_tokens.has_cjk(t.tokens[0]) for t in terms):
        return None
    stemmed = search_tokens.stemming_languages(text, languages)
    if not stemmed:
        return None
    cache: dict[str, list[str]] = {}

    def matches(t: Term, word: str) -> bool:
        tags = cache.get(word)
        if tags is None:
            tags = cache[word] = [tag for code in stemmed for tag in search_tokens.stems(code, [word])]
        return any(tag in t.extras for tag in tags)

    return matches


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
    #: The Postgres tsvector literal of the tokens of ``text`` (None on SQLite).
    vector: str | None
    #: SQLite: the words stream and the extras of ``text``, and the header trigrams, space-separated (None on
    #: Postgres).
    terms: tuple[str, str, str] | None = None


def index_tokens(text: str, languages: tuple[str, ...] | None = None) -> search_tokens.Tokens:
    """The index tokens of a body text, stemmed in ``languages`` (None: the detected one)."""
    return search_tokens.tokenize(text, words(text), languages)


def index_columns(
    text: str, headers: dict[str, str], dialect: str, languages: tuple[str, ...] | None = None
) -> tuple[str | None, tuple[str, str, str] | None]:
    """(Postgres tsvector, SQLite terms) of a body text and the folded header rows, the one of ``dialect`` set."""
    tokens = index_tokens(text, languages)
    fields = search_tokens.trigrams(headers[name] for name in TEXT_FIELDS if name in headers)
    if dialect == "postgres":
        return tsvector_of(tokens.words, tokens.extras, fields), None
    return None, (" ".join(tokens.words), " ".join(tokens.extras), " ".join(fields))


def index_row(
    raw: bytes, summary: Summary, text: str, dialect: str, languages: tuple[str, ...] | None = None
) -> IndexRow:
    """The index rows of a new message (pure: parse and fold outside any transaction).

    ``text`` is the body text (bounded by the caller), stemmed in ``languages`` (None: the detected one).
    """
    keys = (
        summary.base_subject or "",
        _first_name(summary.addresses.get("from", [])),
        _first_name(summary.addresses.get("to", [])),
    )
    headers = header_rows(raw)
    vector, terms = index_columns(text, headers, dialect, languages)
    return IndexRow(text, keys, headers, vector, terms)


def index_messages(tx: Transaction, account_id: str, rows: list[tuple[str, IndexRow]]) -> None:
    """Index new messages (inside the appending transaction): their search rows and header rows,
    many per statement. On SQLite the tokens go to ``message_search_terms`` under the rowid the insert
    trigger gave; on Postgres the tsvector is written with the row.
    """
    headers = [(mid, name, value) for mid, row in rows for name, value in sorted(row.headers.items())]
    headers_head = "INSERT INTO message_headers (message_id, name, value)"
    search_rows: list[tuple[object, ...]]
    if tx.dialect == "postgres":
        head = (
            "INSERT INTO message_search (message_id, account_id, text, subject_key, from_key, to_key, tokenizer, "
            "search_vector)"
        )
        one = "(?, ?, ?, ?, ?, ?, ?, CAST(? AS tsvector))"
        search_rows = [(mid, account_id, row.text, *row.keys, TOKENIZER, row.vector or "") for mid, row in rows]
        if headers and multirow.fits_one([*search_rows, *headers]):
            # One round trip for both (a data-modifying WITH): the usual case of a delivery.
            values = ", ".join([one] * len(search_rows))
            tx.execute(
                f"WITH s AS ({head} VALUES {values}) {headers_head} VALUES {', '.join(['(?, ?, ?)'] * len(headers))}",
                [v for r in search_rows for v in r] + [v for r in headers for v in r],
            )
            return
    else:
        head = "INSERT INTO message_search (message_id, account_id, text, subject_key, from_key, to_key, tokenizer)"
        one = ""
        search_rows = [(mid, account_id, row.text, *row.keys, TOKENIZER) for mid, row in rows]
    multirow.insert(tx, head, search_rows, row=one)
    if tx.dialect == "sqlite":
        write_terms(tx, [(mid, row.terms or ("", "", "")) for mid, row in rows])
    multirow.insert(tx, headers_head, headers)


def write_terms(tx: Transaction, rows: list[tuple[str, tuple[str, str, str]]]) -> None:
    """SQLite: index (message id, (words, extras, fields)) in ``message_search_terms`` under the message's
    search rowid."""
    multirow.insert(
        tx,
        "INSERT INTO message_search_terms (rowid, words, extras, fields)",
        [(mid, w, x, f) for mid, (w, x, f) in rows],
        row="((SELECT id FROM message_search_rows WHERE message_id = ?), ?, ?, ?)",
    )

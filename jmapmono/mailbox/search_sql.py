"""Email search conditions and sorts, and their compilation to SQL (one text for SQLite and Postgres).

The JMAP layer turns an Email/query filter into these conditions; :func:`where` compiles them
into a predicate over ``messages m`` whose every leaf is exact (no Python post-filter), so the
database does the filtering with its indexes: mailbox membership drives through
``message_mailboxes``, keywords and header rows are primary-key probes, body text goes through
the full-text index (FTS5 on SQLite, tsvector/GIN on Postgres; see search.py), and a substring of the
fields ``text`` searches is looked for only in the messages whose indexed trigrams of those fields
include all of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from jmapmono.mailbox.search import (
    FIELD_MARK,
    MAX_WORD_BYTES,
    TEXT_FIELDS,
    Term,
    fts5_query,
    like_pattern,
    terms_query,
    tsquery,
)

SQL = tuple[str, list[object]]

_TRUE: SQL = ("1 = 1", [])
_FALSE: SQL = ("1 = 0", [])


class Cond:
    """A search condition (the subclasses below)."""


@dataclass(frozen=True)
class AllOf(Cond):
    items: tuple[Cond, ...]


@dataclass(frozen=True)
class AnyOf(Cond):
    items: tuple[Cond, ...]


@dataclass(frozen=True)
class NoneOf(Cond):
    items: tuple[Cond, ...]


@dataclass(frozen=True)
class InMailbox(Cond):
    mailbox_id: str


@dataclass(frozen=True)
class InMailboxOtherThan(Cond):
    mailbox_ids: tuple[str, ...]


@dataclass(frozen=True)
class ReceivedBefore(Cond):
    ms: int


@dataclass(frozen=True)
class ReceivedSince(Cond):
    ms: int


@dataclass(frozen=True)
class SizeAtLeast(Cond):
    size: int


@dataclass(frozen=True)
class SizeBelow(Cond):
    size: int


@dataclass(frozen=True)
class HasKeyword(Cond):
    keyword: str
    present: bool = True


@dataclass(frozen=True)
class ThreadKeyword(Cond):
    """``mode``: "all", "some" or "none" of the emails of the thread have the keyword."""

    keyword: str
    mode: str


@dataclass(frozen=True)
class HasAttachment(Cond):
    value: bool


@dataclass(frozen=True)
class Text(Cond):
    """Every term must be found in one of ``fields`` (header field names) or, with ``body``, in the body."""

    terms: tuple[Term, ...]
    fields: tuple[str, ...]
    body: bool = False


@dataclass(frozen=True)
class Header(Cond):
    """The message has a header field ``name``; with terms, its value contains each of them."""

    name: str
    terms: tuple[Term, ...] = ()


@dataclass(frozen=True)
class Sort:
    """One sort key: "received", "sent", "size", "from", "to", "subject", or, with ``keyword``,
    "keyword", "thread_all_keyword", "thread_some_keyword". ``collation`` applies to the strings."""

    key: str
    ascending: bool = True
    collation: str | None = None
    keyword: str | None = None


STRING_SORTS = {"from": "from_key", "to": "to_key", "subject": "subject_key"}
KEYWORD_SORTS = ("keyword", "thread_all_keyword", "thread_some_keyword")
SORT_KEYS = frozenset({"received", "sent", "size", *STRING_SORTS, *KEYWORD_SORTS})


@dataclass(frozen=True)
class EmailQuery:
    filter: Cond | None
    sort: tuple[Sort, ...] = ()
    collapse_threads: bool = False


# --- compilation ---------------------------------------------------------------------------------------------------


def _join(op: str, parts: Sequence[SQL], empty: SQL) -> SQL:
    if not parts:
        return empty
    if len(parts) == 1:
        return parts[0]
    params: list[object] = []
    for _, p in parts:
        params += p
    return "(" + f" {op} ".join(f"({sql})" for sql, _ in parts) + ")", params


def _has_keyword(keyword: str, alias: str = "m") -> SQL:
    return f"EXISTS (SELECT 1 FROM message_keywords k WHERE k.message_id = {alias}.id AND k.keyword = ?)", [keyword]


def thread_keyword(mode: str, keyword: str) -> SQL:
    """Whether all / some / none of the emails in m's thread have ``keyword``."""
    some = (
        "EXISTS (SELECT 1 FROM messages t JOIN message_keywords k ON k.message_id = t.id "
        "WHERE t.thread_id = m.thread_id AND k.keyword = ?)"
    )
    if mode == "some":
        return some, [keyword]
    if mode == "none":
        return f"NOT {some}", [keyword]
    missing = (
        "EXISTS (SELECT 1 FROM messages t WHERE t.thread_id = m.thread_id AND NOT EXISTS "
        "(SELECT 1 FROM message_keywords k WHERE k.message_id = t.id AND k.keyword = ?))"
    )
    return f"NOT {missing}", [keyword]


def _like(names: Sequence[str], terms: Sequence[Term], message_id: str = "m.id") -> SQL:
    """Some field among ``names`` of the message ``message_id`` contains every term (all in one field)."""
    sql = f"EXISTS (SELECT 1 FROM message_headers h WHERE h.message_id = {message_id} AND "
    params: list[object] = list(names)
    sql += "h.name = ?" if len(names) == 1 else f"h.name IN ({', '.join('?' * len(names))})"
    for t in terms:
        sql += " AND h.value LIKE ? ESCAPE '\\'"
        params.append(like_pattern(t))
    return sql + ")", params


def _headers(names: Sequence[str], terms: Sequence[Term], dialect: str) -> SQL:
    """Some field among ``names`` contains every term (all in one field when several)."""
    exact = _like(names, terms)
    narrow = _trigrams(dialect, terms) if set(names) <= set(TEXT_FIELDS) else None
    return exact if narrow is None else _join("AND", [narrow, exact], _TRUE)


def _trigrams(dialect: str, terms: Sequence[Term]) -> SQL | None:
    """The messages whose searched header fields hold every trigram of the terms (all that may contain them),
    with those not reindexed yet (no trigrams kept); None when the terms have no trigram (too short)."""
    grams = list(dict.fromkeys(g for t in terms for g in t.trigrams))
    if not grams:
        return None
    if dialect == "postgres":  # one subquery, that Postgres joins (an OR of two would be rescanned)
        return (
            "m.id IN (SELECT s.message_id FROM message_search s "
            "WHERE s.search_vector @@ CAST(? AS tsquery) OR s.tokenizer = 0)",
            [_trigram_query(grams)],
        )
    words_only = "SELECT o.message_id FROM message_search o WHERE o.tokenizer = 0"
    match = "fields : (" + " AND ".join(f'"{g}"' for g in grams) + ")"
    return (
        "(m.id IN (SELECT r.message_id FROM message_search_rows r WHERE r.id IN "
        "(SELECT rowid FROM message_search_terms WHERE message_search_terms MATCH ?)) "
        f"OR m.id IN ({words_only}))",
        [match],
    )


def _trigram_query(grams: Sequence[str]) -> str:
    return " & ".join(f"'{FIELD_MARK}{g}'" for g in grams)


def _text_postgres(c: Text) -> SQL | None:
    """Postgres: a text condition on the fields and the body as one EXISTS over the search row, which the
    planner joins as it sees fit (walking the mail in order for common terms, the GIN index for rare ones;
    ORed subqueries would each be a sequential scan): the rows whose tsvector has, for every term, its body
    tokens or all of its header trigrams (or that are not reindexed yet), then the exact check of each term.
    None when a term cannot be narrowed so (no word, a word never indexed, or shorter than a trigram)."""
    narrow, exact = [], []
    params: list[object] = []
    for t in c.terms:
        body = tsquery([t])
        if body is None or not t.trigrams or any(len(w.encode()) > MAX_WORD_BYTES for w in t.words):
            return None
        narrow.append(f"({body} | {_trigram_query(t.trigrams)})")
        like, like_params = _like(c.fields, [t], "s.message_id")
        exact.append(f"(s.search_vector @@ CAST(? AS tsquery) OR {like})")
        params += [body, *like_params]
    sql = (
        "EXISTS (SELECT 1 FROM message_search s WHERE s.message_id = m.id "
        f"AND (s.search_vector @@ CAST(? AS tsquery) OR s.tokenizer = 0) AND {' AND '.join(exact)})"
    )
    return sql, [" & ".join(narrow), *params]


def _body(dialect: str, terms: Sequence[Term]) -> SQL | None:
    """The emails whose body has every term (full-text index), or None when no term has a word."""
    if any(len(w.encode()) > MAX_WORD_BYTES for t in terms for w in t.words):
        return _FALSE  # never indexed (Postgres cannot), so never found, on either backend
    if dialect == "postgres":
        query = tsquery(terms)
        if query is None:
            return None
        return (
            "m.id IN (SELECT s.message_id FROM message_search s WHERE s.search_vector @@ CAST(? AS tsquery))",
            [query],
        )
    match, words_only = terms_query(terms), fts5_query(terms)
    if match is None:
        return None
    # Rows indexed by words alone (before reindexing) are in message_search_fts, the others in _terms.
    sources, params = ["SELECT rowid FROM message_search_terms WHERE message_search_terms MATCH ?"], [match]
    if words_only is not None:
        sources.append("SELECT rowid FROM message_search_fts WHERE message_search_fts MATCH ?")
        params.append(words_only)
    return (
        f"m.id IN (SELECT r.message_id FROM message_search_rows r WHERE r.id IN ({' UNION ALL '.join(sources)}))",
        list(params),
    )


def _text(dialect: str, c: Text) -> SQL:
    if not c.terms:  # nothing to look for (empty or punctuation-only input) matches everything
        return _TRUE
    if not c.fields:  # body only: one full-text lookup for all terms
        body = _body(dialect, c.terms) if c.body else None
        return body or _TRUE
    if not c.body and len(c.fields) == 1:
        return _headers(c.fields, c.terms, dialect)
    if dialect == "postgres" and c.body and set(c.fields) <= set(TEXT_FIELDS):
        joined = _text_postgres(c)
        if joined is not None:
            return joined
    parts = []
    for t in c.terms:  # each term may be found in any of the fields, or the body
        options = [_headers(c.fields, [t], dialect)]
        body = _body(dialect, [t]) if c.body else None
        if body is not None:
            options.append(body)
        parts.append(_join("OR", options, _FALSE))
    return _join("AND", parts, _TRUE)


def where(c: Cond | None, dialect: str) -> SQL:
    """A predicate over ``messages m`` (the caller restricts m.account_id)."""
    if c is None:
        return _TRUE
    if isinstance(c, AllOf):
        return _join("AND", [where(i, dialect) for i in c.items], _TRUE)
    if isinstance(c, AnyOf):
        return _join("OR", [where(i, dialect) for i in c.items], _FALSE)
    if isinstance(c, NoneOf):
        sql, params = _join("OR", [where(i, dialect) for i in c.items], _FALSE)
        return f"NOT ({sql})", params
    if isinstance(c, InMailbox):
        return "m.id IN (SELECT mm.message_id FROM message_mailboxes mm WHERE mm.mailbox_id = ?)", [c.mailbox_id]
    if isinstance(c, InMailboxOtherThan):
        sql = "EXISTS (SELECT 1 FROM message_mailboxes mm WHERE mm.message_id = m.id"
        if c.mailbox_ids:
            sql += f" AND mm.mailbox_id NOT IN ({', '.join('?' * len(c.mailbox_ids))})"
        return sql + ")", list(c.mailbox_ids)
    if isinstance(c, ReceivedBefore):
        return "m.received_at < ?", [c.ms]
    if isinstance(c, ReceivedSince):
        return "m.received_at >= ?", [c.ms]
    if isinstance(c, SizeAtLeast):
        return "m.size >= ?", [c.size]
    if isinstance(c, SizeBelow):
        return "m.size < ?", [c.size]
    if isinstance(c, HasKeyword):
        sql, params = _has_keyword(c.keyword)
        return (sql if c.present else f"NOT {sql}"), params
    if isinstance(c, ThreadKeyword):
        return thread_keyword(c.mode, c.keyword)
    if isinstance(c, HasAttachment):
        return "m.has_attachment = ?", [1 if c.value else 0]
    if isinstance(c, Text):
        return _text(dialect, c)
    if isinstance(c, Header):
        return _headers([c.name], c.terms, dialect)
    raise TypeError(f"not a search condition: {c!r}")


def sort_column(s: Sort) -> SQL:
    """The SQL expression selected for sort key ``s`` (string keys come from message_search s)."""
    if s.key == "received":
        return "m.received_at", []
    if s.key == "sent":
        return "m.sent_at", []
    if s.key == "size":
        return "m.size", []
    if s.key in STRING_SORTS:
        return f"s.{STRING_SORTS[s.key]}", []
    if s.key == "keyword":
        sql, params = _has_keyword(s.keyword or "")
    else:
        sql, params = thread_keyword("all" if s.key == "thread_all_keyword" else "some", s.keyword or "")
    return f"CASE WHEN {sql} THEN 1 ELSE 0 END", params

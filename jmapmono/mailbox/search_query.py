"""Running an Email search: the indexed views, the general path, query changes, snippet sources.

Two paths, chosen by the query alone (so one query always has one order):

- the *indexed views*: every email of a mailbox (or of the account) by receivedAt, with or without
  thread collapsing. They read ``message_mailboxes_view`` (``messages_account_received``) in order
  and stop after the page; a collapsed view skips an email whose thread has a newer one in the
  mailbox, one probe of ``message_mailboxes_thread`` per row. Totals are the mailbox's maintained
  counts (so they agree with Mailbox/get); an anchor's index is an index range count. These views
  also answer query changes (:func:`query_changes`).
- the *general path*: the database filters (search_sql.where), Python sorts the matches (the
  string collations are not portable SQL) and collapses threads; a page sorted by numbers alone, with
  no anchor and no collapsing, is sorted and cut by the database instead (:func:`_sql_page`).

Ties are always broken by email id, ascending. The query state is the Email state, read in the
same transaction as the results.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from jmapmono.mailbox import changes
from jmapmono.mailbox.changes import CannotCalculateChanges, ChangeLog
from jmapmono.mailbox.messages import chunks, marks
from jmapmono.mailbox.search_sql import (
    STRING_SORTS,
    AllOf,
    EmailQuery,
    InMailbox,
    Sort,
    sort_column,
    where,
)
from jmapmono.store import Database, Transaction

#: The most ids one query returns (a larger or null ``limit`` is clamped and reported).
MAX_LIMIT = 10_000
#: Query changes give up (cannotCalculateChanges) beyond this many changed emails.
MAX_QUERY_CHANGES = 20_000
DEFAULT_COLLATION = "i;unicode-casemap"
_DEFAULT_SORT = (Sort("received", ascending=False),)
_INDEX_ONE_BY_ONE = 64


class AnchorNotFound(Exception):
    """The anchor is not in the results."""


class TooManyChanges(Exception):
    """More query changes than the caller's maximum."""


@dataclass(frozen=True)
class Window:
    position: int = 0
    anchor: str | None = None
    anchor_offset: int = 0
    limit: int | None = None
    calculate_total: bool = False

    def page_size(self) -> int:
        """The most ids a page holds: the client's ``limit``, cut to the server's cap."""
        return MAX_LIMIT if self.limit is None else min(self.limit, MAX_LIMIT)

    def capped(self, more: bool) -> bool:
        """Whether the server's cap, not the client's limit, cut short a page with ``more`` results after it."""
        return more and (self.limit is None or self.limit > MAX_LIMIT)


@dataclass(frozen=True)
class Page:
    ids: list[str]
    position: int
    #: Set when asked for (``calculate_total``).
    total: int | None
    #: The server's cap when it cut the page short, else None.
    limit: int | None
    state: str
    #: The query is an indexed view: query_changes can answer for it.
    indexed: bool


@dataclass(frozen=True)
class QueryChanges:
    old_state: str
    new_state: str
    removed: list[str]
    #: (id, index in the current results), lowest index first.
    added: list[tuple[str, int]]
    total: int | None


# --- collations (RFC 4790) -----------------------------------------------------------------------------------------


def _unicode_casemap(text: str) -> str:
    """RFC 5051 i;unicode-casemap: titlecase every character, then compatibility decomposition (NFKD)."""
    return unicodedata.normalize("NFKD", "".join(c.title() for c in text))


_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _ascii_numeric(text: str) -> tuple[int, int]:
    """i;ascii-numeric: the leading digits as a number; a string without them sorts after every number."""
    digits = len(text) - len(text.lstrip("0123456789"))
    return (0, int(text[:digits])) if digits else (1, 0)


COLLATIONS: dict[str, Callable[[str], Any]] = {
    "i;unicode-casemap": _unicode_casemap,
    "i;ascii-casemap": lambda text: text.translate(_ASCII_UPPER),
    "i;ascii-numeric": _ascii_numeric,
}


def _sort_key(s: Sort, column: str) -> Callable[[dict], Any]:
    if s.key in STRING_SORTS:
        collate = COLLATIONS[s.collation or DEFAULT_COLLATION]
        return lambda r: collate(r[column] or "")
    if s.key == "sent":  # no date sorts first (ascending)
        return lambda r: (0, 0) if r[column] is None else (1, r[column])
    return lambda r: r[column]


# --- the indexed views ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class View:
    mailbox_id: str | None  # None: the whole account
    ascending: bool
    collapse: bool


def indexed_view(query: EmailQuery) -> View | None:
    """The indexed view a query is, if it is one: filter only inMailbox (or none), sort only receivedAt."""
    f = query.filter
    if isinstance(f, AllOf) and len(f.items) <= 1:
        f = f.items[0] if f.items else None
    if f is not None and not isinstance(f, InMailbox):
        return None
    sort = query.sort or _DEFAULT_SORT
    if len(sort) != 1 or sort[0].key != "received":
        return None
    return View(f.mailbox_id if f is not None else None, sort[0].ascending, query.collapse_threads)


class ViewSQL:
    """The SQL of one indexed view (alias v) for one account."""

    def __init__(self, view: View, account_id: str) -> None:
        self.view = view
        self.account_id = account_id
        newer = "<" if view.ascending else ">"  # "comes before in the sort order", on received_at
        # "t comes before v": a range on received_at (usable by the index), then the tie-break on id
        if view.mailbox_id is not None:
            self.src, self.id = "message_mailboxes v", "v.message_id"
            self.scope, self.scope_params = "v.mailbox_id = ?", [view.mailbox_id]
            self.head = (
                "NOT EXISTS (SELECT 1 FROM message_mailboxes t WHERE t.mailbox_id = v.mailbox_id "
                f"AND t.thread_id = v.thread_id AND t.received_at {newer}= v.received_at "
                f"AND (t.received_at {newer} v.received_at OR t.message_id < v.message_id))"
            )
        else:
            self.src, self.id = "messages v", "v.id"
            self.scope, self.scope_params = "v.account_id = ?", [account_id]
            self.head = (
                f"NOT EXISTS (SELECT 1 FROM messages t WHERE t.thread_id = v.thread_id AND t.received_at {newer}= "
                f"v.received_at AND (t.received_at {newer} v.received_at OR t.id < v.id))"
            )
        self.before = f"v.received_at {newer}= ? AND (v.received_at {newer} ? OR {self.id} < ?)"
        self.order = f"v.received_at {'ASC' if view.ascending else 'DESC'}, {self.id} ASC"
        self.where = self.scope + (f" AND {self.head}" if view.collapse else "")

    def exists(self, tx: Transaction) -> bool:
        """The mailbox is one of the account's (a view of another account's mailbox is empty)."""
        if self.view.mailbox_id is None:
            return True
        sql = "SELECT 1 AS one FROM mailboxes WHERE id = ? AND account_id = ?"
        return tx.one(sql, (self.view.mailbox_id, self.account_id)) is not None

    def page_sql(self, limit: int | None, offset: int = 0) -> tuple[str, list[object]]:
        """The query of one page of the view (all of it without ``limit``)."""
        sql = f"SELECT {self.id} AS id FROM {self.src} WHERE {self.where} ORDER BY {self.order}"
        params: list[object] = list(self.scope_params)
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params += [limit, offset]
        return sql, params

    def page_alone_sql(self, limit: int, offset: int, with_total: bool) -> tuple[str, list[object]]:
        """One page with the Email state (and the total) on each row, and only when the view is the account's:
        one statement, which sees one snapshot by itself. No row: an empty page, or not the account's view."""
        columns = [f"{self.id} AS id", changes.state_column("Email")]
        params: list[object] = [self.account_id]
        if with_total:
            columns.append(f"({self._total_sql()}) AS total")
            params.append(self.view.mailbox_id or self.account_id)
        owned = ""
        if self.view.mailbox_id is not None:
            owned = " AND EXISTS (SELECT 1 FROM mailboxes b WHERE b.id = ? AND b.account_id = ?)"
        sql = (
            f"SELECT {', '.join(columns)} FROM {self.src} WHERE {self.where}{owned} "
            f"ORDER BY {self.order} LIMIT ? OFFSET ?"
        )
        owner = [self.view.mailbox_id, self.account_id] if owned else []
        return sql, [*params, *self.scope_params, *owner, limit, offset]

    def rows(self, tx: Transaction, limit: int | None, offset: int = 0) -> list[str]:
        return [r["id"] for r in tx.query(*self.page_sql(limit, offset))]

    def total(self, tx: Transaction) -> int:
        return int(tx.value(self._total_sql(), (self.view.mailbox_id or self.account_id,)) or 0)

    def _total_sql(self) -> str:
        """The view's total (one parameter: the mailbox id, or the account id for the account's view)."""
        if self.view.mailbox_id is not None:  # maintained with every change: agrees with Mailbox/get
            column = "total_threads" if self.view.collapse else "total_emails"
            return f"SELECT {column} FROM mailboxes WHERE id = ?"
        what = "COUNT(DISTINCT thread_id)" if self.view.collapse else "COUNT(*)"
        return f"SELECT {what} AS n FROM messages WHERE account_id = ?"

    def index_of(self, tx: Transaction, message_id: str) -> int | None:
        """The index of ``message_id`` in the results, None when it is not in them."""
        row = tx.one(
            f"SELECT v.received_at AS received_at FROM {self.src} WHERE {self.where} AND {self.id} = ?",
            [*self.scope_params, message_id],
        )
        if row is None:
            return None
        received = row["received_at"]
        count = tx.value(
            f"SELECT COUNT(*) AS n FROM {self.src} WHERE {self.where} AND {self.before}",
            [*self.scope_params, received, received, message_id],
        )
        return int(count)

    def in_results(self, tx: Transaction, ids: Iterable[str]) -> set[str]:
        found: set[str] = set()
        for chunk in chunks(sorted(set(ids))):
            rows = tx.query(
                f"SELECT {self.id} AS id FROM {self.src} WHERE {self.where} AND {self.id} IN ({marks(len(chunk))})",
                [*self.scope_params, *chunk],
            )
            found |= {r["id"] for r in rows}
        return found

    def thread_members(self, tx: Transaction, thread_ids: Iterable[str]) -> set[str]:
        """The emails of these threads within the view's scope (collapsed or not)."""
        found: set[str] = set()
        for chunk in chunks(sorted(set(thread_ids))):
            rows = tx.query(
                f"SELECT {self.id} AS id FROM {self.src} WHERE {self.scope} AND v.thread_id IN ({marks(len(chunk))})",
                [*self.scope_params, *chunk],
            )
            found |= {r["id"] for r in rows}
        return found


def _run_view(tx: Transaction, account_id: str, view: View, window: Window) -> tuple[list[str], int, int | None, bool]:
    vs = ViewSQL(view, account_id)
    if not vs.exists(tx):
        return _window(window, [], lambda i: None)
    total = None
    if window.calculate_total or (window.anchor is None and window.position < 0):
        total = vs.total(tx)
    if window.anchor is not None:
        index = vs.index_of(tx, window.anchor)
        if index is None:
            raise AnchorNotFound(window.anchor)
        position = max(0, index + window.anchor_offset)
    else:
        position = window.position if window.position >= 0 else max(0, (total or 0) + window.position)
    limit = window.page_size()
    ids = vs.rows(tx, limit + 1, position)  # one more: did the cap cut the page short?
    return ids[:limit], position, total, window.capped(len(ids) > limit)


def _window(
    window: Window, ids: list[str], index_of: Callable[[str], int | None]
) -> tuple[list[str], int, int | None, bool]:
    """position/anchor/limit over a complete result list (RFC 8620 §5.5)."""
    if window.anchor is not None:
        index = index_of(window.anchor)
        if index is None:
            raise AnchorNotFound(window.anchor)
        position = max(0, index + window.anchor_offset)
    else:
        position = window.position if window.position >= 0 else max(0, len(ids) + window.position)
    limit = window.page_size()
    page = ids[position : position + limit]
    return page, position, len(ids) if window.calculate_total else None, window.capped(len(ids) > position + limit)


# --- the general path ----------------------------------------------------------------------------------------------


def matching_ids(tx: Transaction, account_id: str, query: EmailQuery) -> list[str]:
    """Every email matching the query, in query order (threads collapsed if asked)."""
    sort = query.sort or _DEFAULT_SORT
    columns, params = ["m.id AS id", "m.thread_id AS thread_id"], []
    for i, s in enumerate(sort):
        sql, p = sort_column(s)
        columns.append(f"{sql} AS k{i}")
        params += p
    source = "messages m"
    if any(s.key in STRING_SORTS for s in sort):
        source += " LEFT JOIN message_search s ON s.message_id = m.id"
    condition, condition_params = where(query.filter, tx.dialect)
    rows = tx.query(
        f"SELECT {', '.join(columns)} FROM {source} WHERE m.account_id = ? AND {condition}",
        [*params, account_id, *condition_params],
    )
    rows.sort(key=lambda r: r["id"])
    for i in reversed(range(len(sort))):  # stable sorts, last key first
        rows.sort(key=_sort_key(sort[i], f"k{i}"), reverse=not sort[i].ascending)
    if query.collapse_threads:
        seen: set[str] = set()
        kept = []
        for r in rows:
            if r["thread_id"] not in seen:
                seen.add(r["thread_id"])
                kept.append(r)
        rows = kept
    return [r["id"] for r in rows]


#: Sorts the database orders exactly as :func:`_sort_key` does (numbers; no date first).
_SQL_ORDER = {
    "received": ("m.received_at {d}",),
    "size": ("m.size {d}",),
    "sent": ("CASE WHEN m.sent_at IS NULL THEN 0 ELSE 1 END {d}", "m.sent_at {d}"),
}


def _sql_page(tx: Transaction, account_id: str, query: EmailQuery, window: Window) -> tuple | None:
    """A page of the general path sorted and cut by the database (only the page is read: a search with many
    matches costs no more than its page), when the query needs no Python: no anchor or position from the
    end, no collapsing, numeric sorts only. None otherwise."""
    sort = query.sort or _DEFAULT_SORT
    if window.anchor is not None or window.position < 0 or query.collapse_threads:
        return None
    if any(s.key not in _SQL_ORDER for s in sort):
        return None
    order = [o.format(d="ASC" if s.ascending else "DESC") for s in sort for o in _SQL_ORDER[s.key]]
    condition, params = where(query.filter, tx.dialect)
    source = f"FROM messages m WHERE m.account_id = ? AND {condition}"
    limit = window.page_size()
    rows = tx.query(
        f"SELECT m.id AS id {source} ORDER BY {', '.join(order)}, m.id ASC LIMIT ? OFFSET ?",
        [account_id, *params, limit + 1, window.position],
    )
    total = None
    if window.calculate_total:
        total = int(tx.value(f"SELECT COUNT(*) AS n {source}", [account_id, *params]) or 0)
    return [r["id"] for r in rows[:limit]], window.position, total, window.capped(len(rows) > limit)


def run_query(db: Database, account_id: str, query: EmailQuery, window: Window) -> Page:
    """The page of results ``window`` asks for, and the query state (Email state) they belong to."""
    view = indexed_view(query)
    if view is not None and (alone := _view_page_alone(db, account_id, view, window)) is not None:
        return alone
    with db.read() as tx:
        state = changes.state(tx, account_id, "Email")
        if view is not None:
            ids, position, total, capped = _run_view(tx, account_id, view, window)
        elif (page := _sql_page(tx, account_id, query, window)) is not None:
            ids, position, total, capped = page
        else:
            everything = matching_ids(tx, account_id, query)
            where_is = {i: n for n, i in enumerate(everything)} if window.anchor is not None else {}
            ids, position, total, capped = _window(window, everything, where_is.get)
    return Page(ids, position, total, MAX_LIMIT if capped else None, state, view is not None)


def _view_page_alone(db: Database, account_id: str, view: View, window: Window) -> Page | None:
    """The common case of a view (a page from a position, no anchor) as one statement alone: on Postgres one
    round trip instead of five (BEGIN, state, mailbox, page, COMMIT). None when it returned no row (an empty
    page, or a mailbox that is not the account's): the transaction's path tells those apart."""
    if window.anchor is not None or window.position < 0:
        return None
    limit = window.page_size()
    vs = ViewSQL(view, account_id)
    rows = db.query_alone(*vs.page_alone_sql(limit + 1, window.position, window.calculate_total))
    if not rows:
        return None
    total = int(rows[0]["total"] or 0) if window.calculate_total else None
    cap = MAX_LIMIT if window.capped(len(rows) > limit) else None
    return Page([r["id"] for r in rows[:limit]], window.position, total, cap, changes.column_state(rows[0]), True)


# --- query changes -------------------------------------------------------------------------------------------------


def query_changes(
    db: Database,
    change_log: ChangeLog,
    account_id: str,
    query: EmailQuery,
    since_state: str,
    max_changes: int | None = None,
    up_to_id: str | None = None,
    calculate_total: bool = False,
) -> QueryChanges:
    """What to splice out of and into the results cached at ``since_state`` (RFC 8620 §5.6).

    Indexed views only (other queries: CannotCalculateChanges unless no email changed at all).
    ``removed`` holds every email that may have left the results or moved (for a mailbox view: every
    email created, updated or destroyed since, membership being mutable; collapsed: every email of a
    thread that changed, whose first email may have changed); ``added`` holds those now in the
    results, with their index. Untouched emails keep their relative order (receivedAt never changes),
    so the client's spliced cache is exact.
    """
    view = indexed_view(query)
    with db.read() as tx:  # the change log is read in this same transaction (nested reads join it)
        state = changes.state(tx, account_id, "Email")
        if view is None:
            if since_state != state:
                raise CannotCalculateChanges("changes are calculated for a mailbox or the account by receivedAt only")
            total = len(matching_ids(tx, account_id, query)) if calculate_total else None
            return QueryChanges(since_state, state, [], [], total)
        c = change_log.changes_since(account_id, "Email", since_state, MAX_QUERY_CHANGES)
        if c.has_more_changes:
            raise CannotCalculateChanges(f"more than {MAX_QUERY_CHANGES} emails changed since {since_state!r}")
        vs = ViewSQL(view, account_id)
        created = set(c.created)
        if view.mailbox_id is None:  # filter and sort on immutable properties: updates move nothing
            touched, candidates = set(c.destroyed), set(created)
        else:
            touched, candidates = set(c.updated) | set(c.destroyed), created | set(c.updated)
        if not (c.created or c.updated or c.destroyed):
            total = vs.total(tx) if calculate_total and vs.exists(tx) else (0 if calculate_total else None)
            return QueryChanges(since_state, state, [], [], total)
        if view.collapse:
            # Threads changed by the operations after since_state. An operation logs its Email changes
            # before its Thread changes (mutation.py), so the Thread changes between since_state and the
            # first later Email change belong to the operation since_state already includes.
            first = tx.value(
                "SELECT MIN(seq) AS seq FROM change_log WHERE account_id = ? AND type = 'Email' AND seq > ?",
                (account_id, changes.parse_token(since_state)),
            )
            thread_since = changes.token(int(first) - 1)
            t = change_log.changes_since(account_id, "Thread", thread_since, MAX_QUERY_CHANGES)
            if t.has_more_changes:
                raise CannotCalculateChanges(f"more than {MAX_QUERY_CHANGES} threads changed since {since_state!r}")
            threads = set(t.created) | set(t.updated) | set(t.destroyed) | _threads_of(tx, account_id, candidates)
            members = vs.thread_members(tx, threads)
            touched |= members - created
            candidates |= members
        present = vs.in_results(tx, candidates) if candidates and vs.exists(tx) else set()
        if len(present) <= _INDEX_ONE_BY_ONE:
            indexed = [(i, vs.index_of(tx, i)) for i in present]
            added = sorted(((i, n) for i, n in indexed if n is not None), key=lambda a: a[1])
        else:
            added = [(i, n) for n, i in enumerate(vs.rows(tx, None)) if i in present]
        if up_to_id is not None and view.mailbox_id is None:  # immutable: nothing after upToId is needed
            up_to = vs.index_of(tx, up_to_id)
            if up_to is not None:
                added = [(i, n) for i, n in added if n <= up_to]
        removed = sorted(touched)
        if max_changes is not None and len(removed) + len(added) > max_changes:
            raise TooManyChanges(f"{len(removed) + len(added)} changes; the maximum asked for is {max_changes}")
        total = vs.total(tx) if calculate_total and vs.exists(tx) else (0 if calculate_total else None)
    return QueryChanges(since_state, state, removed, added, total)


def _threads_of(tx: Transaction, account_id: str, ids: Iterable[str]) -> set[str]:
    found: set[str] = set()
    for chunk in chunks(sorted(set(ids))):
        rows = tx.query(
            f"SELECT thread_id FROM messages WHERE account_id = ? AND id IN ({marks(len(chunk))})",
            (account_id, *chunk),
        )
        found |= {r["thread_id"] for r in rows}
    return found


# --- snippets ------------------------------------------------------------------------------------------------------


def snippet_sources(db: Database, account_id: str, ids: Iterable[str]) -> dict[str, tuple[str | None, str]]:
    """Email id → (subject, body text) of the account's emails among ``ids``."""
    out: dict[str, tuple[str | None, str]] = {}
    with db.read() as tx:
        for chunk in chunks(sorted(set(ids))):
            for r in tx.query(
                "SELECT m.id AS id, m.subject AS subject, s.text AS text FROM messages m "
                "LEFT JOIN message_search s ON s.message_id = m.id "
                f"WHERE m.account_id = ? AND m.id IN ({marks(len(chunk))})",
                (account_id, *chunk),
            ):
                out[r["id"]] = (r["subject"], r["text"] or "")
    return out

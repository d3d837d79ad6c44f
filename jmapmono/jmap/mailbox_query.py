"""Mailbox/query and Mailbox/queryChanges (RFC 8621 §2.3, §2.4).

Mailbox lists are small, so a query reads the account's mailboxes and filters and sorts them here.
The query state is the Mailbox state. Mailbox/queryChanges answers from the change log without
rebuilding the old result list: every mailbox changed since the client's state (and, for tree
queries, every descendant of one, whose place and inclusion depend on its ancestors) is reported
removed and, when in the current results, added at its index. RFC 8620 §5.6 allows exactly that
for filters and sorts on mutable properties; mailboxes untouched since then keep their relative
order and membership, so the client's spliced cache is exact. Windows where only counts moved
change nothing. A state the log no longer covers answers cannotCalculateChanges.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable
from functools import cmp_to_key
from typing import Any

from jmapmono.jmap import sharing
from jmapmono.jmap.errors import MethodError
from jmapmono.jmap.method_args import (
    Comparator,
    QueryArgs,
    arg_bool,
    arg_id,
    arg_str,
    arg_unsigned_int,
    invalid,
    is_id,
    parse_query,
    query_response,
    query_window,
    reject_unknown_arguments,
)
from jmapmono.jmap.registry import MAIL, Invocation, method
from jmapmono.mailbox.changes import CannotCalculateChanges
from jmapmono.mailbox.model import Mailbox

FILTER_CONDITIONS = frozenset({"parentId", "name", "role", "hasAnyRole", "isSubscribed"})
SORT_PROPERTIES = frozenset({"sortOrder", "name"})
_COMMON_ARGS = {"accountId", "filter", "sort", "sortAsTree", "filterAsTree", "calculateTotal"}
QUERY_ARGS = frozenset(_COMMON_ARGS | {"position", "anchor", "anchorOffset", "limit"})
QUERY_CHANGES_ARGS = frozenset(_COMMON_ARGS | {"sinceQueryState", "maxChanges", "upToId"})
DEFAULT_COLLATION = "i;unicode-casemap"

Predicate = Callable[[Mailbox], bool]


# --- filters -------------------------------------------------------------------------------------------------------


def _unsupported(description: str) -> MethodError:
    return MethodError("unsupportedFilter", description)


def _fold(text: str) -> str:
    return unicodedata.normalize("NFC", text).casefold()


def _bound(test: Callable[[Mailbox, bool], bool], value: bool) -> Predicate:
    return lambda mb: test(mb, value)


def compile_filter(inv: Invocation, f: dict[str, Any] | None) -> Predicate:
    """A predicate for a FilterOperator/FilterCondition (structure already checked by parse_query).

    A condition the server does not know is unsupportedFilter; a known one with a value of the wrong type is
    invalidArguments, as for every other /query here."""
    if f is None:
        return lambda mb: True
    if "operator" in f:
        subs = [compile_filter(inv, c) for c in f["conditions"]]
        if f["operator"] == "AND":
            return lambda mb: all(p(mb) for p in subs)
        if f["operator"] == "OR":
            return lambda mb: any(p(mb) for p in subs)
        return lambda mb: not any(p(mb) for p in subs)
    unknown = sorted(set(f) - FILTER_CONDITIONS)
    if unknown:
        raise _unsupported(f"Mailbox filters have no condition {', '.join(unknown)}")
    tests: list[Predicate] = []
    if "parentId" in f:
        parent = f["parentId"]
        if isinstance(parent, str) and parent.startswith("#") and parent[1:] in inv.created_ids:
            parent = inv.created_ids[parent[1:]]
        if parent is not None and not is_id(parent):
            raise invalid("the parentId condition must be a mailbox id or null")
        tests.append(lambda mb: mb.parent_id == parent)
    if "name" in f:
        if not isinstance(f["name"], str):
            raise invalid("the name condition must be a string")
        needle = _fold(f["name"])
        tests.append(lambda mb: needle in _fold(mb.name))
    if "role" in f:
        role = f["role"]
        if role is not None and not isinstance(role, str):
            raise invalid("the role condition must be a string or null")
        tests.append(lambda mb: mb.role == role)
    flag_tests: tuple[tuple[str, Callable[[Mailbox, bool], bool]], ...] = (
        ("hasAnyRole", lambda mb, v: (mb.role is not None) == v),
        ("isSubscribed", lambda mb, v: bool(mb.is_subscribed) == v),
    )
    for name, test in flag_tests:
        if name in f:
            value = f[name]
            if not isinstance(value, bool):
                raise invalid(f"the {name} condition must be true or false")
            tests.append(_bound(test, value))
    return lambda mb: all(t(mb) for t in tests)


# --- sorting -------------------------------------------------------------------------------------------------------


def _unicode_casemap(text: str) -> str:
    """RFC 5051 i;unicode-casemap: titlecase each character (simple mapping), then canonical decomposition."""
    mapped = []
    for c in text:
        t = c.title()
        mapped.append(t if len(t) == 1 else c.upper() if len(c.upper()) == 1 else c)
    return unicodedata.normalize("NFD", "".join(mapped))


_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _ascii_numeric(text: str) -> tuple[int, int]:
    """RFC 4790 i;ascii-numeric: the leading digits as a number; no digits sorts after every number."""
    digits = len(text) - len(text.lstrip("0123456789"))
    return (0, int(text[:digits])) if digits else (1, 0)


COLLATIONS: dict[str, Callable[[str], Any]] = {
    "i;unicode-casemap": _unicode_casemap,
    "i;ascii-casemap": lambda text: text.translate(_ASCII_UPPER),
    "i;ascii-numeric": _ascii_numeric,
}


def _key(c: Comparator) -> Callable[[Mailbox], Any]:
    if c.property == "sortOrder":
        return lambda mb: mb.sort_order
    if c.property == "name":
        fold = COLLATIONS.get(c.collation or DEFAULT_COLLATION)
        if fold is None:
            raise MethodError("unsupportedSort", f"collation {c.collation!r} is not supported for Mailbox names")
        return lambda mb: fold(mb.name)
    raise MethodError("unsupportedSort", f"Mailboxes cannot be sorted by {c.property!r} (only sortOrder, name)")


def compare_by(sort: list[Comparator]) -> Callable[[Mailbox, Mailbox], int]:
    """A comparison on the comparators (default: sortOrder, then name), ties broken by id (stable)."""
    if not sort:
        sort = [Comparator("sortOrder", True, None, {}), Comparator("name", True, None, {})]
    keys = [(_key(c), c.is_ascending) for c in sort]
    cache: dict[str, list[Any]] = {}

    def values(mb: Mailbox) -> list[Any]:
        if mb.id not in cache:
            cache[mb.id] = [key(mb) for key, _ in keys]
        return cache[mb.id]

    def compare(a: Mailbox, b: Mailbox) -> int:
        for va, vb, (_, ascending) in zip(values(a), values(b), keys, strict=True):
            if va != vb:
                return (-1 if va < vb else 1) * (1 if ascending else -1)
        return (a.id > b.id) - (a.id < b.id)

    return compare


# --- the query -----------------------------------------------------------------------------------------------------


def _lineage(mb: Mailbox, by_id: dict[str, Mailbox]) -> list[Mailbox]:
    """``mb`` and its ancestors, top-level mailbox first."""
    chain = [mb]
    while chain[-1].parent_id is not None and chain[-1].parent_id in by_id and len(chain) <= len(by_id):
        chain.append(by_id[chain[-1].parent_id])
    return chain[::-1]


def run_query(
    mailboxes: list[Mailbox], matches: Predicate, compare: Callable, sort_as_tree: bool, filter_as_tree: bool
) -> list[str]:
    """The ids of the matching mailboxes in query order (§2.3 sortAsTree / filterAsTree semantics)."""
    by_id = {mb.id: mb for mb in mailboxes}
    matched = {mb.id for mb in mailboxes if matches(mb)}
    results = [by_id[i] for i in matched]
    if filter_as_tree:
        results = [mb for mb in results if all(a.id in matched for a in _lineage(mb, by_id))]
    key = cmp_to_key(compare)
    if sort_as_tree:
        # ancestors compare first (a prefix sorts before its extensions); else the nearest siblings decide
        results.sort(key=lambda mb: tuple(key(a) for a in _lineage(mb, by_id)))
    else:
        results.sort(key=key)
    return [mb.id for mb in results]


def _prepare(inv: Invocation, known: Iterable[str]) -> tuple[QueryArgs, Predicate, Callable, bool, bool]:
    reject_unknown_arguments(inv.args, set(known))
    query = parse_query(inv)
    sort_as_tree = arg_bool(inv.args, "sortAsTree", False)
    filter_as_tree = arg_bool(inv.args, "filterAsTree", False)
    return query, compile_filter(inv, query.filter), compare_by(query.sort), sort_as_tree, filter_as_tree


@method("Mailbox/query", MAIL)
def mailbox_query(inv: Invocation) -> dict[str, Any]:
    """Filter and sort the account's mailboxes; the query state is the Mailbox state."""
    query, matches, compare, sort_as_tree, filter_as_tree = _prepare(inv, QUERY_ARGS)
    mailboxes, state = inv.services.mailboxes.get_mailboxes(query.account_id, None, inv.principal.user_id)
    view = sharing.view(inv)
    if view is not None:
        mailboxes = sharing.shown(mailboxes, view)
    ids = run_query(mailboxes, matches, compare, sort_as_tree, filter_as_tree)
    position, page, limit = query_window(query, ids)
    return query_response(query, state, position, page, len(ids), can_calculate_changes=True, limit=limit)


@method("Mailbox/queryChanges", MAIL)
def mailbox_query_changes(inv: Invocation) -> dict[str, Any]:
    """What to splice out of and into a cached query result since ``sinceQueryState`` (see the module doc)."""
    query, matches, compare, sort_as_tree, filter_as_tree = _prepare(inv, QUERY_CHANGES_ARGS)
    since = arg_str(inv.args, "sinceQueryState")
    max_changes = arg_unsigned_int(inv.args, "maxChanges", None, nullable=True)
    arg_id(inv.args, "upToId", None, nullable=True)  # ignored: every Mailbox filter and sort property is mutable
    account_id, services = query.account_id, inv.services
    mailboxes, state = services.mailboxes.get_mailboxes(account_id, None, inv.principal.user_id)
    view = sharing.view(inv)
    if view is not None:
        mailboxes = sharing.shown(mailboxes, view)
    ids = run_query(mailboxes, matches, compare, sort_as_tree, filter_as_tree)
    try:
        # read after the results: it covers at least every change up to `state` (extra ids are harmless)
        c = services.changes.changes_since(account_id, "Mailbox", since)
    except CannotCalculateChanges as e:
        raise MethodError("cannotCalculateChanges", str(e)) from None
    touched = set(c.destroyed) | set(c.updated if not c.count_only_updates else ())
    if touched and (sort_as_tree or filter_as_tree):
        by_id = {mb.id: mb for mb in mailboxes}
        touched |= {mb.id for mb in mailboxes if any(a.id in touched for a in _lineage(mb, by_id))}
    removed = sorted(touched)
    readd = touched | set(c.created)
    added = [{"id": mailbox_id, "index": i} for i, mailbox_id in enumerate(ids) if mailbox_id in readd]
    if max_changes is not None and len(removed) + len(added) > max_changes:
        raise MethodError("tooManyChanges", f"{len(removed) + len(added)} changes exceed maxChanges {max_changes}")
    out: dict[str, Any] = {
        "accountId": account_id,
        "oldQueryState": since,
        "newQueryState": state,
        "removed": removed,
        "added": added,
    }
    if query.calculate_total:
        out["total"] = len(ids)
    return out

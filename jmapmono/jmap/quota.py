"""Quota/get, Quota/changes, Quota/query and Quota/queryChanges (RFC 9425 §4).

An account has at most two Quota objects, ``storage`` (resourceType ``octets``: the size of its messages, each
counted once) and ``messages`` (``count``), each only while a limit applies to it (the operator's, or the
configured default). Both are scoped to the account and apply to Email. warnLimit, softLimit and
description are null (jmapmono has hard limits only). The query state is the Quota state, which moves with
usage: Quota/queryChanges reports every quota removed and re-added at its index (RFC 8620 §5.6 allows it
for sorts on mutable properties such as ``used``), which is exact and cheap for two objects.
"""

from __future__ import annotations

from typing import Any

from jmapmono.jmap.errors import MethodError
from jmapmono.jmap.filters import filter_matches
from jmapmono.jmap.method_args import (
    Comparator,
    arg_str,
    arg_unsigned_int,
    changes_response,
    get_response,
    invalid,
    parse_changes,
    parse_get,
    parse_query,
    query_response,
    query_window,
    reject_unknown_arguments,
)
from jmapmono.jmap.registry import QUOTA, Invocation, method
from jmapmono.mailbox.changes import CannotCalculateChanges
from jmapmono.mailbox.quota import TYPE

PROPERTIES = [
    "id",
    "resourceType",
    "used",
    "hardLimit",
    "scope",
    "name",
    "types",
    "warnLimit",
    "softLimit",
    "description",
]
FILTER_CONDITIONS = frozenset({"name", "scope", "resourceType", "type"})
SORT_PROPERTIES = frozenset({"name", "used"})
_COMMON_ARGS = {"accountId", "filter", "sort", "calculateTotal"}
QUERY_ARGS = frozenset(_COMMON_ARGS | {"position", "anchor", "anchorOffset", "limit"})
QUERY_CHANGES_ARGS = frozenset(_COMMON_ARGS | {"sinceQueryState", "maxChanges", "upToId"})


def _quotas(inv: Invocation, account_id: str) -> tuple[dict[str, dict[str, Any]], str]:
    account, state = inv.services.mailboxes.get_quota(account_id)
    return account.objects(), state


@method("Quota/get", QUOTA)
def quota_get(inv: Invocation) -> dict[str, Any]:
    """Standard /get (RFC 9425 §4.2): the account's quotas, all of them for ``ids: null``."""
    reject_unknown_arguments(inv.args, {"accountId", "ids", "properties"})
    get = parse_get(inv, PROPERTIES)
    quotas, state = _quotas(inv, get.account_id)
    return get_response(get, state, quotas)


@method("Quota/changes", QUOTA)
def quota_changes(inv: Invocation) -> dict[str, Any]:
    """Standard /changes (RFC 9425 §4.3). A logged id with no quota now (its limit was lifted) is destroyed."""
    reject_unknown_arguments(inv.args, {"accountId", "sinceState", "maxChanges"})
    args = parse_changes(inv)
    try:
        c = inv.services.changes.changes_since(args.account_id, TYPE, args.since_state, args.max_changes)
    except CannotCalculateChanges as e:
        raise MethodError("cannotCalculateChanges", str(e)) from None
    existing, _ = _quotas(inv, args.account_id)
    created = [i for i in c.created if i in existing]
    updated = [i for i in c.updated if i in existing]
    destroyed = sorted(set(c.destroyed) | {i for i in (*c.created, *c.updated) if i not in existing})
    response = changes_response(
        args.account_id, c.old_state, c.new_state, c.has_more_changes, created, updated, destroyed
    )
    return response


def _matches(quota: dict[str, Any], condition: dict[str, Any]) -> bool:
    return filter_matches(condition, FILTER_CONDITIONS, "Quota/query", lambda c: _condition(quota, c))


def _condition(quota: dict[str, Any], condition: dict[str, Any]) -> bool:
    for name, value in condition.items():
        if not isinstance(value, str):
            raise invalid(f"the filter condition {name!r} must be a string")
        if name == "name" and value.casefold() not in quota["name"].casefold():
            return False
        if name == "scope" and quota["scope"] != value:
            return False
        if name == "resourceType" and quota["resourceType"] != value:
            return False
        if name == "type" and value not in quota["types"]:
            return False
    return True


def _sorted(quotas: dict[str, dict[str, Any]], sort: list[Comparator]) -> list[str]:
    for c in sort:
        if c.property not in SORT_PROPERTIES:
            raise MethodError("unsupportedSort", f"Quota/query cannot sort by {c.property!r} (only name, used)")
    ids = sorted(quotas)
    for c in reversed(sort):
        if c.property == "name":
            ids.sort(key=lambda i: quotas[i]["name"].casefold(), reverse=not c.is_ascending)
        else:
            ids.sort(key=lambda i: quotas[i]["used"], reverse=not c.is_ascending)
    return ids


def _run(inv: Invocation, allowed: frozenset[str]) -> tuple[Any, list[str], str]:
    reject_unknown_arguments(inv.args, allowed)
    query = parse_query(inv)
    quotas, state = _quotas(inv, query.account_id)
    matching = {i: q for i, q in quotas.items() if query.filter is None or _matches(q, query.filter)}
    return query, _sorted(matching, query.sort), state


@method("Quota/query", QUOTA)
def quota_query(inv: Invocation) -> dict[str, Any]:
    """Standard /query (RFC 9425 §4.4): filter on name, scope, resourceType, type; sort by name or used."""
    query, ids, state = _run(inv, QUERY_ARGS)
    position, page, limit = query_window(query, ids)
    return query_response(query, state, position, page, len(ids), can_calculate_changes=True, limit=limit)


@method("Quota/queryChanges", QUOTA)
def quota_query_changes(inv: Invocation) -> dict[str, Any]:
    """Standard /queryChanges (RFC 9425 §4.5): every quota changed since the state is removed and re-added."""
    query, ids, state = _run(inv, QUERY_CHANGES_ARGS)
    since = arg_str(inv.args, "sinceQueryState")
    max_changes = arg_unsigned_int(inv.args, "maxChanges", None, nullable=True)
    arg_str(inv.args, "upToId", None, nullable=True)
    try:
        c = inv.services.changes.changes_since(query.account_id, TYPE, since)
    except CannotCalculateChanges as e:
        raise MethodError("cannotCalculateChanges", str(e)) from None
    touched = set(c.created) | set(c.updated) | set(c.destroyed)
    removed = sorted(touched)
    added = [{"id": quota_id, "index": i} for i, quota_id in enumerate(ids) if quota_id in touched]
    if max_changes is not None and len(removed) + len(added) > max_changes:
        raise MethodError("tooManyChanges", f"{len(removed) + len(added)} changes exceed maxChanges {max_changes}")
    out: dict[str, Any] = {
        "accountId": query.account_id,
        "oldQueryState": since,
        "newQueryState": state,
        "removed": removed,
        "added": added,
    }
    if query.calculate_total:
        out["total"] = len(ids)
    return out

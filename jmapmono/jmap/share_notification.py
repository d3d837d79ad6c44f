"""ShareNotification/get, /changes, /query and /set (RFC 9670 §5): what was shared with the user, changed
or taken back. The server writes them (jmapmono/mailbox/share_notifications.py); a client may only destroy
them (create and update are ``forbidden``). They are the user's own: not listed in an account shared with
them mailbox by mailbox.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from jmapmono.jmap import sharing
from jmapmono.jmap.email_query import utc_date_filter
from jmapmono.jmap.errors import MethodError, SetError
from jmapmono.jmap.filters import filter_matches
from jmapmono.jmap.mailbox import changes_since
from jmapmono.jmap.method_args import (
    check_if_in_state,
    get_response,
    parse_get,
    parse_query,
    parse_set,
    query_response,
    query_window,
    reject_unknown_arguments,
    set_response,
)
from jmapmono.jmap.registry import PRINCIPALS, Invocation, method
from jmapmono.mailbox.share_notifications import TYPE, Notification

PROPERTIES = [
    "id",
    "created",
    "changedBy",
    "objectType",
    "objectAccountId",
    "objectId",
    "oldRights",
    "newRights",
    "name",
]
FILTERS = frozenset({"after", "before", "objectType", "objectAccountId"})


def _own(inv: Invocation) -> None:
    if sharing.view(inv) is not None:
        raise MethodError("forbidden", "share notifications are read in one's own account")


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_json(n: Notification) -> dict[str, Any]:
    return {
        "id": n.id,
        "created": _utc(n.created),
        "changedBy": n.changed_by,
        "objectType": n.object_type,
        "objectAccountId": n.object_account_id,
        "objectId": n.object_id,
        "oldRights": n.old_rights,
        "newRights": n.new_rights,
        "name": n.name,
    }


def _all(inv: Invocation) -> tuple[list[Notification], str]:
    limit = inv.services.config.limits.max_objects_in_get
    found, state = inv.services.mailboxes.get_share_notifications(inv.account_id, None, limit)
    if found is None:
        raise MethodError("requestTooLarge", f"more than maxObjectsInGet ({limit}) share notifications")
    return found, state


@method(f"{TYPE}/get", PRINCIPALS)
def share_notification_get(inv: Invocation) -> dict[str, Any]:
    reject_unknown_arguments(inv.args, {"accountId", "ids", "properties"})
    _own(inv)
    get = parse_get(inv, PROPERTIES)
    if get.ids is None:
        found, state = _all(inv)
    else:
        limit = inv.services.config.limits.max_objects_in_get
        listed, state = inv.services.mailboxes.get_share_notifications(inv.account_id, get.ids, limit)
        found = listed or []
    return get_response(get, state, {n.id: to_json(n) for n in found})


@method(f"{TYPE}/changes", PRINCIPALS)
def share_notification_changes(inv: Invocation) -> dict[str, Any]:
    _own(inv)
    return changes_since(inv, TYPE)[0]


def _matches(n: Notification, f: dict[str, Any]) -> bool:
    return filter_matches(f, FILTERS, "ShareNotification/query", lambda c: _condition(n, c))


def _condition(n: Notification, f: dict[str, Any]) -> bool:
    if "after" in f and n.created < utc_date_filter("after", f["after"]):
        return False
    if "before" in f and n.created >= utc_date_filter("before", f["before"]):
        return False
    if "objectType" in f and n.object_type != f["objectType"]:
        return False
    return not ("objectAccountId" in f and n.object_account_id != f["objectAccountId"])


@method(f"{TYPE}/query", PRINCIPALS)
def share_notification_query(inv: Invocation) -> dict[str, Any]:
    """Sorted by ``created`` (the only sort, RFC 9670 §5.4), oldest first unless asked otherwise."""
    reject_unknown_arguments(
        inv.args, {"accountId", "filter", "sort", "position", "anchor", "anchorOffset", "limit", "calculateTotal"}
    )
    _own(inv)
    query = parse_query(inv)
    descending = False
    for c in query.sort:
        if c.property != "created":
            raise MethodError("unsupportedSort", f"ShareNotifications cannot be sorted by {c.property!r}")
        descending = not c.is_ascending
    found, state = _all(inv)
    if query.filter is not None:
        found = [n for n in found if _matches(n, query.filter)]
    ids = [n.id for n in (reversed(found) if descending else found)]
    position, page, _ = query_window(query, ids)
    return query_response(query, state, min(position, len(ids)), page, len(ids))


@method(f"{TYPE}/set", PRINCIPALS, writes=True)
def share_notification_set(inv: Invocation) -> dict[str, Any]:
    """Destroy only (RFC 9670 §5.3): notifications are the server's to write."""
    reject_unknown_arguments(inv.args, {"accountId", "ifInState", "create", "update", "destroy"})
    _own(inv)
    req = parse_set(inv)
    mgr = inv.services.mailboxes
    old_state = inv.services.changes.state(inv.account_id, TYPE)
    check_if_in_state(req.if_in_state, old_state)
    not_created = {cid: SetError("forbidden", "share notifications are made by the server") for cid in req.create}
    not_updated = {i: SetError("forbidden", "share notifications cannot be changed") for i in req.update}
    destroyed, new_state = (
        mgr.destroy_share_notifications(inv.account_id, req.destroy) if req.destroy else ([], old_state)
    )
    not_destroyed = {i: SetError("notFound", f"no share notification {i}") for i in req.destroy if i not in destroyed}
    return set_response(
        inv.account_id,
        old_state,
        new_state,
        destroyed=destroyed,
        not_created=not_created,
        not_updated=not_updated,
        not_destroyed=not_destroyed,
    )

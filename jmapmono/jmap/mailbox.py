"""Mailbox/get and Mailbox/changes (RFC 8621 §2.1, §2.2), and the Mailbox JSON shape shared by the others.

Counts come from the maintained counters (read with the state in one transaction), so they agree
with Email/query totals at the same state. ``isSubscribed`` is the calling user's own: a delegate's
subscriptions are not the owner's. Owners and delegates have full rights; only the Inbox cannot be
destroyed, so its ``mayDelete`` is false.
"""

from __future__ import annotations

from typing import Any

from jmapmono.jmap.errors import MethodError
from jmapmono.jmap.method_args import (
    changes_response,
    check_max_objects_in_get,
    get_response,
    parse_changes,
    parse_get,
    reject_unknown_arguments,
)
from jmapmono.jmap.registry import MAIL, Invocation, method
from jmapmono.mailbox.changes import CannotCalculateChanges
from jmapmono.mailbox.model import Mailbox

COUNT_PROPERTIES = ["totalEmails", "unreadEmails", "totalThreads", "unreadThreads"]
PROPERTIES = ["id", "name", "parentId", "role", "sortOrder", *COUNT_PROPERTIES, "myRights", "isSubscribed"]
#: Properties only the server sets: a client may send them in an update only with their current value.
SERVER_SET = frozenset({"id", *COUNT_PROPERTIES, "myRights"})
RIGHTS = (
    "mayReadItems",
    "mayAddItems",
    "mayRemoveItems",
    "maySetSeen",
    "maySetKeywords",
    "mayCreateChild",
    "mayRename",
    "mayDelete",
    "maySubmit",
)


def my_rights(role: str | None) -> dict[str, bool]:
    """Full rights for the owner and delegates alike; the Inbox cannot be destroyed."""
    rights = dict.fromkeys(RIGHTS, True)
    if role == "inbox":
        rights["mayDelete"] = False
    return rights


def mailbox_json(mb: Mailbox) -> dict[str, Any]:
    """The full JMAP Mailbox object (``isSubscribed`` as read for the calling user)."""
    return {
        "id": mb.id,
        "name": mb.name,
        "parentId": mb.parent_id,
        "role": mb.role,
        "sortOrder": mb.sort_order,
        **mb.counts.to_json(),
        "myRights": my_rights(mb.role),
        "isSubscribed": bool(mb.is_subscribed),
    }


def changes_since(inv: Invocation, type: str) -> tuple[dict[str, Any], bool]:
    """A standard /changes response for ``type`` and whether every update in it only moved counts."""
    reject_unknown_arguments(inv.args, {"accountId", "sinceState", "maxChanges"})
    args = parse_changes(inv)
    try:
        c = inv.services.changes.changes_since(args.account_id, type, args.since_state, args.max_changes)
    except CannotCalculateChanges as e:
        raise MethodError("cannotCalculateChanges", str(e)) from None
    response = changes_response(
        args.account_id, c.old_state, c.new_state, c.has_more_changes, c.created, c.updated, c.destroyed
    )
    return response, c.count_only_updates


@method("Mailbox/get", MAIL)
def mailbox_get(inv: Invocation) -> dict[str, Any]:
    """Mailboxes with every property (or those asked for); ``ids: null`` returns them all."""
    reject_unknown_arguments(inv.args, {"accountId", "ids", "properties"})
    get = parse_get(inv, PROPERTIES)
    mailboxes, state = inv.services.mailboxes.get_mailboxes(get.account_id, get.ids, inv.principal.user_id)
    if get.ids is None:
        check_max_objects_in_get(inv, len(mailboxes))
    return get_response(get, state, {mb.id: mailbox_json(mb) for mb in mailboxes})


@method("Mailbox/changes", MAIL)
def mailbox_changes(inv: Invocation) -> dict[str, Any]:
    """Standard /changes; ``updatedProperties`` names the counts when nothing else changed in the window."""
    response, count_only = changes_since(inv, "Mailbox")
    response["updatedProperties"] = list(COUNT_PROPERTIES) if count_only else None
    return response

"""Mailbox/get and Mailbox/changes (RFC 8621 §2.1, §2.2), and the Mailbox JSON shape shared by the others.

Counts come from the maintained counters (read with the state in one transaction), so they agree
with Email/query totals at the same state. ``isSubscribed`` is the calling user's own: a delegate's
subscriptions are not the owner's. Owners and delegates have full rights; only the Inbox cannot be
destroyed, so its ``mayDelete`` is false.
"""

from __future__ import annotations

from typing import Any

from jmapmono.jmap import sharing
from jmapmono.jmap.errors import MethodError
from jmapmono.jmap.method_args import (
    changes_response,
    check_max_objects_in_get,
    get_response,
    parse_changes,
    parse_get,
    reject_unknown_arguments,
)
from jmapmono.jmap.registry import MAIL, MAIL_SHARE, Invocation, method
from jmapmono.jmap.sharing import ShareView
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
#: The right the mail sharing extension adds: may change ``shareWith``.
MAY_SHARE = "mayShare"
#: Who the mailbox is shared with (draft-ietf-jmap-mail-sharing): principal id -> MailboxRights.
SHARE_WITH = "shareWith"


def my_rights(role: str | None, shared: frozenset[str] | None = None, with_share: bool = False) -> dict[str, bool]:
    """Full rights for the owner and delegates alike, else the rights of the share; the Inbox cannot be
    destroyed."""
    rights = dict.fromkeys(RIGHTS, True) if shared is None else {r: r in shared for r in RIGHTS}
    if with_share:
        rights[MAY_SHARE] = shared is None or MAY_SHARE in shared
    if role == "inbox":
        rights["mayDelete"] = False
    return rights


def mailbox_json(mb: Mailbox, view: ShareView | None = None, with_share: bool = False) -> dict[str, Any]:
    """The full JMAP Mailbox object (``isSubscribed`` as read for the calling user; ``myRights`` and a
    ``parentId`` the sharee can see, under ``view``)."""
    if view is not None:
        parent = mb.parent_id if mb.parent_id in view.rights else None
        return {
            "id": mb.id,
            "name": mb.name,
            "parentId": parent,
            "role": mb.role,
            "sortOrder": mb.sort_order,
            **mb.counts.to_json(),
            "myRights": my_rights(mb.role, view.rights.get(mb.id, frozenset()), with_share),
            "isSubscribed": bool(mb.is_subscribed),
        }
    return {
        "id": mb.id,
        "name": mb.name,
        "parentId": mb.parent_id,
        "role": mb.role,
        "sortOrder": mb.sort_order,
        **mb.counts.to_json(),
        "myRights": my_rights(mb.role, None, with_share),
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
    with_share = MAIL_SHARE in inv.using
    get = parse_get(inv, [*PROPERTIES, SHARE_WITH] if with_share else PROPERTIES)
    shared = sharing.view(inv)
    ids = get.ids if shared is None else [i for i in (get.ids or shared.mailboxes) if i in shared.rights]
    mailboxes, state = inv.services.mailboxes.get_mailboxes(get.account_id, ids, inv.principal.user_id)
    if get.ids is None:
        check_max_objects_in_get(inv, len(mailboxes))
    records = {mb.id: mailbox_json(mb, shared, with_share) for mb in mailboxes}
    if with_share:
        share_with = share_with_of(inv, [mb.id for mb in mailboxes], shared)
        for mailbox_id, record in records.items():
            record[SHARE_WITH] = share_with.get(mailbox_id)
    return get_response(get, state, records)


def share_with_of(inv: Invocation, mailbox_ids: list[str], shared: ShareView | None) -> dict[str, Any]:
    """Mailbox id -> its ``shareWith`` (principal id -> MailboxRights) for the mailboxes the caller may share
    (full access, or mayShare); the others, and mailboxes shared with nobody, are left out (null)."""
    mine = [m for m in mailbox_ids if shared is None or shared.may(m, MAY_SHARE)]
    sharees = inv.services.mailboxes.mailbox_sharees(inv.account_id, mine) if mine else {}
    principals: dict[int, str | None] = {}
    out: dict[str, Any] = {}
    for mailbox_id, users in sharees.items():
        entry = {}
        for user_id, rights in sorted(users.items()):
            if user_id not in principals:
                user = inv.services.accounts.by_id(user_id)
                principals[user_id] = None if user is None else user.account_id
            principal_id = principals[user_id]
            if principal_id is not None:
                entry[principal_id] = {r: r in rights for r in (*RIGHTS, MAY_SHARE)}
        out[mailbox_id] = entry or None
    return out


@method("Mailbox/changes", MAIL)
def mailbox_changes(inv: Invocation) -> dict[str, Any]:
    """Standard /changes; ``updatedProperties`` names the counts when nothing else changed in the window."""
    response, count_only = changes_since(inv, "Mailbox")
    shared = sharing.view(inv)
    if shared is not None:
        response = sharing.filter_changes(response, shared.mailboxes)
    response["updatedProperties"] = list(COUNT_PROPERTIES) if count_only else None
    return response

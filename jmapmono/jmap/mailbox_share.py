"""Mailbox/set for sharing (draft-ietf-jmap-mail-sharing over RFC 9670): ``shareWith`` updates, and what a
sharee may do to the mailboxes shared with them (RFC 8621 §2 MailboxRights).

``shareWith`` is set whole or patched per principal (``shareWith/<principal id>``: a MailboxRights object,
or null to revoke) by a user with full access to the account or with ``mayShare`` on the mailbox. A sharee
renames or moves a mailbox with ``mayRename`` (moving also needs ``mayCreateChild`` on the new parent),
destroys one with ``mayDelete`` (and ``mayRemoveItems`` to take its emails), and creates a child of a
mailbox with ``mayCreateChild`` there: the new mailbox is shared with its creator with its parent's rights.
"""

from __future__ import annotations

from typing import Any

from jmapmono.accounts.users import AccountError
from jmapmono.jmap.errors import SetError
from jmapmono.jmap.mailbox import MAY_SHARE, RIGHTS, SHARE_WITH
from jmapmono.jmap.registry import MAIL_SHARE, Invocation
from jmapmono.jmap.sharing import ShareView, forbidden
from jmapmono.mailbox.model import MailboxError

_ALL_RIGHTS = (*RIGHTS, MAY_SHARE)


def split_patch(inv: Invocation, patch: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the shareWith part, the rest) of a Mailbox PatchObject; shareWith only with the sharing capability."""
    share = {k: v for k, v in patch.items() if k == SHARE_WITH or k.startswith(SHARE_WITH + "/")}
    if share and MAIL_SHARE not in inv.using:
        raise SetError("invalidProperties", f"{SHARE_WITH} needs the {MAIL_SHARE} capability", properties=[SHARE_WITH])
    return share, {k: v for k, v in patch.items() if k not in share}


def _rights(value: Any) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, dict) or not all(isinstance(v, bool) for v in value.values()):
        raise SetError("invalidProperties", "shareWith values must be MailboxRights objects", properties=[SHARE_WITH])
    unknown = sorted(set(value) - set(_ALL_RIGHTS))
    if unknown:
        raise SetError("invalidProperties", f"unknown rights: {', '.join(unknown)}", properties=[SHARE_WITH])
    return frozenset(r for r, on in value.items() if on)


def apply_share_with(inv: Invocation, mailbox_id: str, share: dict[str, Any], shared: ShareView | None) -> None:
    """Grant, change or revoke shares of ``mailbox_id`` as ``share`` (shareWith or its per-principal patches) says."""
    if shared is not None and not shared.may(mailbox_id, MAY_SHARE):
        raise forbidden("changing shareWith needs mayShare on this mailbox")
    mgr = inv.services.mailboxes
    current = {
        user_id: rights
        for user_id, rights in mgr.mailbox_sharees(inv.account_id, [mailbox_id]).get(mailbox_id, {}).items()
    }
    wanted: dict[str, frozenset[str]] = {}
    whole = share.get(SHARE_WITH, ...)
    if whole is not ...:
        if whole is not None and not isinstance(whole, dict):
            raise SetError("invalidProperties", "shareWith must be an object or null", properties=[SHARE_WITH])
        wanted = {p: _rights(v) for p, v in (whole or {}).items()}
        for user_id in current:
            user = inv.services.accounts.by_id(user_id)
            if user is not None and user.account_id not in wanted:
                wanted[user.account_id] = frozenset()
    for key, value in share.items():
        if key != SHARE_WITH:
            wanted[key[len(SHARE_WITH) + 1 :].replace("~1", "/").replace("~0", "~")] = _rights(value)
    targets = {}
    for principal_id, rights in wanted.items():
        if shared is not None and rights - shared.rights[mailbox_id]:
            raise forbidden("a sharee cannot grant rights they do not hold themselves")
        user = inv.services.accounts.by_account_id(principal_id)
        if user is None or principal_id == inv.account_id:
            raise SetError("invalidProperties", f"no principal {principal_id!r} to share with", properties=[SHARE_WITH])
        targets[user.id] = rights
    for user_id, rights in targets.items():
        try:
            mgr.share_mailbox(inv.account_id, mailbox_id, user_id, rights, inv.principal.user_id)
        except (MailboxError, AccountError) as e:
            raise SetError("invalidProperties", str(e), properties=[SHARE_WITH]) from None


def check_create(shared: ShareView, parent: Any) -> frozenset[str]:
    """The rights the sharee's new child mailbox gets (its parent's); forbidden without mayCreateChild."""
    if not isinstance(parent, str) or not shared.may(parent, "mayCreateChild"):
        raise forbidden("creating a mailbox here needs mayCreateChild on its parent")
    return shared.rights[parent]


def check_update(shared: ShareView, mailbox_id: str, patch: dict[str, Any], new_parent: Any) -> None:
    touched = {key.split("/")[0] for key in patch} - {"isSubscribed"}
    if touched and not shared.may(mailbox_id, "mayRename"):
        raise forbidden("renaming or moving this mailbox needs mayRename")
    if "parentId" in touched and not (isinstance(new_parent, str) and shared.may(new_parent, "mayCreateChild")):
        raise forbidden("moving a mailbox here needs mayCreateChild on the new parent")


def check_destroy(shared: ShareView, mailbox_id: str, remove_emails: bool) -> None:
    if mailbox_id not in shared.rights:
        raise SetError("notFound", f"no mailbox {mailbox_id}")
    if not shared.may(mailbox_id, "mayDelete"):
        raise forbidden("destroying this mailbox needs mayDelete")
    if remove_emails and not shared.may(mailbox_id, "mayRemoveItems"):
        raise forbidden("removing its emails needs mayRemoveItems")

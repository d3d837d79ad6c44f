"""What a user sees of an account shared with them mailbox by mailbox (JMAP Mail Sharing over RFC 9670).

A user with full access (the owner, a delegate) has no :class:`ShareView`; a sharee has one: the mailboxes
shared with them and their rights (RFC 8621 §2 MailboxRights). Rights are per mailbox and never inherited
by child mailboxes. An email is visible when it is in a mailbox the sharee may read items of, and shows only
the shared mailboxes among its ``mailboxIds``; a thread shows only its visible emails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from jmapmono.jmap.errors import SetError

if TYPE_CHECKING:
    from jmapmono.accounts.principal import Principal
    from jmapmono.jmap.context import JmapServices
    from jmapmono.jmap.registry import Invocation
    from jmapmono.mailbox.model import Mailbox, Message


@dataclass(frozen=True)
class ShareView:
    """The mailboxes of an account shared with the calling user, and their rights."""

    rights: Mapping[str, frozenset[str]]

    @property
    def mailboxes(self) -> frozenset[str]:
        return frozenset(self.rights)

    @property
    def readable(self) -> frozenset[str]:
        return frozenset(m for m, r in self.rights.items() if "mayReadItems" in r)

    def may(self, mailbox_id: str, right: str) -> bool:
        return right in self.rights.get(mailbox_id, ())

    def may_all(self, mailbox_ids: Iterable[str], right: str) -> bool:
        """True when the user holds ``right`` in every mailbox given (an unshared one holds none)."""
        return all(self.may(m, right) for m in mailbox_ids)

    def sees(self, message: Message) -> bool:
        return bool(message.mailbox_ids & self.readable)

    def shown_mailboxes(self, mailbox_ids: Iterable[str]) -> frozenset[str]:
        return frozenset(mailbox_ids) & self.mailboxes


def view_for(services: JmapServices, principal: Principal, account_id: str) -> ShareView | None:
    """None for full access (or no access at all: the account checks refused that already)."""
    access = services.accounts.access(principal.user_id, account_id)
    if access is None or access.shares is None:
        return None
    return ShareView(access.shares)


def view(inv: Invocation) -> ShareView | None:
    return view_for(inv.services, inv.principal, inv.account_id)


def forbidden(description: str) -> SetError:
    return SetError("forbidden", description)


def blob_readable(services: JmapServices, principal: Principal, account_id: str, blob_id: str) -> bool:
    """Whether the user may read ``blob_id`` of ``account_id`` beyond the account check: always with full
    access; for a sharee, a blob of a visible email (or one of its parts) or their own upload."""
    shared = view_for(services, principal, account_id)
    if shared is None:
        return True
    base = blob_id.split("_", 1)[0]
    return services.mailboxes.blob_visible(account_id, base, shared.readable, principal.user_id)


def filter_changes(response: dict, visible: Iterable[str]) -> dict:
    """A standard /changes response as a sharee sees it: what is not visible now is left out when it was
    created in the window, else reported destroyed (it may have been visible before)."""
    shown = set(visible)
    created = [i for i in response["created"] if i in shown]
    updated = [i for i in response["updated"] if i in shown]
    gone = [i for i in response["updated"] if i not in shown]
    destroyed = list(dict.fromkeys([*response["destroyed"], *gone]))
    return {**response, "created": created, "updated": updated, "destroyed": destroyed}


def changes_as_seen(
    inv: Invocation, response: dict, visible: Callable[[str, list[str], frozenset[str]], Iterable[str]]
) -> dict:
    """A /changes response as the caller sees it: as it is for the owner or a delegate; for a sharee,
    :func:`filter_changes` by ``visible(account id, changed ids, readable mailboxes)``."""
    shared = view(inv)
    if shared is None:
        return response
    changed = [*response["created"], *response["updated"]]
    return filter_changes(response, visible(inv.account_id, changed, shared.readable))


def shown(mailboxes: list[Mailbox], view: ShareView) -> list[Mailbox]:
    """The shared mailboxes among ``mailboxes``, a parent the sharee cannot see taken off (a top-level one)."""
    return [
        mb if mb.parent_id is None or mb.parent_id in view.rights else replace(mb, parent_id=None)
        for mb in mailboxes
        if mb.id in view.rights
    ]

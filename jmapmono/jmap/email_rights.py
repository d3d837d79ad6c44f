"""What a sharee may change of emails (RFC 8621 §2 MailboxRights), checked before Email/set, import, copy.

``$seen`` needs maySetSeen and any other keyword maySetKeywords in EVERY mailbox the email is in (RFC 8621
§2: "If an Email belongs to multiple Mailboxes, the user may only modify …"); adding to a mailbox needs
mayAddItems there and removing mayRemoveItems there; destroying needs mayRemoveItems in every mailbox the
email is in. An email the sharee cannot see is notFound; a mailbox they cannot see is not a mailbox.
A full ``mailboxIds`` replacement replaces the shared mailboxes only: the others the email is in stay.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from jmapmono.jmap.errors import SetError
from jmapmono.jmap.sharing import ShareView, forbidden
from jmapmono.mailbox.model import Message, MessageUpdate

SEEN = "$seen"


def check_add(shared: ShareView, mailbox_ids: Iterable[str]) -> None:
    """SetError unless the sharee may add items to every mailbox given."""
    ids = set(mailbox_ids)
    hidden = sorted(ids - shared.mailboxes)
    if hidden:
        raise SetError("invalidProperties", f"no mailbox {hidden[0]}", properties=["mailboxIds"])
    if not shared.may_all(ids, "mayAddItems"):
        raise forbidden("adding emails to this mailbox is not allowed by its share (mayAddItems)")


def _keyword_rights(before: Iterable[str], after: Iterable[str]) -> set[str]:
    changed = set(before) ^ set(after)
    needed = set()
    if SEEN in changed:
        needed.add("maySetSeen")
    if changed - {SEEN}:
        needed.add("maySetKeywords")
    return needed


def check_update(shared: ShareView, meta: Message | None, update: MessageUpdate) -> MessageUpdate:
    """The update as it may run for the sharee (mailboxIds replacement kept to the shared mailboxes);
    SetError notFound / forbidden / invalidProperties otherwise."""
    if meta is None or not shared.sees(meta):
        raise SetError("notFound", "no such email")
    current = set(meta.mailbox_ids)
    keywords = set(meta.keywords)
    if update.keywords is not None:
        after = {k.lower() for k in update.keywords}  # checked by the patch parser already
    else:
        after = (keywords | {k.lower() for k in update.add_keywords}) - {k.lower() for k in update.remove_keywords}
    for right in sorted(_keyword_rights(keywords, after)):
        if not shared.may_all(current, right):
            raise forbidden(f"changing these keywords needs {right} in every mailbox of the email")
    if update.mailbox_ids is not None:
        wanted = set(update.mailbox_ids)
        added, removed = wanted - current, (current & shared.mailboxes) - wanted
        update = replace(update, mailbox_ids=sorted(wanted | (current - shared.mailboxes)))
    else:
        added = set(update.add_mailboxes) - current
        removed = set(update.remove_mailboxes) & current
        hidden = sorted(set(update.remove_mailboxes) - shared.mailboxes)
        if hidden:
            raise SetError("invalidProperties", f"no mailbox {hidden[0]}", properties=["mailboxIds"])
    if added:
        check_add(shared, added)
    if removed and not shared.may_all(removed, "mayRemoveItems"):
        raise forbidden("removing emails from this mailbox is not allowed by its share (mayRemoveItems)")
    return update


def check_destroy(shared: ShareView, meta: Message | None) -> None:
    if meta is None or not shared.sees(meta):
        raise SetError("notFound", "no such email")
    if not shared.may_all(meta.mailbox_ids, "mayRemoveItems"):
        raise forbidden("destroying this email needs mayRemoveItems in every mailbox it is in")

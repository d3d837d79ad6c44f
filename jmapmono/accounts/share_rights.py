"""The rights a mailbox share grants: RFC 8621 §2 MailboxRights names and their ``mailbox_shares`` columns.

``mayShare`` (may change who the mailbox is shared with) is the right the JMAP Mail Sharing draft adds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

#: JMAP right -> column of ``mailbox_shares``.
COLUMNS: Mapping[str, str] = {
    "mayReadItems": "may_read_items",
    "mayAddItems": "may_add_items",
    "mayRemoveItems": "may_remove_items",
    "maySetSeen": "may_set_seen",
    "maySetKeywords": "may_set_keywords",
    "mayCreateChild": "may_create_child",
    "mayRename": "may_rename",
    "mayDelete": "may_delete",
    "maySubmit": "may_submit",
    "mayShare": "may_share",
}
RIGHTS = tuple(COLUMNS)
#: Every right but reading: a share holding one of them makes the owner's account writable for the sharee.
WRITE_RIGHTS = frozenset(RIGHTS) - {"mayReadItems"}
SELECT_COLUMNS = ", ".join(COLUMNS.values())


def from_row(row: Mapping[str, object]) -> frozenset[str]:
    """The rights a ``mailbox_shares`` row grants."""
    return frozenset(right for right, column in COLUMNS.items() if row[column])


def to_values(rights: Iterable[str]) -> tuple[int, ...]:
    """The column values (in :data:`COLUMNS` order) of a set of rights."""
    granted = set(rights)
    return tuple(1 if right in granted else 0 for right in COLUMNS)

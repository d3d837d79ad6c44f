"""ShareNotifications (RFC 9670 §5): what was shared with a user, changed or taken back, kept in their account.

Written by the share's transaction (:func:`notify`, with the sharee's account locked after the owner's in
account-id order, so two users sharing with each other at once never wait on each other), destroyed by the
user; each is one change-log entry of type ShareNotification and one pushed state change.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from jmapmono.clock import now_ms
from jmapmono.mailbox import changes
from jmapmono.mailbox.events import ShareNotified
from jmapmono.mailbox.messages import chunks, marks
from jmapmono.mailbox.model import new_id
from jmapmono.mailbox.mutation import Mutation
from jmapmono.store import Transaction

TYPE = "ShareNotification"


@dataclass(frozen=True)
class Notification:
    id: str
    created: int
    changed_by: dict[str, Any]
    object_type: str
    object_account_id: str
    object_id: str
    old_rights: dict[str, bool] | None
    new_rights: dict[str, bool] | None
    name: str


def _notification(r: dict) -> Notification:
    def rights(text: str | None) -> dict[str, bool] | None:
        return None if text is None else json.loads(text)

    return Notification(
        r["id"],
        int(r["created"]),
        json.loads(r["changed_by_json"]),
        r["object_type"],
        r["object_account_id"],
        r["object_id"],
        rights(r["old_rights_json"]),
        rights(r["new_rights_json"]),
        r["name"],
    )


def notify(
    m: Mutation,
    changed_by: dict[str, Any],
    object_type: str,
    object_account_id: str,
    object_id: str,
    old_rights: dict[str, bool] | None,
    new_rights: dict[str, bool] | None,
    name: str,
) -> str:
    """Write one notification in ``m``'s account (the sharee's), inside the share's transaction."""
    notification_id = new_id("N")
    m.tx.execute(
        "INSERT INTO share_notifications (id, account_id, created, changed_by_json, object_type, object_account_id, "
        "object_id, old_rights_json, new_rights_json, name) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            notification_id,
            m.account_id,
            now_ms(),
            json.dumps(changed_by),
            object_type,
            object_account_id,
            object_id,
            None if old_rights is None else json.dumps(old_rights),
            None if new_rights is None else json.dumps(new_rights),
            name,
        ),
    )
    m.created(TYPE, [notification_id])
    return notification_id


class ShareNotificationOps:
    """Mixed into MailboxManager (which provides ``db``)."""

    db: Any

    def get_share_notifications(
        self, account_id: str, ids: Iterable[str] | None, limit: int
    ) -> tuple[list[Notification] | None, str]:
        """The account's notifications (all, oldest first, or those of ``ids``); None when over ``limit``."""
        with self.db.read() as tx:
            state = changes.state(tx, account_id, TYPE)
            return _read(tx, account_id, ids, limit), state

    def destroy_share_notifications(self, account_id: str, ids: Iterable[str]) -> tuple[list[str], str]:
        """Destroy those of ``ids`` the account holds; (destroyed ids, the new state)."""
        wanted = sorted(set(ids))
        with self.db.transaction() as tx:
            m = Mutation(tx, account_id)
            gone: list[str] = []
            for chunk in chunks(wanted):
                gone += [
                    r["id"]
                    for r in tx.query(
                        f"DELETE FROM share_notifications WHERE account_id = ? AND id IN ({marks(len(chunk))}) "
                        "RETURNING id",
                        (account_id, *chunk),
                    )
                ]
            if not gone:
                return [], changes.state(tx, account_id, TYPE)
            m.destroyed(TYPE, gone)
            states = m.finish(ShareNotified(account_id=account_id, notification_ids=sorted(gone)))
        return gone, states[TYPE]


def _read(tx: Transaction, account_id: str, ids: Iterable[str] | None, limit: int) -> list[Notification] | None:
    base = "SELECT * FROM share_notifications WHERE account_id = ?"
    if ids is None:
        rows = tx.query(base + " ORDER BY created, id LIMIT ?", (account_id, limit + 1))
        if len(rows) > limit:
            return None
        return [_notification(r) for r in rows]
    out: list[Notification] = []
    for chunk in chunks(sorted(set(ids))):
        out += [_notification(r) for r in tx.query(base + f" AND id IN ({marks(len(chunk))})", (account_id, *chunk))]
    return out

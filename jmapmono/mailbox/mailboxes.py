"""Mailbox mutations of the MailboxManager: provision, create, rename/move, delete, subscribe.

Each is one transaction, one event. Refusals are typed (model.py) so the JMAP layer maps
them to SetErrors: alreadyExists (sibling name), invalidProperties (parent loop, role in
use, bad name), mailboxHasChild, mailboxHasEmail, forbidden (the Inbox), notFound.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from jmapmono.accounts.users import User
from jmapmono.clock import now_ms
from jmapmono.log import kv
from jmapmono.mailbox import messages as msgs
from jmapmono.mailbox import shares
from jmapmono.mailbox.events import MailboxAdded, MailboxDeleted, MailboxRenamed, MailboxSubscriptionChanged
from jmapmono.mailbox.model import (
    DEFAULT_MAILBOXES,
    AlreadyExists,
    Forbidden,
    InvalidProperties,
    Mailbox,
    MailboxHasChild,
    MailboxHasEmail,
    NotFound,
    name_key,
    new_id,
    validate_mailbox_name,
    validate_role,
    validate_sort_order,
)
from jmapmono.mailbox.mutation import Mutation
from jmapmono.store import Transaction

log = logging.getLogger(__name__)

#: Marks "leave this property as it is" in :meth:`MailboxOps.update_mailbox`.
UNCHANGED: Any = object()
_MAX_DEPTH = 64


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


class MailboxOps:
    """Mixed into MailboxManager (which provides ``db``, ``blobs`` and ``accounts``)."""

    db: Any
    blobs: Any
    accounts: Any
    quota_defaults: Any

    # -- provisioning -------------------------------------------------------------------------------------------

    def provision(self, tx: Transaction, user: User) -> None:
        """Give a new account its default mailboxes, the owner subscribed (``accounts.on_user_created`` hook)."""
        m = Mutation(tx, user.account_id)
        self._ensure_defaults(tx, m, user, force=True)

    def _ensure_defaults(self, tx: Transaction, m: Mutation, user: User, force: bool = False) -> str | None:
        """Create the default mailboxes the account lacks (when it has no Inbox); writes the event if ``force``.
        Returns the Inbox's id when it was there already (a delivery need not look it up again)."""
        account_id = user.account_id
        if not force:
            inbox = tx.value("SELECT id FROM mailboxes WHERE account_id = ? AND role = 'inbox'", (account_id,))
            if inbox:
                return str(inbox)
        rows = tx.query(
            "SELECT role, name_key FROM mailboxes WHERE account_id = ? AND parent_id IS NULL", (account_id,)
        )
        taken_roles = {r["role"] for r in rows}
        taken_names = {r["name_key"] for r in rows}
        created: list[dict[str, Any]] = []
        for name, role, order in DEFAULT_MAILBOXES:
            if role in taken_roles or name_key(name) in taken_names:
                continue
            mailbox_id = self._insert_mailbox(tx, account_id, name, None, role, order)
            tx.execute(
                "INSERT INTO mailbox_subscriptions (user_id, mailbox_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (user.id, mailbox_id),
            )
            created.append({"id": mailbox_id, "name": name, "parentId": None, "role": role, "sortOrder": order})
        m.created("Mailbox", [c["id"] for c in created])
        if force and created:
            m.finish(MailboxAdded(account_id=account_id, mailboxes=created))
            log.info(kv(event="mailboxes_provisioned", account=account_id, mailboxes=len(created)))
        return None

    def _insert_mailbox(
        self, tx: Transaction, account_id: str, name: str, parent_id: str | None, role: str | None, order: int
    ) -> str:
        mailbox_id = new_id("B")
        tx.execute(
            "INSERT INTO mailboxes (id, account_id, name, name_key, parent_id, role, sort_order, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (mailbox_id, account_id, name, name_key(name), parent_id, role, order, now_ms()),
        )
        return mailbox_id

    def _mailbox_for_delivery(
        self, tx: Transaction, account_id: str, name: str | None, inbox: str | None = None
    ) -> str:
        """The mailbox called ``name`` (case-insensitive; a top-level one first, or a ``a/b`` path), else the Inbox
        (``inbox``, when the caller knows its id)."""
        if name and name.strip():
            found = tx.value(
                "SELECT id FROM mailboxes WHERE account_id = ? AND name_key = ? "
                "ORDER BY CASE WHEN parent_id IS NULL THEN 0 ELSE 1 END, created_at, id LIMIT 1",
                (account_id, name_key(name.strip())),
            )
            if found is None and "/" in name:
                parent: str | None = None
                for part in [p for p in name.split("/") if p.strip()]:
                    parent = tx.value(
                        "SELECT id FROM mailboxes WHERE account_id = ? AND COALESCE(parent_id, '') = ? "
                        "AND name_key = ?",
                        (account_id, parent or "", name_key(part.strip())),
                    )
                    if parent is None:
                        break
                found = parent
            if found is not None:
                return found
        if inbox is not None:
            return inbox
        return tx.value("SELECT id FROM mailboxes WHERE account_id = ? AND role = 'inbox'", (account_id,))

    # -- checks -------------------------------------------------------------------------------------------------

    @staticmethod
    def _row(tx: Transaction, account_id: str, mailbox_id: str) -> dict:
        row = tx.one(
            "SELECT id, name, parent_id, role, sort_order FROM mailboxes WHERE account_id = ? AND id = ?",
            (account_id, mailbox_id),
        )
        if row is None:
            raise NotFound(f"no mailbox {mailbox_id}")
        return row

    @staticmethod
    def _check_sibling(tx: Transaction, account_id: str, parent_id: str | None, name: str, self_id: str = "") -> None:
        clash = tx.value(
            "SELECT id FROM mailboxes WHERE account_id = ? AND COALESCE(parent_id, '') = ? "
            "AND name_key = ? AND id <> ?",
            (account_id, parent_id or "", name_key(name), self_id),
        )
        if clash is not None:
            raise AlreadyExists(f"a sibling mailbox is already called {name!r}", ["name"], existing_id=clash)

    @staticmethod
    def _check_role(tx: Transaction, account_id: str, role: str | None, self_id: str = "") -> None:
        if role is not None and tx.value(
            "SELECT id FROM mailboxes WHERE account_id = ? AND role = ? AND id <> ?", (account_id, role, self_id)
        ):
            raise InvalidProperties(f"another mailbox already has the role {role!r}", ["role"])

    def _check_parent(self, tx: Transaction, account_id: str, parent_id: str | None, self_id: str = "") -> None:
        """The parent exists in the account and is not the mailbox itself or one of its descendants."""
        seen = 0
        current = parent_id
        while current is not None:
            if current == self_id:
                raise InvalidProperties("a mailbox cannot be its own ancestor", ["parentId"])
            row = tx.one("SELECT parent_id FROM mailboxes WHERE account_id = ? AND id = ?", (account_id, current))
            if row is None:
                raise InvalidProperties(f"no parent mailbox {current}", ["parentId"])
            current, seen = row["parent_id"], seen + 1
            if seen > _MAX_DEPTH:
                raise InvalidProperties(f"mailboxes nest at most {_MAX_DEPTH} deep", ["parentId"])

    # -- mutations ----------------------------------------------------------------------------------------------

    def create_mailbox(
        self,
        account_id: str,
        name: str,
        parent_id: str | None = None,
        role: str | None = None,
        sort_order: int = 0,
        subscribe_user_id: int | None = None,
    ) -> Mailbox:
        """Create a mailbox (``subscribe_user_id``: that user is subscribed to it at once)."""
        started = time.monotonic()
        name, role, sort_order = validate_mailbox_name(name), validate_role(role), validate_sort_order(sort_order)
        with self.db.transaction() as tx:
            m = Mutation(tx, account_id)
            self._check_parent(tx, account_id, parent_id)
            self._check_sibling(tx, account_id, parent_id, name)
            self._check_role(tx, account_id, role)
            mailbox_id = self._insert_mailbox(tx, account_id, name, parent_id, role, sort_order)
            if subscribe_user_id is not None:
                tx.execute(
                    "INSERT INTO mailbox_subscriptions (user_id, mailbox_id) VALUES (?, ?)",
                    (subscribe_user_id, mailbox_id),
                )
            m.created("Mailbox", [mailbox_id])
            desc = {"id": mailbox_id, "name": name, "parentId": parent_id, "role": role, "sortOrder": sort_order}
            m.finish(MailboxAdded(account_id=account_id, mailboxes=[desc]))
            created_at = int(tx.value("SELECT created_at FROM mailboxes WHERE id = ?", (mailbox_id,)))
        log.info(kv(event="mailbox_created", account=account_id, mailbox=mailbox_id, ms=_ms(started)))
        subscribed = None if subscribe_user_id is None else True
        return Mailbox(mailbox_id, account_id, name, parent_id, role, sort_order, created_at, is_subscribed=subscribed)

    def update_mailbox(
        self,
        account_id: str,
        mailbox_id: str,
        name: str = UNCHANGED,
        parent_id: str | None = UNCHANGED,
        role: str | None = UNCHANGED,
        sort_order: int = UNCHANGED,
    ) -> dict[str, str]:
        """Rename, move, re-role or re-order a mailbox; return the new states (empty if nothing changed)."""
        started = time.monotonic()
        with self.db.transaction() as tx:
            m = Mutation(tx, account_id)
            row = self._row(tx, account_id, mailbox_id)
            new: dict[str, Any] = {
                "name": row["name"] if name is UNCHANGED else validate_mailbox_name(name),
                "parentId": row["parent_id"] if parent_id is UNCHANGED else parent_id,
                "role": row["role"] if role is UNCHANGED else validate_role(role),
                "sortOrder": row["sort_order"] if sort_order is UNCHANGED else validate_sort_order(sort_order),
            }
            old = {
                "name": row["name"],
                "parentId": row["parent_id"],
                "role": row["role"],
                "sortOrder": row["sort_order"],
            }
            changed = [k for k in new if new[k] != old[k]]
            if not changed:
                return {}
            if "parentId" in changed:
                self._check_parent(tx, account_id, new["parentId"], mailbox_id)
            if "name" in changed or "parentId" in changed:
                self._check_sibling(tx, account_id, new["parentId"], new["name"], mailbox_id)
            if "role" in changed:
                if old["role"] == "inbox":
                    raise Forbidden("the Inbox keeps its role", ["role"])
                self._check_role(tx, account_id, new["role"], mailbox_id)
            tx.execute(
                "UPDATE mailboxes SET name = ?, name_key = ?, parent_id = ?, role = ?, sort_order = ? WHERE id = ?",
                (new["name"], name_key(new["name"]), new["parentId"], new["role"], new["sortOrder"], mailbox_id),
            )
            m.updated("Mailbox", [mailbox_id])
            event = MailboxRenamed(
                account_id=account_id,
                mailbox_id=mailbox_id,
                old={k: old[k] for k in changed},
                new={k: new[k] for k in changed},
            )
            states = m.finish(event)
        log.info(
            kv(
                event="mailbox_updated",
                account=account_id,
                mailbox=mailbox_id,
                changed=",".join(changed),
                ms=_ms(started),
            )
        )
        return states

    def delete_mailbox(self, account_id: str, mailbox_id: str, remove_emails: bool = False) -> dict[str, str]:
        """Destroy a mailbox; return the new states.

        Refused when it has children (even with ``remove_emails``), when it holds emails and
        ``remove_emails`` is false, and for the Inbox. With ``remove_emails``, its emails leave it
        and those left in no mailbox are destroyed, all in the same transaction and event.
        """
        started = time.monotonic()
        with self.db.transaction() as tx:
            m = Mutation(tx, account_id, self.quota_defaults)
            row = self._row(tx, account_id, mailbox_id)
            if row["role"] == "inbox":
                raise Forbidden("the Inbox cannot be destroyed")
            if tx.value("SELECT id FROM mailboxes WHERE parent_id = ? LIMIT 1", (mailbox_id,)):
                raise MailboxHasChild(f"mailbox {mailbox_id} has child mailboxes")
            ids = [
                r["message_id"]
                for r in tx.query("SELECT message_id FROM message_mailboxes WHERE mailbox_id = ?", (mailbox_id,))
            ]
            if ids and not remove_emails:
                raise MailboxHasEmail(f"mailbox {mailbox_id} holds {len(ids)} emails")
            current = msgs.load(tx, account_id, ids)
            only_here = {i: c for i, c in current.items() if c.mailboxes == {mailbox_id}}
            elsewhere = {i: c for i, c in current.items() if i not in only_here}
            wanted = {i: msgs.Change(set(c.keywords), c.mailboxes - {mailbox_id}) for i, c in elsewhere.items()}
            msgs.update(tx, m, elsewhere, wanted)
            gone = msgs.destroy(tx, m, self.blobs, only_here) if only_here else []
            m.apply_counts()  # the mailbox's own rows go before the mailbox does
            tx.execute("DELETE FROM mailbox_subscriptions WHERE mailbox_id = ?", (mailbox_id,))
            tx.execute("DELETE FROM mailbox_threads WHERE mailbox_id = ?", (mailbox_id,))
            shares.forget_mailbox(tx, self.accounts, account_id, mailbox_id)
            tx.execute("DELETE FROM mailboxes WHERE id = ?", (mailbox_id,))
            m.destroyed("Mailbox", [mailbox_id])
            event = MailboxDeleted(
                account_id=account_id,
                mailbox_id=mailbox_id,
                name=row["name"],
                removed_message_ids=sorted(elsewhere),
                destroyed_message_ids=[g["id"] for g in gone],
            )
            event.message_ids = sorted(current)
            event.thread_ids = sorted({c.thread_id for c in current.values()})
            states = m.finish(event)
        log.info(
            kv(
                event="mailbox_destroyed",
                account=account_id,
                mailbox=mailbox_id,
                removed=len(elsewhere),
                destroyed=len(gone),
                ms=_ms(started),
            )
        )
        return states

    def set_subscribed(self, account_id: str, mailbox_id: str, user_id: int, subscribed: bool) -> dict[str, str]:
        """Subscribe or unsubscribe ``user_id`` (per user); return the new states (empty if no change)."""
        with self.db.transaction() as tx:
            m = Mutation(tx, account_id)
            self._row(tx, account_id, mailbox_id)
            if subscribed:
                changed = tx.execute(
                    "INSERT INTO mailbox_subscriptions (user_id, mailbox_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                    (user_id, mailbox_id),
                )
            else:
                changed = tx.execute(
                    "DELETE FROM mailbox_subscriptions WHERE user_id = ? AND mailbox_id = ?", (user_id, mailbox_id)
                )
            if not changed:
                return {}
            m.updated("Mailbox", [mailbox_id])
            event = MailboxSubscriptionChanged(
                account_id=account_id, mailbox_id=mailbox_id, user_id=user_id, subscribed=subscribed
            )
            states = m.finish(event)
        log.info(kv(event="mailbox_subscription", account=account_id, mailbox=mailbox_id, user=user_id, on=subscribed))
        return states

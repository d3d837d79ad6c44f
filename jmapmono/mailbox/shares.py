"""Mailbox sharing: grants of one mailbox to one user, with rights (RFC 8621 §2 MailboxRights).

A grant, a change of rights or a revocation is one transaction: the share row, the mailbox and every
email in it (and their threads) logged as updated in the owner's account (so the sharee's ``*/changes``
name what appeared or disappeared, and both sides are pushed), and the access change written to the
outbox (push re-reads the sharee's accounts: the owner's account appears or goes on open sockets).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from jmapmono.accounts import share_rights
from jmapmono.accounts.users import AccountError, User
from jmapmono.clock import now_ms
from jmapmono.log import kv
from jmapmono.mailbox import share_notifications
from jmapmono.mailbox.events import ShareNotified, SharesChanged
from jmapmono.mailbox.model import Forbidden, NotFound
from jmapmono.mailbox.mutation import Mutation
from jmapmono.store import Transaction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Share:
    mailbox_id: str
    mailbox_name: str
    sharee_user_id: int
    sharee_email: str
    rights: frozenset[str]


def check_rights(rights: Iterable[str]) -> frozenset[str]:
    """The rights named, each a known one (AccountError otherwise)."""
    out = frozenset(rights)
    unknown = sorted(out - set(share_rights.RIGHTS))
    if unknown:
        raise AccountError(f"unknown rights: {', '.join(unknown)}")
    return out


def sharees_of(tx: Transaction, mailbox_ids: Iterable[str]) -> dict[str, dict[int, frozenset[str]]]:
    """Mailbox id -> sharee user id -> rights, for the mailboxes given."""
    ids = sorted(set(mailbox_ids))
    out: dict[str, dict[int, frozenset[str]]] = {}
    if not ids:
        return out
    marks = ", ".join("?" * len(ids))
    for r in tx.query(
        f"SELECT mailbox_id, sharee_user_id, {share_rights.SELECT_COLUMNS} FROM mailbox_shares "
        f"WHERE mailbox_id IN ({marks})",
        ids,
    ):
        out.setdefault(r["mailbox_id"], {})[int(r["sharee_user_id"])] = share_rights.from_row(r)
    return out


def forget_mailbox(tx: Transaction, accounts: Any, account_id: str, mailbox_id: str) -> None:
    """Drop the shares of a mailbox being destroyed (inside its transaction) and tell its sharees: their access
    goes with this transaction; each gets a ShareNotification (rights to none) once it has committed, written
    in a transaction of its own (the owner's account is locked here: locking a sharee's too could deadlock with
    a grant, which locks both in account-id order)."""
    sharees = sharees_of(tx, [mailbox_id]).get(mailbox_id, {})
    if not sharees:
        return
    name = tx.value("SELECT name FROM mailboxes WHERE id = ?", (mailbox_id,))
    tx.execute("DELETE FROM mailbox_shares WHERE mailbox_id = ?", (mailbox_id,))
    owner = _owner(tx, account_id)
    for sharee_user_id in sharees:
        accounts.access_changed(tx, owner, sharee_user_id, False)

    def notify_sharees() -> None:
        for sharee_user_id, rights in sharees.items():
            with accounts.db.transaction() as notes_tx:
                sharee = _user_by_id(notes_tx, sharee_user_id)
                notes = Mutation(notes_tx, sharee.account_id)
                by = {"name": owner.email, "email": owner.email, "principalId": owner.account_id}
                share_notifications.notify(
                    notes, by, "Mailbox", account_id, mailbox_id, rights_json(rights), None, str(name or "")
                )
                notes.finish(ShareNotified(account_id=sharee.account_id))

    tx.after_commit(notify_sharees)


def rights_json(rights: frozenset[str]) -> dict[str, bool] | None:
    """A MailboxRights object (every right named), or None for no share at all."""
    return {r: r in rights for r in share_rights.RIGHTS} if rights else None


def _user_by_id(tx: Transaction, user_id: int) -> User:
    row = tx.one("SELECT id, email, account_id, created_at FROM users WHERE id = ?", (user_id,))
    if row is None:
        raise NotFound(f"no user {user_id}")
    return User(row["id"], row["email"], row["account_id"], row["created_at"])


def _owner(tx: Transaction, account_id: str) -> User:
    row = tx.one("SELECT id, email, account_id, created_at FROM users WHERE account_id = ?", (account_id,))
    if row is None:
        raise NotFound(f"no account {account_id}")
    return User(row["id"], row["email"], row["account_id"], row["created_at"])


class ShareOps:
    """Mixed into MailboxManager (which provides ``db`` and ``accounts``)."""

    db: Any
    accounts: Any

    def share_mailbox(
        self,
        account_id: str,
        mailbox_id: str,
        sharee_user_id: int,
        rights: Iterable[str],
        by_user_id: int | None = None,
    ) -> bool:
        """Share ``mailbox_id`` with the user with exactly ``rights`` (none: revoke), as ``by_user_id`` (default:
        the owner); the sharee gets a ShareNotification. False when nothing changed.

        NotFound for an unknown mailbox or user; Forbidden when sharing with the owner."""
        started = time.monotonic()
        wanted = check_rights(rights)
        with self.db.transaction() as tx:
            sharee = _user_by_id(tx, sharee_user_id)
            if sharee.account_id == account_id:
                raise Forbidden("a mailbox cannot be shared with its owner")
            # Both accounts' change logs are locked, in account-id order (never waiting on each other).
            first, second = sorted((account_id, sharee.account_id))
            held = {first: Mutation(tx, first)}
            held[second] = Mutation(tx, second)
            m, notes = held[account_id], held[sharee.account_id]
            owner = _owner(tx, account_id)
            row = tx.one("SELECT id, name FROM mailboxes WHERE account_id = ? AND id = ?", (account_id, mailbox_id))
            if row is None:
                raise NotFound(f"no mailbox {mailbox_id}")
            before = sharees_of(tx, [mailbox_id]).get(mailbox_id, {}).get(sharee_user_id, frozenset())
            if before == wanted:
                return False
            actor = owner if by_user_id is None or by_user_id == owner.id else _user_by_id(tx, by_user_id)
            share_notifications.notify(
                notes,
                {"name": actor.email, "email": actor.email, "principalId": actor.account_id},
                "Mailbox",
                account_id,
                mailbox_id,
                rights_json(before),
                rights_json(wanted),
                row["name"],
            )
            notes.finish(ShareNotified(account_id=sharee.account_id))
            if not wanted:
                tx.execute(
                    "DELETE FROM mailbox_shares WHERE mailbox_id = ? AND sharee_user_id = ?",
                    (mailbox_id, sharee_user_id),
                )
            else:
                columns = ", ".join(share_rights.COLUMNS.values())
                updates = ", ".join(f"{c} = excluded.{c}" for c in share_rights.COLUMNS.values())
                tx.execute(
                    f"INSERT INTO mailbox_shares (mailbox_id, account_id, sharee_user_id, {columns}, created_at) "
                    f"VALUES (?, ?, ?, {', '.join('?' * len(share_rights.COLUMNS))}, ?) "
                    f"ON CONFLICT (mailbox_id, sharee_user_id) DO UPDATE SET {updates}",
                    (mailbox_id, account_id, sharee_user_id, *share_rights.to_values(wanted), now_ms()),
                )
            rows = tx.query(
                "SELECT m.id, m.thread_id FROM message_mailboxes mm JOIN messages m ON m.id = mm.message_id "
                "WHERE mm.mailbox_id = ?",
                (mailbox_id,),
            )
            m.updated("Mailbox", [mailbox_id])
            m.updated("Email", [r["id"] for r in rows])
            m.updated("Thread", sorted({r["thread_id"] for r in rows}))
            m.finish(
                SharesChanged(
                    account_id=account_id,
                    mailbox_id=mailbox_id,
                    sharee_user_id=sharee_user_id,
                    rights=sorted(wanted),
                )
            )
            self.accounts.access_changed(tx, owner, sharee_user_id, bool(wanted))
        log.info(
            kv(
                event="mailbox_shared" if wanted else "mailbox_unshared",
                account=account_id,
                mailbox=mailbox_id,
                sharee=sharee_user_id,
                rights=",".join(sorted(wanted)) or None,
                emails=len(rows),
                ms=round((time.monotonic() - started) * 1000, 1),
            )
        )
        return True

    def list_shares(self, account_id: str) -> list[Share]:
        """Every share of the account's mailboxes, by mailbox name then sharee."""
        with self.db.read() as tx:
            rows = tx.query(
                f"SELECT s.mailbox_id, b.name, s.sharee_user_id, u.email, {share_rights.SELECT_COLUMNS} "
                "FROM mailbox_shares s JOIN mailboxes b ON b.id = s.mailbox_id "
                "JOIN users u ON u.id = s.sharee_user_id WHERE s.account_id = ? ORDER BY b.name, u.email",
                (account_id,),
            )
        return [
            Share(r["mailbox_id"], r["name"], int(r["sharee_user_id"]), r["email"], share_rights.from_row(r))
            for r in rows
        ]

    def mailbox_sharees(self, account_id: str, mailbox_ids: Iterable[str]) -> dict[str, dict[int, frozenset[str]]]:
        """Mailbox id -> sharee user id -> rights (only the account's mailboxes)."""
        with self.db.read() as tx:
            shares = sharees_of(tx, mailbox_ids)
            if not shares:
                return shares
            marks = ", ".join("?" * len(shares))
            mine = {
                r["id"]
                for r in tx.query(
                    f"SELECT id FROM mailboxes WHERE account_id = ? AND id IN ({marks})", (account_id, *shares)
                )
            }
        return {k: v for k, v in shares.items() if k in mine}

"""The MailboxManager: the only code path that changes mail.

Minimal form: delivery stores the raw message durably (bytes kept exactly)
and returns where it went.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from jmapmono.accounts.users import Accounts, UnknownUser, now_ms
from jmapmono.mailbox.blobs import BlobStore
from jmapmono.store import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivered:
    account_id: str
    message_id: str
    blob_id: str


class MailboxManager:
    def __init__(self, db: Database, blobs: BlobStore, accounts: Accounts) -> None:
        self.db = db
        self.blobs = blobs
        self.accounts = accounts

    def deliver(self, recipient: str, raw: bytes, mailbox_name: str | None = None) -> Delivered:
        """Store ``raw`` for the user ``recipient``; durable when this returns. Raises UnknownUser."""
        user = self.accounts.get(recipient)
        if user is None:
            raise UnknownUser(f"no such user: {recipient}")
        with self.db.transaction() as tx:
            blob_id = self.blobs.store_bytes(tx, raw)
            row = tx.one(
                "INSERT INTO messages (account_id, blob_id, size, received_at, mailbox_name) "
                "VALUES (?, ?, ?, ?, ?) RETURNING id",
                (user.account_id, blob_id, len(raw), now_ms(), mailbox_name or "Inbox"),
            )
            message_id = f"M{row['id']}"
            self.blobs.add_ref(tx, user.account_id, blob_id, f"message:{message_id}", "message/rfc822")
        log.info("event=delivered account=%s message=%s size=%d", user.account_id, message_id, len(raw))
        return Delivered(user.account_id, message_id, blob_id)

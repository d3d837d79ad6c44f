"""Blob storage: content-addressed bytes in the database, readable per account.

A blob's id is ``G`` + the SHA-256 of its bytes, so identical content is kept
once. An account may read a blob only while it holds a reference to it.
"""

from __future__ import annotations

import hashlib

from jmapmono.accounts.users import now_ms
from jmapmono.config import Config
from jmapmono.store import Database, Transaction


def blob_id_for(data: bytes) -> str:
    return "G" + hashlib.sha256(data).hexdigest()


class BlobStore:
    def __init__(self, db: Database, config: Config) -> None:
        self.db = db
        self.config = config

    def put(
        self,
        tx: Transaction,
        account_id: str,
        data: bytes,
        ref: str,
        type: str | None = None,
        expires_at: int | None = None,
    ) -> str:
        """Store ``data`` (once) and give ``account_id`` a reference ``ref`` to it, in ``tx``."""
        blob_id = self.store_bytes(tx, data)
        self.add_ref(tx, account_id, blob_id, ref, type, expires_at)
        return blob_id

    def store_bytes(self, tx: Transaction, data: bytes) -> str:
        """Keep ``data`` (once, whoever refers to it); return its blob id."""
        blob_id = blob_id_for(data)
        tx.execute(
            "INSERT INTO blobs (id, size, data, created_at) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            (blob_id, len(data), data, now_ms()),
        )
        return blob_id

    def add_ref(
        self,
        tx: Transaction,
        account_id: str,
        blob_id: str,
        ref: str,
        type: str | None = None,
        expires_at: int | None = None,
    ) -> None:
        """Let ``account_id`` read ``blob_id`` because of ``ref``."""
        tx.execute(
            "INSERT INTO blob_refs (account_id, blob_id, ref, type, expires_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (account_id, blob_id, ref) DO UPDATE SET expires_at = excluded.expires_at",
            (account_id, blob_id, ref, type, expires_at),
        )

    def get(self, account_id: str, blob_id: str) -> bytes | None:
        """The blob's bytes if ``account_id`` holds a reference to it, else None."""
        with self.db.read() as tx:
            row = tx.one(
                "SELECT b.data FROM blobs b WHERE b.id = ? AND EXISTS "
                "(SELECT 1 FROM blob_refs r WHERE r.blob_id = b.id AND r.account_id = ?)",
                (blob_id, account_id),
            )
        return None if row is None else bytes(row["data"])

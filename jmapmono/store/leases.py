"""Leases: at most one holder of a named task across every process and node on one database.

A periodic job that must run once per cluster (collecting blobs, pruning the change log) takes the
job's lease for about its interval before it runs: the first process to ask in an interval gets it,
the others skip that round. A holder that dies simply lets its lease expire.
"""

from __future__ import annotations

from jmapmono.clock import now_ms
from jmapmono.store.base import Database


def try_acquire(db: Database, name: str, holder: str, seconds: float) -> bool:
    """Take ``name`` for ``seconds`` if it is free or expired (or already ours); True if we hold it now."""
    now = now_ms()
    with db.transaction() as tx:
        row = tx.one(
            "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at "
            "WHERE leases.expires_at <= ? OR leases.holder = excluded.holder RETURNING holder",
            (name, holder, now + int(seconds * 1000), now),
        )
    return row is not None


def release(db: Database, name: str, holder: str) -> None:
    """Give ``name`` back early if we hold it."""
    with db.transaction() as tx:
        tx.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))

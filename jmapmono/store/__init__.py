"""Storage backends. ``load(config)`` opens the configured one and migrates it."""

from __future__ import annotations

from jmapmono.config import Config
from jmapmono.store.base import Database, Row, StoreError, Transaction
from jmapmono.store.migrations import migrate

__all__ = ["Database", "Row", "StoreError", "Transaction", "load", "open_database"]


def open_database(url: str, connect_timeout: float = 5.0) -> Database:
    """Open (without migrating) the database named by ``url``; a call waits at most ``connect_timeout``
    seconds for a connection (Postgres)."""
    if url.startswith("sqlite:"):
        from jmapmono.store.sqlite import SQLiteDatabase

        return SQLiteDatabase(url)
    from jmapmono.store.postgres import PostgresDatabase

    return PostgresDatabase(url, connect_timeout=connect_timeout)


def load(config: Config) -> Database:
    """Open the configured database and bring its schema up to date."""
    db = open_database(config.database_url, config.db_connect_timeout_seconds)
    migrate(db)
    return db

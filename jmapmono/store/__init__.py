"""Storage backends. ``load(config)`` opens the configured one and migrates it."""

from __future__ import annotations

from jmapmono.config import Config
from jmapmono.store.base import Database, Row, StoreError, Transaction
from jmapmono.store.migrations import migrate

__all__ = ["Database", "Row", "StoreError", "Transaction", "load", "open_database"]


def open_database(url: str) -> Database:
    """Open (without migrating) the database named by ``url``."""
    if url.startswith("sqlite:"):
        from jmapmono.store.sqlite import SQLiteDatabase

        return SQLiteDatabase(url)
    from jmapmono.store.postgres import PostgresDatabase

    return PostgresDatabase(url)


def load(config: Config) -> Database:
    """Open the configured database and bring its schema up to date."""
    db = open_database(config.database_url)
    migrate(db)
    return db

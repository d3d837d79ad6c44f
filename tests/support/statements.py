"""Counting the SQL statements a piece of code sends to the store (either backend)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from jmapmono.store.postgres import PostgresTransaction
from jmapmono.store.sqlite import SQLiteTransaction


def count_statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every statement run through a store transaction from now on (the list grows as they run)."""
    sent: list[str] = []
    for cls in (SQLiteTransaction, PostgresTransaction):
        for name in ("execute", "query"):
            real = getattr(cls, name)

            def counting(self, sql, params=(), _real=real):  # type: ignore[no-untyped-def]
                sent.append(sql)
                return _real(self, sql, params)

            monkeypatch.setattr(cls, name, counting)
    return sent


@contextmanager
def alone_only(db, monkeypatch) -> Iterator[list]:
    """The statements run alone inside the block; a read transaction of its own fails the test."""
    statements: list = []
    query_alone, read = db.query_alone, db.read

    def alone(*args):
        statements.append(args)
        monkeypatch.setattr(db, "read", read)  # SQLite's query_alone is a read of its own: allowed there
        try:
            return query_alone(*args)
        finally:
            monkeypatch.setattr(db, "read", refused)

    def refused():
        pytest.fail("a read transaction around the statements (on Postgres, BEGIN and COMMIT: two round trips)")

    monkeypatch.setattr(db, "query_alone", alone)
    monkeypatch.setattr(db, "read", refused)
    try:
        yield statements
    finally:
        monkeypatch.setattr(db, "query_alone", query_alone)
        monkeypatch.setattr(db, "read", read)

"""Counting the SQL statements a piece of code sends to the store (either backend)."""

from __future__ import annotations

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

"""The store interface: transactions over one SQL dialect-neutral API.

Everything above the store writes SQL once, with ``?`` placeholders, in the
subset SQLite and Postgres share (``INSERT … ON CONFLICT``, ``RETURNING``, …).
Each backend translates placeholders and owns its connection discipline; see
docs/adr/0001-store.md.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

log = logging.getLogger(__name__)

Row = dict[str, Any]
Params = Sequence[Any]


class StoreError(Exception):
    """The database could not be reached or refused an operation (temporary)."""


class Transaction(ABC):
    """One database transaction. Never yield to another greenlet while holding it."""

    dialect: str

    def __init__(self) -> None:
        self._after_commit: list[Callable[[], object]] = []
        #: The in-process listeners of the database this transaction runs on (:attr:`Database.local_listeners`).
        self.local_listeners: list[Callable[..., None]] = []

    @abstractmethod
    def execute(self, sql: str, params: Params = ()) -> int:
        """Run a statement; return the number of rows it changed."""

    @abstractmethod
    def query(self, sql: str, params: Params = ()) -> list[Row]:
        """Run a query; return every row as a dict."""

    def one(self, sql: str, params: Params = ()) -> Row | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def value(self, sql: str, params: Params = ()) -> Any:
        row = self.one(sql, params)
        return None if row is None else next(iter(row.values()))

    def after_commit(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` once the transaction has committed (never on rollback); its result is ignored."""
        self._after_commit.append(callback)

    def _run_after_commit(self) -> None:
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # a hook must never undo or hide a committed change
                log.exception("event=after_commit_failed callback=%r", callback)


class Database(ABC):
    """A connection source. ``transaction()`` writes, ``read()`` reads a consistent view."""

    dialect: str
    url: str

    @property
    def local_listeners(self) -> list[Callable[..., None]]:
        """Listeners in this process that writers tell about their commits (the outbox's, for one), kept
        with the database so that each process, and each test's database, has its own."""
        listeners = self.__dict__.get("_local_listeners")
        if listeners is None:
            listeners = self.__dict__["_local_listeners"] = []
        return listeners

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Transaction]:
        """A read-write transaction, committed on normal exit, rolled back on error."""

    @abstractmethod
    def read(self) -> AbstractContextManager[Transaction]:
        """A read-only transaction."""

    @abstractmethod
    def close(self) -> None:
        """Release every connection."""

    def execute_script(self, statements: Sequence[str]) -> None:
        """Run DDL statements in one transaction (used by migrations)."""
        with self.transaction() as tx:
            for statement in statements:
                tx.execute(statement)

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

#: The Postgres channel every serving process listens on (events/doorbell.py) for other processes' commits.
NOTIFY_CHANNEL = "jmapmono_outbox"

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

    def announce_change(self) -> None:
        """Tell the other processes on this database, at commit, that something they may keep in memory
        (a verified login, the accounts a user sees) changed. Nothing to do where :meth:`Database.change_stamp`
        sees other processes' commits by itself."""
        return None

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

    #: Write transactions this process committed (counted after each commit).
    commits: int = 0
    #: Commits of other processes this process was told about (:meth:`note_external_change`).
    external_changes: int = 0

    #: Whether this process hears other processes' commits (its event flow's doorbell listener calls
    #: :meth:`note_external_change`). Until then a backend that cannot see them by itself never reports an
    #: unchanged stamp, so nothing kept under one is trusted.
    hears_others: bool = False

    def note_external_change(self) -> None:
        """Another process committed something (a doorbell rang): stamps taken before are stale."""
        self.external_changes += 1

    def change_stamp(self) -> object:
        """A value that differs whenever a commit may have happened since it was taken, in this process or
        in another. Take it BEFORE reading what is kept under it: what was read is then current as long as
        the stamp is unchanged. Postgres: other processes' commits are heard through the doorbell's NOTIFY
        (a stamp is stale once it arrives); without a listener, every stamp differs from the last."""
        if not self.hears_others:
            return object()
        return (self.commits, self.external_changes)

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Transaction]:
        """A read-write transaction, committed on normal exit, rolled back on error."""

    @abstractmethod
    def read(self) -> AbstractContextManager[Transaction]:
        """A read-only transaction."""

    def query_alone(self, sql: str, params: Params = ()) -> list[Row]:
        """One query on its own: a single statement sees one consistent state by itself, so it needs no
        transaction around it (on Postgres, a transaction's BEGIN and COMMIT are two more round trips).
        Inside a transaction of this thread, it runs in that transaction."""
        with self.read() as tx:
            return tx.query(sql, params)

    @abstractmethod
    def lease_write(self, sql: str, params: Params = ()) -> list[Row]:
        """One write on its own (its rows, if it returns any) that records only bookkeeping whose loss in a
        crash is harmless because the work is then done again: a lease on an outbox row, a group's claim
        of an event or its mark that the event was handled. Its commit need not wait for the disk, and it
        changes nothing the change stamp guards. Inside a transaction of this thread, it runs in that
        transaction."""

    def pooled_connections(self) -> int:
        """Idle connections kept open for reuse (a pool grows with concurrent transactions, up to its size)."""
        return 0

    @abstractmethod
    def close(self) -> None:
        """Release every connection."""

    def execute_script(self, statements: Sequence[str]) -> None:
        """Run DDL statements in one transaction (used by migrations)."""
        with self.transaction() as tx:
            for statement in statements:
                tx.execute(statement)

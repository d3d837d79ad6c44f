"""Postgres backend (psycopg 3), for several nodes sharing one database.

psycopg is cooperative once gevent has patched the process, so transactions
run concurrently on a small pool of connections. SQL arrives with ``?``
placeholders, rewritten to ``$n`` (once per statement text, short ones cached).

Round trips are what a short transaction costs, so the connection runs in
autocommit mode and each transaction starts itself lazily, just before its
first statement: its ``BEGIN`` carries the isolation level (no ``SET
TRANSACTION``), and a transaction that ran no statement sends nothing at all.
A one-query read is thus three round trips (BEGIN, query, COMMIT), not four.
(libpq's pipeline mode would save one more, but a greenlet killed or timed out
inside a pipeline leaves the connection unable to leave it: the failure then
replaces the interruption, and the connection's state is unknown.)
Statements repeated on a connection are prepared by psycopg (after
``prepare_threshold`` uses of the same text), which the fixed ``$n`` texts allow.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import lru_cache

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from jmapmono.store.base import NOTIFY_CHANNEL, Database, Params, Row, StoreError, Transaction

#: An idle connection older than this is pinged before reuse (dead after a database restart).
PING_AFTER_IDLE_S = 1.0
#: Connections for :meth:`PostgresDatabase.lease_write` (one round trip each; their users retry on StoreError).
LEASE_POOL_SIZE = 4


#: Statement texts up to this length are remembered translated (longer ones are multi-row inserts).
_CACHED_SQL_LENGTH = 4096


def _numbered(sql: str) -> str:
    parts = sql.split("?")
    out = [parts[0]]
    for n, part in enumerate(parts[1:], 1):
        out.append(f"${n}{part}")
    return "".join(out)


_numbered_cached = lru_cache(maxsize=2048)(_numbered)


def translate(sql: str) -> str:
    """``?`` placeholders → ``$1``, ``$2``…, sent as they are (psycopg's raw cursor: no client-side parsing
    of the statement, whose cost grows with its parameters: most of a 10,000-row insert otherwise).
    Never put ``?`` in SQL literals."""
    return _numbered_cached(sql) if len(sql) <= _CACHED_SQL_LENGTH else _numbered(sql)


#: How each kind of transaction starts (one statement: no ``SET TRANSACTION`` round trip).
BEGIN_READ = b"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
BEGIN_WRITE = b"BEGIN"
#: The end of a transaction that announces a change (the NOTIFY is part of it: sent at commit, never on rollback).
_NOTIFY_AND_COMMIT = f"NOTIFY {NOTIFY_CHANNEL}; COMMIT".encode()


def _unavailable(e: psycopg.OperationalError) -> StoreError:
    """The database went away: a temporary failure, named by the first line of psycopg's message."""
    return StoreError(f"postgres: {str(e).strip().splitlines()[0]}")


class PostgresTransaction(Transaction):
    dialect = "postgres"

    def __init__(self, conn: psycopg.Connection, begin: bytes = BEGIN_WRITE) -> None:
        super().__init__()
        self.conn = conn
        self.begin = begin
        #: Whether BEGIN was sent (a transaction that ran nothing has nothing to end).
        self.started = False
        #: Whether COMMIT carries the doorbell's NOTIFY (:meth:`announce_change`).
        self.notifies = False
        #: One cursor for every statement of the transaction (a cursor per statement cost ~25 µs of set-up).
        self._cur: psycopg.RawCursor[Row] | None = None

    def _run(self, sql: str, params: Params) -> psycopg.RawCursor[Row]:
        cur = self._cur
        if cur is None:
            cur = self._cur = psycopg.RawCursor(self.conn, row_factory=dict_row)
        if not self.started:
            self.started = True
            cur.execute(self.begin)
        cur.execute(translate(sql), tuple(params))
        return cur

    def execute(self, sql: str, params: Params = ()) -> int:
        return self._run(sql, params).rowcount

    def query(self, sql: str, params: Params = ()) -> list[Row]:
        return self._run(sql, params).fetchall()

    def announce_change(self) -> None:
        """A NOTIFY on the doorbell channel, delivered at commit: every serving process's listener hears it.
        Sent with the COMMIT, in its round trip (one simple-protocol query of two statements)."""
        self.notifies = True

    def end(self, command: bytes) -> None:
        """COMMIT or ROLLBACK, if anything was begun."""
        if self.started:
            self.started = False
            assert self._cur is not None  # made by the first statement
            if self.notifies and command == b"COMMIT":
                command = _NOTIFY_AND_COMMIT
            self._cur.execute(command)
        if self._cur is not None:
            self._cur.close()
            self._cur = None


class ConnectionPool:
    """Autocommit connections to one database, at most ``size`` in use, opened on demand and kept for reuse."""

    def __init__(self, url: str, size: int, connect_timeout: float, options: str = "") -> None:
        self.url = url
        #: Server settings for every connection of this pool (libpq ``options``, added to the URL's own).
        self.options = options
        self.connect_timeout = connect_timeout
        self._idle: list[tuple[psycopg.Connection, float]] = []
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._idle)

    def _connect(self) -> psycopg.Connection:
        conninfo = self.url
        if self.options:
            given = conninfo_to_dict(self.url).get("options")
            conninfo = make_conninfo(self.url, options=f"{given} {self.options}" if given else self.options)
        try:
            return psycopg.connect(conninfo, autocommit=True, connect_timeout=max(1, math.ceil(self.connect_timeout)))
        except psycopg.OperationalError as e:
            raise StoreError(f"postgres: cannot connect: {str(e).strip().splitlines()[0]}") from e

    def acquire(self) -> psycopg.Connection:
        if not self._slots.acquire(timeout=self.connect_timeout):
            raise StoreError(f"postgres: no connection free within {self.connect_timeout:g}s")
        while True:
            with self._lock:
                conn, idle_since = self._idle.pop() if self._idle else (None, 0.0)
            if conn is None:
                break
            if not conn.closed and (time.monotonic() - idle_since < PING_AFTER_IDLE_S or self._alive(conn)):
                return conn
            conn.close()
        try:
            return self._connect()
        except BaseException:
            self._slots.release()
            raise

    @staticmethod
    def _alive(conn: psycopg.Connection) -> bool:
        """Ping a connection that sat idle: after a database restart it is dead until used."""
        try:
            conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def release(self, conn: psycopg.Connection) -> None:
        """Take ``conn`` back; one left inside a transaction or mid-query (an interruption) is closed instead."""
        if not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            with self._lock:
                self._idle.append((conn, time.monotonic()))
        else:
            conn.close()
        self._slots.release()

    def one_statement(self, sql: str, params: Params) -> list[Row]:
        """Run one statement as its own transaction (one round trip)."""
        conn = self.acquire()
        try:
            with psycopg.RawCursor(conn, row_factory=dict_row) as cur:
                cur.execute(translate(sql), tuple(params))
                return cur.fetchall() if cur.description is not None else []
        except psycopg.OperationalError as e:  # the database went away: a temporary failure
            conn.close()
            raise _unavailable(e) from e
        finally:
            self.release(conn)

    def close(self) -> None:
        with self._lock:
            for conn, _ in self._idle:
                conn.close()
            self._idle.clear()


class PostgresDatabase(Database):
    dialect = "postgres"

    def __init__(self, url: str, pool_size: int = 10, connect_timeout: float = 5.0) -> None:
        self.url = url
        self.pool_size = pool_size
        #: The longest a call waits for a connection (a pool slot, then a new connection if none is idle):
        #: while the database is away, requests fail fast (StoreError: 503, LMTP 451) instead of piling up.
        self.connect_timeout = connect_timeout
        self._pool = ConnectionPool(url, pool_size, connect_timeout)
        #: For :meth:`lease_write`: its commits do not wait for the disk (few, as its statements are short).
        self._lease_pool = ConnectionPool(url, LEASE_POOL_SIZE, connect_timeout, "-c synchronous_commit=off")
        self._local = threading.local()
        # Fail fast at start with a clear message when the database is unreachable.
        self._pool.release(self._pool.acquire())

    @contextmanager
    def _tx(self, read_only: bool) -> Iterator[Transaction]:
        current = getattr(self._local, "tx", None)
        if current is not None:  # nested: join the enclosing transaction
            yield current
            return
        conn = self._pool.acquire()
        tx = PostgresTransaction(conn, BEGIN_READ if read_only else BEGIN_WRITE)
        tx.local_listeners = self.local_listeners
        self._local.tx = tx
        try:
            try:
                yield tx
            except BaseException:
                # Whatever interrupted us (an error, a killed greenlet) is what the caller must see,
                # not a failure of the rollback on a connection left mid-query.
                try:
                    tx.end(b"ROLLBACK")
                except psycopg.Error:
                    conn.close()
                raise
            tx.end(b"COMMIT")
            if not read_only:
                self.commits += 1
        except psycopg.OperationalError as e:  # the database went away: a temporary failure
            conn.close()
            raise _unavailable(e) from e
        finally:
            self._local.tx = None
            self._pool.release(conn)
        tx._run_after_commit()

    def transaction(self) -> AbstractContextManager[Transaction]:
        return self._tx(read_only=False)

    def query_alone(self, sql: str, params: Params = ()) -> list[Row]:
        """One round trip: the connection is in autocommit, so the statement is its own transaction."""
        return self._alone(self._pool, sql, params)

    def lease_write(self, sql: str, params: Params = ()) -> list[Row]:
        """One round trip, on a connection whose commits do not wait for the disk (``synchronous_commit``
        off, set when it connects: no statement added)."""
        return self._alone(self._lease_pool, sql, params)

    def _alone(self, pool: ConnectionPool, sql: str, params: Params) -> list[Row]:
        """One statement on a connection of ``pool``, or in this thread's open transaction if there is one."""
        current = getattr(self._local, "tx", None)
        if current is not None:
            return current.query(sql, params)
        return pool.one_statement(sql, params)

    def read(self) -> AbstractContextManager[Transaction]:
        return self._tx(read_only=True)

    def pooled_connections(self) -> int:
        return len(self._pool) + len(self._lease_pool)

    def close(self) -> None:
        self._pool.close()
        self._lease_pool.close()

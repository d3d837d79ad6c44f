"""Postgres backend (psycopg 3), for several nodes sharing one database.

psycopg is cooperative once gevent has patched the process, so transactions
run concurrently on a small pool of connections. SQL arrives with ``?``
placeholders and is translated once per statement text.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import psycopg
from psycopg.rows import dict_row

from jmapmono.store.base import Database, Params, Row, StoreError, Transaction


@lru_cache(maxsize=2048)
def translate(sql: str) -> str:
    """``?`` placeholders → ``%s``; literal ``%`` escaped. Never put ``?`` in SQL literals."""
    return sql.replace("%", "%%").replace("?", "%s")


class PostgresTransaction(Transaction):
    dialect = "postgres"

    def __init__(self, conn: psycopg.Connection) -> None:
        super().__init__()
        self.conn = conn

    def execute(self, sql: str, params: Params = ()) -> int:
        with self.conn.cursor() as cur:
            cur.execute(translate(sql), tuple(params))
            return cur.rowcount

    def query(self, sql: str, params: Params = ()) -> list[Row]:
        with self.conn.cursor(row_factory=dict_row) as cur:
            cur.execute(translate(sql), tuple(params))
            return cur.fetchall()


class PostgresDatabase(Database):
    dialect = "postgres"

    def __init__(self, url: str, pool_size: int = 10) -> None:
        self.url = url
        self.pool_size = pool_size
        self._idle: list[psycopg.Connection] = []
        self._slots = threading.BoundedSemaphore(pool_size)
        self._lock = threading.Lock()
        self._local = threading.local()
        # Fail fast at start with a clear message when the database is unreachable.
        self._release(self._acquire())

    def _connect(self) -> psycopg.Connection:
        try:
            return psycopg.connect(self.url, autocommit=False, connect_timeout=10)
        except psycopg.OperationalError as e:
            raise StoreError(f"postgres: cannot connect: {str(e).strip().splitlines()[0]}") from e

    def _acquire(self) -> psycopg.Connection:
        self._slots.acquire()
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is not None and not conn.closed:
            return conn
        try:
            return self._connect()
        except BaseException:
            self._slots.release()
            raise

    def _release(self, conn: psycopg.Connection) -> None:
        if not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            with self._lock:
                self._idle.append(conn)
        else:
            conn.close()
        self._slots.release()

    @contextmanager
    def _tx(self, read_only: bool) -> Iterator[Transaction]:
        current = getattr(self._local, "tx", None)
        if current is not None:  # nested: join the enclosing transaction
            yield current
            return
        conn = self._acquire()
        tx = PostgresTransaction(conn)
        self._local.tx = tx
        try:
            try:
                if read_only:
                    conn.execute("SET TRANSACTION READ ONLY")
                yield tx
            except BaseException:
                conn.rollback()
                raise
            else:
                conn.commit()
        except psycopg.OperationalError as e:
            conn.close()
            raise StoreError(f"postgres: {str(e).strip().splitlines()[0]}") from e
        finally:
            self._local.tx = None
            self._release(conn)
        tx._run_after_commit()

    def transaction(self):
        return self._tx(read_only=False)

    def read(self):
        return self._tx(read_only=True)

    def close(self) -> None:
        with self._lock:
            for conn in self._idle:
                conn.close()
            self._idle.clear()

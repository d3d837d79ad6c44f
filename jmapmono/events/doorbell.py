"""The doorbell: wakes outbox relays in other processes the moment a writer commits outbox rows.

The LMTP server, the ``deliver`` agent and the CLI commit mail in processes that run no relay (and
are not gevent-patched); the relay of the serving process must learn of their commits at once, not at
its next poll. A ring is only a hint: a lost one costs at most the relay's safety poll (about 1 s),
because the relay always reads what is pending in the database.

- SQLite: every relay binds a Unix datagram socket in a directory beside the database file
  (``<db file>.doorbell/<pid>.<random>``; under the temp directory, keyed by the file's path, when
  that path is too long for a socket address). After each commit that wrote outbox rows, the writer
  sends one non-blocking datagram to every socket there but its own process's (the relay of its own
  process is told in-process, see ``outbox.subscribe``). A socket nobody listens on any more
  (a relay that crashed) refuses the datagram and is removed. Every error is ignored: ringing never
  delays or fails a delivery.
- Postgres: ``NOTIFY jmapmono_outbox`` as part of the writing transaction, sent with its ``COMMIT`` in the
  same round trip (Postgres delivers it at commit,
  drops it on rollback, and folds repeats within one transaction into one) to every relay that
  ``LISTEN``s on that database, on any node, through a dedicated autocommit connection.

The writer side (:func:`ring_after_commit`, :func:`ring`) uses the standard library only, so it is
safe in unpatched and threaded processes; the listener side runs in a gevent process.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import secrets
import socket
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jmapmono.log import kv
from jmapmono.store import Transaction
from jmapmono.store.base import NOTIFY_CHANNEL

log = logging.getLogger("jmapmono.events.doorbell")

#: The Postgres notification channel relays LISTEN on.
CHANNEL = NOTIFY_CHANNEL
#: Longest Unix socket path Linux accepts (sun_path is 108 bytes, NUL-terminated).
_MAX_SOCKET_PATH = 107
#: Length of a socket name in the directory: "<pid up to 7 digits>.<6 hex>".
_NAME_ROOM = 15
_RUNG = "_jmapmono_doorbell_rung"


def doorbell_dir(db_file: str | os.PathLike[str]) -> Path:
    """The directory of relay sockets for the SQLite database at ``db_file`` (same for every process)."""
    real = os.path.realpath(db_file)
    beside = Path(real + ".doorbell")
    if len(str(beside)) + 1 + _NAME_ROOM <= _MAX_SOCKET_PATH:
        return beside
    digest = hashlib.sha256(real.encode()).hexdigest()[:20]
    return Path(tempfile.gettempdir()) / f"jmapmono-doorbell-{digest}"


def _sqlite_file(tx: Transaction) -> str | None:
    """The file of the SQLite database ``tx`` runs on (None for an in-memory one)."""
    for row in tx.query("PRAGMA database_list"):
        if row["name"] == "main":
            return row["file"] or None
    return None


def ring_after_commit(tx: Transaction) -> None:
    """Arrange for other processes' relays to be woken once ``tx`` commits (at most once per transaction).

    Called inside the transaction that writes outbox rows; it never fails that transaction.
    """
    if getattr(tx, _RUNG, False):
        return
    setattr(tx, _RUNG, True)
    if tx.dialect == "postgres":
        tx.announce_change()  # the NOTIFY goes with the COMMIT: delivered at commit, never on rollback
        return
    try:
        db_file = _sqlite_file(tx)
    except Exception:  # the doorbell is a hint; the relay's safety poll still finds the rows
        log.debug("event=doorbell_path_failed", exc_info=True)
        return
    if db_file:
        tx.after_commit(lambda: ring(db_file))


def ring(db_file: str | os.PathLike[str]) -> int:
    """Send one datagram to every relay of the database at ``db_file`` but this process's; return how many
    were sent. Never blocks, never raises."""
    try:
        directory = doorbell_dir(db_file)
        names = os.listdir(directory)
    except OSError:
        return 0  # no relay ever listened on this database
    own = f"{os.getpid()}."
    sent = 0
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    except OSError:
        return 0
    try:
        sock.setblocking(False)
        for name in names:
            if name.startswith(own) or name.startswith("."):
                continue
            path = str(directory / name)
            try:
                sock.sendto(b"!", path)
                sent += 1
            except ConnectionRefusedError:  # nobody bound: a relay that died; names are never reused
                _remove_stale(path)
            except OSError:
                pass  # buffer full (that relay is awake anyway), permission, gone meanwhile
    finally:
        sock.close()
    return sent


def _remove_stale(path: str) -> None:
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass


class SQLiteDoorbell:
    """A relay's listening socket for one SQLite database: calls ``wake`` on every ring (gevent process)."""

    def __init__(self, db_file: str | os.PathLike[str], wake: Callable[[], None]) -> None:
        self.db_file = os.path.realpath(db_file)
        self.wake = wake
        self.path: Path | None = None
        self._sock: socket.socket | None = None
        self._greenlet: Any = None

    def start(self) -> None:
        import gevent

        directory = doorbell_dir(self.db_file)
        directory.mkdir(mode=0o755, exist_ok=True)
        self.path = directory / f"{os.getpid()}.{secrets.token_hex(3)}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(str(self.path))
            # Whoever may write the database (and so commit outbox rows) may ring.
            os.chmod(self.path, stat.S_IMODE(os.stat(self.db_file).st_mode) | stat.S_IRUSR | stat.S_IWUSR)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._greenlet = gevent.spawn(self._listen)
        log.info(kv(event="doorbell_listening", kind="unix", path=self.path))

    def _listen(self) -> None:
        sock = self._sock
        assert sock is not None
        while True:
            try:
                sock.recv(64)  # a burst of rings folds into one relay pass: waking only sets an event
            except OSError as e:
                if e.errno == errno.EBADF:
                    return
                log.warning(kv(event="doorbell_receive_failed", error=str(e)))
                import gevent

                gevent.sleep(0.1)
                continue
            self.wake()

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=1)
            self._greenlet = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self.path is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass


class PostgresDoorbell:
    """``LISTEN jmapmono_outbox`` on its own autocommit connection: ``wake`` on every notification, and
    once after each (re)connection (commits made while it was away rang nobody)."""

    RECONNECT_MAX = 5.0

    def __init__(self, url: str, wake: Callable[[], None]) -> None:
        self.url = url
        self.wake = wake
        self._greenlet: Any = None
        self._conn: Any = None
        self._stopping = False
        self.connections = 0

    def start(self) -> None:
        import gevent

        self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        import gevent
        import psycopg

        delay = 0.1
        while not self._stopping:
            started = time.monotonic()
            try:
                self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
                self._conn.execute(f"LISTEN {CHANNEL}")
                self.connections += 1
                log.info(
                    kv(
                        event="doorbell_listening",
                        kind="postgres",
                        channel=CHANNEL,
                        ms=round((time.monotonic() - started) * 1000, 1),
                    )
                )
                delay = 0.1
                self.wake()
                for _ in self._conn.notifies():
                    self.wake()
            except psycopg.Error as e:
                if self._stopping:
                    return
                log.warning(kv(event="doorbell_disconnected", kind="postgres", error=str(e).strip().splitlines()[0]))
            finally:
                self._close()
            gevent.sleep(delay)
            delay = min(delay * 2, self.RECONNECT_MAX)

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                log.debug("event=doorbell_close_failed", exc_info=True)

    def stop(self) -> None:
        self._stopping = True
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=1)
            self._greenlet = None
        self._close()


def listener_for(db: Any, wake: Callable[[], None]) -> SQLiteDoorbell | PostgresDoorbell:
    """The doorbell listener suited to ``db`` (a :class:`jmapmono.store.Database`)."""
    if db.dialect == "sqlite":
        return SQLiteDoorbell(db.path, wake)
    return PostgresDoorbell(db.url, wake)

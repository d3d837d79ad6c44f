"""Blob storage: content-addressed bytes in the database, readable per account (RFC 8620 §6).

A stored blob's id is ``G`` + the SHA-256 of its bytes, so identical content is
kept once, whoever stores it. Rows in ``blob_refs`` say who may read a blob and
why; a blob with no reference left is garbage.

The reference contract (every caller must follow it):

- Anything that keeps a blob adds its OWN reference, in the same transaction
  that stores the bytes or creates the holder: ``add_ref(tx, account_id,
  blob_id, ref)`` with a ``ref`` naming the holder, e.g. ``message:<id>`` or
  ``draft-attachment:<id>``, and ``expires_at=None`` (durable). It drops that
  reference (``remove_ref``) when the holder goes away. Never rely on another
  holder's reference, and never store bytes in one transaction and reference
  them in a later one: :meth:`BlobStore.collect_garbage` frees every blob that
  no reference holds.
- Uploads and ``Blob/copy`` results are held by ``upload:<user id>`` references
  that expire ``config.upload_ttl_seconds`` after the (last) upload. Until
  something durable references the blob, only that user may read it, even in a
  shared account (RFC 8620 §6.1).

Blob ids that are not stored blobs (body parts of messages) are served by
:attr:`BlobStore.resolvers`, consulted in order when an id is not readable here.

Downloads stream: :meth:`BlobStore.open` checks access once and then reads a stored blob
:data:`DOWNLOAD_SLICE` octets at a time, each slice in a short read transaction of its own (SQLite through
incremental blob I/O, which reads only the slice's pages; Postgres with ``substr``), so a download holds
one slice in memory and no transaction while the client reads.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass

import gevent
import psycopg

from jmapmono.clock import now_ms as _now_ms
from jmapmono.config import Config
from jmapmono.log import kv
from jmapmono.store import Database, Transaction, multirow
from jmapmono.store.sqlite import SQLiteTransaction

log = logging.getLogger(__name__)

#: JMAP ids: 1–255 characters of the URL- and filename-safe base64 alphabet (RFC 8620 §1.2).
BLOB_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
UPLOAD_REF_PREFIX = "upload:"
#: Octets of a stored blob read at a time while it streams (the memory one download holds).
DOWNLOAD_SLICE = 1 << 20
_INTEGRITY_ERRORS = (sqlite3.IntegrityError, psycopg.IntegrityError)


#: Blob ids per statement of :meth:`BlobStore.read_stored`.
READ_MANY_CHUNK = 100


def blob_id_for(data: bytes) -> str:
    return "G" + hashlib.sha256(data).hexdigest()


def upload_ref(user_id: int) -> str:
    """The reference an upload (or a Blob/copy) by ``user_id`` holds."""
    return f"{UPLOAD_REF_PREFIX}{user_id}"


def is_valid_blob_id(blob_id: object) -> bool:
    return isinstance(blob_id, str) and BLOB_ID_RE.match(blob_id) is not None


@dataclass(frozen=True)
class BlobMeta:
    """A readable blob without its bytes: enough to answer an upload or a conditional GET."""

    blob_id: str
    size: int
    #: The media type recorded by whoever holds the blob (an upload's Content-Type), if any.
    type: str | None


@dataclass(frozen=True)
class BlobContent:
    blob_id: str
    data: bytes
    type: str | None = None
    #: A file name the holder knows for the blob (a body part's filename), if any.
    name: str | None = None

    @property
    def size(self) -> int:
        return len(self.data)


class BlobGone(Exception):
    """A blob being streamed was deleted before its end (collected after its last reference went)."""


@dataclass(frozen=True)
class BlobReader:
    """A readable blob opened for streaming: size and type at once, the octets slice by slice."""

    blob_id: str
    size: int
    type: str | None
    name: str | None
    #: ``read(offset, length)`` → up to ``length`` octets from ``offset``; empty or None when gone.
    read: Callable[[int, int], "bytes | None"]

    def chunks(self, start: int = 0, end: int | None = None, piece: int = DOWNLOAD_SLICE) -> Iterator[bytes]:
        """Octets ``start``..``end`` (exclusive) in pieces of at most ``piece``; BlobGone if they end early."""
        offset, end = start, self.size if end is None else end
        while offset < end:
            data = self.read(offset, min(piece, end - offset))
            if not data:
                raise BlobGone(self.blob_id)
            offset += len(data)
            yield data


#: ``resolver(account_id, blob_id, user_id)`` → the blob's content when this resolver knows the id and the
#: account (and user, when not None) may read it, else None. Used for ids that are not stored blobs.
Resolver = Callable[[str, str, "int | None"], "BlobContent | None"]


class BlobStore:
    def __init__(self, db: Database, config: Config) -> None:
        self.db = db
        self.config = config
        #: Consulted, in order, for blob ids that are not stored blobs readable by the account.
        self.resolvers: list[Resolver] = []

    # -- writing (inside the caller's transaction) -------------------------------------------------------------

    def put(
        self,
        tx: Transaction,
        account_id: str,
        data: bytes,
        ref: str,
        type: str | None = None,
        expires_at: int | None = None,
    ) -> str:
        """Store ``data`` (once) and give ``account_id`` a reference ``ref`` to it, in ``tx``."""
        blob_id = self.store_bytes(tx, data)
        self.add_ref(tx, account_id, blob_id, ref, type, expires_at)
        return blob_id

    def store_bytes(self, tx: Transaction, data: bytes) -> str:
        """Keep ``data`` (once, whoever refers to it); return its blob id.

        On an existing blob the upsert changes nothing but locks the row (Postgres), so a concurrent
        garbage collection cannot delete it before this transaction's reference lands.
        """
        return self._store(tx, blob_id_for(data), data)

    def _store(self, tx: Transaction, blob_id: str, data: bytes) -> str:
        tx.execute(
            "INSERT INTO blobs (id, size, data, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET size = excluded.size WHERE blobs.size <> excluded.size",
            (blob_id, len(data), data, _now_ms()),
        )
        return blob_id

    def add_ref(
        self,
        tx: Transaction,
        account_id: str,
        blob_id: str,
        ref: str,
        type: str | None = None,
        expires_at: int | None = None,
    ) -> None:
        """Let ``account_id`` read ``blob_id`` because of ``ref`` (again: renews expiry, keeps a known type)."""
        tx.execute(
            "INSERT INTO blob_refs (account_id, blob_id, ref, type, expires_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (account_id, blob_id, ref) DO UPDATE SET expires_at = excluded.expires_at, "
            "type = COALESCE(excluded.type, blob_refs.type)",
            (account_id, blob_id, ref, type, expires_at),
        )

    def store_many(self, tx: Transaction, blobs: Mapping[str, bytes]) -> None:
        """:meth:`store_bytes` for many blobs, several per statement. ``blobs`` maps each blob id to its bytes
        (hashed by the caller, outside the transaction, with :func:`blob_id_for`)."""
        at = _now_ms()
        multirow.insert(
            tx,
            "INSERT INTO blobs (id, size, data, created_at)",
            [(blob_id, len(data), data, at) for blob_id, data in blobs.items()],
            "ON CONFLICT (id) DO UPDATE SET size = excluded.size WHERE blobs.size <> excluded.size",
        )

    def add_refs(self, tx: Transaction, account_id: str, refs: Iterable[tuple[str, str, str | None]]) -> None:
        """:meth:`add_ref` (durable) for many ``(blob id, ref, type)``, several per statement."""
        merged: dict[tuple[str, str], str | None] = {}
        for blob_id, ref, type in refs:  # one row per key in a statement: the same outcome as one by one
            merged[(blob_id, ref)] = type if type is not None else merged.get((blob_id, ref))
        multirow.insert(
            tx,
            "INSERT INTO blob_refs (account_id, blob_id, ref, type, expires_at)",
            [(account_id, blob_id, ref, type, None) for (blob_id, ref), type in merged.items()],
            "ON CONFLICT (account_id, blob_id, ref) DO UPDATE SET expires_at = excluded.expires_at, "
            "type = COALESCE(excluded.type, blob_refs.type)",
        )

    def remove_ref(self, tx: Transaction, account_id: str, blob_id: str, ref: str) -> bool:
        """Drop one reference (the holder went away); the bytes go at the next collection if nothing else holds
        them. True if the reference existed."""
        return bool(
            tx.execute(
                "DELETE FROM blob_refs WHERE account_id = ? AND blob_id = ? AND ref = ?", (account_id, blob_id, ref)
            )
        )

    # -- uploads and copies -------------------------------------------------------------------------------------

    def upload_expiry(self, now: int | None = None) -> int:
        """When an upload made at ``now`` may be collected if nothing references it."""
        return (_now_ms() if now is None else now) + self.config.upload_ttl_seconds * 1000

    def upload(self, account_id: str, user_id: int, data: bytes, type: str) -> BlobMeta:
        """Store an upload for ``user_id`` in ``account_id``; re-uploading the same bytes renews the expiry."""
        blob_id = blob_id_for(data)  # hashing outside the transaction: never block writers for it
        with self.db.transaction() as tx:
            self._store(tx, blob_id, data)
            self.add_ref(tx, account_id, blob_id, upload_ref(user_id), type, self.upload_expiry())
        return BlobMeta(blob_id, len(data), type)

    def copy(
        self, from_account_id: str, to_account_id: str, user_id: int, blob_ids: Iterable[str]
    ) -> tuple[dict[str, str], list[str]]:
        """Copy blobs readable by ``user_id`` in ``from_account_id`` into ``to_account_id``, held there like an
        upload by that user. Returns ({old id: new id}, [ids not found]).

        Stored blobs keep their id (content addresses); resolved ids (body parts) are stored and get the
        content address of their bytes.
        """
        found: dict[str, BlobMeta] = {}
        resolved: dict[str, tuple[str, BlobContent]] = {}
        missing: list[str] = []
        for blob_id in dict.fromkeys(blob_ids):
            meta = self.lookup(from_account_id, blob_id, user_id) if is_valid_blob_id(blob_id) else None
            if meta is not None:
                found[blob_id] = meta
                continue
            content = self._resolve(from_account_id, blob_id, user_id) if is_valid_blob_id(blob_id) else None
            if content is None:
                missing.append(blob_id)
            else:
                resolved[blob_id] = (blob_id_for(content.data), content)
        copied: dict[str, str] = {}
        if not found and not resolved:
            return copied, missing
        expires_at = self.upload_expiry()
        ref = upload_ref(user_id)
        with self.db.transaction() as tx:
            for blob_id, meta in found.items():
                # Re-checked inside the write transaction: the source may have been collected meanwhile.
                if self._lookup(tx, from_account_id, blob_id, user_id) is None:
                    missing.append(blob_id)
                    continue
                self.add_ref(tx, to_account_id, blob_id, ref, meta.type, expires_at)
                copied[blob_id] = blob_id
            for blob_id, (new_id, content) in resolved.items():
                self._store(tx, new_id, content.data)
                self.add_ref(tx, to_account_id, new_id, ref, content.type, expires_at)
                copied[blob_id] = new_id
        return copied, missing

    # -- reading ------------------------------------------------------------------------------------------------

    def lookup(self, account_id: str, blob_id: str, user_id: int | None = None) -> BlobMeta | None:
        """A stored blob's size and type if ``account_id`` may read it (and ``user_id``, when given: another
        user's unreferenced uploads are not readable). Resolvers are not consulted."""
        with self.db.read() as tx:
            return self._lookup(tx, account_id, blob_id, user_id)

    def _lookup(self, tx: Transaction, account_id: str, blob_id: str, user_id: int | None) -> BlobMeta | None:
        sql = (
            "SELECT b.size, r.ref, r.type FROM blobs b JOIN blob_refs r ON r.blob_id = b.id "
            "WHERE b.id = ? AND r.account_id = ?"
        )
        params: list[object] = [blob_id, account_id]
        if user_id is not None:
            sql += " AND (r.ref NOT LIKE 'upload:%' OR r.ref = ?)"
            params.append(upload_ref(user_id))
        rows = tx.query(sql, params)
        if not rows:
            return None
        own = upload_ref(user_id) if user_id is not None else None
        # Prefer the type this user uploaded it with, then any type a holder recorded.
        rows.sort(key=lambda r: (r["ref"] != own, r["type"] is None, r["ref"]))
        return BlobMeta(blob_id, int(rows[0]["size"]), rows[0]["type"])

    def read(
        self, account_id: str, blob_id: str, user_id: int | None = None, *, resolve: bool = True
    ) -> BlobContent | None:
        """The blob's bytes and type if readable by ``account_id`` (and ``user_id``), else None.

        ``resolve=False`` reads stored blobs only (a resolver reading the blob its id derives from uses it).
        """
        if not is_valid_blob_id(blob_id):
            return None
        with self.db.read() as tx:
            meta = self._lookup(tx, account_id, blob_id, user_id)
            data = tx.value("SELECT data FROM blobs WHERE id = ?", (blob_id,)) if meta else None
        if meta is not None and data is not None:
            return BlobContent(blob_id, bytes(data), meta.type)
        return self._resolve(account_id, blob_id, user_id) if resolve else None

    def read_stored(self, account_id: str, blob_ids: Iterable[str]) -> dict[str, bytes]:
        """The bytes of each stored blob of ``blob_ids`` that ``account_id`` holds a reference to (the others are
        left out), in one query per chunk: what Email/get reads for a page of emails. Resolvers are not consulted.
        One chunk is one statement alone (no transaction around it: on Postgres one round trip, not three)."""
        wanted = sorted({b for b in blob_ids if is_valid_blob_id(b)})
        found: dict[str, bytes] = {}
        with nullcontext() if len(wanted) <= READ_MANY_CHUNK else self.db.read():
            for start in range(0, len(wanted), READ_MANY_CHUNK):
                chunk = wanted[start : start + READ_MANY_CHUNK]
                rows = self.db.query_alone(  # in the transaction above when there is one
                    f"SELECT b.id, b.data FROM blobs b WHERE b.id IN ({', '.join('?' * len(chunk))}) "
                    "AND EXISTS (SELECT 1 FROM blob_refs r WHERE r.blob_id = b.id AND r.account_id = ?)",
                    (*chunk, account_id),
                )
                for row in rows:
                    found[row["id"]] = bytes(row["data"])
        return found

    def open(self, account_id: str, blob_id: str, user_id: int | None = None) -> BlobReader | None:
        """The blob opened for streaming if readable by ``account_id`` (and ``user_id``), else None. A stored
        blob is read slice by slice as it is consumed; a resolved one (a body part) is decoded at once."""
        if not is_valid_blob_id(blob_id):
            return None
        meta = self.lookup(account_id, blob_id, user_id)
        if meta is not None:
            stored = blob_id
            return BlobReader(blob_id, meta.size, meta.type, None, lambda offset, n: self.read_range(stored, offset, n))
        content = self._resolve(account_id, blob_id, user_id)
        if content is None:
            return None
        data = content.data
        return BlobReader(blob_id, len(data), content.type, content.name, lambda offset, n: data[offset : offset + n])

    def read_range(self, blob_id: str, offset: int, length: int) -> bytes | None:
        """Up to ``length`` octets of stored blob ``blob_id`` from ``offset``, whoever holds it (callers check
        access first); None when there is no such blob."""
        with self.db.read() as tx:
            if isinstance(tx, SQLiteTransaction):
                row = tx.one("SELECT rowid AS rid, size FROM blobs WHERE id = ?", (blob_id,))
                if row is None:
                    return None
                if offset >= row["size"] or length <= 0:
                    return b""
                # substr() would load the whole value for every slice: incremental I/O reads only these pages.
                with tx.conn.blobopen("blobs", "data", row["rid"], readonly=True) as blob:
                    blob.seek(offset)
                    return blob.read(length)
            data = tx.value(
                "SELECT substr(data, CAST(? AS INTEGER), CAST(? AS INTEGER)) FROM blobs WHERE id = ?",
                (offset + 1, max(length, 0), blob_id),
            )
        return None if data is None else bytes(data)

    def _resolve(self, account_id: str, blob_id: str, user_id: int | None) -> BlobContent | None:
        for resolver in self.resolvers:
            content = resolver(account_id, blob_id, user_id)
            if content is not None:
                return content
        return None

    def get(self, account_id: str, blob_id: str) -> bytes | None:
        """The blob's bytes if ``account_id`` holds a reference to it (or a resolver knows it), else None."""
        content = self.read(account_id, blob_id)
        return None if content is None else content.data

    # -- collection ---------------------------------------------------------------------------------------------

    def collect_garbage(self, now_ms: int | None = None, batch_size: int = 500) -> int:
        """Drop expired upload references, then delete the blobs nothing references; return how many were freed.

        Works in batches of ``batch_size``, one short transaction each, yielding to other greenlets between
        batches (SQLite blocks the whole process while a statement runs).
        """
        started = time.monotonic()
        now = _now_ms() if now_ms is None else now_ms
        refs_dropped = 0
        while True:
            with self.db.transaction() as tx:
                n = tx.execute(
                    "DELETE FROM blob_refs WHERE expires_at IS NOT NULL AND expires_at <= ? "
                    "AND (account_id, blob_id, ref) IN (SELECT account_id, blob_id, ref FROM blob_refs "
                    "WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT ?)",
                    (now, now, batch_size),
                )
            refs_dropped += n
            gevent.sleep(0)
            if n < batch_size:
                break
        freed = freed_bytes = 0
        after = ""
        while True:
            with self.db.read() as tx:
                page = tx.query(
                    "SELECT b.id, CASE WHEN EXISTS (SELECT 1 FROM blob_refs r WHERE r.blob_id = b.id) "
                    "THEN 1 ELSE 0 END AS used FROM blobs b WHERE b.id > ? ORDER BY b.id LIMIT ?",
                    (after, batch_size),
                )
            if not page:
                break
            after = page[-1]["id"]
            orphans = [r["id"] for r in page if not r["used"]]
            if orphans:
                n, size = self._delete_unreferenced(orphans)
                freed += n
                freed_bytes += size
            gevent.sleep(0)
            if len(page) < batch_size:
                break
        log.info(
            kv(
                event="blob_gc",
                refs_expired=refs_dropped,
                blobs_freed=freed,
                bytes_freed=freed_bytes,
                ms=f"{(time.monotonic() - started) * 1000:.1f}",
            )
        )
        return freed

    def _delete_unreferenced(self, blob_ids: list[str]) -> tuple[int, int]:
        """Delete those of ``blob_ids`` still unreferenced; (count, bytes). A blob that something else keeps
        through a foreign key (a holder breaking the reference contract) is skipped and logged, never lost."""
        try:
            return self._delete_batch(blob_ids)
        except _INTEGRITY_ERRORS:
            pass
        freed = size = 0
        for blob_id in blob_ids:
            try:
                n, s = self._delete_batch([blob_id])
            except _INTEGRITY_ERRORS:
                log.warning(kv(event="blob_gc_skipped", blob=blob_id, reason="held without a blob_refs row"))
                continue
            freed += n
            size += s
        return freed, size

    def _delete_batch(self, blob_ids: list[str]) -> tuple[int, int]:
        marks = ", ".join("?" for _ in blob_ids)
        unreferenced = f"id IN ({marks}) AND NOT EXISTS (SELECT 1 FROM blob_refs r WHERE r.blob_id = blobs.id)"
        with self.db.transaction() as tx:
            rows = tx.query(f"DELETE FROM blobs WHERE {unreferenced} RETURNING size", blob_ids)
        return len(rows), sum(int(r["size"]) for r in rows)

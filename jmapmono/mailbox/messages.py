"""Message mutations inside one operation's transaction: append, update (keywords and
mailboxes), destroy. Called only by the MailboxManager, which owns the transaction
and the :class:`~jmapmono.mailbox.mutation.Mutation` they report their changes to.
Appends are prepared (:func:`prepare`) before the transaction and written many rows
per statement (:func:`append_all`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from jmapmono.clock import now_ms
from jmapmono.mailbox import search, threads
from jmapmono.mailbox.blobs import BlobStore, blob_id_for
from jmapmono.mailbox.model import (
    Appended,
    InvalidProperties,
    MailboxError,
    NotFound,
    is_unread,
    new_id,
)
from jmapmono.mailbox.mutation import Mutation
from jmapmono.store import Transaction, multirow

CHUNK = 400
_MAX_SEARCH_TEXT = 256 * 1024


def marks(n: int) -> str:
    return ", ".join("?" * n)


def chunks(items: list, size: int = CHUNK) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True)
class Summary:
    """What is kept of a parsed message (from ``mime.parse_message``, or a fallback)."""

    size: int
    subject: str | None = None
    base_subject: str = ""
    sent_at: int | None = None
    addresses: dict[str, list[dict]] = field(default_factory=dict)
    message_ids: list[str] = field(default_factory=list)
    in_reply_to: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    preview: str = ""
    has_attachment: bool = False
    problems: list[str] = field(default_factory=list)
    search_text: str = ""


@dataclass
class Current:
    """A stored message's mutable state, as loaded for an update or a destroy."""

    thread_id: str
    received_at: int
    blob_id: str
    size: int = 0
    keywords: set[str] = field(default_factory=set)
    mailboxes: set[str] = field(default_factory=set)


def existing_mailboxes(tx: Transaction, account_id: str, ids: Iterable[str]) -> set[str]:
    ids = sorted(set(ids))
    found: set[str] = set()
    for chunk in chunks(ids):
        rows = tx.query(
            f"SELECT id FROM mailboxes WHERE account_id = ? AND id IN ({marks(len(chunk))})", (account_id, *chunk)
        )
        found |= {r["id"] for r in rows}
    return found


def load(tx: Transaction, account_id: str, ids: Iterable[str]) -> dict[str, Current]:
    """The current keywords and mailboxes of the account's messages among ``ids``."""
    out: dict[str, Current] = {}
    for chunk in chunks(sorted(set(ids))):
        m = marks(len(chunk))
        for r in tx.query(
            f"SELECT id, thread_id, received_at, blob_id, size FROM messages WHERE account_id = ? AND id IN ({m})",
            (account_id, *chunk),
        ):
            out[r["id"]] = Current(r["thread_id"], int(r["received_at"]), r["blob_id"], int(r["size"]))
        for r in tx.query(f"SELECT message_id, keyword FROM message_keywords WHERE message_id IN ({m})", chunk):
            if r["message_id"] in out:
                out[r["message_id"]].keywords.add(r["keyword"])
        for r in tx.query(f"SELECT message_id, mailbox_id FROM message_mailboxes WHERE message_id IN ({m})", chunk):
            if r["message_id"] in out:
                out[r["message_id"]].mailboxes.add(r["mailbox_id"])
    return out


def _insert_keywords(tx: Transaction, message_id: str, keywords: Iterable[str]) -> None:
    keywords = sorted(keywords)
    if keywords:
        params = [v for k in keywords for v in (message_id, k)]
        tx.execute(f"INSERT INTO message_keywords (message_id, keyword) VALUES {marks_rows(len(keywords), 2)}", params)


def _insert_memberships(tx: Transaction, message_id: str, current: Current, mailboxes: Iterable[str]) -> None:
    mailboxes = sorted(mailboxes)
    if mailboxes:
        params = [v for mb in mailboxes for v in (message_id, mb, current.received_at, current.thread_id)]
        tx.execute(
            "INSERT INTO message_mailboxes (message_id, mailbox_id, received_at, thread_id) VALUES "
            + marks_rows(len(mailboxes), 4),
            params,
        )


def marks_rows(rows: int, width: int) -> str:
    return ", ".join(["(" + marks(width) + ")"] * rows)


@dataclass(frozen=True)
class Prepared:
    """A new message's rows as far as they do not depend on the database: computed before the transaction
    (hashing, threading keys, JSON, search index), so that the transaction only writes."""

    raw: bytes
    blob_id: str
    keys: threads.ThreadKeys
    #: The ``messages`` columns from ``sent_at`` to ``problems_json`` (see :data:`_MESSAGE_COLUMNS`).
    columns: tuple[Any, ...]
    index: search.IndexRow


@dataclass(frozen=True)
class NewEntry:
    """One message to append: what was prepared, and where it goes."""

    prepared: Prepared
    mailboxes: set[str]
    keywords: frozenset[str]
    received_at: int


_MESSAGE_COLUMNS = (
    "id, account_id, blob_id, thread_id, size, received_at, sent_at, subject, from_json, sender_json, to_json, "
    "cc_json, bcc_json, reply_to_json, message_id_json, in_reply_to_json, references_json, preview, "
    "has_attachment, problems_json, created_at"
)


def prepare(raw: bytes, summary: Summary, dialect: str, search_languages: tuple[str, ...] | None = None) -> Prepared:
    """Everything about ``raw`` that the append writes and that does not need the database (``search_languages``:
    those its body is stemmed in, None for the detected one)."""
    a = summary.addresses
    columns = (
        summary.sent_at,
        summary.subject,
        *(_json(a.get(k, [])) for k in ("from", "sender", "to", "cc", "bcc", "reply_to")),
        _json(summary.message_ids),
        _json(summary.in_reply_to),
        _json(summary.references),
        summary.preview[:256],
        1 if summary.has_attachment else 0,
        _json(summary.problems),
    )
    return Prepared(
        raw,
        blob_id_for(raw),
        threads.keys_for(summary.message_ids, summary.in_reply_to, summary.references, summary.base_subject),
        columns,
        search.index_row(raw, summary, summary.search_text[:_MAX_SEARCH_TEXT], dialect, search_languages),
    )


def append_all(
    tx: Transaction, m: Mutation, blobs: BlobStore, entries: list[NewEntry], delivery: bool
) -> list[Appended]:
    """Store messages, in order (bytes, header summary, thread, keywords, memberships, search text),
    many rows per statement: the same rows, threads, counts and changes as appending them one by one."""
    if not entries:
        return []
    account_id = m.account_id
    new = [(new_id("M"), e) for e in entries]
    blobs.store_many(tx, {e.prepared.blob_id: e.prepared.raw for e in entries})
    blobs.add_refs(tx, account_id, [(e.prepared.blob_id, f"message:{i}", "message/rfc822") for i, e in new])
    threaded = threads.assign_many(tx, account_id, [(i, e.prepared.keys) for i, e in new])
    created_at = now_ms()
    rows, keywords, memberships = [], [], []
    for (message_id, e), (thread_id, _) in zip(new, threaded, strict=True):
        p = e.prepared
        rows.append((message_id, account_id, p.blob_id, thread_id, len(p.raw), e.received_at, *p.columns, created_at))
        keywords += [(message_id, k) for k in sorted(e.keywords)]
        memberships += [(message_id, mb, e.received_at, thread_id) for mb in sorted(e.mailboxes)]
    multirow.insert(tx, f"INSERT INTO messages ({_MESSAGE_COLUMNS})", rows)
    multirow.insert(tx, "INSERT INTO message_keywords (message_id, keyword)", keywords)
    multirow.insert(tx, "INSERT INTO message_mailboxes (message_id, mailbox_id, received_at, thread_id)", memberships)
    search.index_messages(tx, account_id, [(i, e.prepared.index) for i, e in new])
    out = []
    for (message_id, e), (thread_id, new_thread) in zip(new, threaded, strict=True):
        m.counts.message(thread_id, e.mailboxes, is_unread(e.keywords), +1)
        m.usage(len(e.prepared.raw), 1)
        m.created("Email", [message_id])
        (m.created if new_thread else m.updated)("Thread", [thread_id])
        if delivery:
            m.created("EmailDelivery", [message_id])
        out.append(Appended(message_id, e.prepared.blob_id, thread_id, len(e.prepared.raw), e.received_at))
    return out


_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # json.dumps would build one per call


def _json(value: Any) -> str:
    return "[]" if value == [] else _JSON.encode(value)


@dataclass
class Change:
    """A resolved change to one message: the keyword and mailbox sets after it."""

    keywords: set[str]
    mailboxes: set[str]


def update(tx: Transaction, m: Mutation, current: dict[str, Current], wanted: dict[str, Change]) -> dict[str, Any]:
    """Apply resolved changes; return ``{"flags": [...], "moves": [...], "errors": {...}, "updated": [...]}``."""
    known = existing_mailboxes(tx, m.account_id, {mb for c in wanted.values() for mb in c.mailboxes})
    flags: list[dict] = []
    moves: list[dict] = []
    errors: dict[str, MailboxError] = {}
    done: list[str] = []
    for message_id, change in wanted.items():
        cur = current.get(message_id)
        if cur is None:
            errors[message_id] = NotFound(f"no email {message_id}")
            continue
        if not change.mailboxes:
            errors[message_id] = InvalidProperties("an email must be in at least one mailbox", ["mailboxIds"])
            continue
        if not change.mailboxes <= known:
            missing = sorted(change.mailboxes - known)
            errors[message_id] = InvalidProperties(f"no mailbox {', '.join(missing)}", ["mailboxIds"])
            continue
        added_k, removed_k = change.keywords - cur.keywords, cur.keywords - change.keywords
        added_m, removed_m = change.mailboxes - cur.mailboxes, cur.mailboxes - change.mailboxes
        for chunk in chunks(sorted(removed_k)):
            tx.execute(
                f"DELETE FROM message_keywords WHERE message_id = ? AND keyword IN ({marks(len(chunk))})",
                (message_id, *chunk),
            )
        _insert_keywords(tx, message_id, added_k)
        for chunk in chunks(sorted(removed_m)):
            tx.execute(
                f"DELETE FROM message_mailboxes WHERE message_id = ? AND mailbox_id IN ({marks(len(chunk))})",
                (message_id, *chunk),
            )
        _insert_memberships(tx, message_id, cur, added_m)
        if added_k or removed_k or added_m or removed_m:
            m.counts.message(cur.thread_id, cur.mailboxes, is_unread(cur.keywords), -1)
            m.counts.message(cur.thread_id, change.mailboxes, is_unread(change.keywords), +1)
            m.updated("Email", [message_id])
        if added_k or removed_k:
            flags.append({"id": message_id, "old": sorted(cur.keywords), "new": sorted(change.keywords)})
        if added_m or removed_m:
            moves.append({"id": message_id, "old": sorted(cur.mailboxes), "new": sorted(change.mailboxes)})
        cur.keywords, cur.mailboxes = set(change.keywords), set(change.mailboxes)
        done.append(message_id)
    return {"flags": flags, "moves": moves, "errors": errors, "updated": done}


def destroy(tx: Transaction, m: Mutation, blobs: BlobStore, current: dict[str, Current]) -> list[dict]:
    """Destroy the loaded messages; return [{"id", "threadId", "mailboxIds"}] of what went."""
    ids = sorted(current)
    for chunk in chunks(ids):
        mk = marks(len(chunk))
        for table in ("message_keywords", "message_mailboxes", "message_search"):
            tx.execute(f"DELETE FROM {table} WHERE message_id IN ({mk})", chunk)
        tx.execute(f"DELETE FROM messages WHERE id IN ({mk})", chunk)
    threads.forget(tx, ids)
    gone: list[dict] = []
    for message_id in ids:
        cur = current[message_id]
        blobs.remove_ref(tx, m.account_id, cur.blob_id, f"message:{message_id}")
        m.counts.message(cur.thread_id, cur.mailboxes, is_unread(cur.keywords), -1)
        m.usage(-cur.size, -1)
        gone.append({"id": message_id, "threadId": cur.thread_id, "mailboxIds": sorted(cur.mailboxes)})
    m.destroyed("Email", ids)
    thread_ids = sorted({c.thread_id for c in current.values()})
    alive: set[str] = set()
    for chunk in chunks(thread_ids):
        rows = tx.query(f"SELECT DISTINCT thread_id FROM messages WHERE thread_id IN ({marks(len(chunk))})", chunk)
        alive |= {r["thread_id"] for r in rows}
    m.updated("Thread", [t for t in thread_ids if t in alive])
    m.destroyed("Thread", [t for t in thread_ids if t not in alive])
    return gone

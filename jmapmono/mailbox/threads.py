"""Thread assignment from Message-ID, In-Reply-To, References and the base subject.

Every message leaves one ``thread_keys`` row per id it names (its own Message-ID and
every id it refers to) together with a key of its base subject (RFC 5256). A new
message joins the thread of the oldest row that shares one of its ids AND its base
subject: so a reply joins its parent's thread, a parent arriving after its reply
joins the reply's, and two replies to a message we never saw join each other. A
message with a matching id but another subject, or with no known id at all, starts a
thread of its own. Thread ids never change (RFC 8621), so threads are never merged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from jmapmono.mailbox.model import new_id
from jmapmono.store import Transaction, multirow

#: At most this many referenced ids count (the nearest ancestors: the end of References).
MAX_REFERENCES = 50
_MAX_ID_LENGTH = 500


@dataclass(frozen=True)
class ThreadKeys:
    ids: tuple[str, ...]
    subject: str


def subject_key(base_subject: str | None) -> str:
    """A short key of the base subject: case and runs of white space do not matter."""
    text = " ".join((base_subject or "").casefold().split())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def keys_for(
    message_ids: Iterable[str], in_reply_to: Iterable[str], references: Iterable[str], base_subject: str | None
) -> ThreadKeys:
    """The keys a message is threaded by (ids cleaned of ``<>`` and white space, deduplicated)."""
    refs = list(references)[-MAX_REFERENCES:]
    ids: dict[str, None] = {}
    for raw in [*message_ids, *in_reply_to, *refs]:
        cleaned = str(raw).strip().strip("<>").strip()
        if cleaned:
            ids[cleaned[:_MAX_ID_LENGTH]] = None
    return ThreadKeys(tuple(ids), subject_key(base_subject))


def _first_rows(tx: Transaction, account_id: str, wanted: set[tuple[str, str]]) -> dict[tuple[str, str], tuple]:
    """For each wanted (subject, msgid) with stored rows: ((0, id of its oldest row), that row's thread id)."""
    found: dict[tuple[str, str], tuple] = {}
    for chunk in multirow.in_chunks(msgid for _, msgid in wanted):
        rows = tx.query(
            "SELECT id, msgid, subject, thread_id FROM thread_keys WHERE id IN (SELECT MIN(id) FROM thread_keys "
            f"WHERE account_id = ? AND msgid IN ({multirow.marks(len(chunk))}) GROUP BY msgid, subject)",
            (account_id, *chunk),
        )
        for r in rows:
            key = (r["subject"], r["msgid"])
            if key in wanted:
                found[key] = ((0, int(r["id"])), r["thread_id"])
    return found


def assign_many(tx: Transaction, account_id: str, items: list[tuple[str, ThreadKeys]]) -> list[tuple[str, bool]]:
    """Thread new messages, in order, as if each were assigned after the one before it had been stored;
    return (thread id, whether the thread is new) of each.

    One lookup of the stored keys for all of them, then the rule applied in memory: a message joins
    the thread of the oldest row sharing its subject and one of its ids, stored rows being older than
    the rows of this batch, and those older in the order of the batch. The rows are then inserted in
    that order, so that later lookups see the same oldest rows.
    """
    wanted = {(keys.subject, msgid) for _, keys in items for msgid in keys.ids}
    first = _first_rows(tx, account_id, wanted) if wanted else {}
    out: list[tuple[str, bool]] = []
    rows: list[tuple[str, str, str, str, str]] = []
    for n, (message_id, keys) in enumerate(items):
        matches = [first[(keys.subject, msgid)] for msgid in keys.ids if (keys.subject, msgid) in first]
        thread_id = min(matches)[1] if matches else new_id("T")
        for msgid in keys.ids:
            first.setdefault((keys.subject, msgid), ((1, n), thread_id))
            rows.append((account_id, msgid, keys.subject, thread_id, message_id))
        out.append((thread_id, not matches))
    multirow.insert(tx, "INSERT INTO thread_keys (account_id, msgid, subject, thread_id, message_id)", rows)
    return out


def forget(tx: Transaction, message_ids: list[str]) -> None:
    """Drop the keys of destroyed messages (a later message no longer joins through them)."""
    for start in range(0, len(message_ids), 500):
        chunk = message_ids[start : start + 500]
        tx.execute(f"DELETE FROM thread_keys WHERE message_id IN ({', '.join('?' * len(chunk))})", chunk)

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
from jmapmono.store import Transaction

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


def find(tx: Transaction, account_id: str, keys: ThreadKeys) -> str | None:
    """The thread a message with ``keys`` belongs to, if one is known."""
    if not keys.ids:
        return None
    marks = ", ".join("?" * len(keys.ids))
    return tx.value(
        f"SELECT thread_id FROM thread_keys WHERE account_id = ? AND subject = ? AND msgid IN ({marks}) "
        "ORDER BY id LIMIT 1",
        (account_id, keys.subject, *keys.ids),
    )


def assign(tx: Transaction, account_id: str, message_id: str, keys: ThreadKeys) -> tuple[str, bool]:
    """Thread the new message ``message_id``; return (thread id, whether the thread is new)."""
    thread_id = find(tx, account_id, keys)
    is_new = thread_id is None
    if thread_id is None:
        thread_id = new_id("T")
    if keys.ids:
        params: list[object] = []
        for msgid in keys.ids:
            params += [account_id, msgid, keys.subject, thread_id, message_id]
        tx.execute(
            "INSERT INTO thread_keys (account_id, msgid, subject, thread_id, message_id) VALUES "
            + ", ".join(["(?, ?, ?, ?, ?)"] * len(keys.ids)),
            params,
        )
    return thread_id, is_new


def forget(tx: Transaction, message_ids: list[str]) -> None:
    """Drop the keys of destroyed messages (a later message no longer joins through them)."""
    for start in range(0, len(message_ids), 500):
        chunk = message_ids[start : start + 500]
        tx.execute(f"DELETE FROM thread_keys WHERE message_id IN ({', '.join('?' * len(chunk))})", chunk)

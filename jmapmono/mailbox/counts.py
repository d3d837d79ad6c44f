"""Maintained mailbox counts: totalEmails, unreadEmails, totalThreads, unreadThreads.

``mailbox_threads`` keeps, per (mailbox, thread), how many of the thread's emails are in
the mailbox and how many of those are unread; the four counters on ``mailboxes`` move
by the emails deltas and by the 0 <-> 1 transitions of those rows. Reading counts is
one primary-key lookup whatever the size of the mailbox; every mutation applies its
deltas in its own transaction, so counts always agree with the memberships.

unreadThreads is RFC 8621's "simplest" definition: threads with an unread email in
this mailbox. :func:`recount` recomputes everything from the memberships (checks).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from jmapmono.mailbox.model import Counts
from jmapmono.store import Transaction, multirow

_CHUNK = 400


class CountDeltas:
    """Per (mailbox, thread): change in emails and in unread emails, gathered during a mutation."""

    def __init__(self) -> None:
        self.deltas: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        #: The counts each mailbox had after its last update here (the event carries them: no read-back).
        self.after: dict[str, Counts] = {}

    def add(self, mailbox_id: str, thread_id: str, emails: int, unread: int) -> None:
        d = self.deltas[(mailbox_id, thread_id)]
        d[0] += emails
        d[1] += unread

    def message(self, thread_id: str, mailbox_ids: Iterable[str], unread: bool, sign: int) -> None:
        """A message (with its unread state) enters (+1) or leaves (-1) ``mailbox_ids``."""
        for mailbox_id in mailbox_ids:
            self.add(mailbox_id, thread_id, sign, sign if unread else 0)

    def apply(self, tx: Transaction) -> set[str]:
        """Apply the deltas to ``mailbox_threads`` and the counters; return the mailboxes whose counts moved."""
        by_mailbox: dict[str, dict[str, list[int]]] = defaultdict(dict)
        for (mailbox_id, thread_id), (emails, unread) in self.deltas.items():
            if emails or unread:
                by_mailbox[mailbox_id][thread_id] = [emails, unread]
        changed: set[str] = set()
        for mailbox_id, threads in sorted(by_mailbox.items()):
            totals = [0, 0, 0, 0]
            current: dict[str, tuple[int, int]] = {}
            for chunk in multirow.in_chunks(threads):
                rows = tx.query(
                    "SELECT thread_id, emails, unread FROM mailbox_threads WHERE mailbox_id = ? AND thread_id IN "
                    f"({multirow.marks(len(chunk))})",
                    (mailbox_id, *chunk),
                )
                current.update({r["thread_id"]: (int(r["emails"]), int(r["unread"])) for r in rows})
            emptied: list[str] = []
            rows_after: list[tuple[str, str, int, int]] = []
            for thread_id in sorted(threads):
                emails, unread = threads[thread_id]
                old_e, old_u = current.get(thread_id, (0, 0))
                new_e, new_u = old_e + emails, old_u + unread
                if new_e < 0 or new_u < 0 or new_u > new_e:
                    raise AssertionError(f"mailbox {mailbox_id} thread {thread_id}: counts would be {new_e}/{new_u}")
                if new_e == 0:
                    emptied.append(thread_id)
                else:
                    rows_after.append((mailbox_id, thread_id, new_e, new_u))
                totals[0] += emails
                totals[1] += unread
                totals[2] += (new_e > 0) - (old_e > 0)
                totals[3] += (new_u > 0) - (old_u > 0)
            for chunk in multirow.in_chunks(emptied):
                tx.execute(
                    f"DELETE FROM mailbox_threads WHERE mailbox_id = ? AND thread_id IN ({multirow.marks(len(chunk))})",
                    (mailbox_id, *chunk),
                )
            multirow.insert(
                tx,
                "INSERT INTO mailbox_threads (mailbox_id, thread_id, emails, unread)",
                rows_after,
                "ON CONFLICT (mailbox_id, thread_id) DO UPDATE SET emails = excluded.emails, unread = excluded.unread",
            )
            if any(totals):
                row = tx.one(
                    "UPDATE mailboxes SET total_emails = total_emails + ?, unread_emails = unread_emails + ?, "
                    "total_threads = total_threads + ?, unread_threads = unread_threads + ? WHERE id = ? "
                    "RETURNING total_emails, unread_emails, total_threads, unread_threads",
                    (*totals, mailbox_id),
                )
                if row is not None:
                    self.after[mailbox_id] = Counts(
                        row["total_emails"], row["unread_emails"], row["total_threads"], row["unread_threads"]
                    )
                changed.add(mailbox_id)
        self.deltas.clear()
        return changed


def read(tx: Transaction, mailbox_ids: Iterable[str]) -> dict[str, Counts]:
    """The maintained counts of ``mailbox_ids`` (missing mailboxes are left out)."""
    ids = list(mailbox_ids)
    out: dict[str, Counts] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        for r in tx.query(
            "SELECT id, total_emails, unread_emails, total_threads, unread_threads FROM mailboxes "
            f"WHERE id IN ({', '.join('?' * len(chunk))})",
            chunk,
        ):
            out[r["id"]] = Counts(r["total_emails"], r["unread_emails"], r["total_threads"], r["unread_threads"])
    return out


def recount(tx: Transaction, mailbox_id: str) -> Counts:
    """The four counts computed from the memberships and keywords alone (slow; for checks and repair)."""
    row = tx.one(
        "SELECT COUNT(*) AS total, "
        "COALESCE(SUM(CASE WHEN NOT EXISTS (SELECT 1 FROM message_keywords k WHERE k.message_id = mm.message_id "
        "AND k.keyword IN ('$seen', '$draft')) THEN 1 ELSE 0 END), 0) AS unread, "
        "COUNT(DISTINCT mm.thread_id) AS threads, "
        "COUNT(DISTINCT CASE WHEN NOT EXISTS (SELECT 1 FROM message_keywords k WHERE k.message_id = mm.message_id "
        "AND k.keyword IN ('$seen', '$draft')) THEN mm.thread_id END) AS unread_threads "
        "FROM message_mailboxes mm WHERE mm.mailbox_id = ?",
        (mailbox_id,),
    )
    assert row is not None  # an aggregate without GROUP BY returns one row
    return Counts(int(row["total"]), int(row["unread"]), int(row["threads"]), int(row["unread_threads"]))

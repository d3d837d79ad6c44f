"""Reads of the mail model for the JMAP layer: mailboxes with counts, messages, threads, states.

Each read is one read transaction, states included, so a state token always describes
the data returned with it (or something older, which ``*/changes`` then catches up).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from jmapmono.mailbox import changes
from jmapmono.mailbox.messages import CHUNK, chunks, marks
from jmapmono.mailbox.model import Counts, Mailbox, Message
from jmapmono.store import Transaction

_MAILBOX_COLUMNS = (
    "m.id, m.account_id, m.name, m.parent_id, m.role, m.sort_order, m.created_at, "
    "m.total_emails, m.unread_emails, m.total_threads, m.unread_threads"
)


def _mailbox(r: dict, subscribed: bool | None) -> Mailbox:
    counts = Counts(r["total_emails"], r["unread_emails"], r["total_threads"], r["unread_threads"])
    return Mailbox(
        r["id"],
        r["account_id"],
        r["name"],
        r["parent_id"],
        r["role"],
        r["sort_order"],
        r["created_at"],
        counts,
        subscribed,
    )


#: Whether ``user_id`` (the parameter) subscribed to the row's mailbox, as a column.
_SUBSCRIBED = "EXISTS (SELECT 1 FROM mailbox_subscriptions s WHERE s.user_id = ? AND s.mailbox_id = m.id) AS subscribed"


def _mailboxes_query(account_id: str, user_id: int | None, with_state: bool = False) -> tuple[str, tuple]:
    """The account's mailbox rows, with ``subscribed`` for ``user_id`` and the Mailbox state if asked."""
    columns, params = [_MAILBOX_COLUMNS], list[object]()  # parameters in the order of their ``?``
    if user_id is not None:
        columns.append(_SUBSCRIBED)
        params.append(user_id)
    if with_state:
        columns.append(changes.state_column("Mailbox"))
        params.append(account_id)
    return f"SELECT {', '.join(columns)} FROM mailboxes m WHERE m.account_id = ?", (*params, account_id)


def _mailboxes(rows: list[dict], ids: Iterable[str] | None, user_id: int | None) -> list[Mailbox]:
    if ids is not None:
        wanted = set(ids)
        rows = [r for r in rows if r["id"] in wanted]
    out = [_mailbox(r, None if user_id is None else bool(r["subscribed"])) for r in rows]
    return sorted(out, key=lambda mb: (mb.sort_order, mb.name.casefold(), mb.id))


def read_mailboxes(
    tx: Transaction, account_id: str, ids: Iterable[str] | None = None, user_id: int | None = None
) -> list[Mailbox]:
    """The account's mailboxes (all, or those of ``ids`` that exist), sorted by sortOrder then name."""
    return _mailboxes(tx.query(*_mailboxes_query(account_id, user_id)), ids, user_id)


#: Each dialect's aggregate of a column into a JSON array (text), for a message's keywords and mailboxes.
_JSON_ARRAY = {"sqlite": "json_group_array({})", "postgres": "json_agg({})::text"}


def _messages_sql(dialect: str, count: int, with_state: bool = False) -> str:
    """Messages among ``count`` ids with their keywords and mailboxes aggregated beside each row (parameters:
    [the account id, if ``with_state``], the account id, the ids)."""
    agg = _JSON_ARRAY[dialect]
    return (
        f"SELECT {changes.state_column('Email') + ', ' if with_state else ''}m.*,"
        f" (SELECT {agg.format('k.keyword')} FROM message_keywords k WHERE k.message_id = m.id) AS keywords_json,"
        f" (SELECT {agg.format('b.mailbox_id')} FROM message_mailboxes b WHERE b.message_id = m.id)"
        f" AS mailboxes_json FROM messages m WHERE m.account_id = ? AND m.id IN ({marks(count)})"
    )


def read_messages(tx: Transaction, account_id: str, ids: Iterable[str]) -> dict[str, Message]:
    """The account's messages among ``ids`` (missing ones are left out), keywords and mailboxes included.

    One statement per chunk of ids (each message's keywords and mailboxes aggregated beside its row): on
    Postgres each statement is a round trip, and ``Email/get`` is mostly this."""
    out: dict[str, Message] = {}
    for chunk in chunks(sorted(set(ids))):
        for r in tx.query(_messages_sql(tx.dialect, len(chunk)), (account_id, *chunk)):
            out[r["id"]] = _message(r)
    return out


#: The JSON columns of a message row, decoded together: one ``json.loads`` per row, not ten.
_JSON_COLUMNS = (
    "from_json",
    "sender_json",
    "to_json",
    "cc_json",
    "bcc_json",
    "reply_to_json",
    "message_id_json",
    "in_reply_to_json",
    "references_json",
)


def _message(r: dict[str, Any]) -> Message:
    fields = [r[c] for c in _JSON_COLUMNS]
    fields += (r["problems_json"] or "[]", r["keywords_json"] or "[]", r["mailboxes_json"] or "[]")
    (
        from_,
        sender,
        to,
        cc,
        bcc,
        reply_to,
        message_id,
        in_reply_to,
        references,
        problems,
        keywords,
        mailboxes,
    ) = json.loads("[" + ",".join(fields) + "]")
    return Message(
        id=r["id"],
        account_id=r["account_id"],
        blob_id=r["blob_id"],
        thread_id=r["thread_id"],
        size=int(r["size"]),
        received_at=int(r["received_at"]),
        sent_at=r["sent_at"],
        subject=r["subject"],
        from_=from_,
        sender=sender,
        to=to,
        cc=cc,
        bcc=bcc,
        reply_to=reply_to,
        message_id=message_id,
        in_reply_to=in_reply_to,
        references=references,
        preview=r["preview"],
        has_attachment=bool(r["has_attachment"]),
        keywords=frozenset(keywords),
        mailbox_ids=frozenset(mailboxes),
        problems=tuple(problems),
    )


def read_threads(tx: Transaction, account_id: str, thread_ids: Iterable[str]) -> dict[str, list[str]]:
    """Thread id -> its email ids, oldest received first (threads with no email are left out)."""
    out: dict[str, list[str]] = {}
    for chunk in chunks(sorted(set(thread_ids))):
        for r in tx.query(
            f"SELECT thread_id, id FROM messages WHERE account_id = ? AND thread_id IN ({marks(len(chunk))}) "
            "ORDER BY thread_id, received_at, id",
            (account_id, *chunk),
        ):
            out.setdefault(r["thread_id"], []).append(r["id"])
    return out


class Reads:
    """Mixed into MailboxManager (which provides ``db``): each method reads with its state."""

    db: Any

    def get_mailboxes(
        self, account_id: str, ids: Iterable[str] | None = None, user_id: int | None = None
    ) -> tuple[list[Mailbox], str]:
        """Mailboxes (with counts, and ``is_subscribed`` for ``user_id``) and the Mailbox state: one statement
        alone (it sees one snapshot by itself; on Postgres one round trip instead of five)."""
        rows = self.db.query_alone(*_mailboxes_query(account_id, user_id, with_state=True))
        if rows:  # else no row carries the state: read it below
            return _mailboxes(rows, ids, user_id), changes.column_state(rows[0])
        with self.db.read() as tx:
            state = changes.state(tx, account_id, "Mailbox")
            return read_mailboxes(tx, account_id, ids, user_id), state

    def mailbox_by_role(self, account_id: str, role: str) -> Mailbox | None:
        with self.db.read() as tx:
            found = [mb for mb in read_mailboxes(tx, account_id) if mb.role == role]
        return found[0] if found else None

    def get_messages(self, account_id: str, ids: Iterable[str]) -> tuple[dict[str, Message], str]:
        """Messages by id and the Email state: one statement alone when the ids fit in one (no transaction
        needed, the statement sees one snapshot: on Postgres one round trip instead of four)."""
        wanted = sorted(set(ids))
        if 0 < len(wanted) <= CHUNK:
            sql = _messages_sql(self.db.dialect, len(wanted), with_state=True)
            rows = self.db.query_alone(sql, (account_id, account_id, *wanted))
            if rows:  # else no row carries the state: read it below
                return {r["id"]: _message(r) for r in rows}, changes.column_state(rows[0])
        with self.db.read() as tx:
            state = changes.state(tx, account_id, "Email")
            return read_messages(tx, account_id, wanted), state

    def find_by_message_id(self, account_id: str, message_id: str) -> str | None:
        """The newest message of the account whose Message-ID is ``message_id`` (no angle brackets), if any:
        the threading keys find the candidates (they also hold the ids a message refers to)."""
        with self.db.read() as tx:
            rows = tx.query(
                "SELECT m.id, m.message_id_json FROM thread_keys k JOIN messages m ON m.id = k.message_id "
                "WHERE k.account_id = ? AND k.msgid = ? ORDER BY m.received_at DESC, m.id DESC LIMIT 50",
                (account_id, message_id),
            )
        return next((r["id"] for r in rows if message_id in json.loads(r["message_id_json"])), None)

    def get_all_messages(self, account_id: str, limit: int) -> tuple[dict[str, Message] | None, str]:
        """Every message of the account and the Email state; None for the messages when there are over ``limit``."""
        with self.db.read() as tx:
            state = changes.state(tx, account_id, "Email")
            rows = tx.query("SELECT id FROM messages WHERE account_id = ? ORDER BY id LIMIT ?", (account_id, limit + 1))
            if len(rows) > limit:
                return None, state
            return read_messages(tx, account_id, [r["id"] for r in rows]), state

    def get_threads(self, account_id: str, thread_ids: Iterable[str]) -> tuple[dict[str, list[str]], str]:
        """Thread id -> email ids (oldest first), and the Thread state."""
        with self.db.read() as tx:
            state = changes.state(tx, account_id, "Thread")
            return read_threads(tx, account_id, thread_ids), state

    def get_all_threads(self, account_id: str, limit: int) -> tuple[dict[str, list[str]] | None, str]:
        """Every thread of the account (as :meth:`get_threads`), None when there are more than ``limit``; the state."""
        with self.db.read() as tx:
            state = changes.state(tx, account_id, "Thread")
            rows = tx.query(
                "SELECT DISTINCT thread_id FROM messages WHERE account_id = ? LIMIT ?", (account_id, limit + 1)
            )
            if len(rows) > limit:
                return None, state
            return read_threads(tx, account_id, [r["thread_id"] for r in rows]), state

    def states(self, account_id: str) -> dict[str, str]:
        with self.db.read() as tx:
            return changes.states(tx, account_id)

    def blob_visible(self, account_id: str, blob_id: str, mailbox_ids: Iterable[str], user_id: int) -> bool:
        """Whether ``blob_id`` is the user's own upload in the account, or the blob of an email of the account
        in one of ``mailbox_ids``."""
        wanted = sorted(set(mailbox_ids))
        with self.db.read() as tx:
            refs = [
                r["ref"]
                for r in tx.query(
                    "SELECT ref FROM blob_refs WHERE blob_id = ? AND account_id = ?", (blob_id, account_id)
                )
            ]
            if f"upload:{user_id}" in refs:
                return True
            ids = [ref[len("message:") :] for ref in refs if ref.startswith("message:")]
            if not ids or not wanted:
                return False
            return (
                tx.one(
                    f"SELECT 1 AS found FROM message_mailboxes WHERE message_id IN ({marks(len(ids))}) "
                    f"AND mailbox_id IN ({marks(len(wanted))}) LIMIT 1",
                    (*ids, *wanted),
                )
                is not None
            )

    def visible_messages(self, account_id: str, ids: Iterable[str], mailbox_ids: Iterable[str]) -> set[str]:
        """Those of ``ids`` that are emails of the account in one of ``mailbox_ids``."""
        return self._in_mailboxes(account_id, "id", ids, mailbox_ids)

    def visible_threads(self, account_id: str, thread_ids: Iterable[str], mailbox_ids: Iterable[str]) -> set[str]:
        """Those of ``thread_ids`` holding an email of the account in one of ``mailbox_ids``."""
        return self._in_mailboxes(account_id, "thread_id", thread_ids, mailbox_ids)

    def _in_mailboxes(
        self, account_id: str, column: str, values: Iterable[str], mailbox_ids: Iterable[str]
    ) -> set[str]:
        """Those of ``values`` of ``messages.<column>`` with an email of the account in one of ``mailbox_ids``."""
        wanted = sorted(set(mailbox_ids))
        found: set[str] = set()
        if not wanted:
            return found
        with self.db.read() as tx:
            for chunk in chunks(sorted(set(values))):
                found.update(
                    r["found"]
                    for r in tx.query(
                        f"SELECT DISTINCT m.{column} AS found FROM messages m JOIN message_mailboxes mm "
                        f"ON mm.message_id = m.id WHERE m.account_id = ? AND m.{column} IN ({marks(len(chunk))}) "
                        f"AND mm.mailbox_id IN ({marks(len(wanted))})",
                        (account_id, *chunk, *wanted),
                    )
                )
        return found

"""The change log and per-type states: what JMAP ``*/changes`` pages over.

Per account, one counter row (``account_changes``) is locked by the first statement of
every mutating transaction (:func:`lock`), so on Postgres the writers of one account
are serialised and sequence order is commit order; SQLite serialises every writer
anyway. Each change row takes the next number of that counter (no gaps, no rollback
holes), and ``change_states`` holds each type's state: the sequence number of its last
change. A state token is that number in base 36, so every sequence number is a state
(paging can stop anywhere) and the token a ``/set`` returns is at once answerable by
``/changes``, since both are written in the mutating transaction.

EmailDelivery is logged like any type (one row per delivered message), which keeps the
sequence gap-free and its state moving only on delivery.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from jmapmono.clock import now_ms
from jmapmono.config import Config
from jmapmono.log import kv
from jmapmono.store import Database, Row, Transaction, multirow

log = logging.getLogger(__name__)

#: Data types whose changes the log keeps (state-only ones included).
TYPES = (
    "Mailbox",
    "Email",
    "Thread",
    "EmailDelivery",
    "Identity",
    "EmailSubmission",
    "VacationResponse",
    "Quota",
    "SieveScript",
    "ShareNotification",
)
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
_BATCH = 500
#: The account's last sequence number and one type's state and pruning point (parameters: the account id, the
#: account id and the type): one row, NULLs where nothing was recorded yet.
_HEAD = (
    "SELECT (SELECT last FROM account_changes WHERE account_id = ?) AS last, s.state AS state, "
    "s.pruned_through AS pruned FROM (SELECT 1 AS one) o "
    "LEFT JOIN change_states s ON s.account_id = ? AND s.type = ?"
)
#: The head and the first batch of the type's log after a sequence number up to its state, in order (parameters:
#: the head's, then the account id, the type, the sequence number and the batch size): the head on every row,
#: one row of NULL log columns when the log has nothing in the window.
_HEAD_AND_FIRST_BATCH = (
    f"SELECT h.last, h.state, h.pruned, l.seq, l.object_id, l.kind, l.count_only FROM ({_HEAD}) h "
    "LEFT JOIN change_log l ON l.account_id = ? AND l.type = ? AND l.seq > ? AND l.seq <= h.state "
    "ORDER BY l.seq LIMIT ?"
)


class CannotCalculateChanges(Exception):
    """The state is unknown, in the future, or older than what the log still holds."""


@dataclass(frozen=True)
class Changes:
    old_state: str
    new_state: str
    has_more_changes: bool
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    destroyed: list[str] = field(default_factory=list)
    #: True when every change in the window only moved counts (Mailbox updatedProperties).
    count_only_updates: bool = False


def token(seq: int) -> str:
    """The state token of sequence number ``seq`` (base 36)."""
    if seq == 0:
        return "0"
    out = []
    while seq:
        seq, r = divmod(seq, 36)
        out.append(_DIGITS[r])
    return "".join(reversed(out))


def parse_token(state: object) -> int | None:
    """The sequence number behind a token, or None when it is not one of ours."""
    if not isinstance(state, str) or not 0 < len(state) <= 13 or any(c not in _DIGITS for c in state):
        return None
    if len(state) > 1 and state[0] == "0":
        return None
    return int(state, 36)


def _check_type(type: str) -> None:
    if type not in TYPES:
        raise ValueError(f"unknown change-log type {type!r}")


def lock(tx: Transaction, account_id: str) -> int:
    """Lock ``account_id``'s counter for the rest of ``tx`` (serialises its writers); return the last seq."""
    sql = "UPDATE account_changes SET last = last WHERE account_id = ? RETURNING last"
    row = tx.one(sql, (account_id,))
    if row is None:
        tx.execute(
            "INSERT INTO account_changes (account_id, last) VALUES (?, 0) ON CONFLICT (account_id) DO NOTHING",
            (account_id,),
        )
        row = tx.one(sql, (account_id,))
    assert row is not None  # the row exists now (inserted, or by a concurrent writer)
    return int(row["last"])


@dataclass(frozen=True)
class Batch:
    """The changes of one type in one operation (see :func:`record`)."""

    type: str
    created: Iterable[str] = ()
    updated: Iterable[str] = ()
    destroyed: Iterable[str] = ()
    count_only: bool | Iterable[str] = ()

    def rows(self) -> list[tuple[str, str, int]]:
        """(object id, kind, count-only flag) in log order; an id created here is not also 'updated'."""
        created = list(dict.fromkeys(self.created))
        skip = set(created)
        rows: list[tuple[str, str, int]] = [(i, "c", 0) for i in created]
        flag = 1 if self.count_only is True else 0
        updated = [i for i in dict.fromkeys(self.updated) if i not in skip]
        rows += [(i, "u", flag) for i in updated]
        if not isinstance(self.count_only, bool):
            skip |= set(updated)
            rows += [(i, "u", 1) for i in dict.fromkeys(self.count_only) if i not in skip]
        rows += [(i, "d", 0) for i in dict.fromkeys(self.destroyed)]
        return rows


def record(
    tx: Transaction,
    account_id: str,
    type: str,
    created: Iterable[str] = (),
    updated: Iterable[str] = (),
    destroyed: Iterable[str] = (),
    count_only: bool | Iterable[str] = (),
) -> str | None:
    """Log changes of one type inside the mutating ``tx``; return the type's new state (None if nothing).

    ``count_only`` is True when every id in ``updated`` changed only in its counts, or the
    ids (beside ``updated``) whose only change was their counts.
    """
    return record_all(tx, account_id, [Batch(type, created, updated, destroyed, count_only)]).get(type)


def record_all(tx: Transaction, account_id: str, batches: Iterable[Batch]) -> dict[str, str]:
    """Log the changes of several types at once (one counter update); return each changed type's new state."""
    rows: list[tuple[str, str, str, int]] = []
    for batch in batches:
        _check_type(batch.type)
        rows += [(batch.type, oid, kind, only) for oid, kind, only in batch.rows()]
    if not rows:
        return {}
    bump = "UPDATE account_changes SET last = last + ? WHERE account_id = ? RETURNING last"
    last = tx.value(bump, (len(rows), account_id))
    if last is None:
        lock(tx, account_id)
        last = tx.value(bump, (len(rows), account_id))
    seq, at = int(last) - len(rows), now_ms()
    states: dict[str, int] = {}
    log_rows: list[tuple[str, int, str, str, str, int, int]] = []
    for type, object_id, kind, only in rows:
        seq += 1
        states[type] = seq
        log_rows.append((account_id, seq, type, object_id, kind, only, at))
    multirow.insert(
        tx, "INSERT INTO change_log (account_id, seq, type, object_id, kind, count_only, created_at)", log_rows
    )
    tx.execute(
        "INSERT INTO change_states (account_id, type, state, pruned_through) VALUES "
        + ", ".join(["(?, ?, ?, 0)"] * len(states))
        + " ON CONFLICT (account_id, type) DO UPDATE SET state = excluded.state",
        [v for type, state in sorted(states.items()) for v in (account_id, type, state)],
    )
    return {type: token(state) for type, state in states.items()}


_STATE = "SELECT state FROM change_states WHERE account_id = ? AND type = ?"
#: The column :func:`state_column` adds, read back by :func:`column_state`.
STATE_COLUMN = "current_state"


def state(tx: Transaction, account_id: str, type: str) -> str:
    """The current state token of ``type`` in ``account_id`` ("0" before any change)."""
    _check_type(type)
    return token(int(tx.value(_STATE, (account_id, type)) or 0))


def state_column(type: str) -> str:
    """The current state of ``type`` as a column of another statement (one parameter: the account id), so
    that rows and their state come from one statement, which sees one snapshot by itself."""
    _check_type(type)
    return f"(SELECT state FROM change_states WHERE account_id = ? AND type = '{type}') AS {STATE_COLUMN}"


def column_state(row: dict[str, Any]) -> str:
    """The state token carried by a row of a statement with :func:`state_column`."""
    return token(int(row[STATE_COLUMN] or 0))


def states(tx: Transaction, account_id: str, types: Iterable[str] = TYPES) -> dict[str, str]:
    """The current state token of each of ``types``."""
    types = list(types)
    for t in types:
        _check_type(t)
    rows = tx.query("SELECT type, state FROM change_states WHERE account_id = ?", (account_id,))
    found = {r["type"]: int(r["state"]) for r in rows}
    return {t: token(found.get(t, 0)) for t in types}


class _Fold:
    """Log rows, in order, folded into the created, updated and destroyed ids of a window: an id's first
    change says whether it was created in it, its last whether it is gone at the end."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.seen: dict[str, list[bool]] = {}  # id -> [created in the window, destroyed at the end]
        self.count_only = True
        self.more = False  # stopped at the limit
        self.last_seq = 0

    def add(self, rows: list[Row]) -> None:
        for r in rows:
            oid, kind = r["object_id"], r["kind"]
            entry = self.seen.get(oid)
            if entry is None:
                if self.limit is not None and len(self.seen) >= self.limit:
                    self.more = True
                    return
                entry = self.seen[oid] = [kind == "c", False]
            entry[1] = kind == "d"
            if kind != "u" or not r["count_only"]:
                self.count_only = False
            self.last_seq = int(r["seq"])

    def changes(self, since_state: str, current: int) -> Changes:
        """The window's changes: up to ``current``, or up to the last row taken when the limit stopped it."""
        seen = self.seen
        created = [i for i, (c, d) in seen.items() if c and not d]
        updated = [i for i, (c, d) in seen.items() if not c and not d]
        destroyed = [i for i, (c, d) in seen.items() if not c and d]
        new = self.last_seq if self.more else current
        return Changes(since_state, token(new), self.more, created, updated, destroyed, bool(seen) and self.count_only)


class ChangeLog:
    """Reads and prunes the change log (writers use :func:`record` inside their transaction)."""

    def __init__(self, db: Database, config: Config | None = None) -> None:
        self.db = db
        self.config = config

    def state(self, account_id: str, type: str) -> str:
        with self.db.read() as tx:
            return state(tx, account_id, type)

    def states(self, account_id: str, types: Iterable[str] = TYPES) -> dict[str, str]:
        with self.db.read() as tx:
            return states(tx, account_id, types)

    def changes_since(self, account_id: str, type: str, since_state: str, max_changes: int | None = None) -> Changes:
        """What changed in ``type`` after ``since_state``, at most ``max_changes`` ids (None: all).

        The account's position, the type's state and the first batch of its log come from one statement
        alone (it sees one snapshot by itself: on Postgres one round trip instead of five); more than a batch
        of changes is read in a transaction, batch after batch."""
        _check_type(type)
        if max_changes is not None and max_changes < 1:
            raise ValueError("max_changes must be positive")
        since = parse_token(since_state)
        if since is None:
            raise CannotCalculateChanges(f"{since_state!r} is not a {type} state")
        rows = self.db.query_alone(
            _HEAD_AND_FIRST_BATCH, (account_id, account_id, type, account_id, type, since, _BATCH)
        )
        head = rows[0]
        current = self._check(type, since, since_state, head)
        if since >= current:
            return Changes(since_state, token(current), False)
        fold = _Fold(max_changes)
        if len(rows) < _BATCH:  # the whole window came with the head
            fold.add([r for r in rows if r["seq"] is not None])
            return fold.changes(since_state, current)
        with self.db.read() as tx:
            row = tx.one(_HEAD, (account_id, account_id, type))
            assert row is not None  # one row of scalar subqueries
            current = self._check(type, since, since_state, row)
            cursor = since
            while not fold.more and cursor < current:
                batch = tx.query(
                    "SELECT seq, object_id, kind, count_only FROM change_log "
                    "WHERE account_id = ? AND type = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                    (account_id, type, cursor, current, _BATCH),
                )
                if not batch:
                    break
                fold.add(batch)
                cursor = int(batch[-1]["seq"])
            return fold.changes(since_state, current)

    @staticmethod
    def _check(type: str, since: int, since_state: str, head: Row) -> int:
        """The type's current state, once ``since`` is known to be answerable from the log."""
        last, current, pruned = (int(head[k] or 0) for k in ("last", "state", "pruned"))
        if since > max(last, current):
            raise CannotCalculateChanges(f"{type} state {since_state!r} is in the future")
        if since < pruned:
            raise CannotCalculateChanges(f"{type} state {since_state!r} is older than the change log")
        return current

    def prune(self, older_than_ms: int) -> int:
        """Delete change rows older than ``older_than_ms``; remember per type the oldest answerable state."""
        started = time.monotonic()
        with self.db.read() as tx:
            accounts = [
                r["account_id"]
                for r in tx.query("SELECT DISTINCT account_id FROM change_log WHERE created_at < ?", (older_than_ms,))
            ]
        deleted = 0
        for account_id in accounts:
            with self.db.transaction() as tx:
                lock(tx, account_id)  # same lock order as writers: account first, then its states
                for r in tx.query(
                    "SELECT type, MAX(seq) AS through FROM change_log WHERE account_id = ? AND created_at < ? "
                    "GROUP BY type ORDER BY type",
                    (account_id, older_than_ms),
                ):
                    tx.execute(
                        "UPDATE change_states SET pruned_through = ? "
                        "WHERE account_id = ? AND type = ? AND pruned_through < ?",
                        (r["through"], account_id, r["type"], r["through"]),
                    )
                deleted += tx.execute(
                    "DELETE FROM change_log WHERE account_id = ? AND created_at < ?", (account_id, older_than_ms)
                )
        log.info(
            kv(
                event="changes_pruned",
                accounts=len(accounts),
                rows=deleted,
                ms=round((time.monotonic() - started) * 1000, 1),
            )
        )
        return deleted

    def prune_expired(self) -> int:
        """Prune what is older than the configured retention (``changes_retention_days``, ≥ 30 by default)."""
        days = self.config.changes_retention_days if self.config else 30
        return self.prune(now_ms() - days * 86_400_000)

"""Reindexing: bring the index rows of stored mail to the current tokenizer (search.TOKENIZER).

Rows are taken in message id order, a batch at a time; each batch is tokenized outside any transaction
and written in one short write transaction that first re-reads which of its rows still need it, so a
serving process keeps delivering meanwhile, a message deleted in between is skipped, and a run stopped
anywhere resumes where it was (a reindexed row is never done twice).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from jmapmono.log import kv
from jmapmono.mailbox import search
from jmapmono.store import Database, Transaction
from jmapmono.store.multirow import marks

log = logging.getLogger(__name__)

#: Messages per write transaction (a delivery waits at most for one).
BATCH = 200


@dataclass(frozen=True)
class Progress:
    """How far a reindex is: rows done of the rows that needed it when it started."""

    done: int
    total: int


def pending(db: Database, account_id: str | None = None) -> int:
    """How many index rows (of one account, or all) were made by an older tokenizer."""
    sql, params = _scope(account_id)
    with db.read() as tx:
        return int(tx.value(f"SELECT COUNT(*) AS n FROM message_search WHERE {sql}", params) or 0)


def _scope(account_id: str | None) -> tuple[str, list[object]]:
    if account_id is None:
        return "tokenizer < ?", [search.TOKENIZER]
    return "tokenizer < ? AND account_id = ?", [search.TOKENIZER, account_id]


def _batches(db: Database, account_id: str | None, size: int) -> Iterator[list[tuple[str, str]]]:
    scope, params = _scope(account_id)
    after = ""
    while True:
        with db.read() as tx:
            rows = tx.query(
                f"SELECT message_id, text FROM message_search WHERE {scope} AND message_id > ? "
                "ORDER BY message_id LIMIT ?",
                [*params, after, size],
            )
        if not rows:
            return
        after = rows[-1]["message_id"]
        yield [(r["message_id"], r["text"]) for r in rows]


def reindex(
    db: Database,
    account_id: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    batch: int = BATCH,
    languages: tuple[str, ...] | None = None,
) -> Progress:
    """Reindex every row an older tokenizer made (of one account, or all), stemming in ``languages`` (None:
    each body's detected one); return the rows done."""
    started = time.monotonic()
    progress = Progress(0, pending(db, account_id))
    for rows in _batches(db, account_id, batch):
        headers = _headers(db, [mid for mid, _ in rows])
        columns = {mid: search.index_columns(text, headers.get(mid, {}), db.dialect, languages) for mid, text in rows}
        with db.transaction() as tx:
            progress = Progress(progress.done + _write(tx, columns), progress.total)
        if on_progress is not None:
            on_progress(progress)
    ms = round((time.monotonic() - started) * 1000, 1)
    log.info(kv(event="search_reindexed", account=account_id or "*", rows=progress.done, ms=ms))
    return progress


def _headers(db: Database, ids: list[str]) -> dict[str, dict[str, str]]:
    """The folded values of the searched header fields of these messages, as indexing reads them."""
    out: dict[str, dict[str, str]] = {}
    names = search.TEXT_FIELDS
    with db.read() as tx:
        for r in tx.query(
            f"SELECT message_id, name, value FROM message_headers WHERE message_id IN ({marks(len(ids))}) "
            f"AND name IN ({marks(len(names))})",
            [*ids, *names],
        ):
            out.setdefault(r["message_id"], {})[r["name"]] = r["value"]
    return out


def _write(tx: Transaction, columns: dict[str, tuple[str | None, tuple[str, str, str] | None]]) -> int:
    ids = sorted(columns)
    found = tx.query(
        f"SELECT message_id, tokenizer FROM message_search WHERE message_id IN ({marks(len(ids))}) AND tokenizer < ?",
        [*ids, search.TOKENIZER],
    )
    if not found:
        return 0
    todo = sorted(r["message_id"] for r in found)
    mk = marks(len(todo))
    if tx.dialect == "postgres":
        values = ", ".join(["(?, ?)"] * len(todo))
        tx.execute(
            "UPDATE message_search AS s SET search_vector = CAST(v.vector AS tsvector), tokenizer = ? "
            f"FROM (VALUES {values}) AS v(id, vector) WHERE s.message_id = v.id",
            [search.TOKENIZER, *(x for mid in todo for x in (mid, columns[mid][0] or ""))],
        )
        return len(todo)
    words_only = [r["message_id"] for r in found if r["tokenizer"] == 0]
    if words_only:  # out of the words-only index, fed with the text as it still is
        tx.execute(
            "INSERT INTO message_search_fts (message_search_fts, rowid, text) SELECT 'delete', r.id, s.text "
            "FROM message_search s JOIN message_search_rows r ON r.message_id = s.message_id "
            f"WHERE s.message_id IN ({marks(len(words_only))})",
            words_only,
        )
    tx.execute(
        "DELETE FROM message_search_terms WHERE rowid IN "
        f"(SELECT id FROM message_search_rows WHERE message_id IN ({mk}))",
        todo,
    )
    search.write_terms(tx, [(mid, columns[mid][1] or ("", "", "")) for mid in todo])
    tx.execute(f"UPDATE message_search SET tokenizer = ? WHERE message_id IN ({mk})", [search.TOKENIZER, *todo])
    return len(todo)

"""Multi-row statements: many rows per round trip, within both databases' limits.

A bulk append of 10,000 messages writes ~100,000 rows; one statement per row costs a round trip each
on Postgres (and a statement each on SQLite). ``INSERT … VALUES (…), (…), …`` carries many rows per
statement on both backends with the same SQL. A statement takes at most :data:`MAX_PARAMS` bound
values (SQLite's limit is 32,766, Postgres' 65,535) and about :data:`MAX_BYTES` of text and bytes,
so that large messages go a few at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from jmapmono.store import Transaction

MAX_PARAMS = 16_000
MAX_BYTES = 8 * 1024 * 1024
#: Ids per ``IN (…)`` list of a bulk lookup.
IN_CHUNK = 2_000


def marks(n: int) -> str:
    return ", ".join("?" * n)


def row_chunks(
    rows: Sequence[Sequence[object]], max_params: int | None = None, max_bytes: int | None = None
) -> Iterator[Sequence[Sequence[object]]]:
    """``rows`` cut into runs that each fit one statement (a run holds at least one row).

    Limits default to :data:`MAX_PARAMS` and :data:`MAX_BYTES`; strings and bytes count by their length."""
    max_params = max_params or MAX_PARAMS
    max_bytes = max_bytes or MAX_BYTES
    start, params, size = 0, 0, 0
    for i, row in enumerate(rows):
        width = len(row)
        weight = 0
        for v in row:
            if v.__class__ is str or v.__class__ is bytes:
                weight += len(v)
        if i > start and (params + width > max_params or size + weight > max_bytes):
            yield rows[start:i]
            start, params, size = i, 0, 0
        params += width
        size += weight
    if start < len(rows):
        yield rows[start:]


def fits_one(rows: Sequence[Sequence[object]]) -> bool:
    """Whether ``rows`` (of any widths) fit one statement."""
    chunks = row_chunks(rows)
    next(chunks, None)
    return next(chunks, None) is None


def insert(tx: Transaction, head: str, rows: Sequence[Sequence[object]], tail: str = "", row: str = "") -> int:
    """Run ``{head} VALUES {row}, {row}, … {tail}`` over ``rows`` (all of one width), in as few statements as fit.

    ``row`` is the SQL of one row (default ``(?, ?, …)``); rows are inserted in order. Returns the rows changed.
    """
    if not rows:
        return 0
    one = row or f"({marks(len(rows[0]))})"
    changed = 0
    for chunk in row_chunks(rows):
        sql = f"{head} VALUES {', '.join([one] * len(chunk))}"
        changed += tx.execute(f"{sql} {tail}" if tail else sql, [v for r in chunk for v in r])
    return changed


def in_chunks(ids: Iterable[str], size: int | None = None) -> Iterator[list[str]]:
    """``ids`` (deduplicated, sorted) in lists short enough for one ``IN (…)`` (:data:`IN_CHUNK` by default)."""
    size = size or IN_CHUNK
    ordered = sorted(set(ids))
    for start in range(0, len(ordered), size):
        yield ordered[start : start + size]

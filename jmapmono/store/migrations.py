"""Versioned schema migrations from the one ``schema.sql`` (beside this module, shipped in the package).

``schema.sql`` is a sequence of sections headed ``-- version: N``; each is
applied once, in order, in its own transaction, and recorded in
``schema_migrations``. The file is written in SQLite's dialect with a few
portable conventions that :func:`to_postgres` rewrites, so there is one source
of truth. A statement whose first line is ``-- only: sqlite`` (or
``postgres``) applies to that backend alone (full-text search).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

from jmapmono.store.base import Database, Transaction

log = logging.getLogger(__name__)

SCHEMA_PATH = Path(__file__).resolve().parent / "schema.sql"
_VERSION = re.compile(r"^-- version: (\d+)\s*$", re.M)
_ONLY = re.compile(r"^\s*-- only: (sqlite|postgres)\s*$", re.M)


@dataclass(frozen=True)
class Migration:
    version: int
    statements: tuple[str, ...]


def to_postgres(statement: str) -> str:
    """Rewrite one SQLite-dialect DDL statement for Postgres."""
    s = re.sub(r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b", "BIGSERIAL PRIMARY KEY", statement)
    s = re.sub(r"\bBLOB\b", "BYTEA", s)
    s = re.sub(r"\bINTEGER\b", "BIGINT", s)
    return s


def _strip_comments(statement: str) -> str:
    """Drop ``--`` comments (a ``?`` in one would become a placeholder on Postgres). No ``--`` in literals."""
    lines = (line.split("--", 1)[0].rstrip() for line in statement.splitlines())
    return "\n".join(line for line in lines if line.strip())


def _split(body: str, dialect: str) -> list[str]:
    statements = []
    for raw in body.split(";\n"):
        text = raw.strip()
        if not text or all(line.strip().startswith("--") or not line.strip() for line in text.splitlines()):
            continue
        only = _ONLY.search(text.splitlines()[0]) if text else None
        if only and only.group(1) != dialect:
            continue
        text = _strip_comments(text)
        statements.append(to_postgres(text) if dialect == "postgres" else text)
    return statements


def load_migrations(dialect: str, path: Path = SCHEMA_PATH) -> list[Migration]:
    text = path.read_text()
    parts = _VERSION.split(text)
    migrations = []
    for i in range(1, len(parts), 2):
        migrations.append(Migration(int(parts[i]), tuple(_split(parts[i + 1], dialect))))
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"{path}: versions must be 1..N in order, found {versions}")
    return migrations


#: The Postgres advisory lock key that serialises migrations between processes starting at once.
MIGRATION_LOCK = 7461


def _exclusive(db: Database, tx: Transaction) -> None:
    """Make ``tx`` the only migrating transaction on the database until it ends. SQLite's write transactions
    (``BEGIN IMMEDIATE``) already are; Postgres takes a transaction-scoped advisory lock."""
    if db.dialect == "postgres":
        tx.execute(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")


def migrate(db: Database, target: int | None = None) -> int:
    """Apply every pending migration (up to version ``target``, e.g. to make a database as an older release
    left it); return the schema version now in force. Safe with several processes
    starting at once on one database: each step runs under the migration lock, so one applies it and the
    others find it done (creating ``schema_migrations`` too: concurrent ``CREATE TABLE IF NOT EXISTS``
    can fail on Postgres)."""
    migrations = [m for m in load_migrations(db.dialect) if target is None or m.version <= target]
    with db.transaction() as tx:
        _exclusive(db, tx)
        tx.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)"
        )
    for migration in migrations:
        with db.transaction() as tx:
            _exclusive(db, tx)
            if tx.one("SELECT version FROM schema_migrations WHERE version = ?", (migration.version,)):
                continue
            started = time.monotonic()
            for statement in migration.statements:
                tx.execute(statement)
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                (migration.version, int(time.time())),
            )
            log.info(
                "event=migration_applied version=%d statements=%d ms=%.1f",
                migration.version,
                len(migration.statements),
                (time.monotonic() - started) * 1000,
            )
    return migrations[-1].version if migrations else 0

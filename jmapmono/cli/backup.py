"""``jmapmono backup PATH``: a consistent copy of the SQLite database, safe while the server runs.

SQLite's online backup API (``sqlite3.Connection.backup``) copies the file in one step under a read
transaction: in WAL mode that never blocks the server's writers, and the copy holds exactly the
transactions committed before it began. The copy is written next to PATH, checked
(``PRAGMA quick_check``), then renamed into place, so PATH is never a half-written file.
Postgres has its own tool, ``pg_dump``: on Postgres the command says so and exits 69.

Restore (docs/deploy.md): stop the server, put the copy in place of the database file (removing the
old ``-wal`` and ``-shm`` files), give it to the server's user, start the server.

Exit codes: 0 copied; 66 no database file; 69 not SQLite; 73 PATH exists (without ``--force``) or
cannot be written; 75 the database is unreadable or busy.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from jmapmono.config import load_config
from jmapmono.exits import EX_CANTCREAT, EX_OK, EX_TEMPFAIL, CommandError
from jmapmono.store.sqlite import path_from_url

EX_NOINPUT = 66
EX_UNAVAILABLE = 69


def describe_database(url: str) -> str:
    """The database ``url`` names, as an operator recognises it: the SQLite file's absolute path, or the
    Postgres URL without its password."""
    if url.startswith("sqlite:"):
        return str(path_from_url(url).resolve())
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def backup_sqlite(source: Path, target: Path) -> int:
    """Copy the database ``source`` to ``target`` (through a temporary file beside it); its size."""
    partial = target.with_name(f".{target.name}.partial")
    src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        partial.unlink(missing_ok=True)
        dst = sqlite3.connect(partial)
        try:
            src.backup(dst)  # one step: a single read transaction, a consistent snapshot
            dst.execute("PRAGMA journal_mode=DELETE")  # a self-contained file, no -wal beside it
            (check,) = dst.execute("PRAGMA quick_check").fetchone()
        finally:
            dst.close()
    finally:
        src.close()
    if check != "ok":
        partial.unlink(missing_ok=True)
        raise sqlite3.DatabaseError(f"the copy fails its check: {check}")
    with partial.open("rb") as f:
        os.fsync(f.fileno())
    partial.replace(target)
    return target.stat().st_size


def _backup(args: argparse.Namespace) -> int:
    config = load_config()
    if not config.database_url.startswith("sqlite:"):
        raise CommandError(
            f"{describe_database(config.database_url)} is Postgres: back it up with pg_dump "
            '(pg_dump --format=custom --file=FILE "$DATABASE_URL"; restore with pg_restore)',
            EX_UNAVAILABLE,
        )
    source = path_from_url(config.database_url)
    target = Path(args.path)
    if not source.is_file():
        raise CommandError(f"no database at {source.resolve()} (JMAPMONO_DATA_DIR or DATABASE_URL)", EX_NOINPUT)
    if target.exists() and not args.force:
        raise CommandError(f"{target} exists: give another PATH, or --force to replace it", EX_CANTCREAT)
    if target.resolve() == source.resolve():
        raise CommandError(f"{target} is the database itself", EX_CANTCREAT)
    started = time.monotonic()
    try:
        size = backup_sqlite(source, target)
    except PermissionError as e:
        raise CommandError(f"cannot write {target}: {e.strerror}", EX_CANTCREAT) from None
    except (sqlite3.Error, OSError) as e:
        raise CommandError(f"backup of {source.resolve()} failed, try again: {e}", EX_TEMPFAIL) from None
    print(
        f"backed up {source.resolve()} to {target.resolve()} ({size} bytes, {time.monotonic() - started:.2f} s)",
        file=sys.stderr,
    )
    return EX_OK


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``backup`` to the CLI."""
    p = sub.add_parser(
        "backup",
        help="copy the SQLite database to PATH, safely while the server runs (Postgres: use pg_dump)",
        description="Copy the SQLite database to PATH with SQLite's online backup API: a consistent "
        "snapshot, taken without stopping the server. Exit codes: 0 copied, 66 no database, 69 Postgres "
        "(use pg_dump), 73 PATH exists or cannot be written, 75 try again.",
    )
    p.add_argument("path", metavar="PATH", help="the file to write (refused if it exists, unless --force)")
    p.add_argument("--force", action="store_true", help="replace PATH if it exists")
    p.set_defaults(handler=_backup)

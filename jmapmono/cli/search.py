"""``jmapmono search reindex [--account EMAIL]``: index stored mail with the current tokenizer.

Mail indexed by an older release is still found as it was (words alone: no CJK words inside a run, no
stems) until reindexed; new mail is indexed the current way on arrival. Safe while the server runs
(short batched transactions) and to stop and run again (it resumes; done rows are skipped).
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from jmapmono.cli.users import with_runtime
from jmapmono.mailbox import search_reindex
from jmapmono.runtime import Runtime

#: Without a terminal, one progress line per this many messages.
LINE_EVERY = 1000
_BAR = 30


class ProgressReport:
    """A bar redrawn in place on a terminal; otherwise a line every :data:`LINE_EVERY` messages."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.last_line = 0

    def __call__(self, p: search_reindex.Progress) -> None:
        total = max(p.total, p.done, 1)
        if self.tty:
            filled = _BAR * p.done // total
            bar = "#" * filled + "." * (_BAR - filled)
            self.out.write(f"\rreindexing [{bar}] {p.done}/{total} {100 * p.done // total}%")
            self.out.flush()
        elif p.done - self.last_line >= LINE_EVERY or p.done >= total:
            self.last_line = p.done
            print(f"reindexed {p.done}/{total}", file=self.out, flush=True)

    def end(self) -> None:
        if self.tty:
            self.out.write("\n")


def cmd_reindex(args: argparse.Namespace, services: Runtime) -> int:
    account_id = services.accounts.require(args.email).account_id if args.email else None
    report = ProgressReport(sys.stderr)
    done = search_reindex.reindex(services.db, account_id, report, languages=services.config.search_languages)
    report.end()
    print(f"reindexed {done.done} messages")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``search`` and its actions to the CLI."""
    search = sub.add_parser("search", help="maintain the full-text search index")
    actions = search.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    p = actions.add_parser("reindex", help="index stored mail with the current tokenizer (resumable)")
    p.add_argument("--account", dest="email", metavar="EMAIL", help="only this user's account (default: every account)")
    p.set_defaults(handler=with_runtime(cmd_reindex))

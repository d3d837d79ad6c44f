"""Process entry: decide from the command line whether to patch for gevent, then run the CLI.

Most commands (``serve``, ``user …``) run under gevent, which must patch the
process before kombu, psycopg or requests are imported. The LMTP server is
asyncio (aiosmtpd) and must never run patched, and the ``deliver`` agent needs
no gevent at all, so those two run in a plain process. ``python -m jmapmono``
and the ``jmapmono`` console script both go through :func:`main`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

#: Sub-commands that run in a plain (not gevent-patched) process.
UNPATCHED_COMMANDS = frozenset({"lmtp", "deliver"})
#: Options before the sub-command that take a separate value (``--env-file PATH``).
_GLOBAL_OPTIONS_WITH_VALUE = frozenset({"--env-file"})


def command_of(argv: Sequence[str]) -> str | None:
    """The sub-command named in ``argv`` (the first word that is neither an option nor its value), if any."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _GLOBAL_OPTIONS_WITH_VALUE:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def needs_gevent(argv: Sequence[str]) -> bool:
    """Whether the command in ``argv`` runs under gevent (everything but LMTP and deliver)."""
    return command_of(argv) not in UNPATCHED_COMMANDS


def main(argv: Sequence[str] | None = None) -> int:
    """Patch for gevent when the command needs it, then run the command; return its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if needs_gevent(args):
        from gevent import monkey

        monkey.patch_all()
    from jmapmono.cli.main import main as cli_main

    return cli_main(args)

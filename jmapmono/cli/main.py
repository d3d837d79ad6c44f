"""The operator CLI: ``python -m jmapmono …`` (also installed as ``jmapmono``).

The command names, flags and exit codes are a contract other tools rely on
(README.md, "Operator CLI"). Each concern registers its own sub-commands; this
module only assembles them and maps failures to sysexits-style exit codes.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from jmapmono.cli.envfile import load_env_file
from jmapmono.config import ConfigError, load_config
from jmapmono.exits import EX_CONFIG, EX_OK, EX_TEMPFAIL, EX_USAGE, CommandError
from jmapmono.log import setup_logging
from jmapmono.store import StoreError


def _command_modules() -> list:
    from jmapmono.cli import backup, events, mail, search, serve, shares, users, vapid

    return [serve, users, shares, mail, events, backup, vapid, search]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # usage errors exit 64, not argparse's 2
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(EX_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jmapmono", description="jmapmono JMAP mail server")
    parser.add_argument(
        "--env-file",
        metavar="PATH",
        help="read settings (KEY=VALUE lines, systemd's EnvironmentFile format) from PATH first; "
        "variables already set win (default: JMAPMONO_ENV_FILE)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for module in _command_modules():
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (never raise to the shell)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        env_file = args.env_file or os.environ.get("JMAPMONO_ENV_FILE")
        if env_file:
            load_env_file(Path(env_file))
        config = load_config()
        setup_logging(config.log_level)
        return handler(args) or EX_OK
    except CommandError as e:
        print(f"jmapmono: {e}", file=sys.stderr)
        return e.code
    except ConfigError as e:
        print(f"jmapmono: configuration: {e}", file=sys.stderr)
        # An MTA bounces mail on 78 (Postfix: 5.3.5): for the delivery agent an operator's mistake must hold
        # the mail in the queue until it is fixed, not return it to the sender.
        return EX_TEMPFAIL if getattr(args, "command", None) == "deliver" else EX_CONFIG
    except StoreError as e:
        print(f"jmapmono: database unavailable: {e}", file=sys.stderr)
        return EX_TEMPFAIL
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""``jmapmono vapid show|rotate``: the server's VAPID key for web push (RFC 8292, RFC 9749).

``show`` prints the key clients are given (the Session's ``applicationServerKey``) and its generation,
making it on first use. ``rotate`` makes a new generation and destroys every push subscription (RFC 9749
§5): push services refuse pushes signed with a key other than the one a subscription was made for, so
clients must subscribe again; they learn of it by the Session's state. Running servers advertise the new
key within a minute. Rotate when the private key may have leaked (for example a database backup was lost).
"""

from __future__ import annotations

import argparse

from jmapmono.cli.users import with_runtime
from jmapmono.runtime import Runtime


def cmd_show(args: argparse.Namespace, services: Runtime) -> int:
    key = services.vapid.current()
    print(f"{key.public_key}\tgeneration {key.generation}")
    return 0


def cmd_rotate(args: argparse.Namespace, services: Runtime) -> int:
    key, destroyed = services.vapid.rotate()
    print(f"{key.public_key}\tgeneration {key.generation}\t{destroyed} push subscriptions destroyed")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``vapid`` and its actions to the CLI."""
    vapid = sub.add_parser("vapid", help="show or rotate the server's web push (VAPID) key")
    actions = vapid.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    p = actions.add_parser("show", help="print the public key (applicationServerKey) and its generation")
    p.set_defaults(handler=with_runtime(cmd_show))
    p = actions.add_parser("rotate", help="make a new key and destroy every push subscription")
    p.set_defaults(handler=with_runtime(cmd_rotate))

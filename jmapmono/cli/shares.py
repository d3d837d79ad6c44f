"""``jmapmono mailbox share|unshare|shares``: share one mailbox of an owner with another user, with rights.

Output and exit codes as ``jmapmono user`` (jmapmono/cli/users.py): results on stdout, tab-separated; one
message line on stderr; 65 bad email, rights or mailbox name, 67 unknown user, 75 database unavailable.
Rights are short names (``read``, ``add``, ``remove``, ``seen``, ``keywords``, ``create``, ``rename``,
``delete``, ``submit``, ``share``) or the RFC 8621 names (``mayReadItems`` …).
"""

from __future__ import annotations

import argparse
import sys

from jmapmono.accounts.users import AccountError
from jmapmono.cli.users import with_runtime
from jmapmono.exits import EX_DATAERR, CommandError
from jmapmono.mailbox.model import Mailbox, MailboxError
from jmapmono.runtime import Runtime

#: Short right names for the command line -> the rights of RFC 8621 §2 (and mayShare).
SHORT = {
    "read": "mayReadItems",
    "add": "mayAddItems",
    "remove": "mayRemoveItems",
    "seen": "maySetSeen",
    "keywords": "maySetKeywords",
    "create": "mayCreateChild",
    "rename": "mayRename",
    "delete": "mayDelete",
    "submit": "maySubmit",
    "share": "mayShare",
}
_LONG = {v: k for k, v in SHORT.items()}


def parse_rights(text: str) -> frozenset[str]:
    rights = set()
    for name in (part.strip() for part in text.split(",")):
        if not name:
            continue
        right = SHORT.get(name.lower(), name if name in _LONG else None)
        if right is None:
            raise CommandError(f"unknown right {name!r} (known: {', '.join(SHORT)})", EX_DATAERR)
        rights.add(right)
    if not rights:
        raise CommandError("--rights names no right (use 'unshare' to take a share back)", EX_DATAERR)
    return frozenset(rights)


def _mailbox_id(services: Runtime, account_id: str, name: str) -> str:
    """The id of the mailbox named ``name`` (a path with '/' for children), case-insensitively."""
    boxes, _ = services.mailboxes.get_mailboxes(account_id)
    by_id = {mb.id: mb for mb in boxes}

    def path(mb: Mailbox) -> str:
        parts, seen = [mb.name], {mb.id}
        parent = by_id.get(mb.parent_id) if mb.parent_id else None
        while parent is not None and parent.id not in seen:
            seen.add(parent.id)
            parts.append(parent.name)
            parent = by_id.get(parent.parent_id) if parent.parent_id else None
        return "/".join(reversed(parts))

    wanted = name.strip("/").casefold()
    found = [mb.id for mb in boxes if path(mb).casefold() == wanted]
    if len(found) != 1:
        raise CommandError(f"no mailbox {name!r} in this account", EX_DATAERR)
    return found[0]


def _share(services: Runtime, owner_email: str, mailbox: str, sharee_email: str, rights: frozenset[str]) -> bool:
    owner = services.accounts.require(owner_email)
    sharee = services.accounts.require(sharee_email)
    mailbox_id = _mailbox_id(services, owner.account_id, mailbox)
    try:
        return services.mailboxes.share_mailbox(owner.account_id, mailbox_id, sharee.id, rights)
    except MailboxError as e:
        raise AccountError(e.description) from None


def _short(rights: frozenset[str]) -> str:
    return ",".join(_LONG[r] for r in SHORT.values() if r in rights)


def cmd_share(args: argparse.Namespace, services: Runtime) -> None:
    rights = parse_rights(args.rights)
    if _share(services, args.owner, args.mailbox, args.sharee, rights):
        print(f"{args.sharee} now has {_short(rights)} on {args.mailbox} of {args.owner}", file=sys.stderr)
    else:
        print(f"{args.sharee} already had exactly these rights on {args.mailbox}", file=sys.stderr)


def cmd_unshare(args: argparse.Namespace, services: Runtime) -> None:
    if _share(services, args.owner, args.mailbox, args.sharee, frozenset()):
        print(f"{args.mailbox} of {args.owner} is no longer shared with {args.sharee}", file=sys.stderr)
    else:
        print(f"{args.mailbox} of {args.owner} was not shared with {args.sharee}", file=sys.stderr)


def cmd_shares(args: argparse.Namespace, services: Runtime) -> None:
    owner = services.accounts.require(args.owner)
    for share in services.mailboxes.list_shares(owner.account_id):
        print(f"{share.mailbox_name}\t{share.sharee_email}\t{_short(share.rights)}")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``mailbox`` and its actions to the CLI."""
    mailbox = sub.add_parser("mailbox", help="share mailboxes with other users")
    actions = mailbox.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    p = actions.add_parser("share", help="share OWNER's mailbox MAILBOX with SHAREE, with --rights")
    p.add_argument("owner", metavar="OWNER")
    p.add_argument("mailbox", metavar="MAILBOX")
    p.add_argument("sharee", metavar="SHAREE")
    p.add_argument("--rights", required=True, help=f"comma-separated: {','.join(SHORT)}")
    p.set_defaults(handler=with_runtime(cmd_share))
    p = actions.add_parser("unshare", help="take back SHAREE's share of OWNER's mailbox MAILBOX")
    p.add_argument("owner", metavar="OWNER")
    p.add_argument("mailbox", metavar="MAILBOX")
    p.add_argument("sharee", metavar="SHAREE")
    p.set_defaults(handler=with_runtime(cmd_unshare))
    p = actions.add_parser("shares", help="list OWNER's shares: MAILBOX<TAB>SHAREE<TAB>RIGHTS per line")
    p.add_argument("owner", metavar="OWNER")
    p.set_defaults(handler=with_runtime(cmd_shares))

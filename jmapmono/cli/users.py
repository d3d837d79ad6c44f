"""``jmapmono user …``: users, app passwords, delegation and quotas from the command line.

Names, flags, output and exit codes are a contract (README.md, "Operator CLI").
Results go to stdout, one record per line with tab-separated fields; messages
go to stderr, one line each. Exit codes follow sysexits: 65 bad email or data,
67 unknown user, 73 user already exists, 75 database unavailable, 78 bad
configuration.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from jmapmono.accounts.app_passwords import AppPasswordError, AppPasswords
from jmapmono.accounts.users import AccountError, InvalidEmail, UnknownUser, UserExists, normalize_email
from jmapmono.cli.backup import describe_database
from jmapmono.config import parse_size
from jmapmono.exits import EX_CANTCREAT, EX_CONFIG, EX_DATAERR, EX_NOUSER, EX_OK, EX_TEMPFAIL, CommandError
from jmapmono.mailbox import quota
from jmapmono.runtime import Runtime, runtime_from_environment

Handler = Callable[[argparse.Namespace, Runtime], int | None]


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def _date(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _email(value: str) -> str:
    try:
        return normalize_email(value)
    except InvalidEmail as e:
        raise CommandError(str(e), EX_DATAERR) from None


def _check_password(password: str) -> str:
    if not password:
        raise CommandError("the password must not be empty", EX_DATAERR)
    if any(ord(c) < 32 or ord(c) == 127 for c in password):
        raise CommandError("the password must not contain control characters", EX_DATAERR)
    return password


@contextmanager
def _services() -> Iterator[Runtime]:
    try:
        services = runtime_from_environment()
    except (sqlite3.Error, OSError) as e:
        raise CommandError(f"database unavailable: {e}", EX_TEMPFAIL) from None
    except Exception as e:
        psycopg = sys.modules.get("psycopg")
        if psycopg is not None and isinstance(e, psycopg.ProgrammingError):  # e.g. an unparsable DATABASE_URL
            raise CommandError(f"configuration: DATABASE_URL: {e}", EX_CONFIG) from None
        raise
    try:
        yield services
    finally:
        services.close()


def _quiet_logs() -> None:
    """Keep stderr to one message per command unless the operator asked for logs."""
    if not os.environ.get("JMAPMONO_LOG_LEVEL"):
        logging.getLogger().setLevel(logging.WARNING)


def with_runtime(handler: Handler) -> Callable[[argparse.Namespace], int]:
    """Wrap a handler: open the services, map account errors to exit codes."""

    def run(args: argparse.Namespace) -> int:
        _quiet_logs()
        for name in ("email", "owner", "delegate", "sharee"):
            if getattr(args, name, None) is not None:
                setattr(args, name, _email(getattr(args, name)))
        if getattr(args, "password", None) is not None:
            _check_password(args.password)
        with _services() as services:
            try:
                return handler(args, services) or EX_OK
            except UnknownUser as e:
                raise CommandError(str(e), EX_NOUSER) from None
            except UserExists as e:
                raise CommandError(str(e), EX_CANTCREAT) from None
            except (AccountError, AppPasswordError) as e:
                raise CommandError(str(e), EX_DATAERR) from None

    return run


def cmd_add(args: argparse.Namespace, services: Runtime) -> None:
    user, password = services.accounts.create_user(args.email, args.password)
    _say(f"created user {user.email} (account {user.account_id}) in {describe_database(services.config.database_url)}")
    if args.password is None:
        print(password)


def cmd_list(args: argparse.Namespace, services: Runtime) -> None:
    users = services.accounts.list()
    for user in users:
        print(f"{user.email}\t{user.account_id}")
    if not users:
        _say(f"no users in {describe_database(services.config.database_url)}")


def _read_new_password() -> str:
    if sys.stdin is not None and sys.stdin.isatty():
        first = getpass.getpass("New password: ")
        second = getpass.getpass("Repeat new password: ")
        if first != second:
            raise CommandError("the passwords do not match", EX_DATAERR)
        return _check_password(first)
    line = sys.stdin.readline() if sys.stdin is not None else ""
    return _check_password(line.rstrip("\r\n"))


def cmd_passwd(args: argparse.Namespace, services: Runtime) -> None:
    user = services.accounts.require(args.email)  # before asking for anything
    password = args.password if args.password is not None else _read_new_password()
    services.accounts.set_password(user.email, password)
    _say(f"password changed for {user.email}")


def cmd_delete(args: argparse.Namespace, services: Runtime) -> None:
    user = services.accounts.delete(args.email)
    _say(f"deleted user {user.email} (account {user.account_id})")


def cmd_token(args: argparse.Namespace, services: Runtime) -> None:
    user = services.accounts.require(args.email)
    created, token = AppPasswords(services.db, services.accounts).create(user, args.label)
    _say(f"created app password {created.id} for {user.email}; it is shown only now")
    print(token)


def cmd_tokens(args: argparse.Namespace, services: Runtime) -> None:
    user = services.accounts.require(args.email)
    for p in AppPasswords(services.db, services.accounts).list(user.id):
        print(f"{p.id}\t{p.label or '-'}\t{_date(p.created_at)}\t{_date(p.last_used_at)}")


def cmd_revoke(args: argparse.Namespace, services: Runtime) -> None:
    user = services.accounts.require(args.email)
    if not AppPasswords(services.db, services.accounts).revoke(user.id, args.id):
        raise CommandError(f"{user.email} has no app password {args.id}", EX_DATAERR)
    _say(f"revoked app password {args.id} of {user.email}")


def cmd_delegate(args: argparse.Namespace, services: Runtime) -> None:
    if services.accounts.delegate(args.owner, args.delegate):
        _say(f"{args.delegate} now has full access to the account of {args.owner}")
    else:
        _say(f"{args.delegate} already had full access to the account of {args.owner}")


def cmd_undelegate(args: argparse.Namespace, services: Runtime) -> None:
    if services.accounts.undelegate(args.owner, args.delegate):
        _say(f"{args.delegate} no longer has access to the account of {args.owner}")
    else:
        _say(f"{args.delegate} had no access to the account of {args.owner}")


def _limit(value: str, option: str, sizes: bool) -> int | None:
    """An option's limit: ``none`` lifts it (whatever the default), ``default`` goes back to the setting."""
    text = value.strip().lower()
    if text == "default":
        return None
    if text == "none":
        return quota.UNLIMITED
    try:
        if sizes:
            parsed = parse_size(value)
        else:
            parsed = int(text) if text.isdigit() else None
    except ValueError:
        parsed = None
    if parsed is None:
        example = "2G, 500M or 1048576" if sizes else "a whole number like 100000"
        raise CommandError(f"{option} {value!r}: give {example}, none or default", EX_DATAERR)
    return parsed


def _shown(limit: int | None) -> str:
    return "none" if limit is None else str(limit)


def cmd_quota(args: argparse.Namespace, services: Runtime) -> None:
    user = services.accounts.require(args.email)
    wanted: dict[str, int | None] = {}
    if args.storage is not None:
        wanted["octets"] = _limit(args.storage, "--storage", sizes=True)
    if args.messages is not None:
        wanted["messages"] = _limit(args.messages, "--messages", sizes=False)
    if wanted:
        account = services.mailboxes.set_quota(user.account_id, **wanted)
        limits = account.limits
        _say(f"quota of {user.email}: storage {_shown(limits.octets)}, messages {_shown(limits.messages)}")
    else:
        account, _ = services.mailboxes.get_quota(user.account_id)
    print(f"storage\t{account.usage.octets}\t{_shown(account.limits.octets)}")
    print(f"messages\t{account.usage.messages}\t{_shown(account.limits.messages)}")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``user`` and its actions to the CLI."""
    user = sub.add_parser("user", help="manage users, app passwords and delegation")
    actions = user.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    def action(name: str, handler: Handler, help: str, *positionals: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help)
        for positional in positionals:
            p.add_argument(positional.lower(), metavar=positional)
        p.set_defaults(handler=with_runtime(handler))
        return p

    p = action("add", cmd_add, "create a user (prints a generated password when --password is omitted)", "EMAIL")
    p.add_argument("--password", metavar="PW", help="the password (default: generate one and print it)")
    action("list", cmd_list, "list users: EMAIL<TAB>ACCOUNT_ID per line")
    p = action("passwd", cmd_passwd, "set a user's password (--password, else prompt on a TTY, else stdin)", "EMAIL")
    p.add_argument("--password", metavar="PW", help="the new password (default: prompt, or one line of stdin)")
    action("delete", cmd_delete, "delete a user, their app passwords and delegations", "EMAIL")
    p = action("token", cmd_token, "create an app password and print it (shown only once)", "EMAIL")
    p.add_argument("--label", metavar="L", default="", help="what the app password is for, e.g. 'phone'")
    action("tokens", cmd_tokens, "list a user's app passwords: ID<TAB>LABEL<TAB>CREATED<TAB>LAST_USED", "EMAIL")
    action("revoke", cmd_revoke, "revoke one of a user's app passwords", "EMAIL", "ID")
    action("delegate", cmd_delegate, "give DELEGATE full access to OWNER's account", "OWNER", "DELEGATE")
    action("undelegate", cmd_undelegate, "take back DELEGATE's access to OWNER's account", "OWNER", "DELEGATE")
    p = action("quota", cmd_quota, "show or set a user's quotas: RESOURCE<TAB>USED<TAB>LIMIT per line", "EMAIL")
    p.add_argument("--storage", metavar="SIZE", help="octets of mail: 2G, 500M, 1048576; none; default (the setting)")
    p.add_argument("--messages", metavar="N", help="number of messages; none; default (the setting)")

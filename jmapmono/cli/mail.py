"""Mail intake sub-commands: ``deliver`` (local delivery agent) and ``lmtp`` (the LMTP server alone).

Both run in a plain process, never under gevent (see :mod:`jmapmono.main`).

``deliver --to EMAIL [--mailbox NAME] < message`` speaks sendmail's exit codes to
the MTA that pipes a message into it:

- 0: delivered, durably stored.
- 65 (EX_DATAERR): the message is empty (nothing but white space) or larger than
  ``JMAPMONO_MAX_MESSAGE_SIZE``: a permanent error, so the MTA bounces it.
  8-bit bytes, bad charsets and broken MIME are not errors: stored as they are.
- 67 (EX_NOUSER): no such user.
- 73 (EX_CANTCREAT): the recipient is over quota (storage or messages): a permanent error
  (the MTA bounces it, as LMTP's ``552 5.2.2``); nothing was stored.
- 77 (EX_NOPERM): the recipient's Sieve script rejected the message (reject/ereject, RFC 5429); the
  reason is printed, a permanent error (the MTA bounces it, as LMTP's ``550 5.7.1``); nothing was stored.
- 75 (EX_TEMPFAIL): the database is unavailable (or any unexpected failure): the
  MTA keeps the message and retries.
- 64 (EX_USAGE): bad command line. A bad configuration (environment, env file) is 75 too, not
  78: an MTA bounces mail on 78, and an operator's mistake must hold mail in the queue, not return it.

The message is stored byte for byte, with one exception: input that has no CRLF
at all (an MTA pipe hands over Unix LF line endings) has each LF turned into
CRLF, the line ending of RFC 5322 that JMAP clients see.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from jmapmono.config import ConfigError, IPNetwork, load_config, parse_host_port, parse_networks
from jmapmono.log import kv

log = logging.getLogger("jmapmono.deliver")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``deliver`` and ``lmtp`` to the CLI."""
    p = sub.add_parser(
        "deliver",
        help="deliver one message from standard input (local delivery agent for an MTA)",
        description="Deliver the message on standard input to EMAIL. Exit codes (sendmail): 0 delivered, "
        "65 empty or over JMAPMONO_MAX_MESSAGE_SIZE, 67 no such user, 73 over quota, 77 rejected by the "
        "recipient's Sieve script, 75 temporary failure (try again), "
        "64 usage; a bad configuration is 75 too (the MTA keeps the mail). "
        "Input with LF line endings only is stored with CRLF.",
    )
    p.add_argument("--to", required=True, metavar="EMAIL", help="the recipient (a user of this server)")
    p.add_argument("--mailbox", metavar="NAME", help="deliver into this mailbox instead of the Inbox")
    p.set_defaults(handler=_deliver)

    p = sub.add_parser(
        "lmtp",
        help="run the LMTP server alone",
        description="Accept mail over LMTP (RFC 2033) until SIGTERM/SIGINT. "
        "Default address: JMAPMONO_LMTP_LISTEN (127.0.0.1:8024). LMTP has no authentication: only clients in "
        "JMAPMONO_LMTP_ALLOWED_NETWORKS (default loopback) are served, others get 554.",
    )
    p.add_argument("--listen", metavar="HOST:PORT", type=_listen_arg, help="address to listen on")
    p.add_argument(
        "--allowed-networks",
        metavar="CIDRS",
        type=_networks_arg,
        help="client networks served, comma-separated (default: JMAPMONO_LMTP_ALLOWED_NETWORKS, else loopback)",
    )
    p.add_argument("--exit-with-parent", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(handler=_lmtp)


def _listen_arg(value: str) -> str:
    try:
        parse_host_port(value, "--listen")
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


def _networks_arg(value: str) -> tuple[IPNetwork, ...]:
    try:
        return parse_networks(value, "--allowed-networks")
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _deliver(args: argparse.Namespace) -> int:
    from jmapmono.accounts.users import AccountError
    from jmapmono.exits import EX_CANTCREAT, EX_DATAERR, EX_NOPERM, EX_NOUSER, EX_OK, EX_TEMPFAIL, CommandError
    from jmapmono.intake.deliver import read_message, reply_text, to_crlf
    from jmapmono.mailbox.manager import SieveRejected
    from jmapmono.mailbox.quota import OverQuota
    from jmapmono.runtime import Runtime
    from jmapmono.store import StoreError

    config = load_config()
    started = time.monotonic()
    stdin = sys.stdin.buffer if sys.stdin is not None else None
    try:
        raw = read_message(stdin, config.max_message_size) if stdin is not None else b""
    except OSError as e:
        raise CommandError(f"cannot read the message: {e}", EX_TEMPFAIL) from None
    if raw is None:
        raise CommandError(
            f"message larger than {config.max_message_size} bytes (JMAPMONO_MAX_MESSAGE_SIZE)", EX_DATAERR
        )
    if not raw.strip():
        raise CommandError("empty message", EX_DATAERR)
    raw = to_crlf(raw)
    services = None
    try:
        services = Runtime(config, durable_commits=True)
        delivered = services.mailboxes.deliver(args.to, raw, args.mailbox)
    except AccountError:
        raise CommandError(f"no such user: {args.to}", EX_NOUSER) from None
    except OverQuota as e:
        log.info(kv(event="deliver", rcpt=args.to, size=len(raw), result="over_quota"))
        raise CommandError(f"mailbox full: {e}", EX_CANTCREAT) from None
    except SieveRejected as e:
        log.info(kv(event="deliver", rcpt=args.to, size=len(raw), result="rejected"))
        raise CommandError(f"rejected: {reply_text(e.description)}", EX_NOPERM) from None
    except StoreError as e:
        raise CommandError(f"database unavailable, try again later: {e}", EX_TEMPFAIL) from None
    except Exception as e:  # never a traceback to the MTA, never a bounce for our own failure
        log.error(kv(event="deliver_failed", rcpt=args.to, error=f"{type(e).__name__}: {e}"))
        raise CommandError(f"delivery failed, try again later: {type(e).__name__}: {e}", EX_TEMPFAIL) from None
    finally:
        if services is not None:
            services.close()
    log.info(
        kv(
            event="deliver",
            rcpt=args.to,
            size=len(raw),
            ms=f"{(time.monotonic() - started) * 1000:.1f}",
            result="ok",
            account=delivered.account_id,
            message=delivered.message_id,
        )
    )
    return EX_OK


def _lmtp(args: argparse.Namespace) -> int:
    from jmapmono.cli import gevent_patched
    from jmapmono.exits import EX_CONFIG, EX_SOFTWARE, EX_TEMPFAIL, CommandError

    if gevent_patched():
        raise CommandError(
            "the LMTP server cannot run in a gevent-patched process: use `python -m jmapmono lmtp`", EX_SOFTWARE
        )
    config = load_config()
    if args.allowed_networks:
        config = config.with_overrides(lmtp_allowed_networks=args.allowed_networks)
    listen = args.listen or config.lmtp_listen
    if listen is None:
        raise CommandError("LMTP is off (JMAPMONO_LMTP_LISTEN=off): give --listen HOST:PORT", EX_CONFIG)
    host, port = parse_host_port(listen, "--listen")
    from jmapmono.intake.lmtp import run
    from jmapmono.runtime import Runtime

    try:
        return run(config, lambda: Runtime(config, durable_commits=True), host, port, args.exit_with_parent)
    except OSError as e:
        raise CommandError(f"cannot listen on {listen}: {e.strerror or e}", EX_TEMPFAIL) from None

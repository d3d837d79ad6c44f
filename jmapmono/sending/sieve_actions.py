"""What a Sieve script decides beyond filing: ``redirect`` (RFC 5228 §4.2) and ``vacation`` (RFC 5230).

Redirect runs during the delivery, before the message is stored and before the MTA gets its reply: the
message goes to a user of this server directly, else through the SMTP relay (``JMAPMONO_SMTP_RELAY``),
from the original envelope sender. Whatever is not sent (no relay, refused, a loop) makes the delivery keep
the message in the Inbox, so nothing is lost; the MTA still holds its copy until the reply, so a crash
before it means a retry, never a loss. Each redirect adds ``X-Jmapmono-Loop: <recipient>``: a message that
already carries the recipient's address there (it came back), or :data:`MAX_HOPS` such fields, is not
redirected again.

Vacation replies follow the VacationResponse's rules (:mod:`jmapmono.sending.vacation`: RFC 3834, no reply
to lists, robots, bulk or auto-submitted mail, the null sender, or mail not addressed to the user or one of
its ``:addresses``), at most once per sender per ``:days`` for each ``:handle`` (RFC 5230 §4.2), sent in
the background after the delivery. ``:from`` is used only when it is the user's own address.
"""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from jmapmono.accounts.users import Accounts
from jmapmono.clock import now_ms
from jmapmono.config import Config
from jmapmono.log import kv
from jmapmono.mailbox.identities import is_address
from jmapmono.mailbox.mime_addresses import addresses
from jmapmono.mailbox.mime_tree import parse_mime
from jmapmono.sending.background import CLOSE_TIMEOUT, BackgroundWork
from jmapmono.sending.smarthost import RelayError, SmtpRelay
from jmapmono.sending.vacation import VacationSettings, build_reply, reply_target, skip_reason
from jmapmono.store import Database

if TYPE_CHECKING:
    from jmapmono.mailbox.manager import Delivered, MailboxManager

log = logging.getLogger(__name__)

LOOP_FIELD = b"X-Jmapmono-Loop"
#: A message that went through this many redirects is not redirected again.
MAX_HOPS = 8
#: Bounds of a vacation action's ``:days`` (RFC 5230 §4.1 lets a site set both).
MIN_DAYS, MAX_DAYS = 1, 365


def _header_end(raw: bytes) -> int:
    end = raw.find(b"\r\n\r\n")
    return end if end >= 0 else raw.find(b"\n\n")


def loop_marks(raw: bytes) -> list[str]:
    """The addresses in the message's ``X-Jmapmono-Loop`` fields, lower-cased."""
    end = _header_end(raw)
    head = raw if end < 0 else raw[:end]
    prefix = LOOP_FIELD.lower() + b":"
    return [
        line[len(prefix) :].strip().decode("utf-8", "replace").lower()
        for line in head.split(b"\n")
        if line.lower().startswith(prefix)
    ]


def _envelope_sender(raw: bytes) -> str:
    end = _header_end(raw)
    for line in (raw if end < 0 else raw[:end]).split(b"\n"):
        if line.lower().startswith(b"return-path:"):
            found = addresses(line[12:].strip())
            return found[0]["email"] if found and found[0].get("email") else ""
    return ""


def _without_return_path(raw: bytes) -> bytes:
    """The message less the leading ``Return-Path:`` this server's final delivery added (RFC 5321 §4.4)."""
    while raw.lower().startswith(b"return-path:"):
        cut = raw.find(b"\n")
        raw = raw[cut + 1 :] if cut >= 0 else b""
    return raw


class SieveActions:
    """What a Sieve script decides beyond filing: redirects (before the message is stored) and vacation
    replies (after, in the background)."""

    def __init__(
        self, db: Database, config: Config, accounts: Accounts, mailboxes: MailboxManager, relay: SmtpRelay
    ) -> None:
        self.db = db
        self.config = config
        self.accounts = accounts
        self.mailboxes = mailboxes
        self.relay = relay
        self._replies = BackgroundWork("sieve_vacation")

    # -- redirect ---------------------------------------------------------------------------------------------

    def redirect(self, account_id: str, recipient: str, raw: bytes, to: list[str]) -> list[str]:
        """Send ``raw`` (delivered for ``recipient``) on to ``to``; the addresses it could NOT be sent to."""
        started = time.monotonic()
        marks = loop_marks(raw)
        if recipient.lower() in marks or len(marks) >= MAX_HOPS:
            log.warning(kv(event="sieve_redirect_loop", account=account_id, rcpt=recipient, hops=len(marks)))
            return list(to)
        sender = _envelope_sender(raw)
        forwarded = LOOP_FIELD + b": " + recipient.encode("utf-8") + b"\r\n" + _without_return_path(raw)
        unsent: list[str] = []
        remote: list[str] = []
        for address in to:
            if not is_address(address):
                unsent.append(address)
            elif self.accounts.get(address) is not None:
                try:
                    self.mailboxes.deliver(address, f"Return-Path: <{sender}>\r\n".encode() + forwarded)
                except Exception as e:  # refused or failed there: kept here instead
                    log.warning(kv(event="sieve_redirect_refused", account=account_id, to=address, error=repr(e)))
                    unsent.append(address)
            else:
                remote.append(address)
        if remote and not self.relay.configured:
            unsent += remote
        elif remote:
            try:
                accepted = set(self.relay.send(sender, remote, forwarded).accepted)
            except RelayError as e:
                log.warning(kv(event="sieve_redirect_refused", account=account_id, stage=e.stage))
                accepted = set()
            unsent += [a for a in remote if a not in accepted]
        log.info(
            kv(
                event="sieve_redirected",
                account=account_id,
                sent=len(to) - len(unsent),
                unsent=len(unsent),
                ms=round((time.monotonic() - started) * 1000, 1),
            )
        )
        return unsent

    # -- vacation ---------------------------------------------------------------------------------------------

    def on_delivered(self, delivered: Delivered, raw: bytes) -> None:
        """``MailboxManager.deliver`` hook: the script's vacation reply, in the background."""
        if delivered.vacation is None:
            return
        self._replies.start(
            delivered.account_id,
            self.respond,
            delivered.account_id,
            delivered.vacation,
            raw,
            account=delivered.account_id,
        )

    def wait_idle(self, timeout: float = CLOSE_TIMEOUT) -> bool:
        """Wait until no reply is being sent (tests; shutdown); True if none is left."""
        return self._replies.wait_idle(timeout)

    def respond(self, account_id: str, params: dict[str, Any], raw: bytes) -> str:
        """Send the vacation action's reply if the rules allow it; what happened ("sent" or why not)."""
        started = time.monotonic()
        user = self.accounts.by_account_id(account_id)
        if user is None:
            return "no-user"
        end = _header_end(raw)
        headers = parse_mime(raw[: end + 2] + b"\r\n" if end >= 0 else raw).root
        own = {user.email.lower()} | {a.lower() for a in params.get("addresses", ()) if isinstance(a, str)}
        outcome = skip_reason(headers, own)
        target = reply_target(headers) or ""
        local = outcome is None and self.accounts.get(target) is not None
        if outcome is None and not local and not self.relay.configured:
            outcome = "no-relay"
        if outcome is None:
            outcome = self._send(account_id, params, headers, user.email, target, local)
        log.info(
            kv(
                event="sieve_vacation_reply",
                account=account_id,
                to=target or None,
                outcome=outcome,
                ms=round((time.monotonic() - started) * 1000, 1),
            )
        )
        return outcome

    def _send(self, account_id: str, params: dict[str, Any], headers: Any, email: str, target: str, local: bool) -> str:
        days = min(max(int(params.get("days", self.config.vacation_reply_days)), MIN_DAYS), MAX_DAYS)
        reason = str(params.get("reason", ""))
        subject = params.get("subject")
        handle = params.get("handle") or hashlib.sha256(f"{reason}\0{subject}".encode()).hexdigest()[:32]
        name = ""
        wanted = addresses(str(params.get("from", "")))
        if wanted and str(wanted[0].get("email", "")).lower() == email.lower():
            name = wanted[0].get("name") or ""
        now = now_ms()
        key = target.lower()
        with self.db.transaction() as tx:
            claimed = tx.execute(
                "INSERT INTO sieve_vacation_replies (account_id, handle, sender, replied_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (account_id, handle, sender) DO UPDATE SET replied_at = excluded.replied_at "
                "WHERE sieve_vacation_replies.replied_at <= ?",
                (account_id, handle, key, now, now - days * 86_400_000),
            )
        if not claimed:
            return "already-answered"
        settings = VacationSettings(is_enabled=True, subject=subject, text_body=reason)
        reply = build_reply(settings, headers, name, email, target, datetime.fromtimestamp(now / 1000, UTC))
        try:
            if local:
                self.mailboxes.deliver(target, b"Return-Path: <>\r\n" + reply)
            else:
                result = self.relay.send("", [target], reply)
                if not result.accepted:
                    raise RelayError("rcpt", "the relay refused the reply")
        except Exception:
            with self.db.transaction() as tx:  # the sender's next message tries again
                tx.execute(
                    "DELETE FROM sieve_vacation_replies WHERE account_id = ? AND handle = ? AND sender = ? "
                    "AND replied_at = ?",
                    (account_id, handle, key, now),
                )
            raise
        return "sent"

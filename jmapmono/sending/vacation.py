"""The vacation response (RFC 8621 §8) and the automatic reply it sends (RFC 3834).

Storage: one row per account (no row: disabled, every text null). Changing it is one transaction
with its change-log entry (the object id is always "singleton") and one outbox event; it also
forgets whom the previous response answered, so a new absence answers everyone once again.

The reply: :meth:`Vacation.on_delivered` is called by ``MailboxManager.deliver`` after each delivery
has committed, in whatever process delivered (the LMTP child, ``deliver``, or ``serve`` for local
submissions). When the account has a response enabled, it hands the work to a background thread (a
greenlet under gevent) so that delivery stays fast and never fails because of the reply.
:meth:`Vacation.respond` then applies RFC 3834: no reply to lists, bulk or junk mail, auto-submitted
mail, null or robot senders, mail not addressed to the user, and at most one reply per sender per
``JMAPMONO_VACATION_REPLY_DAYS`` (claimed in the database, so concurrent deliveries and several
processes agree). The reply is ``Auto-Submitted: auto-replied``, threaded (In-Reply-To/References),
sent with the null envelope sender, delivered locally when the sender is a user here, else through
the SMTP relay. A reply that cannot be sent is logged and its claim released: the sender's next
message tries again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr, make_msgid
from typing import TYPE_CHECKING, Any

from jmapmono.accounts.users import Accounts
from jmapmono.clock import now_ms
from jmapmono.config import Config
from jmapmono.log import kv
from jmapmono.mailbox import changes
from jmapmono.mailbox.identities import check_state, is_address, record_states
from jmapmono.mailbox.mime_addresses import addresses
from jmapmono.mailbox.mime_fields import header_text, html_to_text, message_ids, strip_comments, text_form, unfold
from jmapmono.mailbox.mime_tree import MimePart, parse_mime
from jmapmono.mailbox.mutation import Mutation
from jmapmono.sending.background import CLOSE_TIMEOUT, BackgroundWork
from jmapmono.sending.smarthost import RelayError, SmtpRelay
from jmapmono.store import Database, Transaction

if TYPE_CHECKING:
    from jmapmono.mailbox.manager import Delivered, MailboxManager

log = logging.getLogger(__name__)

TYPE = "VacationResponse"
SINGLETON = "singleton"
DEFAULT_TEXT = "I am away at the moment and will read your message when I am back.\n"
_LIST_FIELDS = ("list-id", "list-help", "list-unsubscribe", "list-subscribe", "list-post", "list-owner", "list-archive")
_ROBOTS = frozenset({"mailer-daemon", "listserv", "majordomo", "noreply", "no-reply", "donotreply", "do-not-reply"})
_ADDRESSED = ("To", "Cc", "Bcc", "Resent-To", "Resent-Cc", "Resent-Bcc")


@dataclass(frozen=True)
class VacationSettings:
    is_enabled: bool = False
    from_date: int | None = None
    to_date: int | None = None
    subject: str | None = None
    text_body: str | None = None
    html_body: str | None = None

    def active_at(self, when: int) -> bool:
        """Whether mail arriving at ``when`` (ms) gets the response: enabled, on/after fromDate, before toDate."""
        return (
            self.is_enabled
            and (self.from_date is None or when >= self.from_date)
            and (self.to_date is None or when < self.to_date)
        )


#: The fields an update may set.
FIELDS = ("is_enabled", "from_date", "to_date", "subject", "text_body", "html_body")


def delete_account_data(tx: Transaction, account_id: str) -> None:
    """Forget the account's vacation response and replies (inside the transaction deleting its user)."""
    tx.execute("DELETE FROM vacation_responses WHERE account_id = ?", (account_id,))
    tx.execute("DELETE FROM vacation_replies WHERE account_id = ?", (account_id,))


# --- RFC 3834 decisions -------------------------------------------------------------------------------------------


def _value(part: MimePart, name: str) -> str | None:
    raw = part.header(name)
    return None if raw is None else strip_comments(unfold(header_text(raw))).strip()


def reply_target(headers: MimePart) -> str | None:
    """Where a reply goes: the envelope sender (Return-Path) when the delivery recorded one, else Sender, else
    From (RFC 3834 §4). "" for the null sender (a bounce: never answered)."""
    return_path = headers.header("Return-Path")
    if return_path is not None:
        found = addresses(return_path)
        return found[0]["email"] if found and found[0].get("email") else ""
    for name in ("Sender", "From"):
        value = headers.header(name)
        if value is not None:
            emails: list[str] = [a["email"] for a in addresses(value) if a.get("email")]
            if emails:
                return emails[0]
    return None


def skip_reason(headers: MimePart, own: set[str]) -> str | None:
    """Why the message must not be answered (RFC 3834 §2 and common practice), or None to answer it.

    ``own`` holds the user's addresses, lower-cased.
    """
    auto = _value(headers, "Auto-Submitted")
    if auto is not None and auto.split(";")[0].strip().lower() != "no":
        return "auto-submitted"
    precedence = (_value(headers, "Precedence") or "").lower()
    if precedence in ("bulk", "junk", "list"):
        return f"precedence-{precedence}"
    names = {name.lower() for name, _ in headers.headers}
    if names & set(_LIST_FIELDS):
        return "mailing-list"
    suppress = (_value(headers, "X-Auto-Response-Suppress") or "").lower()
    if any(token.strip() in ("all", "oof") for token in suppress.split(",")):
        return "suppressed"
    target = reply_target(headers)
    if not target:
        return "null-sender"
    if not is_address(target):
        return "invalid-sender"
    local = target.rsplit("@", 1)[0].lower()
    if local in _ROBOTS or local.startswith("owner-") or local.endswith(("-request", "-owner", "-bounces")):
        return "robot-sender"
    if target.lower() in own:
        return "own-address"
    recipients = {a["email"].lower() for name in _ADDRESSED for v in headers.header_all(name) for a in addresses(v)}
    if not recipients & own:
        return "not-addressed"
    return None


def _one_line(text: str) -> str:
    return " ".join(text.replace("\r", " ").replace("\n", " ").split())


def build_reply(
    settings: VacationSettings, headers: MimePart, from_name: str, from_email: str, to: str, when: datetime
) -> bytes:
    """The reply to the message whose header fields are ``headers`` (RFC 3834 §3)."""
    original_raw = headers.header("Subject")
    original = _one_line(text_form(original_raw)) if original_raw is not None else ""
    if settings.subject is not None and settings.subject.strip():
        subject = _one_line(settings.subject)
    elif original:
        subject = original if original.lower().startswith("re:") else f"Re: {original}"
    else:
        subject = "Automatic reply"
    msg = EmailMessage(policy=SMTP)
    msg["From"] = formataddr((_one_line(from_name), from_email)) if from_name.strip() else from_email
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = make_msgid(domain=from_email.rsplit("@", 1)[1])
    msgid = headers.header("Message-ID")
    ids = (message_ids(msgid) or []) if msgid is not None else []
    if ids:
        refs_raw = headers.header("References")
        refs = (message_ids(refs_raw) or []) if refs_raw is not None else []
        msg["In-Reply-To"] = f"<{ids[0]}>"
        msg["References"] = " ".join(f"<{i}>" for i in [*refs[-20:], ids[0]])
    msg["Auto-Submitted"] = "auto-replied"
    text = settings.text_body
    if text is None:
        text = html_to_text(settings.html_body) if settings.html_body is not None else DEFAULT_TEXT
    msg.set_content(text)
    if settings.html_body is not None:
        msg.add_alternative(settings.html_body, subtype="html")
    return msg.as_bytes()


# --- the store and the responder ----------------------------------------------------------------------------------


def _settings(row: Mapping[str, Any] | None) -> VacationSettings:
    if row is None:
        return VacationSettings()
    return VacationSettings(
        bool(row["is_enabled"]),
        row["from_date"],
        row["to_date"],
        row["subject"],
        row["text_body"],
        row["html_body"],
    )


def _read(tx: Transaction, account_id: str) -> VacationSettings:
    return _settings(
        tx.one(
            "SELECT is_enabled, from_date, to_date, subject, text_body, html_body FROM vacation_responses "
            "WHERE account_id = ?",
            (account_id,),
        )
    )


class Vacation:
    """Reads and changes the vacation response; sends the automatic replies."""

    def __init__(
        self, db: Database, config: Config, accounts: Accounts, mailboxes: MailboxManager, relay: SmtpRelay
    ) -> None:
        self.db = db
        self.config = config
        self.accounts = accounts
        self.mailboxes = mailboxes
        self.relay = relay
        self._replies = BackgroundWork("vacation_reply")

    def get(self, account_id: str) -> tuple[VacationSettings, str]:
        """The settings and the VacationResponse state."""
        with self.db.read() as tx:
            return _read(tx, account_id), changes.state(tx, account_id, TYPE)

    def update(self, account_id: str, values: Mapping[str, Any], if_in_state: str | None = None) -> tuple[str, str]:
        """Change some of ``FIELDS`` (already validated); (old state, new state). One transaction and event,
        none when nothing changes. Raises StateMismatch when ``if_in_state`` is not the current state."""
        started = time.monotonic()
        unknown = set(values) - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown vacation fields: {sorted(unknown)}")
        with self.db.transaction() as tx:
            m = Mutation(tx, account_id)
            old_state = check_state(tx, account_id, TYPE, if_in_state)
            current = _read(tx, account_id)
            new = replace(current, **values)
            if new == current:
                return old_state, old_state
            tx.execute(
                "INSERT INTO vacation_responses (account_id, is_enabled, from_date, to_date, subject, text_body, "
                "html_body, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (account_id) DO UPDATE SET "
                "is_enabled = excluded.is_enabled, from_date = excluded.from_date, to_date = excluded.to_date, "
                "subject = excluded.subject, text_body = excluded.text_body, html_body = excluded.html_body, "
                "updated_at = excluded.updated_at",
                (
                    account_id,
                    1 if new.is_enabled else 0,
                    new.from_date,
                    new.to_date,
                    new.subject,
                    new.text_body,
                    new.html_body,
                    now_ms(),
                ),
            )
            tx.execute("DELETE FROM vacation_replies WHERE account_id = ?", (account_id,))
            new_state = record_states(m, TYPE, updated=[SINGLETON])[TYPE]
        log.info(
            kv(
                event="vacation_updated",
                account=account_id,
                enabled=new.is_enabled,
                ms=round((time.monotonic() - started) * 1000, 1),
            )
        )
        return old_state, new_state

    # -- the automatic reply ------------------------------------------------------------------------------------

    def on_delivered(self, delivered: Delivered, raw: bytes) -> None:
        """``MailboxManager.deliver`` hook (after commit): answer in the background when a response is enabled
        (one primary-key read here; nothing else in the delivery path). Not for a message the recipient's filter
        did not store, nor one its vacation action answers."""
        if not delivered.message_id or delivered.vacation is not None:
            return
        rows = self.db.query_alone(
            "SELECT is_enabled FROM vacation_responses WHERE account_id = ?", (delivered.account_id,)
        )
        if not rows or not rows[0]["is_enabled"]:
            return
        self._replies.start(
            delivered.message_id,
            self.respond,
            delivered.account_id,
            delivered.message_id,
            raw,
            now_ms(),
            account=delivered.account_id,
            message=delivered.message_id,
        )

    def wait_idle(self, timeout: float = CLOSE_TIMEOUT) -> bool:
        """Wait until no reply is being worked on (tests; shutdown); True if none is left."""
        return self._replies.wait_idle(timeout)

    def respond(self, account_id: str, message_id: str, raw: bytes, received_at: int) -> str:
        """Send the vacation reply to one delivered message if RFC 3834 allows it; what happened: "sent",
        "inactive" or the reason it was not sent."""
        with self.db.read() as tx:
            settings = _read(tx, account_id)
            name = tx.value("SELECT name FROM identities WHERE account_id = ? AND is_default = 1", (account_id,))
        if not settings.active_at(received_at):
            return "inactive"
        started = time.monotonic()
        user = self.accounts.by_account_id(account_id)
        if user is None:
            return "no-user"
        end = raw.find(b"\r\n\r\n")
        end = raw.find(b"\n\n") if end < 0 else end
        headers = parse_mime(raw[: end + 2] + b"\r\n" if end >= 0 else raw).root
        outcome = skip_reason(headers, {user.email.lower()})
        target = reply_target(headers) or ""
        local = outcome is None and self.accounts.get(target) is not None
        if outcome is None and not local and not self.relay.configured:
            outcome = "no-relay"
        if outcome is None:
            outcome = self._send(account_id, settings, headers, name or "", user.email, target, local)
        log.info(
            kv(
                event="vacation_reply",
                account=account_id,
                message=message_id,
                to=target or None,
                outcome=outcome,
                ms=round((time.monotonic() - started) * 1000, 1),
            )
        )
        return outcome

    def _send(
        self,
        account_id: str,
        settings: VacationSettings,
        headers: MimePart,
        name: str,
        email: str,
        target: str,
        local: bool,
    ) -> str:
        now = now_ms()
        key = target.lower()
        cutoff = now - self.config.vacation_reply_days * 86_400_000
        with self.db.transaction() as tx:
            claimed = tx.execute(
                "INSERT INTO vacation_replies (account_id, sender, replied_at) VALUES (?, ?, ?) "
                "ON CONFLICT (account_id, sender) DO UPDATE SET replied_at = excluded.replied_at "
                "WHERE vacation_replies.replied_at <= ?",
                (account_id, key, now, cutoff),
            )
        if not claimed:
            return "already-answered"
        reply = build_reply(settings, headers, name, email, target, datetime.fromtimestamp(now / 1000, UTC))
        try:
            if local:
                self.mailboxes.deliver(target, b"Return-Path: <>\r\n" + reply)
            else:
                result = self.relay.send("", [target], reply)
                if not result.accepted:
                    refused = result.data or result.recipients.get(target)
                    raise RelayError("rcpt", f"the relay refused the reply: {refused.text if refused else ''}")
        except Exception:
            with self.db.transaction() as tx:  # let the sender's next message try again
                tx.execute(
                    "DELETE FROM vacation_replies WHERE account_id = ? AND sender = ? AND replied_at = ?",
                    (account_id, key, now),
                )
            raise
        return "sent"

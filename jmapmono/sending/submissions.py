"""Email submissions: checking, sending and recording a message sent from an account (RFC 8621 §7).

Sending happens during the JMAP call, never inside a database transaction:

1. :meth:`Submissions.prepare` first puts the message in the form it is sent in (:func:`wire_form`: CRLF
   line ends; a bare CR or a NUL refuses it: ``invalidEmail``), so that what it checks is what is sent; it
   checks the identity (From/Sender must be the identity's address: ``forbiddenFrom``), derives the
   envelope when none is given (MAIL FROM from Sender/From, else the identity's address; RCPT TO the
   de-duplicated To+Cc+Bcc) or checks the one given (``forbiddenMailFrom``, ``invalidRecipients``,
   ``noRecipients``, ``tooManyRecipients``), and splits the recipients into users of this server and others.
2. :meth:`Submissions.send` relays the message, Bcc fields removed, to the others through the SMTP
   relay first (with no relay, or when it takes no recipient, nothing is sent at all and the
   submission is refused), then delivers it to local users through ``MailboxManager.deliver``.
   Each recipient gets a DeliveryStatus. There is no delayed send: undoStatus is "final".
3. :meth:`Submissions.record` stores the submissions of one /set call, and the destructions, in ONE
   transaction with their change-log entries and one outbox event.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from jmapmono.accounts.users import Accounts, UnknownUser
from jmapmono.clock import now_ms
from jmapmono.config import Config
from jmapmono.log import kv
from jmapmono.mailbox import changes
from jmapmono.mailbox.blobs import BlobStore
from jmapmono.mailbox.identities import ForbiddenFrom, Identities, Identity, check_state, is_address, may_send_as
from jmapmono.mailbox.identities import record_states as _record_states
from jmapmono.mailbox.manager import MailboxManager
from jmapmono.mailbox.mime_addresses import addresses
from jmapmono.mailbox.mime_tree import parse_mime
from jmapmono.mailbox.model import InvalidProperties, MailboxError, new_id
from jmapmono.mailbox.mutation import Mutation
from jmapmono.sending.smarthost import RelayError, SmtpRelay, to_crlf
from jmapmono.store import Database, StoreError, Transaction

log = logging.getLogger(__name__)

TYPE = "EmailSubmission"
#: Recipients one submission may have (reported as maxRecipients with tooManyRecipients).
MAX_RECIPIENTS = 100
_STRIPPED = frozenset({"bcc", "resent-bcc"})
_FIELD_START = re.compile(rb"([!-9;-~]+)[ \t]*:")
_BARE_CR = re.compile(rb"\r(?!\n)")
_COLUMNS = "id, account_id, identity_id, email_id, thread_id, envelope_json, send_at, undo_status, delivery_status_json"


# --- errors (RFC 8621 §7.5) -------------------------------------------------------------------------------------


class SubmissionError(MailboxError):
    """A refused submission; ``extra`` holds the SetError's additional properties."""

    def __init__(self, description: str, properties: Iterable[str] = (), **extra: Any) -> None:
        super().__init__(description, properties)
        self.extra = extra


class InvalidEmail(SubmissionError):
    set_error = "invalidEmail"


class TooManyRecipients(SubmissionError):
    set_error = "tooManyRecipients"


class NoRecipients(SubmissionError):
    set_error = "noRecipients"


class InvalidRecipients(SubmissionError):
    set_error = "invalidRecipients"


class ForbiddenMailFrom(SubmissionError):
    set_error = "forbiddenMailFrom"


class ForbiddenToSend(SubmissionError):
    set_error = "forbiddenToSend"


class TooLarge(SubmissionError):
    set_error = "tooLarge"


class CannotUnsend(SubmissionError):
    set_error = "cannotUnsend"


# --- the model ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Address:
    """An envelope address and its SMTP parameters (none are supported: submissionExtensions is empty)."""

    email: str
    parameters: dict[str, str | None] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"email": self.email, "parameters": self.parameters}


@dataclass(frozen=True)
class Envelope:
    mail_from: Address
    rcpt_to: tuple[Address, ...]

    def to_json(self) -> dict[str, Any]:
        return {"mailFrom": self.mail_from.to_json(), "rcptTo": [a.to_json() for a in self.rcpt_to]}

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Envelope:
        def address(a: Mapping[str, Any]) -> Address:
            return Address(a["email"], a.get("parameters"))

        return Envelope(address(data["mailFrom"]), tuple(address(a) for a in data["rcptTo"]))


@dataclass(frozen=True)
class Submission:
    id: str
    account_id: str
    identity_id: str
    email_id: str
    thread_id: str
    envelope: Envelope
    send_at: int
    undo_status: str = "final"
    #: Recipient address -> {"smtpReply", "delivered", "displayed"}.
    delivery_status: dict[str, dict[str, str]] | None = None


@dataclass
class Prepared:
    """A checked submission, ready to send."""

    submission_id: str
    account_id: str
    identity: Identity
    email_id: str
    thread_id: str
    envelope: Envelope
    message: bytes
    local: list[str] = field(default_factory=list)
    remote: list[str] = field(default_factory=list)
    send_at: int = 0


def strip_bcc(raw: bytes) -> bytes:
    """``raw`` without its top-level Bcc and Resent-Bcc fields (continuation lines included); every other
    byte is kept as it is."""
    end = len(raw)
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = raw.find(sep)
        if 0 <= i < end:
            end = i + len(sep) // 2
    if raw.startswith((b"\r\n", b"\n")):
        return raw
    out: list[bytes] = []
    keep = True
    pos = 0
    while pos < end:
        nl = raw.find(b"\n", pos, end)
        line_end = end if nl < 0 else nl + 1
        line = raw[pos:line_end]
        if line[:1] in (b" ", b"\t"):
            if keep:
                out.append(line)
        else:
            m = _FIELD_START.match(line)
            keep = m is None or m.group(1).decode("ascii").lower() not in _STRIPPED
            if keep:
                out.append(line)
        pos = line_end
    return b"".join(out) + raw[end:]


def wire_form(raw: bytes) -> bytes:
    """The bytes an SMTP relay is given for ``raw``: every line ending CRLF. Raises InvalidEmail for a bare CR
    or a NUL, which have no single reading.

    RFC 5322 §2.3 lets CR and LF occur only together, as CRLF, and RFC 5321 §4.1.1.4 has an SMTP client send
    line terminators only as CRLF. A bare LF is a line end in local (Unix) form, e.g. an imported message:
    it becomes CRLF, as sendmail and Postfix do for locally submitted mail, and the checks read the result.
    A bare CR is a line end to some receivers and not to others (our parser ends lines at LF), so
    ``From: <me>\\rFrom: ceo@bank.example`` would be one From field when checked and two when delivered:
    refused, as is NUL (RFC 5322 §2.3, RFC 2045 §2.7–2.8: never in 7bit or 8bit data; C code stops at it).
    """
    if b"\x00" in raw:
        raise InvalidEmail("the email contains a NUL byte (RFC 5322 §2.3): it cannot be sent")
    if _BARE_CR.search(raw) is not None:
        raise InvalidEmail("the email contains a CR that does not end a line (RFC 5322 §2.3): it cannot be sent")
    return to_crlf(raw)


def _emails(values: list[bytes]) -> list[str]:
    return [a["email"] for value in values for a in addresses(value) if a.get("email")]


def dedupe(emails: Iterable[str]) -> list[str]:
    """Addresses in order, each once (compared case-insensitively)."""
    seen: dict[str, str] = {}
    for e in emails:
        seen.setdefault(e.lower(), e)
    return list(seen.values())


def _status(reply: str, delivered: str) -> dict[str, str]:
    return {"smtpReply": reply, "delivered": delivered, "displayed": "unknown"}


def _submission(r: Mapping[str, Any]) -> Submission:
    status = r["delivery_status_json"]
    return Submission(
        id=r["id"],
        account_id=r["account_id"],
        identity_id=r["identity_id"],
        email_id=r["email_id"],
        thread_id=r["thread_id"],
        envelope=Envelope.from_json(json.loads(r["envelope_json"])),
        send_at=int(r["send_at"]),
        undo_status=r["undo_status"],
        delivery_status=None if status is None else json.loads(status),
    )


def delete_account_data(tx: Transaction, account_id: str) -> None:
    """Forget the account's submissions (inside the transaction deleting its user)."""
    tx.execute("DELETE FROM email_submissions WHERE account_id = ?", (account_id,))


class Submissions:
    """Checks, sends and records email submissions."""

    def __init__(
        self,
        db: Database,
        config: Config,
        accounts: Accounts,
        mailboxes: MailboxManager,
        blobs: BlobStore,
        identities: Identities,
        relay: SmtpRelay,
    ) -> None:
        self.db = db
        self.config = config
        self.accounts = accounts
        self.mailboxes = mailboxes
        self.blobs = blobs
        self.identities = identities
        self.relay = relay

    # -- reads --------------------------------------------------------------------------------------------------

    def get(self, account_id: str, ids: Iterable[str] | None = None) -> tuple[list[Submission], str]:
        """The account's submissions (all, oldest first, or those of ``ids`` that exist) and the state."""
        with self.db.read() as tx:
            state = changes.state(tx, account_id, TYPE)
            if ids is None:
                rows = tx.query(
                    f"SELECT {_COLUMNS} FROM email_submissions WHERE account_id = ? ORDER BY send_at, id",
                    (account_id,),
                )
            else:
                wanted = sorted(set(ids))
                rows = []
                for start in range(0, len(wanted), 400):
                    chunk = wanted[start : start + 400]
                    rows += tx.query(
                        f"SELECT {_COLUMNS} FROM email_submissions WHERE account_id = ? "
                        f"AND id IN ({', '.join('?' * len(chunk))})",
                        (account_id, *chunk),
                    )
        return [_submission(r) for r in rows], state

    def state(self, account_id: str) -> str:
        with self.db.read() as tx:
            return changes.state(tx, account_id, TYPE)

    def check_state(self, account_id: str, expected: str | None) -> str:
        """The current state; StateMismatch when ``expected`` is given and differs."""
        with self.db.read() as tx:
            return check_state(tx, account_id, TYPE, expected)

    # -- checking -----------------------------------------------------------------------------------------------

    def prepare(self, account_id: str, identity_id: str, email_id: str, envelope: Envelope | None) -> Prepared:
        """Check one submission; raise the MailboxError that refuses it (RFC 8621 §7.5 SetError types)."""
        identity = self.identities.find(account_id, identity_id)
        if identity is None:
            raise InvalidProperties(f"no identity {identity_id}", ["identityId"])
        found, _ = self.mailboxes.get_messages(account_id, [email_id])
        message = found.get(email_id)
        raw = None if message is None else self.blobs.get(account_id, message.blob_id)
        if message is None or raw is None:
            raise InvalidProperties(f"no email {email_id}", ["emailId"])
        limit = self.config.max_message_size
        if len(raw) > limit:
            raise TooLarge(f"the email is {len(raw)} octets; at most {limit} can be sent", maxSize=limit)
        raw = wire_form(raw)  # before any check: what is checked is what is sent
        if len(raw) > limit:
            raise TooLarge(f"the email is {len(raw)} octets with CRLF line ends; at most {limit}", maxSize=limit)
        headers = parse_mime(raw).root
        from_fields, sender_fields = headers.header_all("From"), headers.header_all("Sender")
        if len(from_fields) > 1 or len(sender_fields) > 1:
            which = ["from"] if len(from_fields) > 1 else ["sender"]
            raise InvalidEmail(f"the email has more than one {which[0].title()} header field", which)
        from_ = _emails(from_fields)
        sender = _emails(sender_fields)
        if not from_:
            raise InvalidEmail("the email has no From address", ["from"])
        if len(sender) > 1:
            raise InvalidEmail("the Sender header field has more than one address", ["sender"])
        if len(from_) > 1 and not sender:
            raise InvalidEmail("an email with several From addresses needs a Sender (RFC 5322)", ["from", "sender"])
        forged = [a for a in from_ + sender if not may_send_as(identity.email, a)]
        if forged:
            raise ForbiddenFrom(f"identity {identity.id} sends as {identity.email}, not as {', '.join(forged)}")
        owner = self.identities.owner_email(account_id)
        if envelope is None:
            claimed = (sender or from_)[0]
            mail_from = claimed if may_send_as(identity.email, claimed) else identity.email
            rcpts = dedupe(_emails(headers.header_all("To") + headers.header_all("Cc") + headers.header_all("Bcc")))
            envelope = Envelope(Address(mail_from), tuple(Address(r) for r in rcpts))
        else:
            sender_address = envelope.mail_from.email
            if sender_address and not (
                may_send_as(identity.email, sender_address) or may_send_as(owner, sender_address)
            ):
                raise ForbiddenMailFrom(f"this account may not use {sender_address!r} as the envelope sender")
        rcpts = dedupe(a.email for a in envelope.rcpt_to)
        if not rcpts:
            raise NoRecipients("the envelope has no recipient")
        invalid = [r for r in rcpts if not is_address(r)]
        if invalid:
            raise InvalidRecipients(f"not valid addresses: {', '.join(invalid)}", invalidRecipients=invalid)
        if len(rcpts) > MAX_RECIPIENTS:
            raise TooManyRecipients(
                f"{len(rcpts)} recipients; at most {MAX_RECIPIENTS} per submission", maxRecipients=MAX_RECIPIENTS
            )
        local = [r for r in rcpts if self.accounts.get(r) is not None]
        remote = [r for r in rcpts if r not in local]
        if remote and not self.relay.configured:
            raise ForbiddenToSend(
                "this server has no SMTP relay (JMAPMONO_SMTP_RELAY), so it delivers only to its own users; "
                f"cannot send to {', '.join(remote)}"
            )
        return Prepared(
            new_id("S"),
            account_id,
            identity,
            email_id,
            message.thread_id,
            envelope,
            strip_bcc(raw),
            local,
            remote,
            now_ms() // 1000 * 1000,  # whole seconds: sendAt reads as a plain UTCDate, and filters see that value
        )

    def prepare_notification(self, account_id: str, identity: Identity, to: list[str], raw: bytes) -> Prepared:
        """A notification the server composed (an MDN): the null envelope sender (RFC 8098 §3, RFC 5321
        §4.5.5) so that nothing ever answers it, sent like a submission but not recorded as one."""
        limit = self.config.max_message_size
        if len(raw) > limit:
            raise TooLarge(f"the notification would be {len(raw)} octets; at most {limit} can be sent", maxSize=limit)
        invalid = [r for r in to if not is_address(r)]
        if invalid:
            raise InvalidRecipients(f"not valid addresses: {', '.join(invalid)}", invalidRecipients=invalid)
        local = [r for r in to if self.accounts.get(r) is not None]
        remote = [r for r in to if r not in local]
        if remote and not self.relay.configured:
            raise ForbiddenToSend(
                f"this server has no SMTP relay (JMAPMONO_SMTP_RELAY), so it cannot send to {', '.join(remote)}"
            )
        envelope = Envelope(Address(""), tuple(Address(r) for r in to))
        return Prepared(new_id("S"), account_id, identity, "", "", envelope, wire_form(raw), local, remote, now_ms())

    # -- sending ------------------------------------------------------------------------------------------------

    def send(self, p: Prepared) -> Submission:
        """Send a prepared submission: the relay first, then local users. Raises a SubmissionError (and sends
        nothing) when the relay takes none of its recipients or nobody at all could be delivered to."""
        started = time.monotonic()
        statuses: dict[str, dict[str, str]] = {}
        if p.remote:
            statuses.update(self._relay(p))
        trace = (
            f"Return-Path: <{p.envelope.mail_from.email}>\r\n"
            f"Received: by {self.relay.helo} (jmapmono) with JMAP submission id {p.submission_id};\r\n"
            f"\t{format_datetime(datetime.now(UTC))}\r\n"
        ).encode("utf-8", "surrogateescape")
        delivered = 0
        for rcpt in p.local:
            try:
                self.mailboxes.deliver(rcpt, trace + p.message)
            except UnknownUser:  # deleted since prepare()
                statuses[rcpt] = _status("550 5.1.1 No such user here", "no")
                continue
            except StoreError:
                if not p.remote and delivered == 0:
                    raise ForbiddenToSend(
                        "the mailbox database is unavailable; nothing was sent, try again later"
                    ) from None
                statuses[rcpt] = _status("451 4.3.0 Mailbox database unavailable, not delivered", "no")
                continue
            delivered += 1
            statuses[rcpt] = _status("250 2.0.0 Delivered to the recipient's mailbox on this server", "yes")
        if not p.remote and delivered == 0:
            raise ForbiddenToSend("no recipient could be delivered to; nothing was sent")
        submission = Submission(
            p.submission_id,
            p.account_id,
            p.identity.id,
            p.email_id,
            p.thread_id,
            p.envelope,
            p.send_at,
            "final",
            statuses,
        )
        log.info(
            kv(
                event="email_submitted",
                account=p.account_id,
                submission=p.submission_id,
                email=p.email_id,
                local=len(p.local),
                remote=len(p.remote),
                failed=sum(1 for s in statuses.values() if s["delivered"] == "no"),
                ms=round((time.monotonic() - started) * 1000, 1),
            )
        )
        return submission

    def _relay(self, p: Prepared) -> dict[str, dict[str, str]]:
        """Relay to the remote recipients; their statuses. Raises when the relay sent nothing."""
        try:
            result = self.relay.send(p.envelope.mail_from.email, p.remote, p.message)
        except RelayError as e:  # the relay logged what failed and why; the client learns nothing of the relay
            log.warning(
                kv(event="submission_not_relayed", account=p.account_id, submission=p.submission_id, stage=e.stage)
            )
            if e.stage == "mail" and e.permanent and e.reply is not None:
                raise ForbiddenMailFrom(f"the mail relay refused the envelope sender ({e.reply.code})") from None
            raise ForbiddenToSend("the mail relay is unavailable; nothing was sent, try again later") from None
        if not result.accepted:
            if result.data is not None:  # recipients accepted, the message itself refused
                reply = result.data
                if reply.code == 552:
                    limit = result.max_size or len(p.message) - 1
                    raise TooLarge(f"the relay refused the message: {reply.text}", maxSize=limit)
                raise ForbiddenToSend(f"the relay refused the message: {reply.text}; nothing was sent")
            refused = {r: reply.text for r, reply in result.recipients.items()}
            if all(reply.permanent for reply in result.recipients.values()):
                raise InvalidRecipients(
                    "the relay refused every recipient: " + "; ".join(refused.values()),
                    invalidRecipients=list(refused),
                )
            raise ForbiddenToSend("the relay refused the recipients for now: " + "; ".join(refused.values()))
        return {
            r: _status(reply.text, "unknown" if reply.ok else "no")  # relayed on: the final outcome is not known
            for r, reply in result.recipients.items()
        }

    # -- recording ----------------------------------------------------------------------------------------------

    def record(
        self, account_id: str, created: list[Submission], destroy: Iterable[str] = ()
    ) -> tuple[str, str, list[str], list[str]]:
        """Store the submissions sent by one /set call and destroy those of ``destroy``, in ONE transaction
        and event. Returns (old state, new state, destroyed ids, ids not found)."""
        started = time.monotonic()
        with self.db.transaction() as tx:
            m = Mutation(tx, account_id)
            old = changes.state(tx, account_id, TYPE)
            for s in created:
                tx.execute(
                    "INSERT INTO email_submissions (id, account_id, identity_id, email_id, thread_id, envelope_json, "
                    "send_at, undo_status, delivery_status_json, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        s.id,
                        account_id,
                        s.identity_id,
                        s.email_id,
                        s.thread_id,
                        json.dumps(s.envelope.to_json(), ensure_ascii=False),
                        s.send_at,
                        s.undo_status,
                        None if s.delivery_status is None else json.dumps(s.delivery_status, ensure_ascii=False),
                        now_ms(),
                    ),
                )
            destroyed: list[str] = []
            missing: list[str] = []
            for submission_id in destroy:
                n = tx.execute(
                    "DELETE FROM email_submissions WHERE account_id = ? AND id = ?", (account_id, submission_id)
                )
                (destroyed if n else missing).append(submission_id)
            states = _record_states(m, TYPE, [s.id for s in created], (), destroyed)
        if created or destroyed:
            log.info(
                kv(
                    event="submissions_recorded",
                    account=account_id,
                    created=len(created),
                    destroyed=len(destroyed),
                    ms=round((time.monotonic() - started) * 1000, 1),
                )
            )
        return old, states.get(TYPE, old), destroyed, missing

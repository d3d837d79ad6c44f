"""The MailboxManager: the only code path that changes mail.

Every public mutation is ONE transaction that starts by locking the account's change
log (writers of one account are serialised, so change order is commit order), records
every change with its new states (changes.py), and writes ONE mailbox event into the
outbox (a bulk operation on 50 messages is one event). MIME is parsed before the
transaction: nothing slow or yielding runs while it is open.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from jmapmono.accounts.users import Accounts, UnknownUser, User
from jmapmono.clock import now_ms
from jmapmono.log import kv
from jmapmono.mailbox import changes, quota
from jmapmono.mailbox import messages as msgs
from jmapmono.mailbox.blobs import BlobStore
from jmapmono.mailbox.events import Added, Expunged, FlagsUpdated, MessagesUpdated, Moved, StatesChanged
from jmapmono.mailbox.mailbox_plan import MailboxBatchOps, StateMismatch
from jmapmono.mailbox.mailboxes import MailboxOps
from jmapmono.mailbox.mime import parse_message
from jmapmono.mailbox.model import (
    Appended,
    AppendResult,
    DestroyResult,
    MailboxError,
    MessageUpdate,
    NewMessage,
    UpdateResult,
    normalize_keywords,
)
from jmapmono.mailbox.mutation import Mutation
from jmapmono.mailbox.reads import Reads
from jmapmono.mailbox.share_notifications import ShareNotificationOps
from jmapmono.mailbox.shares import ShareOps
from jmapmono.mailbox.sieve import filing
from jmapmono.mailbox.sieve.run import Message, Outcome, SieveRuntimeError, Target, failed
from jmapmono.mailbox.sieve.scripts import Limits as SieveLimits
from jmapmono.mailbox.sieve.scripts import SieveScripts
from jmapmono.store import Database, Transaction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivered:
    account_id: str
    #: Empty when the recipient's filter stored nothing (discard, or redirect alone).
    message_id: str
    blob_id: str
    thread_id: str = ""
    mailbox_id: str = ""
    #: The recipient address the message was delivered for.
    recipient: str = ""
    #: The vacation action of the recipient's filter (RFC 5230 §4), when it ran: its reply replaces the
    #: VacationResponse's for this message.
    vacation: dict | None = None


class SieveRejected(MailboxError):
    """The recipient's filter refused the message (reject/ereject, RFC 5429): nothing was stored."""

    set_error = "forbidden"


#: Sends a filter's redirects: (account id, recipient, raw, addresses) -> the addresses NOT sent.
Redirector = Callable[[str, str, bytes, list[str]], list[str]]


def summarize(raw: bytes) -> msgs.Summary:
    """The stored summary of ``raw``. Never raises: mail that cannot be parsed is kept as it is."""
    try:
        p = parse_message(raw)
        return msgs.Summary(
            size=len(raw),
            subject=p.subject,
            base_subject=p.base_subject or "",
            sent_at=p.sent_at,
            addresses={
                "from": p.from_,
                "sender": p.sender,
                "to": p.to,
                "cc": p.cc,
                "bcc": p.bcc,
                "reply_to": p.reply_to,
            },
            message_ids=list(p.message_ids),
            in_reply_to=list(p.in_reply_to),
            references=list(p.references),
            preview=p.preview or "",
            has_attachment=bool(p.has_attachment),
            problems=list(p.problems),
            search_text=p.search_text or "",
        )
    except Exception as e:  # never reject mail for its MIME: keep the bytes, note the problem
        log.warning(kv(event="mime_unparsable", size=len(raw), error=type(e).__name__))
        return msgs.Summary(size=len(raw), problems=[f"unparsable: {type(e).__name__}"])


def _check_email_state(tx: Transaction, account_id: str, if_in_state: str | None) -> None:
    """Raise StateMismatch unless ``if_in_state`` is None or the Email state (checked under the account lock)."""
    if if_in_state is not None:
        current = changes.state(tx, account_id, "Email")
        if current != if_in_state:
            raise StateMismatch(f"the Email state is {current!r}, not {if_in_state!r}")


class MailboxManager(MailboxOps, MailboxBatchOps, ShareOps, ShareNotificationOps, Reads):
    """Mailbox and message mutations (this class, :class:`MailboxOps`, :class:`MailboxBatchOps`), and reads
    (:class:`Reads`)."""

    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        accounts: Accounts,
        quota_defaults: quota.Limits | None = None,
        search_languages: tuple[str, ...] | None = None,
        sieve_limits: SieveLimits | None = None,
    ) -> None:
        self.db = db
        self.blobs = blobs
        self.accounts = accounts
        #: The accounts' Sieve scripts; the active one runs in :meth:`deliver` before the message is stored.
        self.sieve = SieveScripts(db, blobs, sieve_limits)
        #: Sends the redirects of a filter (the sending layer, wired by the runtime); None: redirects fail and
        #: the message is kept.
        self.redirector: Redirector | None = None
        #: The limits of an account without its own (configuration).
        self.quota_defaults = quota_defaults or quota.Limits()
        #: The languages new mail is stemmed in for search (None: each body's detected one; configuration).
        self.search_languages = search_languages
        #: Called after each delivery has committed with (Delivered, raw bytes), e.g. the vacation reply.
        #: A hook must be quick (hand slow work to the background); its failure never fails the delivery.
        self.on_delivered: list[Callable[[Delivered, bytes], None]] = []

    # -- delivery -----------------------------------------------------------------------------------------------

    def deliver(self, recipient: str, raw: bytes, mailbox_name: str | None = None) -> Delivered:
        """Deliver ``raw`` to ``recipient``: where the recipient's active Sieve script files it, else the mailbox
        named ``mailbox_name`` (case-insensitive), else the Inbox.

        Durable when this returns; the bytes are kept exactly. Raises UnknownUser, OverQuota or SieveRejected
        (nothing stored). A script that fails keeps the message in the Inbox (logged).
        """
        started = time.monotonic()
        user = self.accounts.get(recipient)
        if user is None:
            raise UnknownUser(f"no such user: {recipient}")
        outcome = self._filter(user, recipient, raw)
        if outcome is not None and outcome.redirects:
            self._redirect(user, recipient, raw, outcome)
        vacation = outcome.vacation if outcome is not None else None
        if outcome is not None and outcome.discarded:
            log.info(
                kv(event="sieve_discarded", account=user.account_id, size=len(raw), redirects=len(outcome.redirects))
            )
            delivered = Delivered(user.account_id, "", "", recipient=recipient, vacation=vacation)
            self._after_delivery(delivered, raw)
            return delivered
        prepared = msgs.prepare(raw, summarize(raw), self.db.dialect, self.search_languages)
        with self.db.transaction() as tx:
            m = Mutation(tx, user.account_id, self.quota_defaults)
            account = quota.read(tx, user.account_id, self.quota_defaults)
            refused = account.limits.refusal(account.usage, len(raw))
            if refused:
                raise quota.OverQuota(refused)
            m.quota_limits = account.limits
            inbox = self._ensure_defaults(tx, m, user)
            target = self._mailbox_for_delivery(tx, user.account_id, mailbox_name, inbox)
            mailboxes, keywords = {target}, frozenset[str]()
            if outcome is not None:
                mailboxes, keywords, problems = filing.resolve(tx, m, user.id, outcome.targets, target)
                for problem in problems:
                    log.warning(kv(event="sieve_failed", account=user.account_id, error=problem, kept="inbox"))
            entry = msgs.NewEntry(prepared, mailboxes, keywords, now_ms())
            (appended,) = msgs.append_all(tx, m, self.blobs, [entry], delivery=True)
            event = Added(account_id=user.account_id, delivery=True)
            self._describe_added(event, [(appended, mailboxes, keywords)])
            m.finish(event)
        log.info(
            kv(
                event="delivered",
                account=user.account_id,
                message=appended.id,
                mailbox=",".join(sorted(mailboxes)),
                size=len(raw),
                ms=round((time.monotonic() - started) * 1000, 1),
            )
        )
        delivered = Delivered(
            user.account_id,
            appended.id,
            appended.blob_id,
            appended.thread_id,
            target if target in mailboxes else min(mailboxes),
            recipient,
            vacation,
        )
        self._after_delivery(delivered, raw)
        return delivered

    def _after_delivery(self, delivered: Delivered, raw: bytes) -> None:
        for hook in self.on_delivered:
            try:
                hook(delivered, raw)
            except Exception as e:  # the mail is stored: a reaction to it failing must not undo that
                log.warning(
                    kv(
                        event="delivery_hook_failed",
                        account=delivered.account_id,
                        message=delivered.message_id,
                        error=e,
                    )
                )

    def _filter(self, user: User, recipient: str, raw: bytes) -> Outcome | None:
        """The outcome of the recipient's active script; None without one. Raises SieveRejected."""
        started = time.monotonic()
        script_id = None
        try:
            active = self.sieve.active(user.account_id)
            if active is None:
                return None
            script_id, program = active
            outcome = program.run(Message(raw, recipient), self.sieve.limits.max_redirects)
        except SieveRuntimeError as e:
            outcome = failed(str(e))
        except Exception as e:  # a bug or a broken stored form must not lose mail: keep it in the Inbox
            log.exception(kv(event="sieve_crashed", account=user.account_id, script=script_id, error=type(e).__name__))
            outcome = failed(f"{type(e).__name__}: {e}")
        if outcome.error is not None:
            log.warning(kv(event="sieve_failed", account=user.account_id, script=script_id, error=outcome.error))
        if log.isEnabledFor(logging.DEBUG):
            ms = round((time.monotonic() - started) * 1000, 2)
            log.debug(kv(event="sieve_ran", account=user.account_id, script=script_id, ms=ms))
        if outcome.reject is not None:
            log.info(kv(event="sieve_rejected", account=user.account_id, script=script_id, size=len(raw)))
            raise SieveRejected(outcome.reject)
        return outcome

    def _redirect(self, user: User, recipient: str, raw: bytes, outcome: Outcome) -> None:
        """Send the redirects; any not sent keeps the message in the Inbox (nothing is lost)."""
        unsent = list(outcome.redirects)
        if self.redirector is not None:
            try:
                unsent = self.redirector(user.account_id, recipient, raw, list(outcome.redirects))
            except Exception as e:
                log.warning(kv(event="sieve_redirect_failed", account=user.account_id, error=repr(e)))
        if unsent and not any(t.mailbox is None for t in outcome.targets):
            outcome.targets.append(Target(None, frozenset()))
            log.warning(kv(event="sieve_redirect_kept", account=user.account_id, unsent=len(unsent), kept="inbox"))

    @staticmethod
    def _describe_added(event: Added, items: list) -> None:
        for appended, mailboxes, keywords in items:
            event.messages.append(
                {
                    "id": appended.id,
                    "threadId": appended.thread_id,
                    "mailboxIds": sorted(mailboxes),
                    "keywords": sorted(keywords),
                    "size": appended.size,
                    "receivedAt": appended.received_at,
                }
            )
        event.message_ids = [a.id for a, _, _ in items]
        event.thread_ids = sorted({a.thread_id for a, _, _ in items})

    # -- messages -----------------------------------------------------------------------------------------------

    def append(
        self,
        account_id: str,
        raw: bytes,
        mailbox_ids: Iterable[str],
        keywords: Iterable[str] = (),
        received_at: int | None = None,
    ) -> Appended:
        """Append one message (import, draft, sent copy). Raises the MailboxError that refused it."""
        result = self.append_many(account_id, [NewMessage(raw, tuple(mailbox_ids), tuple(keywords), received_at)])
        if 0 in result.errors:
            raise result.errors[0]
        return result.created[0]

    def append_many(
        self, account_id: str, items: list[NewMessage], delivery: bool = False, if_in_state: str | None = None
    ) -> AppendResult:
        """Append several messages in one transaction and one ``Added`` event; errors are per item.

        ``delivery`` is for mail arriving from outside (it bumps the EmailDelivery state). ``if_in_state``:
        raise StateMismatch, changing nothing, unless it is the Email state when the transaction starts.
        """
        started = time.monotonic()
        result = AppendResult()
        prepared = []
        for i, item in enumerate(items):
            try:
                keywords = normalize_keywords(item.keywords)
            except MailboxError as e:
                result.errors[i] = e
                continue
            prepared.append(
                (i, item, keywords, msgs.prepare(item.raw, summarize(item.raw), self.db.dialect, self.search_languages))
            )
        with self.db.transaction() as tx:
            m = Mutation(tx, account_id, self.quota_defaults)
            _check_email_state(tx, account_id, if_in_state)
            known = msgs.existing_mailboxes(tx, account_id, {mb for _, it, _, _ in prepared for mb in it.mailbox_ids})
            account = quota.read(tx, account_id, self.quota_defaults)
            usage = account.usage
            m.quota_limits = account.limits
            accepted: list[tuple[int, msgs.NewEntry]] = []
            for i, item, keywords, p in prepared:
                mailboxes = set(item.mailbox_ids)
                if not mailboxes or not mailboxes <= known:
                    what = "an email must be in at least one mailbox" if not mailboxes else "no such mailbox"
                    result.errors[i] = msgs.InvalidProperties(what, ["mailboxIds"])
                    continue
                refused = account.limits.refusal(usage, len(item.raw))
                if refused:
                    result.errors[i] = quota.OverQuota(refused)
                    continue
                usage = quota.Usage(usage.octets + len(item.raw), usage.messages + 1)
                received = item.received_at if item.received_at is not None else now_ms()
                accepted.append((i, msgs.NewEntry(p, mailboxes, keywords, received)))
            appended = msgs.append_all(tx, m, self.blobs, [e for _, e in accepted], delivery)
            described = []
            for (i, entry), a in zip(accepted, appended, strict=True):
                result.created[i] = a
                described.append((a, entry.mailboxes, entry.keywords))
            event = Added(account_id=account_id, delivery=delivery)
            self._describe_added(event, described)
            result.states = m.finish(event)
        log.info(
            kv(
                event="appended",
                account=account_id,
                messages=len(result.created),
                refused=len(result.errors),
                delivery=delivery,
                ms=round((time.monotonic() - started) * 1000, 1),
            )
        )
        return result

    def update_messages(
        self, account_id: str, updates: Mapping[str, MessageUpdate], if_in_state: str | None = None
    ) -> UpdateResult:
        """Change keywords and/or mailboxes of several messages: one transaction, one event.

        The event is ``FlagsUpdated`` when only keywords changed, ``Moved`` when only mailboxes
        did, ``MessagesUpdated`` when both did. Errors (notFound, invalidProperties) are per message.
        ``if_in_state``: as for :meth:`append_many`.
        """
        started = time.monotonic()
        result = UpdateResult()
        normalized: dict[str, tuple[MessageUpdate, tuple[frozenset[str] | None, frozenset[str], frozenset[str]]]] = {}
        for message_id, upd in updates.items():
            try:
                kw = (
                    None if upd.keywords is None else normalize_keywords(upd.keywords),
                    normalize_keywords(upd.add_keywords),
                    normalize_keywords(upd.remove_keywords),
                )
            except MailboxError as e:
                result.errors[message_id] = e
                continue
            normalized[message_id] = (upd, kw)
        with self.db.transaction() as tx:
            m = Mutation(tx, account_id, self.quota_defaults)
            _check_email_state(tx, account_id, if_in_state)
            current = msgs.load(tx, account_id, normalized)
            wanted: dict[str, msgs.Change] = {}
            for message_id, (upd, (replace, add, remove)) in normalized.items():
                cur = current.get(message_id)
                if cur is None:
                    wanted[message_id] = msgs.Change(set(), set())  # reported as notFound
                    continue
                keywords = (set(replace) if replace is not None else set(cur.keywords)) | add
                mailboxes = set(upd.mailbox_ids) if upd.mailbox_ids is not None else set(cur.mailboxes)
                mailboxes = (mailboxes | set(upd.add_mailboxes)) - set(upd.remove_mailboxes)
                wanted[message_id] = msgs.Change(keywords - remove, mailboxes)
            done = msgs.update(tx, m, current, wanted)
            result.updated = done["updated"]
            result.errors.update(done["errors"])
            flags, moves = done["flags"], done["moves"]
            cls = MessagesUpdated if flags and moves else FlagsUpdated if flags else Moved
            event = cls(account_id=account_id, flags=flags, moves=moves)
            changed = sorted({f["id"] for f in flags} | {x["id"] for x in moves})
            event.message_ids = changed
            event.thread_ids = sorted({current[i].thread_id for i in changed})
            event.mailbox_ids = sorted({mb for x in moves for mb in set(x["old"]) ^ set(x["new"])})
            result.states = m.finish(event)
        log.info(
            kv(
                event="messages_updated",
                account=account_id,
                updated=len(result.updated),
                refused=len(result.errors),
                ms=round((time.monotonic() - started) * 1000, 1),
            )
        )
        return result

    def set_keywords(
        self, account_id: str, message_ids: Iterable[str], add: Iterable[str] = (), remove: Iterable[str] = ()
    ) -> UpdateResult:
        """Add and remove keywords on several messages (one event)."""
        add, remove = tuple(add), tuple(remove)
        return self.update_messages(
            account_id, {i: MessageUpdate(add_keywords=add, remove_keywords=remove) for i in message_ids}
        )

    def move_messages(
        self, account_id: str, message_ids: Iterable[str], add: Iterable[str] = (), remove: Iterable[str] = ()
    ) -> UpdateResult:
        """Add mailboxes to and remove mailboxes from several messages: move, copy, remove (one event)."""
        add, remove = tuple(add), tuple(remove)
        return self.update_messages(
            account_id, {i: MessageUpdate(add_mailboxes=add, remove_mailboxes=remove) for i in message_ids}
        )

    def destroy_messages(
        self, account_id: str, message_ids: Iterable[str], if_in_state: str | None = None
    ) -> DestroyResult:
        """Destroy (expunge) several messages: one transaction, one ``Expunged`` event.

        ``if_in_state``: as for :meth:`append_many`."""
        started = time.monotonic()
        ids = list(dict.fromkeys(message_ids))
        result = DestroyResult()
        with self.db.transaction() as tx:
            m = Mutation(tx, account_id, self.quota_defaults)
            _check_email_state(tx, account_id, if_in_state)
            current = msgs.load(tx, account_id, ids)
            result.not_found = [i for i in ids if i not in current]
            gone = msgs.destroy(tx, m, self.blobs, current) if current else []
            result.destroyed = [g["id"] for g in gone]
            event = Expunged(account_id=account_id, messages=gone)
            event.message_ids = result.destroyed
            event.thread_ids = sorted({g["threadId"] for g in gone})
            result.states = m.finish(event)
        log.info(
            kv(
                event="messages_destroyed",
                account=account_id,
                destroyed=len(result.destroyed),
                not_found=len(result.not_found),
                ms=round((time.monotonic() - started) * 1000, 1),
            )
        )
        return result

    # -- quotas -------------------------------------------------------------------------------------------------

    def get_quota(self, account_id: str) -> tuple[quota.Account, str]:
        """The account's quota usage and limits, and the Quota state."""
        with self.db.read() as tx:
            return quota.read(tx, account_id, self.quota_defaults), changes.state(tx, account_id, quota.TYPE)

    def set_quota(self, account_id: str, octets: object = quota.KEEP, messages: object = quota.KEEP) -> quota.Account:
        """Set the account's limits (None: the configured default, ``quota.UNLIMITED``: none): one transaction
        that records the Quota changes and pushes them. Mail already stored is never removed."""
        with self.db.transaction() as tx:
            m = Mutation(tx, account_id, self.quota_defaults)
            after, changed = quota.set_limits(m, self.quota_defaults, octets, messages)
            m.finish(StatesChanged(account_id=account_id, changes={quota.TYPE: changed}))
        log.info(kv(event="quota_set", account=account_id, octets=after.limits.octets, messages=after.limits.messages))
        return after

    def apply_quota_defaults(self) -> int:
        """After the configured default limits changed: record the Quota changes of every account that follows
        them (one transaction each), so that Quota/changes and pushes report them. Returns how many changed."""
        started = time.monotonic()
        with self.db.transaction() as tx:
            old = quota.claim_defaults(tx, self.quota_defaults)
        if old is None:
            return 0
        with self.db.read() as tx:
            account_ids = [r["account_id"] for r in tx.query("SELECT account_id FROM users ORDER BY id")]
        changed = 0
        for account_id in account_ids:
            with self.db.transaction() as tx:
                diff = quota.difference(
                    quota.read(tx, account_id, old), quota.read(tx, account_id, self.quota_defaults)
                )
                if not any(diff.values()):
                    continue  # the account has limits of its own
                m = Mutation(tx, account_id, self.quota_defaults)
                quota.record(m, diff)
                m.finish(StatesChanged(account_id=account_id, changes={quota.TYPE: diff}))
                changed += 1
        log.info(
            kv(
                event="quota_defaults_changed",
                octets=self.quota_defaults.octets,
                messages=self.quota_defaults.messages,
                accounts=changed,
                ms=round((time.monotonic() - started) * 1000, 1),
            )
        )
        return changed

    # -- accounts -----------------------------------------------------------------------------------------------

    def remove_account_data(self, tx: Transaction, user: User) -> None:
        """Delete every mailbox, message and log row of ``user``'s account (inside the deleting transaction)."""
        account_id = user.account_id
        for r in tx.query("SELECT id, blob_id FROM messages WHERE account_id = ?", (account_id,)):
            self.blobs.remove_ref(tx, account_id, r["blob_id"], f"message:{r['id']}")
        sub = "SELECT id FROM messages WHERE account_id = ?"
        for table in ("message_keywords", "message_mailboxes", "message_search"):
            tx.execute(f"DELETE FROM {table} WHERE message_id IN ({sub})", (account_id,))
        tx.execute("DELETE FROM messages WHERE account_id = ?", (account_id,))
        mb = "SELECT id FROM mailboxes WHERE account_id = ?"
        for table in ("mailbox_threads", "mailbox_subscriptions"):
            tx.execute(f"DELETE FROM {table} WHERE mailbox_id IN ({mb})", (account_id,))
        tx.execute("UPDATE mailboxes SET parent_id = NULL WHERE account_id = ?", (account_id,))
        tables = ("mailboxes", "thread_keys", "change_log", "change_states", "account_changes", "share_notifications")
        for table in (*tables, "quota_usage", "quota_limits", "sieve_scripts", "sieve_vacation_replies"):
            tx.execute(f"DELETE FROM {table} WHERE account_id = ?", (account_id,))
        tx.execute("DELETE FROM blob_refs WHERE account_id = ? AND ref LIKE 'sieve:%'", (account_id,))
        log.info(kv(event="account_mail_removed", account=account_id))

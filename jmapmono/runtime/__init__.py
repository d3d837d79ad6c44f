"""The runtime of one process: everything it holds and runs, built from the configuration in one place.

``serve``, each gunicorn worker (``wsgi.py``), the LMTP process, the ``deliver`` agent, the CLI and the
tests all build one :class:`Runtime` and go through the same calls::

    runtime = Runtime(config)         # opens (and migrates) the store; parts are made on first use
    runtime.start()                   # a serving process: event flow + housekeeping (see start())
    ...
    runtime.end_connections()         # at shutdown: WebSockets closed with 1001, EventSource streams ended
    runtime.stop()                    # housekeeping, event flow, buses, store — in that order

Nothing a process holds lives in a module global: the store, both buses, the event flow (outbox relay,
doorbell, MailboxChangeListener, web push sender), the push hubs, the authenticator with its caches
and rate limits, the request guard and call policies, and the housekeeping jobs are attributes here.
Lower layers receive what they need: the data-type objects through their constructors, the JMAP, push
and web layers the runtime itself, typed by the small protocols they declare (``jmap/context.py``,
``push/context.py``, ``web/context.py``); none of them imports this module.
"""

from __future__ import annotations

import logging
from functools import cached_property
from typing import TYPE_CHECKING, Any

from jmapmono import store
from jmapmono.config import Config
from jmapmono.log import kv

if TYPE_CHECKING:
    from jmapmono.accounts.authn import Authenticator
    from jmapmono.accounts.users import Accounts, Revocation, User
    from jmapmono.events.bus import EventBus
    from jmapmono.jmap.api import CallPolicy, ConcurrencyGuard
    from jmapmono.jmap.rendered_cache import RenderedEmails
    from jmapmono.jmap.session import SessionCache
    from jmapmono.mailbox.blobs import BlobStore
    from jmapmono.mailbox.changes import ChangeLog
    from jmapmono.mailbox.identities import Identities
    from jmapmono.mailbox.manager import MailboxManager
    from jmapmono.mailbox.parsed_cache import ParsedMessages
    from jmapmono.push.eventsource import Streams
    from jmapmono.push.slots import PushSlots
    from jmapmono.push.vapid import VapidKeys
    from jmapmono.push.webpush import WebPushSender
    from jmapmono.push.ws_session import Hub
    from jmapmono.runtime.event_flow import EventFlow
    from jmapmono.runtime.housekeeping import Housekeeping
    from jmapmono.sending.sieve_actions import SieveActions
    from jmapmono.sending.smarthost import SmtpRelay
    from jmapmono.sending.submissions import Submissions
    from jmapmono.sending.vacation import Vacation

log = logging.getLogger("jmapmono.runtime")

#: Seconds ``end_connections`` waits for WebSockets and EventSource streams to end.
END_CONNECTIONS_TIMEOUT = 1.5


class Runtime:
    """What one process holds. Parts are created on first use, so a CLI command opens only what it needs."""

    def __init__(self, config: Config, db: store.Database | None = None, *, durable_commits: bool = False) -> None:
        self.config = config
        self.db = db if db is not None else store.load(config)
        if durable_commits:
            self._sync_every_commit()
        #: Extra checks run before every JMAP method, after the account checks (each may raise MethodError).
        self.call_policies: list[CallPolicy] = []
        self.flow: EventFlow | None = None
        self.housekeeping: Housekeeping | None = None
        self._connections_ended = False
        self._stopped = False

    def _sync_every_commit(self) -> None:
        """A process that acknowledges mail (LMTP 250, ``deliver`` exit 0) lets the MTA delete its copy.

        SQLite in WAL mode with synchronous=NORMAL (the store's default) may lose the last commits on
        power loss, so such a process syncs every commit (about 1 ms each). Postgres commits are
        synchronous already."""
        conn = getattr(self.db, "conn", None)
        if self.db.dialect == "sqlite" and conn is not None:
            conn.execute("PRAGMA synchronous = FULL")

    # -- mail and accounts ---------------------------------------------------------------------------

    @cached_property
    def accounts(self) -> Accounts:
        from jmapmono.accounts.users import Accounts

        accounts = Accounts(self.db, self.config)
        # A new account gets its default mailboxes; a deleted one's mail goes with it (same transaction).
        accounts.on_user_created.append(lambda tx, user: self.mailboxes.provision(tx, user))
        accounts.on_user_deleted.append(lambda tx, user: self.mailboxes.remove_account_data(tx, user))
        accounts.on_user_deleted.append(lambda tx, user: _remove_sending_data(tx, user.account_id))
        # Delegation changes reach push through the mailbox outbox (push re-reads the delegate's accounts).
        accounts.on_access_changed.append(_write_access_changed)
        # Revoked credentials (password change, app-password revocation, user deletion) reach every node's
        # push connections and credential caches through the same outbox; unused tickets and push
        # subscriptions made with them go, in the revoking transaction (RFC 8620 §7.2: "MUST be destroyed").
        accounts.on_credentials_revoked.append(_write_credentials_revoked)
        return accounts

    @cached_property
    def blobs(self) -> BlobStore:
        from jmapmono.jmap.email_blobs import install_part_resolver
        from jmapmono.mailbox.blobs import BlobStore

        blobs = BlobStore(self.db, self.config)
        install_part_resolver(blobs)  # body part blob ids "<message blob id>_<partId>" (RFC 8621 §4.1.4)
        return blobs

    @cached_property
    def mailboxes(self) -> MailboxManager:
        from jmapmono.mailbox.manager import MailboxManager
        from jmapmono.mailbox.quota import Limits
        from jmapmono.mailbox.sieve.scripts import Limits as SieveLimits

        c = self.config
        quota_defaults = Limits(c.quota_storage, c.quota_messages)
        sieve_limits = SieveLimits(
            c.sieve_max_script_size, c.sieve_max_scripts, c.sieve_max_rules, c.sieve_max_redirects
        )
        manager = MailboxManager(self.db, self.blobs, self.accounts, quota_defaults, c.search_languages, sieve_limits)
        # Every delivery, whatever process makes it, may get the recipient's vacation reply (after commit): the
        # VacationResponse's, or that of the recipient's Sieve script, which replaces it for that message.
        manager.on_delivered.append(lambda delivered, raw: self.vacation.on_delivered(delivered, raw))
        manager.on_delivered.append(lambda delivered, raw: self.sieve_actions.on_delivered(delivered, raw))
        # A script's redirects go out through the SMTP relay (or to a local user) before the message is stored.
        manager.redirector = lambda account, rcpt, raw, to: self.sieve_actions.redirect(account, rcpt, raw, to)
        return manager

    @cached_property
    def sessions(self) -> SessionCache:
        """Each recent principal's Session, kept until the next commit anywhere."""
        from jmapmono.jmap.session import SessionCache

        return SessionCache(self)

    @cached_property
    def parsed_messages(self) -> ParsedMessages:
        """Parsed raw messages kept between reads (``JMAPMONO_PARSED_CACHE_MB``)."""
        from jmapmono.mailbox.parsed_cache import ParsedMessages

        return ParsedMessages(self.config.parsed_cache_mb * 1024 * 1024)

    @cached_property
    def rendered_emails(self) -> RenderedEmails:
        """Email objects rendered by ``Email/get``, kept between reads (``JMAPMONO_RENDERED_CACHE_MB``)."""
        from jmapmono.jmap.rendered_cache import RenderedEmails

        return RenderedEmails(self.config.rendered_cache_mb * 1024 * 1024)

    @cached_property
    def sieve_actions(self) -> SieveActions:
        """Carries out what a Sieve script decided beyond filing: redirects and vacation replies."""
        from jmapmono.sending.sieve_actions import SieveActions

        return SieveActions(self.db, self.config, self.accounts, self.mailboxes, self.smtp_relay)

    @cached_property
    def smtp_relay(self) -> SmtpRelay:
        """The SMTP relay (smarthost) for mail to other servers (``JMAPMONO_SMTP_RELAY``; may be unconfigured)."""
        from jmapmono.sending.smarthost import SmtpRelay

        return SmtpRelay(self.config)

    @cached_property
    def identities(self) -> Identities:
        from jmapmono.mailbox.identities import Identities

        return Identities(self.db, self.accounts)

    @cached_property
    def submissions(self) -> Submissions:
        """Checks, sends (relay or local delivery) and records email submissions."""
        from jmapmono.sending.submissions import Submissions

        return Submissions(
            self.db, self.config, self.accounts, self.mailboxes, self.blobs, self.identities, self.smtp_relay
        )

    @cached_property
    def vacation(self) -> Vacation:
        """The vacation response and its automatic replies."""
        from jmapmono.sending.vacation import Vacation

        return Vacation(self.db, self.config, self.accounts, self.mailboxes, self.smtp_relay)

    @cached_property
    def changes(self) -> ChangeLog:
        """The change log behind */changes (written by the MailboxManager)."""
        from jmapmono.mailbox.changes import ChangeLog

        return ChangeLog(self.db, self.config)

    # -- event buses ---------------------------------------------------------------------------------

    @cached_property
    def mailbox_bus(self) -> EventBus:
        """The mailbox event bus (started by the event flow, after its group listeners are registered)."""
        from jmapmono.events.bus import EventBus

        return EventBus(
            "mailbox",
            self.config.broker_url,
            self.db,
            heartbeat=self.config.broker_heartbeat_seconds,
            node_queue_expires=self.config.broker_node_queue_expires_seconds,
        )

    @cached_property
    def jmap_bus(self) -> EventBus:
        """The JMAP event bus: state changes keyed by account, for push."""
        from jmapmono.events.bus import EventBus

        return EventBus(
            "jmap",
            self.config.broker_url,
            self.db,
            heartbeat=self.config.broker_heartbeat_seconds,
            node_queue_expires=self.config.broker_node_queue_expires_seconds,
        )

    # -- serving: authentication, requests, push -----------------------------------------------------

    @cached_property
    def authenticator(self) -> Authenticator:
        """Credential checks with this process's verification cache and failure limits."""
        from jmapmono.accounts.authn import Authenticator

        return Authenticator(self.config, self.db, self.accounts)

    @cached_property
    def request_guard(self) -> ConcurrencyGuard:
        """maxConcurrentRequests per user, shared by HTTP and WebSocket."""
        from jmapmono.jmap.api import ConcurrencyGuard

        return ConcurrencyGuard(self.config.limits.max_concurrent_requests)

    @cached_property
    def push_slots(self) -> PushSlots:
        """Open push connections per user in this process, WebSockets and EventSource streams together."""
        from jmapmono.push.slots import PushSlots

        return PushSlots(self.config.max_push_connections_per_user)

    @cached_property
    def websockets(self) -> Hub:
        """Every open JMAP WebSocket of this process."""
        from jmapmono.push.ws_session import Hub

        return Hub(self, self.push_slots)

    @cached_property
    def event_streams(self) -> Streams:
        """Every open EventSource stream of this process."""
        from jmapmono.push.eventsource import Streams

        return Streams(self, self.push_slots)

    @cached_property
    def vapid(self) -> VapidKeys:
        """The server's VAPID keys, which sign every web push (kept in the store)."""
        from jmapmono.push.vapid import VapidKeys

        return VapidKeys(self.db, self.config.vapid_contact)

    @cached_property
    def webpush(self) -> WebPushSender:
        """Sends StateChanges to push subscriptions (a group listener on the JMAP bus)."""
        from jmapmono.push.webpush import WebPushSender

        return WebPushSender(self)

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self, *, serving: bool = True, **relay_options: Any) -> Runtime:
        """Start what a serving process runs: the event flow (outbox relay, buses, MailboxChangeListener,
        web push) and the housekeeping jobs. ``serving=False`` (LMTP, ``deliver``, the CLI) starts nothing:
        what such a process commits sits in the outbox and the doorbell wakes a serving process's relay."""
        if not serving:
            return self
        from jmapmono.runtime.event_flow import EventFlow
        from jmapmono.runtime.housekeeping import Housekeeping, jobs_of

        if self.flow is not None:
            raise RuntimeError("this runtime is already started")
        self.mailboxes.apply_quota_defaults()  # a changed configuration is a Quota change for clients
        self.flow = EventFlow(self, **relay_options)
        self.flow.start()
        self.housekeeping = Housekeeping(self.db, jobs_of(self), self.config.housekeeping_seconds)
        self.housekeeping.start()
        return self

    def buses_ready(self) -> bool | None:
        """Are both buses consuming (broker connected)? None when this process runs no event flow."""
        if self.flow is None:
            return None
        return self.mailbox_bus.ready and self.jmap_bus.ready

    def end_connections(self, timeout: float = END_CONNECTIONS_TIMEOUT) -> int:
        """Close every WebSocket with 1001 and end every EventSource stream (clients reconnect elsewhere at
        once); new ones are refused from now on. Returns how many there were."""
        if self._connections_ended:
            return 0
        self._connections_ended = True
        ended = 0
        for part, event in (("websockets", "websockets_closed"), ("event_streams", "event_streams_closed")):
            hub = self.__dict__.get(part)  # only those this process has used
            count = hub.close_all(timeout=timeout / 2) if hub is not None else 0
            if count:
                log.info(kv(event=event, count=count))
            ended += count
        return ended

    def stop(self) -> None:
        """Stop everything this runtime started and close the store (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        self.end_connections()
        if self.housekeeping is not None:
            self.housekeeping.stop()
        if self.flow is not None:
            self.flow.stop()
        for name in ("vacation", "sieve_actions"):
            replies = self.__dict__.get(name)
            if replies is not None:
                replies.wait_idle()  # replies still being sent need the database
        for name in ("jmap_bus", "mailbox_bus"):  # only those that were created
            bus = self.__dict__.get(name)
            if bus is not None:
                bus.stop()
        self.db.close()

    close = stop


def _write_access_changed(tx: store.Transaction, owner: User, delegate_id: int, granted: bool) -> None:
    from jmapmono.events import outbox
    from jmapmono.mailbox.events import MAILBOX_BUS, AccessChanged

    event = AccessChanged(
        account_id=owner.account_id, owner_user_id=owner.id, delegate_user_id=int(delegate_id), granted=granted
    )
    outbox.write(tx, event, MAILBOX_BUS)


def _write_credentials_revoked(tx: store.Transaction, revocation: Revocation) -> None:
    from jmapmono.events import outbox
    from jmapmono.mailbox.events import MAILBOX_BUS
    from jmapmono.push import subscriptions_store, ws_tickets
    from jmapmono.push.jmap_bus_events import CredentialsRevoked

    ws_tickets.revoke(tx, revocation)
    destroyed = subscriptions_store.revoke(tx, revocation)
    if destroyed:
        line = kv(
            event="push_subscriptions_destroyed", user_id=revocation.user_id, what=revocation.what, count=destroyed
        )
        tx.after_commit(lambda: log.info(line))
    outbox.write(tx, CredentialsRevoked.of(revocation), MAILBOX_BUS)


def _remove_sending_data(tx: store.Transaction, account_id: str) -> None:
    from jmapmono.mailbox import identities
    from jmapmono.sending import submissions, vacation

    for module in (identities, submissions, vacation):
        module.delete_account_data(tx, account_id)


def runtime_from_environment(**options: Any) -> Runtime:
    """A Runtime for a CLI command or a worker process, configured from the process environment."""
    from jmapmono.config import load_config

    return Runtime(load_config(), **options)

"""The push side of one connection, shared by the WebSocket and EventSource front ends.

A ``PushChannel`` listens on the JMAP event bus for every account its user can
see (registration key = account id) and for the user's own key
(``user:<id>``, where ``AccessChanged`` arrives when a delegation is granted or
revoked: the channel re-registers at once, no reconnect needed; and
``CredentialsRevoked``: when it names the credential the connection was opened
with, the channel stops and tells its front end, which ends the connection).
Pending state changes coalesce — newest state per account and type wins — so a
client that stops reading costs a bounded amount of memory and delays nobody:
the front end is only told "something is pending" (``notify``) and calls
:meth:`take` when it can write. The front end never blocks the bus greenlet.

A connection can miss a ``CredentialsRevoked``: it authenticated just before the revocation committed
but listened just after, or its node was cut off from the broker when it was sent (the JMAP bus delivers
at most once). So the channel checks its credential in the store (``Accounts.check_credential``) once
right after it starts listening on the user's key, and again on every resync ``AccessChanged`` (null
fields, sent after a broker reconnect); one no longer valid ends the connection as a revocation does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import gevent

from jmapmono.accounts.principal import Principal
from jmapmono.events.event import Event
from jmapmono.log import kv
from jmapmono.mailbox.changes import TYPES, parse_token
from jmapmono.push import push_state
from jmapmono.push.jmap_bus_events import ACCESS_CHANGED, CredentialsRevoked, StateChange, user_key
from jmapmono.store import StoreError

if TYPE_CHECKING:
    from jmapmono.events.bus import Registration
    from jmapmono.push.context import PushServices

log = logging.getLogger(__name__)

#: The data types a client may name (RFC 8621 §1.5: every mail type plus EmailDelivery).
PUSH_TYPES = frozenset(TYPES)


class PushChannel:
    """State changes for one connected user, coalesced until the front end takes them."""

    # One per open push connection: no per-instance dict.
    __slots__ = (
        "services",
        "principal",
        "notify",
        "revoked",
        "revocation",
        "types",
        "enabled",
        "closed",
        "_registered",
        "_registrations",
        "_accounts",
        "_seqs",
        "_pending",
        "pending_since",
        "access_changes",
        "_rereading",
        "_reread_wanted",
        "_check_wanted",
    )

    def __init__(
        self,
        services: PushServices,
        principal: Principal,
        notify: Callable[[], None],
        revoked: Callable[[CredentialsRevoked], None] | None = None,
    ) -> None:
        self.services = services
        self.principal = principal
        self.notify = notify
        #: Told (once, from a bus greenlet: it must not block) when the connection's credential is revoked.
        self.revoked = revoked
        self.revocation: CredentialsRevoked | None = None
        #: None: every type; else the enabled type names.
        self.types: frozenset[str] | None = None
        self.enabled = False
        self.closed = False
        #: Set once the user's accounts were read (by enable): only then do delegation changes re-read them.
        self._registered = False
        self._registrations: dict[str, Registration] = {}
        self._accounts: set[str] = set()
        self._seqs: dict[str, int] = {}
        self._pending: dict[str, dict[str, str]] = {}
        #: The mutation time (ms) of the oldest change waiting, for the push latency metric.
        self.pending_since: object = None
        #: Counts the AccessChanged events heard: a front end holding what it read of the user's accounts
        #: reads them again when this moved.
        self.access_changes = 0
        self._rereading: gevent.Greenlet | None = None
        self._reread_wanted = False
        self._check_wanted = False

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def enable(self, types: Iterable[str] | None = None, resume_from: str | None = None) -> None:
        """Start (or re-configure) pushing ``types`` (None = all); with ``resume_from`` (a pushState),
        queue at once what changed since it."""
        self.types = None if types is None else frozenset(types)
        self.enabled = True
        self._register()
        if resume_from is not None:
            since = push_state.decode(resume_from) or {}
            changed = push_state.changed_since(self.services.db, since, self._accounts)
            for account, states in changed.items():
                self._merge(account, states)
        if self._pending_for_types():
            self.notify()

    def watch(self) -> None:
        """Listen for the user's own key only (revocations, delegation changes) before push is enabled: a
        connection that never enables push still ends when its credential is revoked. Reads the store."""
        if self._listen_to_user():
            self.check_credential()

    def check_credential(self) -> bool:
        """Is the credential the connection was opened with still valid? When not, end the connection as a
        revocation does. Reads the store: call it from the connection's greenlet or one of the channel's
        own, never from a bus listener. A store error leaves the connection open (logged)."""
        if self.closed or self.revocation is not None:
            return False
        try:
            revocation = self.services.accounts.check_credential(self.principal)
        except StoreError as e:
            log.warning(kv(event="push_credential_check_failed", user=self.principal.email, error=str(e)))
            return True
        if revocation is None:
            return True
        self._on_credentials_revoked(CredentialsRevoked.of(revocation), via="check")
        return False

    def disable(self) -> None:
        """Stop pushing; listeners stay until close so a later enable resumes cheaply."""
        self.enabled = False
        self._pending.clear()

    def close(self) -> None:
        """Unregister every listener (idempotent). Every way a connection ends must call this."""
        if self.closed:
            return
        self.closed = True
        for registration in self._registrations.values():
            registration.unregister()
        self._registrations.clear()
        self._pending.clear()

    # -- what the front end reads ----------------------------------------------------------------------------------

    def push_state(self) -> str:
        """The resume token for everything this user can see, as far as this channel knows."""
        return push_state.encode({a: self._seqs.get(a, 0) for a in self._accounts})

    def take(self) -> dict | None:
        """The coalesced StateChange to send now (``changed`` + ``pushState``), or None."""
        changed = self._pending_for_types()
        self._pending.clear()
        self.pending_since = None
        if not changed or not self.enabled:
            return None
        return {"@type": "StateChange", "changed": changed, "pushState": self.push_state()}

    def _pending_for_types(self) -> dict[str, dict[str, str]]:
        out = {}
        for account, states in self._pending.items():
            kept = {t: s for t, s in states.items() if self.types is None or t in self.types}
            if kept:
                out[account] = kept
        return out

    # -- listening -------------------------------------------------------------------------------------------------

    def _listen_to_user(self) -> bool:
        """Listen on the user's own key; True when this call started listening (check the credential then:
        a revocation that committed before has not been heard)."""
        key = user_key(self.principal.user_id)
        if self.closed or key in self._registrations:
            return False
        registration = self.services.jmap_bus.register_key(key, self._on_user_event)
        if self.closed or key in self._registrations:  # closed, or registered by a concurrent re-read
            registration.unregister()
            return False
        self._registrations[key] = registration
        return True

    def _register(self) -> None:
        """Listen for the user's own key and every account the user can see now."""
        if self.closed:
            return
        listening = self._listen_to_user()
        bus = self.services.jmap_bus
        accounts = set(self.services.accounts.accessible_accounts(self.principal.user_id))
        wanted = {*accounts, user_key(self.principal.user_id)}
        for key in wanted - set(self._registrations):
            if key.startswith("user:"):
                continue  # _listen_to_user's to register: missing only when closed meanwhile
            registration = bus.register_key(key, self._on_state_change)
            if self.closed or key in self._registrations:  # closed, or registered by a concurrent re-read
                registration.unregister()
                continue
            self._registrations[key] = registration
        for key in set(self._registrations) - wanted:
            self._registrations.pop(key).unregister()
            self._pending.pop(key, None)
        added = accounts - self._accounts
        self._accounts = accounts
        self._seqs = {a: s for a, s in self._seqs.items() if a in accounts}
        if added:
            self._seqs.update(push_state.current_seqs(self.services.db, added))
        self._registered = True
        if listening:
            self.check_credential()

    def _merge(self, account: str, states: dict[str, str]) -> None:
        if account not in self._accounts:
            return
        pending = self._pending.setdefault(account, {})
        for type_, state in states.items():  # events may arrive out of order: the newest state wins
            if type_ not in pending or (parse_token(state) or 0) > (parse_token(pending[type_]) or 0):
                pending[type_] = state
        seq = push_state.max_seq(states)
        if seq > self._seqs.get(account, 0):
            self._seqs[account] = seq

    def _on_state_change(self, event: Event) -> None:
        change = StateChange.from_event(event)
        if self.closed or change is None:
            return
        states = {t: s for t, s in change.changed.items() if t in PUSH_TYPES and parse_token(s) is not None}
        if not states:
            return
        self._merge(change.account_id, states)
        self.pending_since = self.pending_since or event.payload.get("at")
        if self.enabled and self._pending_for_types():
            self.notify()

    def _on_user_event(self, event: Event) -> None:
        revocation = CredentialsRevoked.from_event(event)
        if revocation is not None:
            self._on_credentials_revoked(revocation)
        else:
            self._on_access_changed(event)

    def _on_credentials_revoked(self, revocation: CredentialsRevoked, via: str = "event") -> None:
        """Stop pushing and tell the front end, which ends the connection and closes the channel (here, in a
        bus greenlet, unregistering could wait on the broker). ``via``: the bus event, or a check."""
        if self.closed or self.revocation is not None or not revocation.ends(self.principal):
            return
        self.revocation = revocation
        self.enabled = False
        log.info(kv(event="push_credentials_revoked", user=self.principal.email, what=revocation.what, via=via))
        if self.revoked is not None:
            self.revoked(revocation)

    def _on_access_changed(self, event: Event) -> None:
        """Re-read the user's accounts (once push is enabled) in a greenlet of the channel's own: that takes
        queries, and a key listener must not block (events/bus.py). A resync (null fields: this node may have
        missed events, revocations too) also checks the credential there, push enabled or not. One re-read at
        a time; a change during it starts another."""
        if self.closed or event.type != ACCESS_CHANGED:
            return
        self.access_changes += 1
        if event.payload.get("accountId") is None:  # a resync: a delegation change names its account
            self._check_wanted = True
        if self._registered:  # whatever it says: re-read
            self._reread_wanted = True
        if (self._check_wanted or self._reread_wanted) and self._rereading is None:
            self._rereading = gevent.spawn(self._reread_accounts)

    def _reread_accounts(self) -> None:
        try:
            while (self._check_wanted or self._reread_wanted) and not self.closed:
                if self._check_wanted:
                    self._check_wanted = False
                    if not self.check_credential():
                        return
                if self._reread_wanted:
                    self._reread_wanted = False
                    self._access_changed()
        except Exception as e:  # the next AccessChanged tries again; the client still has */changes
            error = f"{type(e).__name__}: {e}"
            log.warning(kv(event="push_access_changed_failed", user=self.principal.email, error=error))
        finally:
            self._rereading = None

    def _access_changed(self) -> None:
        before = set(self._accounts)
        self._register()
        gained = self._accounts - before
        log.info(
            kv(
                event="push_access_changed",
                user=self.principal.email,
                gained=len(gained),
                lost=len(before - self._accounts),
            )
        )
        if gained:
            for account, states in push_state.changed_since(self.services.db, {}, gained).items():
                self._merge(account, states)
        if self.enabled and self._pending_for_types():
            self.notify()

"""The event flow of one serving process: both buses, the MailboxChangeListener and the outbox relay.

    mutation ─(same transaction)─> event_outbox ─relay─> mailbox bus ─MailboxChangeListener (group)─>
    JMAP bus ─(key: account id)─> push connections

The runtime of every serving process (``serve``, each gunicorn worker) starts one :class:`EventFlow`
and stops it in reverse order (relay, mailbox bus, JMAP bus, web push). Other parts may register more
group listeners on ``runtime.mailbox_bus`` or ``runtime.jmap_bus`` before or after the start.

Processes that only write mail (LMTP, ``deliver``, the CLI) run no flow: what they commit sits in the
outbox and the serving process's relay is woken by the doorbell (doorbell.py).

Catching up after a broker reconnect (amqp:// only): key copies published while this node's JMAP
consumer was away are lost (at most once). So each time the JMAP bus reconnects, the flow tells this
process's key listeners the CURRENT state of every account they listen to (one StateChange per
account, delivered locally only: no broker, no group listener) and sends every ``user:<id>`` key an
``AccessChanged`` with null fields ("re-read your accounts, and check your credential": a
``CredentialsRevoked`` may have been lost too, push/channel.py). A client thus always ends up knowing
the latest states, even across a broker restart; unchanged states cost it nothing; a connection whose
credential was revoked meanwhile ends.

Several processes on memory:// (``serve --workers N``, gunicorn workers, two ``serve`` on one
database): each bus is its own process's, so a mailbox event reaches the group listeners of the process
whose relay claimed it (once per cluster) but the key listeners of that process only. So on memory://
the flow also tails the outbox (events/outbox_tail.py): every process turns every mailbox event into its
JMAP event (``to_jmap``, a pure function of the event) and tells its own key listeners; the copy the
claiming process also delivers has the same event id and is absorbed by the bus. On amqp:// the broker
routes key copies to every process that listens, and there is no tail.

Pushes one hop early (amqp://): the JMAP event is a pure function of the mailbox event, so the relay that
publishes a mailbox event first dispatches its JMAP event in full (key copies first, then the group copy
for web push, each confirmed by the broker), with the MailboxChangeListener's own translation. Sockets on
every node then hear of a commit one broker hop after the relay's claim instead of after the group hop
and the listener's claim (cluster push latency, docs/adr/0008). The mailbox event then goes out marked
``jmap_dispatched``, and the listener declines it (no claim, no mark, no second dispatch). When the broker
refused a copy, the event goes out unmarked and the listener dispatches it as before, with its retries;
a relay that dies between the two publishes dispatches again after its lease, and receivers take one
copy per event id (web push: the group's claim; push sockets: per key).

Revocations: the flow listens to ``credentials:revoked`` (every ``CredentialsRevoked``, whoever it
concerns) and drops the user's entries from this process's credential cache, so no node answers a new
request from a cached check of a revoked credential. The connections opened with it end through their
own channels (push/channel.py).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import gevent

from jmapmono.events.bus import BusUnavailable, Event, Registration
from jmapmono.events.outbox_relay import OutboxRelay
from jmapmono.events.outbox_tail import OutboxTail
from jmapmono.log import kv
from jmapmono.mailbox.events import MAILBOX_BUS
from jmapmono.push.change_listener import MailboxChangeListener, dispatched, to_jmap
from jmapmono.push.jmap_bus_events import REVOCATIONS_KEY, AccessChanged, CredentialsRevoked, StateChange

if TYPE_CHECKING:
    from jmapmono.runtime import Runtime

log = logging.getLogger("jmapmono.events.flow")  # the logger name operators grep for

#: How often the flow looks for a reconnection of the JMAP bus (seconds).
RECONNECT_CHECK = 0.1


class EventFlow:
    """The event flow of one serving process (started and stopped by its runtime)."""

    def __init__(self, services: Runtime, **relay_options: Any) -> None:
        self.services = services
        self.mailbox_bus = services.mailbox_bus
        self.jmap_bus = services.jmap_bus
        self.listener = MailboxChangeListener(self.jmap_bus)
        self.relay = OutboxRelay(services.db, {MAILBOX_BUS: self.mailbox_bus}, **relay_options)
        self.webpush = services.webpush  # a group listener on the JMAP bus (push subscriptions)
        self.tail: OutboxTail | None = None
        # Every wake-up (a commit here, another process's doorbell) may have changed what this process keeps
        # under the store's change stamp (remembered logins, accessible accounts).
        self.relay.on_wake.append(services.db.note_external_change)
        if services.config.broker_url.startswith("memory:"):
            self.tail = OutboxTail(services.db, MAILBOX_BUS, self._deliver_locally)
            self.relay.on_wake.append(self.tail.wake)  # the relay's wake-ups: commits here and the doorbell
        else:
            self.relay.before_publish.append(self._dispatch_early)
        self._watcher: gevent.Greenlet | None = None
        self._revocations: Registration | None = None
        self._stopped = False

    def start(self) -> EventFlow:
        started = time.monotonic()
        self.listener.register(self.mailbox_bus)
        self.webpush.register(self.jmap_bus)
        self._revocations = self.jmap_bus.register_key(REVOCATIONS_KEY, self._on_revoked)
        self.jmap_bus.start()  # first: the listener dispatches on it
        self.mailbox_bus.start()
        if self.tail is not None:
            self.tail.start()  # before the relay, which wakes it
        self.relay.start()  # last: publishes whatever piled up while nothing ran
        self.services.db.hears_others = True  # the relay's doorbell listener tells of other processes' commits
        if not self.services.config.broker_url.startswith("memory:"):
            self._watcher = gevent.spawn(self._watch_reconnects)
        log.info(kv(event="flow_started", broker=self.services.config.broker_url.split(":", 1)[0], ms=_ms(started)))
        return self

    def stop(self) -> None:
        """Stop relay, then buses (events not yet published stay in the outbox for the next start)."""
        if self._stopped:
            return
        self._stopped = True
        started = time.monotonic()
        self.services.db.hears_others = False
        if self._watcher is not None:
            self._watcher.kill(block=True, timeout=1)
        if self._revocations is not None:
            self._revocations.unregister()
        parts: list[Any] = [self.relay, self.tail] if self.tail is not None else [self.relay]
        for part in (*parts, self.mailbox_bus, self.jmap_bus, self.webpush):
            try:
                part.stop()
            except Exception as e:  # one part failing to stop must not keep the others running
                log.error(kv(event="flow_stop_failed", part=type(part).__name__, error=f"{type(e).__name__}: {e}"))
        log.info(kv(event="flow_stopped", published=self.relay.stats["published"], ms=_ms(started)))

    def _watch_reconnects(self) -> None:
        seen = self.jmap_bus.stats["reconnects"]
        while not self._stopped:
            gevent.sleep(RECONNECT_CHECK)
            reconnects = self.jmap_bus.stats["reconnects"]
            if reconnects != seen:
                seen = reconnects
                try:
                    self.resync()
                except Exception as e:  # the next reconnect tries again; clients still have */changes
                    if self._stopped:
                        return
                    log.warning(kv(event="push_resync_failed", error=f"{type(e).__name__}: {e}"))

    def resync(self) -> int:
        """Tell this process's key listeners the current state of what they listen to; return the keys told."""
        started = time.monotonic()
        keys = self.jmap_bus.keys()
        accounts = [k for k in keys if ":" not in k]  # account ids; user:<id> and credentials:revoked are not
        users = [k for k in keys if k.startswith("user:")]
        for key in users:
            self.jmap_bus.deliver_local(AccessChanged(_user_id(key)).to_event(), [key])
        for account in accounts:
            states = self.services.changes.states(account)
            change = StateChange(account, states)
            self.jmap_bus.deliver_local(change.to_event(), [change.key])
        log.info(kv(event="push_resync", accounts=len(accounts), users=len(users), ms=_ms(started)))
        return len(accounts) + len(users)

    def _dispatch_early(self, bus: str, event: Event) -> Event | None:
        """amqp://: the JMAP event of a mailbox event, dispatched in full by the relay before it publishes the
        mailbox event, which then goes out marked so that the MailboxChangeListener declines it (see the
        module docstring). Unmarked when the broker refused a copy: the listener dispatches it as before."""
        translated = to_jmap(event) if bus == MAILBOX_BUS else None
        if translated is None:
            return None
        jmap_event, keys = translated
        try:
            self.jmap_bus.dispatch(jmap_event, keys)
        except BusUnavailable:
            self.jmap_bus.stats["early_dispatch_failed"] += 1
            return None
        return dispatched(event)

    def _deliver_locally(self, event: Event) -> None:
        """A mailbox event read by the tail: its JMAP event, to this process's key listeners only."""
        translated = to_jmap(event)
        if translated is not None:
            jmap_event, keys = translated
            self.jmap_bus.deliver_local(jmap_event, keys)

    def _on_revoked(self, event: Event) -> None:
        """Forget this process's cached password checks of a user whose credentials were revoked."""
        revocation = CredentialsRevoked.from_event(event)
        authenticator = self.services.__dict__.get("authenticator")  # only if this process authenticates
        if revocation is None or authenticator is None:
            return
        dropped = authenticator.forget_user(revocation.user_id)
        log.info(
            kv(event="credential_cache_dropped", user_id=revocation.user_id, what=revocation.what, entries=dropped)
        )

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until both buses consume (connected to the broker); True if they do."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for bus in (self.jmap_bus, self.mailbox_bus):
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not bus.wait_ready(remaining):
                return False
        return True


def _user_id(key: str) -> int | str:
    raw = key.split(":", 1)[1]
    return int(raw) if raw.isdigit() else raw


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)

"""MailboxChangeListener: turns each mailbox event into one JMAP push event. The JMAP bus contract.

It is a GROUP listener on the mailbox bus (group ``MailboxChangeListener``: once per cluster, at least
once, retried with backoff, then parked as a dead letter). Change records are NOT written here: the
MailboxManager already wrote them in the mutating transaction. For each mailbox event it dispatches
ONE event on the JMAP bus, whose id is the mailbox event's id, so that running it twice for the same
event (at least once) hands key listeners the same id, which the bus gives each of them once.

Events on the JMAP bus, for push front ends (WebSocket, EventSource) and web push (typed in
jmap_bus_events.py, which both sides build and read them with):

``StateChange`` — registration key: the account id.
    ``payload = {"accountId": "<account id>", "changed": {"<Type>": "<new state>", ...}}``: the new
    state of every data type the operation changed: ``Mailbox``, ``Email``, ``Thread``, and any other
    type whose state the event carries (``Identity``, ``EmailSubmission``, ``VacationResponse``, ...).
    ``EmailDelivery`` is included only when new mail came into the account (the event's ``delivery``
    flag: LMTP, ``deliver``, Email/import, Email/copy), never for drafts, flag changes, moves or deletions.
    A bulk operation is one mailbox event, hence one StateChange. The key is the same for the owner and
    every delegate: a push connection registers the id of every account its user can see.
    States are change-log sequence numbers in base 36 (``jmapmono.mailbox.changes.parse_token``): for
    one account and type a larger number is newer. StateChanges of one account may be handled
    concurrently (several group workers or nodes), so a listener can see an older state after a newer
    one; it may drop it (compare per type) or forward it (a client that asks for changes since its
    newer state simply gets none). The payload's ``at`` is the mutation's time in ms (push latency is
    measured from it; absent from events of older senders).

``AccessChanged`` — registration key: ``user:<user id>`` of the user whose access changed.
    ``payload = {"userId": <user id>, "accountId": "<account id>", "ownerUserId": <owner's user id>,
    "granted": true|false}``: a delegation of the owner's account to that user was granted or revoked
    (or the owner was deleted). A push connection registers ``user:<its user id>`` for its whole life;
    on this event it re-reads the user's accounts (``Accounts.accessible_accounts``), registers the keys
    of accounts it gained and unregisters those it lost, without reconnecting, and tells the client
    that the Session changed. After a broker reconnect the flow sends one with ``accountId``,
    ``ownerUserId`` and ``granted`` null, meaning "re-read everything" (jmapmono/runtime/event_flow.py).

``CredentialsRevoked`` — registration keys: ``user:<user id>`` and ``credentials:revoked``.
    ``payload = {"userId": <user id>, "what": "password"|"appPassword"|"userDeleted", "appPasswordId":
    "<id>"|null}``, from the outbox row written in the transaction that changed the password, revoked the
    app password or deleted the user. Push connections opened with a credential it names end (WebSocket
    close 1008, the EventSource response ends); every serving process listens to ``credentials:revoked``
    and forgets the user's cached password checks.

Key listeners get each event at most once: one whose node lost its broker connection misses events
and its client catches up through pushState and ``*/changes``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

from jmapmono.events.bus import Event, EventBus
from jmapmono.log import kv
from jmapmono.push.jmap_bus_events import (
    ACCESS_CHANGED,
    CREDENTIALS_REVOKED,
    STATE_CHANGE,
    AccessChanged,
    CredentialsRevoked,
    StateChange,
)

log = logging.getLogger("jmapmono.events.changes")

GROUP = "MailboxChangeListener"
#: The state that moves only when mail arrives from outside.
DELIVERY_TYPE = "EmailDelivery"
#: Retries before a mailbox event is parked: about 30 s of backoff, longer than a broker restart.
RETRIES = 6
BACKOFF = 0.5


#: Set in a mailbox event's payload by a relay that dispatched its JMAP event itself (runtime/event_flow.py).
DISPATCHED = "jmap_dispatched"


def dispatched(event: Event) -> Event:
    """``event`` as published once its JMAP event was dispatched in full: the listener has nothing left to do."""
    return Event(event.id, event.type, {**event.payload, DISPATCHED: True})


def needs_dispatch(event: Event) -> bool:
    """Whether the listener must still dispatch this mailbox event's JMAP event (it declines the others)."""
    return not event.payload.get(DISPATCHED)


def to_jmap(event: Event) -> tuple[Event, list[str]] | None:
    """The JMAP bus event (and its registration keys) for one mailbox bus event; None when there is none."""
    data: dict[str, Any] = event.payload
    if event.type == ACCESS_CHANGED:
        delegate = data.get("delegate_user_id")
        account = data.get("account_id")
        if not isinstance(delegate, int) or not isinstance(account, str):
            raise ValueError(f"AccessChanged {event.id} lacks delegate_user_id or account_id")
        owner = data.get("owner_user_id")
        access = AccessChanged(delegate, account, owner if isinstance(owner, int) else None, bool(data.get("granted")))
        return access.to_event(event.id), [access.key]
    if event.type == CREDENTIALS_REVOKED:
        revoked = CredentialsRevoked.from_event(event)
        if revoked is None:
            raise ValueError(f"CredentialsRevoked {event.id} lacks userId or what")
        return revoked.to_event(event.id), revoked.keys
    account = data.get("account_id")
    states = data.get("states")
    if not isinstance(account, str) or not account or not isinstance(states, dict):
        return None
    delivery = data.get("delivery") is True
    changed = {
        type: state
        for type, state in states.items()
        if isinstance(type, str) and isinstance(state, str) and (delivery or type != DELIVERY_TYPE)
    }
    if not changed:
        return None
    change = StateChange(account, changed)
    jmap_event = change.to_event(event.id)
    if isinstance(data.get("at"), int):  # the mutation's time (ms): push latency is measured from it
        jmap_event.payload["at"] = data["at"]
    return jmap_event, [change.key]


class MailboxChangeListener:
    """The group handler: one JMAP bus event per mailbox event (see the module docstring)."""

    def __init__(self, jmap_bus: EventBus) -> None:
        self.jmap_bus = jmap_bus
        #: handled (calls), dispatched, ignored: for operators and tests.
        self.stats: Counter = Counter()

    def register(self, mailbox_bus: EventBus) -> None:
        mailbox_bus.register_group(GROUP, self, retries=RETRIES, backoff=BACKOFF, wants=needs_dispatch)

    def __call__(self, event: Event) -> None:
        """Raises BusUnavailable when the broker refuses the group copy: the bus retries this event."""
        started = time.monotonic()
        self.stats["handled"] += 1
        translated = to_jmap(event)
        if translated is None:
            self.stats["ignored"] += 1
            log.debug(kv(event="mailbox_event_ignored", event_id=event.id, type=event.type))
            return
        jmap_event, keys = translated
        self.jmap_bus.dispatch(jmap_event, keys)
        self.stats["dispatched"] += 1
        fields = {"event_id": event.id, "type": jmap_event.type, "keys": ",".join(keys)}
        ms = round((time.monotonic() - started) * 1000, 2)
        if jmap_event.type == STATE_CHANGE:
            # One per mutation: at DEBUG, beside the mutation's own INFO line and the relay's.
            log.debug(kv(event="state_change", **fields, changed=",".join(jmap_event.payload["changed"]), ms=ms))
        elif jmap_event.type == CREDENTIALS_REVOKED:
            log.info(kv(event="credentials_revoked", **fields, what=jmap_event.payload["what"], ms=ms))
        else:
            log.info(kv(event="access_changed", **fields, granted=jmap_event.payload["granted"], ms=ms))

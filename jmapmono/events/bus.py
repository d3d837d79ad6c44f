"""The event bus: one abstraction, used twice (mailbox events, JMAP events), over memory:// or RabbitMQ.

Two kinds of listeners, after Apache James' event bus (minus its lost bindings after a broker blip):

- Group listeners (``register_group``): each event is handled once per cluster, at least once, with
  retries and backoff, then parked in the database as a dead letter that an operator can redeliver
  (``python -m jmapmono events …``). Copies of one event id are handled once in effect (see groups.py).
- Key listeners (``register_key``): only events dispatched with a registration key (an account id)
  they registered; at most once, never retried. Listeners in the dispatching process are called at
  once, in-process; other processes get a broker copy (routed only to nodes holding the key).

The transport follows ``BROKER_URL``: ``memory://`` (one process, no broker; memory.py) or ``amqp://``
(RabbitMQ; rabbitmq.py).

Failure contract for callers of :meth:`EventBus.dispatch`: local key listeners are always told at
once. When the broker cannot take the event (down, refusing), dispatch logs it and raises
:class:`BusUnavailable`; the caller's transactional outbox retries the whole dispatch later, so the
group copy is never lost. A retry re-sends the key copies; every node (this one included) skips key
copies of an event id it delivered recently, so key listeners still get each event at most once.
A caller without an outbox catches it and moves on: clients catch up through ``*/changes``/pushState.

Group listeners run in their own greenlets (a bounded pool per group): one that raises or blocks delays
no other. Key listeners are called inline, in the dispatching greenlet, one after the other, so every
one is told however many there are (a pool would have to drop or wait once full) and in dispatch order.
Their contract (:data:`KeyListener`) is to never block; one that raises is logged and counted, one that
waits anyway is interrupted at its first wait (``key_blocked``), so neither holds up the others.
Payloads are shared between the key listeners of one process: treat them as read-only.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import gevent
import gevent.event
import gevent.pool
from gevent.hub import get_hub

from jmapmono import metrics
from jmapmono.events.event import BusUnavailable, Event
from jmapmono.events.groups import GroupRunner, GroupSpec
from jmapmono.events.transport import Transport
from jmapmono.log import kv
from jmapmono.store import Database

__all__ = ["BusUnavailable", "Event", "EventBus", "ListenerBlocked", "Registration"]

log = logging.getLogger("jmapmono.events")

GroupHandler = Callable[[Event], None]
#: Called inline by the dispatching greenlet (the relay, a group handler, the broker consumer), once per
#: event and key. It must not block: no I/O, no lock that may be held, no sleep — merge the event into
#: state of its own and wake whoever does the slow part (PushChannel: newest states win, then notify).
#: Work that needs I/O belongs to a group listener (web push) or a greenlet the listener spawns.
#: A listener that waits anyway is interrupted there by :class:`ListenerBlocked`.
KeyListener = Callable[[Event], None]

_RECENT_KEY_DELIVERIES = 10_000


class Registration:
    """A key listener's registration; :meth:`unregister` is idempotent."""

    def __init__(self, bus: EventBus, key: str, token: int) -> None:
        self.bus = bus
        self.key = key
        self._token = token
        self.active = True

    def unregister(self) -> None:
        if self.active:
            self.active = False
            self.bus._unregister_key(self.key, self._token)

    def __repr__(self) -> str:
        return f"<Registration bus={self.bus.name} key={self.key} active={self.active}>"


class ListenerBlocked(BaseException):
    """Thrown into a key listener that waits: the contract says it must not (a BaseException, so that a
    listener's ``except Exception`` does not swallow it)."""


def _check_name(what: str, value: str, limit: int) -> None:
    if not isinstance(value, str) or not value or len(value) > limit or not value.isprintable() or " " in value:
        raise ValueError(f"invalid {what} {value!r}: 1-{limit} printable characters, no spaces")


class EventBus:
    """One named bus (``mailbox`` or ``jmap``) on the transport that ``broker_url`` names."""

    def __init__(
        self,
        name: str,
        broker_url: str,
        db: Database,
        *,
        retries: int = 3,
        retry_backoff: float = 0.2,
        group_concurrency: int = 16,
        redelivery_interval: float = 2.0,
        lease_seconds: float = 60.0,
        heartbeat: float = 10.0,
        node_queue_expires: float = 60.0,
    ) -> None:
        _check_name("bus name", name, 64)
        self.name = name
        self.broker_url = broker_url
        self.heartbeat = heartbeat
        self.node_queue_expires = node_queue_expires
        self.db = db
        #: Identifies this bus instance ("node") on the broker; its own key copies come back and are skipped.
        self.origin = uuid.uuid4().hex[:16]
        self.retries = retries
        self.retry_backoff = retry_backoff
        self.group_concurrency = group_concurrency
        self.redelivery_interval = redelivery_interval
        #: Counters for operators and tests: dispatched, key_delivered, group_handled, dead_lettered, …
        self.stats: Counter[str] = Counter()
        self.groups: dict[str, GroupSpec] = {}
        self._keys: dict[str, dict[int, KeyListener]] = {}
        self._next_token = 0
        # Held while a key's listener count crosses zero and while the consumer re-binds every key,
        # so the broker's bindings always end up matching the local listeners.
        self.bind_lock = threading.RLock()
        self._recent: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._background = gevent.pool.Group()
        self._ready = gevent.event.Event()
        self._started = False
        self._stopped = False
        self.runner = GroupRunner(name, db, self.stats, lease_seconds)
        scheme = urlsplit(broker_url).scheme
        self.transport: Transport
        if scheme == "memory":
            from jmapmono.events.memory import MemoryTransport

            self.transport = MemoryTransport(self)
        elif scheme in ("amqp", "amqps", "pyamqp"):
            from jmapmono.events.rabbitmq import RabbitMQTransport

            self.transport = RabbitMQTransport(self)
        else:
            raise ValueError(f"unsupported broker URL scheme {scheme!r} (use memory:// or amqp://)")

    def __repr__(self) -> str:
        return f"<EventBus {self.name} {urlsplit(self.broker_url).scheme}:// origin={self.origin}>"

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start consuming (group workers, broker consumer, redelivery poller). Returns at once:
        the broker connection is made in the background (see :meth:`wait_ready`)."""
        if self._stopped:
            raise RuntimeError(f"bus {self.name} was stopped; create a new one")
        if self._started:
            return
        self._started = True
        self.transport.start()
        self._background.spawn(self._maintain)
        log.info(kv(event="bus_started", bus=self.name, transport=urlsplit(self.broker_url).scheme, origin=self.origin))

    def stop(self) -> None:
        """Stop promptly (≤ about a second even with stuck listeners); idempotent. Events in flight
        to group listeners stay unacknowledged on the broker and go to another node."""
        if self._stopped:
            return
        self._stopped = True
        self.runner.stopping = True
        self._ready.clear()
        metrics.BUS_GROUP_LISTENERS.labels(self.name).dec(len(self.groups))
        started = time.monotonic()
        self.transport.stop()
        self._background.kill(block=True, timeout=1)
        for spec in self.groups.values():
            spec.pool.kill(block=True, timeout=1)
        if self._started:
            log.info(kv(event="bus_stopped", bus=self.name, ms=round((time.monotonic() - started) * 1000, 1)))

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the bus consumes (broker connected, keys bound); True if it does."""
        return self._ready.wait(timeout)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def set_ready(self, ready: bool) -> None:
        if ready:
            self._ready.set()
        else:
            self._ready.clear()

    # -- dispatch ----------------------------------------------------------------------------------

    def dispatch(self, event: Event, keys: Iterable[str] = ()) -> None:
        """Send ``event`` to every group listener (once per cluster) and to the key listeners of ``keys``.

        Local key listeners are called first, in-process. Raises :class:`BusUnavailable` when the broker
        did not take the event (retry the dispatch later); ValueError for a payload that is not JSON.
        """
        keys = list(dict.fromkeys(keys))
        for key in keys:
            _check_name("registration key", key, 200)
        try:
            body = event.to_json()
        except (TypeError, ValueError) as e:
            raise ValueError(f"event {event.id} ({event.type}) is not JSON-serialisable: {e}") from None
        self.stats["dispatched"] += 1
        for key in keys:
            self._deliver_key(key, event)
        self.transport.publish(body, event, keys)

    def _deliver_key(self, key: str, event: Event) -> None:
        """Call each local listener of ``key`` inline (once per event id and key); see :data:`KeyListener`."""
        listeners = self._keys.get(key)
        if not listeners:
            return
        seen = (event.id, key)
        if seen in self._recent:
            self.stats["key_duplicates"] += 1
            return
        self._recent[seen] = None
        if len(self._recent) > _RECENT_KEY_DELIVERIES:
            self._recent.popitem(last=False)
        hub, current = get_hub(), gevent.getcurrent()
        for token, listener in list(listeners.items()):
            if token not in listeners:
                continue  # unregistered by a listener called before it
            failure = _call_guarded(hub, current, listener, event)
            if failure is None:
                self.stats["key_delivered"] += 1
            elif isinstance(failure, ListenerBlocked):
                self.stats["key_blocked"] += 1
                name = _name(listener)
                log.warning(kv(event="bus_listener_blocked", bus=self.name, key=key, event_id=event.id, listener=name))
            else:
                self.stats["key_failed"] += 1
                error = f"{type(failure).__name__}: {failure}"
                log.warning(kv(event="bus_listener_failed", bus=self.name, key=key, event_id=event.id, error=error))

    def on_remote_key(self, key: str, event: Event, origin: str | None) -> None:
        """A key copy from the broker (called by the transport's consumer)."""
        if origin == self.origin:
            self.stats["key_own_skipped"] += 1  # already delivered through the local fast path
            return
        self.stats["key_received"] += 1
        self._deliver_key(key, event)

    # -- group listeners ---------------------------------------------------------------------------

    def register_group(
        self,
        group: str,
        handler: GroupHandler,
        retries: int | None = None,
        backoff: float | None = None,
        concurrency: int | None = None,
        wants: Callable[[Event], bool] | None = None,
    ) -> None:
        """Add a group listener: every event, once per cluster, retried ``retries`` times (first delay
        ``backoff`` seconds, doubling), then parked as a dead letter. Before or after :meth:`start`.

        ``wants``, if given, is asked first: an event it declines is taken as handled with no bookkeeping
        (nothing to do, so nothing to de-duplicate), which spares the claim and the mark."""
        _check_name("group", group, 100)
        if group in self.groups:
            raise ValueError(f"group {group!r} is already registered on bus {self.name}")
        spec = GroupSpec(
            group,
            handler,
            self.retries if retries is None else retries,
            self.retry_backoff if backoff is None else backoff,
            self.group_concurrency if concurrency is None else concurrency,
            wants,
        )
        if spec.retries < 0 or spec.backoff < 0 or spec.concurrency < 1:
            raise ValueError("retries and backoff must be 0 or more, concurrency at least 1")
        self.groups[group] = spec
        self.transport.add_group(spec)
        metrics.BUS_GROUP_LISTENERS.labels(self.name).inc()

    def run_group(self, spec: GroupSpec, event: Event, dead_letter_id: int | None = None) -> None:
        self.runner.handle(spec, event, dead_letter_id)

    def _maintain(self) -> None:
        """Poll for redelivery requests (old processed ids are pruned by the housekeeping jobs)."""
        while not self._stopped:
            if self.groups:
                try:
                    self.runner.redeliver_requested(self.groups, self._background.spawn)
                except Exception as e:
                    if self._stopped:
                        return  # a kill that surfaced as a store error
                    log.warning(kv(event="bus_maintenance_failed", bus=self.name, error=f"{type(e).__name__}: {e}"))
            gevent.sleep(self.redelivery_interval)

    # -- key listeners -----------------------------------------------------------------------------

    def register_key(self, key: str, listener: KeyListener) -> Registration:
        """Listen to events dispatched with registration key ``key``. The first local listener of a key
        binds it on the broker (synchronously when connected), the last one to leave unbinds it.

        ``listener`` is called inline by whoever dispatches and must never block (see :data:`KeyListener`):
        it is interrupted at its first wait, and the event is lost to it."""
        _check_name("registration key", key, 200)
        with self.bind_lock:
            self._next_token += 1
            token = self._next_token
            listeners = self._keys.setdefault(key, {})
            listeners[token] = listener
            metrics.BUS_KEY_LISTENERS.labels(self.name).inc()
            if len(listeners) == 1:
                self.transport.bind_key(key)
        return Registration(self, key, token)

    def _unregister_key(self, key: str, token: int) -> None:
        with self.bind_lock:
            listeners = self._keys.get(key)
            if listeners is None or listeners.pop(token, None) is None:
                return
            metrics.BUS_KEY_LISTENERS.labels(self.name).dec()
            if not listeners:
                del self._keys[key]
                self.transport.unbind_key(key)

    def keys(self) -> list[str]:
        """The registration keys that have a local listener."""
        return list(self._keys)

    def deliver_local(self, event: Event, keys: Iterable[str]) -> None:
        """Hand ``event`` to this process's key listeners of ``keys`` only: no broker, no group listener
        (a node re-telling its own listeners what they may have missed, e.g. after a broker reconnect)."""
        for key in dict.fromkeys(keys):
            self._deliver_key(key, event)

    def listener_count(self, key: str) -> int:
        return len(self._keys.get(key, ()))


def _call_guarded(hub: Any, current: Any, listener: KeyListener, event: Event) -> BaseException | None:
    """Call ``listener``; what it raised (ListenerBlocked: it waited, and was interrupted there), or None.

    The guard is a callback of the hub's loop: it runs only if the listener hands control to the hub,
    and then throws into the listener where it waits. A listener that returns never lets it run."""
    blocked = ListenerBlocked()
    # From a hub callback (which cannot wait anyway: gevent refuses it) there is nothing to guard.
    guard = None if current is hub else hub.loop.run_callback(current.throw, blocked)
    try:
        listener(event)
    except ListenerBlocked as e:
        if e is not blocked:
            raise
        return e
    except Exception as e:
        return e
    finally:
        if guard is not None:
            guard.stop()
    return None


def _name(listener: KeyListener) -> str:
    return str(getattr(listener, "__qualname__", type(listener).__qualname__))

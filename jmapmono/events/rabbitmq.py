"""The RabbitMQ transport (``amqp://``) for several nodes: Kombu over py-amqp, under gevent.

Topology per bus (``jmapmono.<bus>``, a durable direct exchange):

- one durable work queue per group listener, ``jmapmono.<bus>.group.<group>``, bound with ``@groups``:
  every node with that group consumes it, so each event is handled once per cluster; a copy is
  acknowledged only once handled or parked (at least once: a node that dies mid-way leaves it to
  another);
- one queue per bus instance ("node"), ``jmapmono.<bus>.node.<origin>`` (non-exclusive, auto-delete,
  ``x-expires``), bound with ``key.<key>`` for every registration key that has a local listener: the
  first listener binds, the last unbinds. After a reconnect the queue is declared again and EVERY key
  that still has a local listener is bound again. Events published while the broker was away are
  lost for key listeners (clients catch up through ``*/changes``). The broker deletes the queue of a
  node that died ``node_queue_expires`` seconds after its last use.

Kombu under gevent: the consumer connection belongs to its own greenlet (heartbeat ``bus.heartbeat``,
``heartbeat_check()`` every iteration, so a hung broker is noticed after about two intervals;
acknowledgements of handlers running in other greenlets are queued to it). Publishing, binding and
unbinding use a second connection (``heartbeat=0``, publisher confirms, ``ensure`` with one reconnect)
under a lock; each of these calls fails after one heartbeat interval without an answer, so a hung
broker holds neither the caller nor the lock. After a failed publish the transport refuses at once for
a second instead of trying to connect on every call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import gevent
import gevent.pool
from kombu import Connection, Consumer, Exchange, Producer, Queue

from jmapmono.events.event import BusUnavailable, Event
from jmapmono.events.groups import GroupSpec
from jmapmono.log import kv

if TYPE_CHECKING:
    from kombu.message import Message
    from kombu.transport.virtual import Channel

    from jmapmono.events.transport import TransportHost

log = logging.getLogger("jmapmono.events")

CONNECT_TIMEOUT = 2
DRAIN_TIMEOUT = 0.05  # also the longest an acknowledgement waits while the consumer is idle
SETUP_INTERVALS = 6  # declaring and binding every key of a node after a connect: many round trips
GROUPS_ROUTING_KEY = "@groups"
KEY_PREFIX = "key."
DOWN_FOR = 1.0
_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.1, "interval_max": 0.1}


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".strip()


class BrokerTimeout(Exception):
    """The broker did not answer in time (hung). Not an OSError: Kombu's ``ensure`` must not retry it."""


class RabbitMQTransport:
    def __init__(self, bus: TransportHost) -> None:
        self.bus = bus
        self.url = bus.broker_url
        self.exchange = Exchange(f"jmapmono.{bus.name}", type="direct", durable=True, auto_delete=False)
        self.node_queue_name = f"jmapmono.{bus.name}.node.{bus.origin}"
        self._publish_lock = threading.Lock()  # a gevent lock once the process is patched
        self._publisher: Connection | None = None
        self._producer: Producer | None = None
        self._down_until = 0.0
        self._consumer: gevent.Greenlet | None = None
        self._stopping = False
        self._generation = 0
        self._acks: deque[tuple[int, Message, bool]] = deque()
        self._pending_groups: deque[GroupSpec] = deque()
        self._rebind_needed = False
        self._node_channel: Channel | None = None
        self._attached: set[str] = set()
        self._handlers = gevent.pool.Group()  # bounded by each group's prefetch count

    # -- entities ----------------------------------------------------------------------------------

    def group_queue(self, group: str) -> Queue:
        return Queue(
            f"jmapmono.{self.bus.name}.group.{group}",
            exchange=self.exchange,
            routing_key=GROUPS_ROUTING_KEY,
            durable=True,
            auto_delete=False,
        )

    def node_queue(self) -> Queue:
        return Queue(
            self.node_queue_name,
            exchange=self.exchange,
            routing_key=f"node.{self.bus.origin}",  # its own address; key bindings are added to it
            durable=False,
            auto_delete=True,
            queue_arguments={"x-expires": int(self.bus.node_queue_expires * 1000)},
        )

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._consumer = gevent.spawn(self._consume_forever)

    def stop(self) -> None:
        self._stopping = True
        # Handlers first: an interrupted one releases its claim before the broker requeues its copy.
        self._handlers.kill(block=True, timeout=1)
        if self._consumer is not None:
            self._consumer.kill(block=True, timeout=1)
            self._consumer = None
        if self._publish_lock.acquire(timeout=1):
            try:
                self._drop_publisher()
            finally:
                self._publish_lock.release()

    # -- publishing (any greenlet) -----------------------------------------------------------------

    def _drop_publisher(self) -> None:
        if self._publisher is not None:
            try:
                self._publisher.collect()
            except Exception:
                log.debug("event=bus_publisher_close_failed", exc_info=True)
        self._publisher = self._producer = None

    def _publish_fn(self) -> Callable[..., Any]:
        """The ensured publish function on the publisher connection (call with the lock held)."""
        if self._publisher is None or self._producer is None:  # both set, or both None
            conn = Connection(
                self.url,
                heartbeat=0,
                connect_timeout=CONNECT_TIMEOUT,
                transport_options={"confirm_publish": True, **_RETRY_POLICY},
            )
            try:
                channel = conn.default_channel
                self.exchange(channel).declare()
            except BaseException:
                conn.collect()
                raise
            self._publisher, self._producer = conn, Producer(channel, exchange=self.exchange)
        return self._publisher.ensure(self._producer, self._producer.publish, **_RETRY_POLICY)

    def _answer_within(self, what: str, intervals: int = 1) -> gevent.Timeout:
        """A bound on calls to the broker: BrokerTimeout after ``intervals`` heartbeat intervals."""
        seconds = self.bus.heartbeat * intervals
        return gevent.Timeout(seconds, BrokerTimeout(f"the broker did not answer {what} within {seconds:g}s"))

    def _failed(self, e: BaseException) -> None:
        self._drop_publisher()
        self._down_until = time.monotonic() + DOWN_FOR

    def publish(self, body: str, event: Event, keys: list[str]) -> None:
        """One copy per key (first: push latency), then the group copy; every copy is confirmed by the
        broker. Any failure raises BusUnavailable: the caller retries the whole dispatch later, and the
        receiving nodes skip the key copies they already delivered."""
        origin = self.bus.origin
        common = {"content_type": "application/json", "content_encoding": "utf-8", "message_id": event.id}
        if time.monotonic() < self._down_until:
            self._log_drop(event, keys, "broker unavailable (recent failure)")
            raise BusUnavailable(f"bus {self.bus.name}: broker unavailable (recent failure)")
        with self._publish_lock:
            try:
                with self._answer_within("a publish"):
                    publish = self._publish_fn()
                    for key in keys:
                        headers = {"origin": origin, "key": key}
                        publish(body, routing_key=KEY_PREFIX + key, delivery_mode=1, headers=headers, **common)
                    headers = {"origin": origin}
                    publish(body, routing_key=GROUPS_ROUTING_KEY, delivery_mode=2, headers=headers, **common)
            except Exception as e:
                self._failed(e)
                self._log_drop(event, keys, _describe(e))
                raise BusUnavailable(f"bus {self.bus.name}: cannot publish: {_describe(e)}") from e
            self.bus.stats["published"] += 1

    def _log_drop(self, event: Event, keys: list[str], error: str) -> None:
        self.bus.stats["publish_failed"] += 1
        log.warning(
            kv(
                event="bus_publish_failed",
                bus=self.bus.name,
                event_id=event.id,
                type=event.type,
                keys_dropped=len(keys),
                error=error,
            )
        )

    def _binding(self, key: str, bind: bool) -> None:
        """Bind or unbind ``key`` on this node's queue from the publisher connection (bind lock held)."""
        if not self.bus.ready:
            return  # the consumer binds every key with a listener when it (re)connects
        try:
            with self._publish_lock, self._answer_within("a binding"):
                self._publish_fn()
                assert self._publisher is not None  # connected by _publish_fn
                queue = self.node_queue()(self._publisher.default_channel)
                if bind:
                    queue.bind_to(exchange=self.exchange, routing_key=KEY_PREFIX + key)
                else:
                    queue.unbind_from(exchange=self.exchange, routing_key=KEY_PREFIX + key)
        except Exception as e:
            self._drop_publisher()
            self._rebind_needed = True  # the consumer makes the bindings match again
            log.warning(kv(event="bus_binding_failed", bus=self.bus.name, key=key, bind=bind, error=_describe(e)))

    def bind_key(self, key: str) -> None:
        self._binding(key, True)

    def unbind_key(self, key: str) -> None:
        self._binding(key, False)

    def add_group(self, spec: GroupSpec) -> None:
        """Declare the group's durable queue now (so events queue up from here on), consume it soon."""
        if self._consumer is not None:
            self._pending_groups.append(spec)
        try:
            with self._publish_lock, self._answer_within("a declaration"):
                if time.monotonic() >= self._down_until:
                    self._publish_fn()
                    assert self._publisher is not None  # connected by _publish_fn
                    self.group_queue(spec.group)(self._publisher.default_channel).declare()
        except Exception as e:
            self._drop_publisher()
            log.warning(kv(event="bus_declare_failed", bus=self.bus.name, group=spec.group, error=_describe(e)))

    # -- consuming (the consumer greenlet only) ----------------------------------------------------

    def _consume_forever(self) -> None:
        delay = 0.1
        lost_at: float | None = None
        connections = 0
        while not self._stopping:
            conn = Connection(self.url, heartbeat=self.bus.heartbeat, connect_timeout=CONNECT_TIMEOUT)
            try:
                conn.connect()
                self._generation += 1
                self._acks.clear()
                self._pending_groups.clear()
                self._attached.clear()
                started = time.monotonic()
                with self._answer_within("the setup", SETUP_INTERVALS):
                    rebound = self._setup(conn)
                connections += 1
                fields = {"bus": self.bus.name, "keys_rebound": rebound, "groups": len(self.bus.groups)}
                if connections == 1:
                    log.info(kv(event="bus_connected", **fields, ms=round((time.monotonic() - started) * 1000, 1)))
                else:
                    self.bus.stats["reconnects"] += 1
                    down_ms = round((time.monotonic() - (lost_at or started)) * 1000)
                    log.info(kv(event="bus_reconnected", **fields, down_ms=down_ms))
                lost_at = None
                delay = 0.1
                self._loop(conn, self._generation)
            except Exception as e:
                self.bus.set_ready(False)
                expected = isinstance(e, (OSError, BrokerTimeout, *conn.connection_errors, *conn.channel_errors))
                if not expected:
                    log.exception(kv(event="bus_consumer_crashed", bus=self.bus.name))
                if lost_at is None:
                    lost_at = time.monotonic()
                    log.warning(kv(event="bus_disconnected", bus=self.bus.name, error=_describe(e)))
            finally:
                self.bus.set_ready(False)
                try:
                    conn.collect()
                except Exception:
                    log.debug("event=bus_consumer_close_failed", exc_info=True)
            gevent.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _setup(self, conn: Connection) -> int:
        """Declare everything, bind every key with a local listener, start consuming; return keys bound."""
        for spec in list(self.bus.groups.values()):
            self._attach_group(conn, spec)
        with self.bus.bind_lock:
            channel = conn.channel()
            self.exchange(channel).declare()
            queue = self.node_queue()(channel)
            queue.declare()
            keys = self.bus.keys()
            for key in keys:
                queue.bind_to(exchange=self.exchange, routing_key=KEY_PREFIX + key)
            consumer = Consumer(channel, [queue], on_message=self._on_key_message, no_ack=True, auto_declare=False)
            consumer.consume()
            self._node_channel = channel
            self._rebind_needed = False
            self.bus.set_ready(True)  # inside the lock: a key registered from now on is bound by register_key
        return len(keys)

    def _attach_group(self, conn: Connection, spec: GroupSpec) -> None:
        if spec.group in self._attached:
            return
        self._attached.add(spec.group)
        channel = conn.channel()
        queue = self.group_queue(spec.group)(channel)
        queue.declare()
        consumer = Consumer(
            channel,
            queues=[queue],
            on_message=partial(self._on_group_message, spec, self._generation),
            no_ack=False,
            auto_declare=False,
        )
        consumer.qos(prefetch_count=spec.concurrency)
        consumer.consume()

    def _rebind(self) -> None:
        with self.bus.bind_lock:
            self._rebind_needed = False
            assert self._node_channel is not None  # opened by _setup before the loop that calls this
            queue = self.node_queue()(self._node_channel)
            queue.declare()
            keys = self.bus.keys()
            for key in keys:
                queue.bind_to(exchange=self.exchange, routing_key=KEY_PREFIX + key)
        log.info(kv(event="bus_rebound", bus=self.bus.name, keys_rebound=len(keys)))

    def _loop(self, conn: Connection, generation: int) -> None:
        while True:
            while self._acks:
                gen, message, requeue = self._acks.popleft()
                if gen != generation:
                    continue  # a copy from an older connection: the broker requeued it already
                if requeue:
                    message.reject(requeue=True)
                else:
                    message.ack()
            if self._rebind_needed:
                with self._answer_within("the rebinding", SETUP_INTERVALS):
                    self._rebind()
            while self._pending_groups:
                self._attach_group(conn, self._pending_groups.popleft())
            conn.heartbeat_check()
            try:
                conn.drain_events(timeout=DRAIN_TIMEOUT)
            except TimeoutError:
                pass

    def _on_key_message(self, message: Message) -> None:
        headers = message.headers or {}
        try:
            event = Event.from_json(message.body)
            key = headers["key"]
        except (ValueError, KeyError, TypeError) as e:
            self.bus.stats["malformed"] += 1
            log.warning(kv(event="bus_malformed_message", bus=self.bus.name, queue="node", error=_describe(e)))
            return
        self.bus.on_remote_key(key, event, headers.get("origin"))

    def _on_group_message(self, spec: GroupSpec, generation: int, message: Message) -> None:
        try:
            event = Event.from_json(message.body)
        except (ValueError, TypeError) as e:
            self.bus.stats["malformed"] += 1
            log.warning(kv(event="bus_malformed_message", bus=self.bus.name, group=spec.group, error=_describe(e)))
            message.ack()  # cannot be handled, ever
            return
        self._handlers.spawn(self._run_group, generation, spec, event, message)

    def _run_group(self, generation: int, spec: GroupSpec, event: Event, message: Message) -> None:
        requeue = False
        try:
            self.bus.run_group(spec, event)
        except Exception:
            if self._stopping:
                return  # interrupted by stop: the broker requeues the copy
            log.exception(kv(event="bus_group_crashed", bus=self.bus.name, group=spec.group, event_id=event.id))
            gevent.sleep(1.0)  # do not spin on a copy that keeps failing this way
            requeue = True
        self._acks.append((generation, message, requeue))

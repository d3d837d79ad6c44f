"""The event bus on a real RabbitMQ: two nodes in one process (separate connections), routing by key,
reference-counted bindings checked on the broker, a broker restart, stop with work in flight.

Each test uses its own bus name, hence its own exchange and queues on the shared broker.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import amqp
import gevent
import gevent.event
import pytest

from jmapmono.events.bus import BusUnavailable, Event, EventBus
from jmapmono.events.deadletters import DeadLetterStore
from jmapmono.store import Database, open_database
from jmapmono.store.migrations import migrate
from tests.support.events import FAST, Recorder
from tests.support.servers import ROOT, RabbitMQServer, free_port
from tests.support.waiting import wait_until


@pytest.fixture
def bus_name() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def plain_db(tmp_path: Path) -> Iterator[Database]:
    """For tests that never touch storage (key listeners only): a bus still needs a database."""
    db = open_database(f"sqlite:///{tmp_path / 'bus.sqlite3'}")
    migrate(db)
    yield db
    db.close()


@pytest.fixture
def nodes(rabbitmq, bus_name) -> Iterator[Callable[..., EventBus]]:
    """Make bus instances ("nodes") on the test broker; they are stopped at the end."""
    made: list[EventBus] = []

    def node(db: Database, url: str | None = None, start: bool = True, **options) -> EventBus:
        bus = EventBus(bus_name, url or rabbitmq.url, db, **{**FAST, **options})
        made.append(bus)
        if start:
            bus.start()
            assert bus.wait_ready(10), "the bus did not connect to the broker"
        return bus

    yield node
    for bus in made:
        bus.stop()


def _connect(server: RabbitMQServer) -> amqp.Connection:
    conn = amqp.Connection(f"127.0.0.1:{server.port}", userid="guest", password="guest")
    conn.connect()
    return conn


def routed(server: RabbitMQServer, exchange: str, routing_key: str) -> bool:
    """Does the broker route ``routing_key`` to any queue? (a mandatory publish comes back if not)."""
    returned: list[object] = []
    conn = _connect(server)
    try:
        channel = conn.channel()
        channel.events["basic_return"].add(lambda *args: returned.append(args))
        channel.confirm_select()
        channel.basic_publish_confirm(amqp.Message("probe"), exchange=exchange, routing_key=routing_key, mandatory=True)
        return not returned
    finally:
        conn.close()


def queue_depth(server: RabbitMQServer, queue: str) -> int:
    conn = _connect(server)
    try:
        return conn.channel().queue_declare(queue, passive=True).message_count
    finally:
        conn.close()


def broker_diagnostics(server: RabbitMQServer) -> str:
    """What the broker logged and who listens on its port: for a failure message."""
    logs = sorted((server.dir / "log").glob("*.log"))
    tail = "\n".join(logs[-1].read_text(errors="replace").splitlines()[-30:]) if logs else "(no log)"
    sockets = subprocess.run(["ss", "-ltnp", f"sport = :{server.port}"], capture_output=True, text=True).stdout
    return f"broker on port {server.port} not reachable\n{sockets}\n{tail}"


# -- groups ----------------------------------------------------------------------------------------


def test_group_handled_once_across_two_nodes(nodes, db):
    handled: dict[str, list[str]] = {"a": [], "b": []}
    node_a, node_b = nodes(db, start=False), nodes(db, start=False)
    node_a.register_group("changes", lambda e: handled["a"].append(e.id), concurrency=4)
    node_b.register_group("changes", lambda e: handled["b"].append(e.id), concurrency=4)
    for node in (node_a, node_b):
        node.start()
        assert node.wait_ready(10)
    events = [Event.new("Added", {"i": i}) for i in range(40)]
    for i, event in enumerate(events):
        (node_a if i % 2 else node_b).dispatch(event)
    assert wait_until(lambda: len(handled["a"]) + len(handled["b"]) >= 40, timeout=10)
    marker = Event.new("marker")
    node_a.dispatch(marker)  # after all 40 were handled: a second copy of any would be handled before it
    assert wait_until(lambda: marker.id in handled["a"] + handled["b"], timeout=10)
    assert sorted(handled["a"] + handled["b"]) == sorted(e.id for e in [*events, marker])


def test_duplicate_copies_are_handled_once_across_nodes(nodes, db):
    handler = Recorder()
    node_a, node_b = nodes(db, start=False), nodes(db, start=False)
    node_a.register_group("changes", handler)
    node_b.register_group("changes", handler)
    for node in (node_a, node_b):
        node.start()
        assert node.wait_ready(10)
    event = Event.new("Added")
    for node in (node_a, node_b, node_a, node_b):  # e.g. an outbox retry after a lost confirm
        node.dispatch(event)
    seen = lambda: sum(n.stats["group_handled"] + n.stats["group_duplicates"] for n in (node_a, node_b))  # noqa: E731
    assert wait_until(lambda: seen() == 4, timeout=10)
    assert handler.calls == 1 and handler.ids == [event.id]


def test_retry_dead_letter_then_cli_redeliver(nodes, db, config, rabbitmq, bus_name):
    broken = {"on": True}
    handler = Recorder(fail=lambda e: broken["on"])
    node = nodes(db, start=False)
    node.register_group("changes", handler, retries=2)
    listener = Recorder()
    node.register_key("acc1", listener)
    node.start()
    assert node.wait_ready(10)
    event = Event.new("Added", {"accountId": "acc1"})
    node.dispatch(event, ["acc1"])
    assert wait_until(lambda: node.stats["dead_lettered"] == 1, timeout=10)
    [letter] = DeadLetterStore(db).list(bus=bus_name)
    assert letter.attempts == 3 and letter.event == event
    group_queue = node.transport.group_queue("changes").name
    assert wait_until(lambda: queue_depth(rabbitmq, group_queue) == 0)  # parked, then acknowledged

    broken["on"] = False
    env = {
        **os.environ,
        "DATABASE_URL": config.database_url,
        "BROKER_URL": rabbitmq.url,
        "JMAPMONO_DATA_DIR": str(config.data_dir),
        "JMAPMONO_LOG_LEVEL": "WARNING",
    }
    done = subprocess.run(
        [sys.executable, "-m", "jmapmono", "events", "redeliver", str(letter.id), "--wait", "20"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"{letter.id}  handled" in done.stdout
    assert handler.ids == [event.id] and listener.calls == 1  # to the group only
    assert DeadLetterStore(db).list(bus=bus_name) == []


def test_stop_with_work_in_flight_lets_another_node_take_it(nodes, db):
    never = gevent.event.Event()
    entered = Recorder()
    survivor = Recorder()
    node_a = nodes(db)
    node_a.register_group("changes", lambda e: (entered(e), never.wait()))
    node_a.register_key("acc1", lambda e: never.wait())
    event = Event.new("Added")
    node_a.dispatch(event, ["acc1"])
    assert entered.wait_count(1, timeout=10)
    node_b = nodes(db, start=False)
    node_b.register_group("changes", survivor)
    node_b.start()
    node_a.stop()  # does not wait for the stuck handler (how long it takes: bench/stop_time.py)
    assert survivor.wait_count(1, timeout=10)  # unacknowledged on A: the broker hands it to B
    assert survivor.ids == [event.id]


# -- keys ------------------------------------------------------------------------------------------


def test_key_bindings_are_reference_counted_on_the_broker(nodes, plain_db, rabbitmq, bus_name):
    node = nodes(plain_db)
    exchange = f"jmapmono.{bus_name}"
    assert not routed(rabbitmq, exchange, "key.acc1")
    first = node.register_key("acc1", Recorder())
    assert routed(rabbitmq, exchange, "key.acc1")
    second = node.register_key("acc1", Recorder())
    first.unregister()
    assert routed(rabbitmq, exchange, "key.acc1")  # one listener left
    second.unregister()
    assert not routed(rabbitmq, exchange, "key.acc1")
    node.register_key("acc1", Recorder())
    assert routed(rabbitmq, exchange, "key.acc1")
    # The routed probes landed in THIS node's queue (they are not events: dropped as malformed).
    assert wait_until(lambda: node.stats["malformed"] == 3)


def test_a_failed_bind_is_repaired_by_the_consumer(nodes, plain_db, rabbitmq, bus_name, monkeypatch):
    node, sender = nodes(plain_db), nodes(plain_db)
    publish_fn = node.transport._publish_fn
    failures = []

    def broken_once():
        if not failures:
            failures.append(1)
            raise ConnectionResetError("connection reset by peer")
        return publish_fn()

    monkeypatch.setattr(node.transport, "_publish_fn", broken_once)
    listener = Recorder()
    node.register_key("acc1", listener)  # the bind fails: logged, and the consumer binds it again
    assert failures and wait_until(lambda: routed(rabbitmq, f"jmapmono.{bus_name}", "key.acc1"))
    event = Event.new("StateChange")
    sender.dispatch(event, ["acc1"])
    assert listener.wait_count(1) and listener.ids == [event.id]


def test_key_events_go_only_to_the_node_holding_the_key(nodes, plain_db):
    node_a, node_b, node_c = nodes(plain_db), nodes(plain_db), nodes(plain_db)
    on_a, on_b = Recorder(), Recorder()
    node_a.register_key("acc1", on_a)
    node_b.register_key("acc2", on_b)
    for_a, for_b = Event.new("StateChange", {"to": "a"}), Event.new("StateChange", {"to": "b"})
    node_c.dispatch(for_a, ["acc1"])
    node_c.dispatch(for_b, ["acc2"])
    assert on_a.wait_count(1) and on_b.wait_count(1)
    assert on_a.ids == [for_a.id] and on_b.ids == [for_b.id]
    # What reached each node's queue at all: one event each (a misrouted copy would arrive first).
    assert node_a.stats["key_received"] == 1 and node_b.stats["key_received"] == 1
    assert node_c.stats["key_received"] == 0


def test_local_listeners_are_called_in_process_and_skip_the_broker_copy(nodes, plain_db):
    node_a, node_b = nodes(plain_db), nodes(plain_db)
    local, remote = Recorder(), Recorder()
    node_a.register_key("acc1", local)
    node_b.register_key("acc1", remote)
    event = Event.new("StateChange")
    node_a.dispatch(event, ["acc1"])
    assert local.wait_count(1) and remote.wait_count(1)
    assert wait_until(lambda: node_a.stats["key_own_skipped"] == 1)  # its broker copy came back, skipped
    assert local.calls == 1 and remote.calls == 1
    assert node_a.stats["key_received"] == 0 and node_b.stats["key_received"] == 1


def test_a_key_copy_from_the_broker_reaches_every_listener_of_the_node(nodes, plain_db):
    node_a, node_b = nodes(plain_db), nodes(plain_db)
    listeners = [Recorder() for _ in range(1500)]
    for listener in listeners:
        node_b.register_key("acc1", listener)
    events = [Event.new("StateChange", {"n": n}) for n in range(2)]
    for event in events:
        node_a.dispatch(event, ["acc1"])
    assert listeners[-1].wait_count(2)
    assert [listener.ids for listener in listeners] == [[e.id for e in events]] * 1500
    assert node_b.stats["key_received"] == 2 and node_b.stats["key_delivered"] == 3000


def test_broker_down_at_start(nodes, plain_db, caplog):
    node = nodes(plain_db, url=f"amqp://guest:guest@127.0.0.1:{free_port()}//", start=False)
    local = Recorder()
    node.register_key("acc1", local)
    with caplog.at_level(logging.INFO, logger="jmapmono.events"):
        node.start()
        wait_until(lambda: "event=bus_disconnected" in caplog.text, message="the first connection attempt to fail")
    assert not node.ready
    with pytest.raises(BusUnavailable, match="cannot publish"):
        node.dispatch(Event.new("x"), ["acc1"])
    with pytest.raises(BusUnavailable, match="recent failure"):
        node.dispatch(Event.new("x"), ["acc1"])  # refused at once for a while: the broker is not tried
    assert node.stats["publish_failed"] == 2
    assert local.wait_count(2)  # local listeners are told whatever the broker does
    node.stop()
    assert not node.ready and node.transport._consumer is None


def test_broker_restart_rebinds_keys_and_events_flow_again(nodes, db, rabbitmq, caplog):
    node_a, node_b = nodes(db), nodes(db)
    listener, handler = Recorder(), Recorder()
    node_a.register_key("acc1", listener)
    node_a.register_group("changes", handler)
    node_b.dispatch(Event.new("before"), ["acc1"])
    assert listener.wait_count(1, timeout=10) and handler.wait_count(1, timeout=10)

    with caplog.at_level("INFO", logger="jmapmono.events"):
        rabbitmq.stop()
        assert wait_until(lambda: not node_a.ready, timeout=10)
        local = Event.new("while-down")
        with pytest.raises(BusUnavailable):
            node_a.dispatch(local, ["acc1"])
        assert listener.wait_count(2) and listener.ids[-1] == local.id  # in-process, no broker needed
        rabbitmq.start()
        assert node_a.wait_ready(60), broker_diagnostics(rabbitmq)

        after = Event.new("after")

        def dispatched() -> bool:
            try:
                node_b.dispatch(after, ["acc1"])  # the outbox would retry just like this
                return True
            except BusUnavailable:
                return False

        assert wait_until(dispatched, timeout=30, interval=0.2)
        assert listener.wait_count(3, timeout=10) and listener.ids[-1] == after.id  # no re-registration
        assert handler.wait_count(2, timeout=10) and handler.ids[-1] == after.id
    assert node_a.stats["reconnects"] == 1
    lines = [r.getMessage() for r in caplog.records if "event=bus_reconnected" in r.getMessage()]
    assert any("keys_rebound=1" in line for line in lines)

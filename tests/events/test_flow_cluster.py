"""Two nodes on one Postgres and a real RabbitMQ: the event flow as a cluster.

Each node is a Runtime object with its own database pool and bus connections, running the whole
flow (relay, MailboxChangeListener, both buses). A delivery through node A reaches a key listener on
node B; the MailboxChangeListener runs once per event across the cluster; with the broker stopped,
events pile up in the outbox and all go through once it is back, and node B's listener ends up with
the latest states (the resync after its reconnect covers key copies lost meanwhile).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import gevent.event
import pytest

from jmapmono.events.bus import EventBus
from jmapmono.mailbox import changes
from jmapmono.push.change_listener import MailboxChangeListener
from jmapmono.runtime import Runtime
from jmapmono.runtime.event_flow import EventFlow
from jmapmono.store import open_database
from tests.events.test_flow import message
from tests.support.events import Recorder
from tests.support.waiting import wait_until

FAST_BUS = {"retry_backoff": 0.01, "redelivery_interval": 0.2}


@pytest.fixture(params=["postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    """A cluster shares one Postgres: these tests run on Postgres only."""
    return request.param


@pytest.fixture
def start_node(config, rabbitmq) -> Iterator[Callable[[], EventFlow]]:
    """Start a node: its own Runtime (pool, buses on this test's exchanges), running the flow."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    node_config = config.with_overrides(broker_url=rabbitmq.url)
    flows: list[EventFlow] = []

    def start() -> EventFlow:
        node = Runtime(node_config, open_database(node_config.database_url))
        node.__dict__["mailbox_bus"] = EventBus(f"{prefix}-mailbox", rabbitmq.url, node.db, **FAST_BUS)
        node.__dict__["jmap_bus"] = EventBus(f"{prefix}-jmap", rabbitmq.url, node.db, **FAST_BUS)
        running = node.start(poll_interval=0.2).flow
        flows.append(running)
        assert running.wait_ready(15), "a node did not connect to the broker"
        return running

    yield start
    for running in flows:
        running.stop()
        running.services.close()


@pytest.fixture
def alice(services, monkeypatch):
    from tests.support.jmap import PASSWORD, cheap_password_hashing

    cheap_password_hashing(monkeypatch)
    user, _ = services.accounts.create_user("alice@example.org", PASSWORD)
    with services.db.transaction() as tx:  # provisioning happened before the cluster: not under test
        tx.execute("UPDATE event_outbox SET dispatched_at = 1 WHERE dispatched_at IS NULL")
    return user


def handled_in_cluster(services, flows: list[EventFlow]) -> tuple[int, int]:
    """(MailboxChangeListener calls summed over the nodes, event ids recorded as done for its group)."""
    bus = flows[0].mailbox_bus.name
    with services.db.read() as tx:
        done = tx.value(
            "SELECT COUNT(*) FROM event_processed WHERE bus = ? AND group_name = 'MailboxChangeListener' AND done = 1",
            (bus,),
        )
    return sum(f.listener.stats["handled"] for f in flows), int(done)


def delivered_on_a_heard_on_b(start_node, alice, count: int) -> tuple[EventFlow, EventFlow, Recorder]:
    """Two nodes; ``count`` deliveries through node A, once node B's key listener has had them all."""
    a, b = start_node(), start_node()
    pushes = Recorder()
    b.jmap_bus.register_key(alice.account_id, pushes)
    for n in range(count):
        a.services.mailboxes.deliver(alice.email, message(n))
    pushes.wait_count(count, timeout=20)
    return a, b, pushes


def test_delivery_on_a_reaches_b_and_the_listener_runs_once_per_event(services, alice, start_node):
    count = 20
    a, b, pushes = delivered_on_a_heard_on_b(start_node, alice, count)
    wait_until(lambda: handled_in_cluster(services, [a, b])[1] == count, 20, message="every event handled")

    assert len({e.id for e in pushes.events}) == len(pushes.events) == count
    assert all("EmailDelivery" in e.payload["changed"] for e in pushes.events)
    assert handled_in_cluster(services, [a, b]) == (count, count)
    assert a.relay.stats["published"] + b.relay.stats["published"] >= count


def test_the_push_leaves_with_the_relay_before_the_listener_runs(services, alice, start_node, monkeypatch):
    """The relay sends a mailbox event's StateChange key copies before it publishes the event: node B pushes
    while every MailboxChangeListener is held, and the listener's own copies, later, are absorbed."""
    held = gevent.event.Event()
    handle = MailboxChangeListener.__call__

    def held_listener(listener: MailboxChangeListener, event) -> None:
        held.wait(30)
        handle(listener, event)

    monkeypatch.setattr(MailboxChangeListener, "__call__", held_listener)
    count = 3
    a, b, pushes = delivered_on_a_heard_on_b(start_node, alice, count)
    assert handled_in_cluster(services, [a, b])[1] == 0  # no listener has dispatched anything yet
    assert all("EmailDelivery" in e.payload["changed"] for e in pushes.events)

    held.set()
    wait_until(lambda: handled_in_cluster(services, [a, b]) == (count, count), 20, message="every event handled")
    wait_until(lambda: b.jmap_bus.stats["key_duplicates"] == count, 20, message="the listener's copies absorbed")
    assert len(pushes.events) == count


def test_broker_outage_piles_events_up_and_delivers_them_all_afterwards(services, alice, start_node, rabbitmq):
    a, b = start_node(), start_node()
    pushes = Recorder()
    b.jmap_bus.register_key(alice.account_id, pushes)
    count = 5

    rabbitmq.stop()
    try:
        for n in range(count):
            a.services.mailboxes.deliver(alice.email, message(n))
        wait_until(
            lambda: a.relay.stats["publish_failures"] + b.relay.stats["publish_failures"] > 0, 20, message="a refusal"
        )
        assert a.relay.pending() == count  # piled up in the outbox, none lost, none published
        assert handled_in_cluster(services, [a, b]) == (0, 0)
    finally:
        rabbitmq.start()

    assert a.wait_ready(60) and b.wait_ready(60), "the nodes did not reconnect"
    wait_until(lambda: a.relay.pending() == 0, 60, message="the piled-up events to be published")
    wait_until(lambda: handled_in_cluster(services, [a, b]) == (count, count), 60, message="each event handled once")
    latest = services.changes.state(alice.account_id, "Email")
    wait_until(
        lambda: any(e.payload["changed"].get("Email") == latest for e in pushes.events),
        20,
        message="B to learn the latest",
    )
    seen = [changes.parse_token(e.payload["changed"]["Email"]) for e in pushes.events]
    assert max(seen) == changes.parse_token(latest)

    # And pushes flow again through the broker, from A to B.
    before = len(pushes.events)
    a.services.mailboxes.deliver(alice.email, message(99))
    pushes.wait_count(before + 1, timeout=20)
    assert "EmailDelivery" in pushes.events[-1].payload["changed"]

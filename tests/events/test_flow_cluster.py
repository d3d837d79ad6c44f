"""Two nodes on one Postgres and a real RabbitMQ: the event flow as a cluster.

Each node is a Runtime object with its own database pool and bus connections, running the whole
flow (relay, MailboxChangeListener, both buses). A delivery through node A reaches a key listener on
node B; the relay dispatches each StateChange and the MailboxChangeListener declines it, or, when the
broker refused that dispatch, runs once per event across the cluster; with the broker stopped,
events pile up in the outbox and all go through once it is back, and node B's listener ends up with
the latest states (the resync after its reconnect covers key copies lost meanwhile).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from jmapmono.events.bus import BusUnavailable, EventBus
from jmapmono.mailbox import changes
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


def test_the_relay_dispatches_each_push_once_and_the_listener_declines_it(services, alice, start_node):
    """amqp://: the relay that publishes a mailbox event dispatches its StateChange itself (key copies and the
    group copy for web push); the MailboxChangeListener declines the marked event: no claim, no dispatch."""
    count = 20
    a, b, pushes = delivered_on_a_heard_on_b(start_node, alice, count)
    flows = [a, b]
    declined = lambda bus: sum(getattr(f, bus).stats["group_declined"] for f in flows)  # noqa: E731
    wait_until(lambda: declined("mailbox_bus") == count, 20, message="every mailbox event declined")
    wait_until(lambda: declined("jmap_bus") == count, 20, message="every group copy seen by web push")

    assert len({e.id for e in pushes.events}) == len(pushes.events) == count
    assert all("EmailDelivery" in e.payload["changed"] for e in pushes.events)
    assert handled_in_cluster(services, flows) == (0, 0)
    assert sum(f.relay.stats["published"] for f in flows) >= count
    assert sum(f.jmap_bus.stats["early_dispatch_failed"] for f in flows) == 0


def test_a_refused_early_dispatch_is_left_to_the_listener(services, alice, start_node, monkeypatch):
    """When the broker refuses the relay's dispatch of a StateChange, the mailbox event goes out unmarked and
    the MailboxChangeListener dispatches it, once in the cluster."""
    dispatch_early = EventFlow._dispatch_early

    def refused(flow: EventFlow, bus: str, event):
        def refuse(*args, **kwargs):
            raise BusUnavailable("refused for the test")

        vars(flow.jmap_bus)["dispatch"] = refuse  # this call only: nothing else runs until it returns
        try:
            return dispatch_early(flow, bus, event)
        finally:
            del vars(flow.jmap_bus)["dispatch"]

    monkeypatch.setattr(EventFlow, "_dispatch_early", refused)
    count = 3
    a, b, pushes = delivered_on_a_heard_on_b(start_node, alice, count)
    wait_until(lambda: handled_in_cluster(services, [a, b]) == (count, count), 20, message="every event handled")
    assert len({e.id for e in pushes.events}) == len(pushes.events) == count
    assert sum(f.jmap_bus.stats["early_dispatch_failed"] for f in (a, b)) == count


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
    declined = lambda: sum(f.mailbox_bus.stats["group_declined"] for f in (a, b))  # noqa: E731
    wait_until(
        lambda: declined() + handled_in_cluster(services, [a, b])[1] == count,
        60,
        message="each StateChange dispatched once, by a relay or by the listener",
    )
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

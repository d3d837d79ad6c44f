"""Revocation across nodes: two runtimes on one Postgres and a real RabbitMQ. The password is changed on
node A (which runs the event flow); node B runs only the JMAP bus and serves the WebSocket and the
EventSource stream, so what ends them can only have come to B through the broker."""

from __future__ import annotations

import uuid

import pytest

from jmapmono.events.bus import EventBus
from jmapmono.runtime import Runtime
from jmapmono.store import open_database
from tests.support.eventsource_client import ALL, Stream
from tests.support.jmap import PASSWORD, basic_auth, cheap_password_hashing
from tests.support.servers import AppServer
from tests.support.ws_client import WsClient, basic

ALICE = "alice@example.org"


@pytest.fixture(params=["postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    """A cluster shares one Postgres: these tests run on Postgres only."""
    return request.param


@pytest.fixture
def nodes(config, rabbitmq, monkeypatch):
    """(node A with the whole event flow running, node B's app server with only its JMAP bus)."""
    cheap_password_hashing(monkeypatch)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    node_config = config.with_overrides(broker_url=rabbitmq.url)
    runtimes = []

    def node() -> Runtime:
        runtime = Runtime(node_config, open_database(node_config.database_url))
        runtime.__dict__["mailbox_bus"] = EventBus(f"{prefix}-mailbox", rabbitmq.url, runtime.db)
        runtime.__dict__["jmap_bus"] = EventBus(f"{prefix}-jmap", rabbitmq.url, runtime.db)
        runtimes.append(runtime)
        return runtime

    a, b = node(), node()
    a.accounts.create_user(ALICE, PASSWORD)
    assert a.start(poll_interval=0.2).flow.wait_ready(15), "node A did not connect to the broker"
    b.jmap_bus.start()
    assert b.jmap_bus.wait_ready(15), "node B did not connect to the broker"
    server = AppServer(b, flow=False, port=0)
    yield a, server
    server.stop()
    for runtime in runtimes:
        runtime.stop()


def test_a_password_change_on_one_node_ends_the_sessions_held_on_another(nodes):
    a, b = nodes
    socket = WsClient(b.port, basic(ALICE))
    socket.barrier()
    stream = Stream(b.port, ALL, basic_auth(ALICE))
    assert stream.status == 200
    received = b.services.jmap_bus.stats["key_received"]

    a.accounts.set_password(ALICE, "a new password")

    assert socket.wait_closed(timeout=20) == 1008
    while stream.chunk() is not None:
        pass
    assert b.services.jmap_bus.stats["key_received"] > received  # through the broker

"""Faults a cluster survives, with real processes: ``serve`` nodes on one Postgres and one RabbitMQ of this module
(they are stopped, paused and restarted here, so they are not the session's shared ones), real WebSocket,
EventSource and LMTP clients. "Nothing lost" is checked through the protocol: the last pushed Email state is the
server's current one, and Email/changes from the state a client had before the fault lists every message that
got an LMTP 250."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from unittest.mock import ANY

import gevent
import pytest

from tests.support.cluster import (
    ALICE,
    PASSWORD,
    USING,
    Cluster,
    account_id,
    api,
    call,
    connect,
    current_email_state,
    email_state,
    http,
    subjects_created_since,
)
from tests.support.eventsource_client import ALL, Stream
from tests.support.jmap import basic_auth
from tests.support.servers import PostgresServer, RabbitMQServer, ServeProcess, add_user
from tests.support.waiting import wait_until

#: Short enough for a test to wait out: a hung broker is noticed after about two heartbeats, a dead node's
#: queue is removed this long after its last consumer.
FAST_FAULTS = {"JMAPMONO_BROKER_HEARTBEAT": "2", "JMAPMONO_BROKER_NODE_QUEUE_EXPIRES": "2"}


@pytest.fixture(scope="module")
def own_broker() -> Iterator[RabbitMQServer]:
    server = RabbitMQServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture
def broker(own_broker: RabbitMQServer) -> Iterator[RabbitMQServer]:
    """This module's broker, running again after the test whatever the test did to it."""
    yield own_broker
    own_broker.resume()
    if own_broker.proc is None:
        own_broker.start()


@pytest.fixture
def postgres(own_postgres: PostgresServer) -> Iterator[PostgresServer]:
    """This module's Postgres, running again after the test whatever the test did to it."""
    yield own_postgres
    try:
        own_postgres.resume()
    except Exception:
        pass  # already running


@pytest.fixture
def cluster(postgres, broker, tmp_path) -> Iterator[Cluster]:
    url = postgres.new_database()
    add_user(url, tmp_path / "data", ALICE, PASSWORD)
    cluster = Cluster(url, broker.url, tmp_path, **FAST_FAULTS)
    try:
        yield cluster
    finally:
        logs = cluster.stop()
    for log in logs:
        assert "Traceback" not in log, log


def stream(node: ServeProcess, **headers: str) -> Stream:
    """An EventSource stream of alice's changes on ``node`` (reads wait up to a minute)."""
    return Stream(node.http_port, ALL, {**basic_auth(ALICE, PASSWORD), **headers}, timeout=60)


def stream_until(source: Stream, state: str) -> str:
    """Read state events until one carries Email ``state``; that event's id (a pushState)."""
    while True:
        data, event_id = source.state()
        if email_state(data) == state:
            return event_id


def node_origins(node: ServeProcess) -> dict[str, str]:
    """The bus instances of ``node`` on the broker, by bus (their queues are named after them)."""
    return dict(re.findall(r"event=bus_started bus=(\S+) transport=amqp origin=(\w+)", node.stderr()))


def bound_keys(broker: RabbitMQServer, queue: str) -> set[str]:
    """The routing keys bound to ``queue`` on the broker."""
    rows = [line.split("\t") for line in broker.ctl("list_bindings", "destination_name", "routing_key").splitlines()]
    return {row[1] for row in rows if len(row) == 2 and row[0] == queue}


def hold(started: float, seconds: float) -> None:
    """Keep a fault going until ``seconds`` after ``started`` (the fault's duration, not a synchronisation)."""
    gevent.sleep(max(0.0, started + seconds - time.monotonic()))


def test_broker_restart_while_mail_arrives_loses_nothing_and_pushes_resume(cluster, broker):
    a, b = cluster.node(lmtp=True), cluster.node()
    ws, es = connect(b), stream(b)
    cluster.deliver(a)
    before = email_state(ws.push(timeout=30, where=email_state))
    stream_until(es, before)

    broker.stop()
    stopped = time.monotonic()
    during = [cluster.deliver(a) for _ in range(3)]  # 250 only once stored: the outbox holds their events
    status, _, result = api(b, "Email/query", {})
    assert status == 200 and result["ids"], result  # the API needs no broker, to read or to write
    updated = call(b, "Email/set", {"update": {result["ids"][0]: {"keywords/$seen": True}}})["updated"]
    assert list(updated) == [result["ids"][0]]
    final = current_email_state(b)
    hold(stopped, 10)
    broker.start()
    restarted = time.monotonic()

    # The same sockets, never reconnected, are pushed the final state.
    assert email_state(ws.push(timeout=90, where=lambda m: email_state(m) == final)) == final
    print(f"first push {time.monotonic() - restarted:.1f}s after the broker's restart")
    stream_until(es, final)
    assert ws.close_code is None and not es.ended
    assert set(during) <= subjects_created_since(b, before)
    # b's queue on the new broker is bound to alice's account again, for key copies from other nodes. (The push
    # above may have come from b's own relay, whose dispatch tells b's sockets before any broker hop, while b's
    # consumer is still waiting to reconnect: the binding follows its reconnection.)
    queue = f"jmapmono.jmap.node.{node_origins(b)['jmap']}"
    wait_until(lambda: f"key.{account_id(b)}" in bound_keys(broker, queue), 60, message="b's keys bound again")
    after = cluster.deliver(a)  # and the flow goes on as before
    latest = current_email_state(b)
    assert email_state(ws.push(timeout=30, where=lambda m: email_state(m) == latest)) == latest
    assert after in subjects_created_since(b, final)


def test_database_restart_answers_503_and_451_then_recovers_by_itself(cluster, postgres):
    a, b = cluster.node(lmtp=True), cluster.node()
    ws = connect(b)
    cluster.deliver(a)
    before = email_state(ws.push(timeout=30, where=email_state))
    account_id(b)  # the client knows its account before the outage

    postgres.halt()
    halted = time.monotonic()
    query = {"using": USING, "methodCalls": [["Email/query", {"accountId": account_id(b)}, "c"]]}
    status, headers, body = http(b, "POST", "/jmap/api", query, timeout=30)  # a hung request fails the test
    # Refused before any method runs (RFC 8620 §3.6.1: 503, Retry-After) when the node must read the
    # credentials, or by the method (§3.6.2: serverUnavailable) when it still knows them: either way at once.
    if status == 200:
        assert body["methodResponses"][0][:2] == ["error", {"type": "serverUnavailable", "description": ANY}], body
    else:
        assert status == 503 and int(headers["retry-after"]) > 0, (status, body)
    code, subject = cluster.offer(a)
    assert 400 <= code < 500, f"LMTP answered {code} for mail it could not store"
    print(f"a request during the outage answered in {time.monotonic() - halted:.1f}s")
    hold(halted, 5)
    postgres.resume()

    # No node restarted: requests succeed again, a delivery is stored and pushed to the same socket.
    wait_until(lambda: api(b, "Email/query", {})[0] == 200, 60, interval=0.5, message="the API to answer again")
    delivered = cluster.deliver(a)
    final = current_email_state(b)
    assert email_state(ws.push(timeout=60, where=lambda m: email_state(m) == final)) == final
    created = subjects_created_since(b, before)
    assert delivered in created and subject not in created  # the 4xx'd message was not stored


def test_a_killed_nodes_clients_resume_elsewhere_and_its_queues_go(cluster, broker):
    a, b, c = cluster.node(lmtp=True), cluster.node(), cluster.node()
    origins = list(node_origins(b).values())
    assert len(origins) == 2
    queues = [line.split("\t") for line in broker.ctl("list_queues", "name", "arguments").splitlines()]
    expiring = [arguments for name, arguments in queues if any(origin in name for origin in origins)]
    assert len(expiring) == 2 and all('"x-expires",2000' in arguments for arguments in expiring), queues
    ws, es = connect(b), stream(b)
    cluster.deliver(a)
    seen = ws.push(timeout=30, where=email_state)
    last_id = stream_until(es, email_state(seen) or "")

    b.proc.kill()  # SIGKILL: no goodbye to the clients, the broker or the database
    assert b.proc.wait(timeout=30) == -signal.SIGKILL
    assert ws.wait_closed(timeout=30) == 1006
    missed = cluster.deliver(a)  # while the clients are away
    current = current_email_state(a)

    # They come back on c, from what they last saw: the change made meanwhile is told at once.
    resumed = connect(c, push_state=seen["pushState"])
    assert email_state(resumed.push(timeout=30, where=email_state)) == current
    stream_until(stream(c, **{"Last-Event-ID": last_id}), current)
    assert missed in subjects_created_since(c, email_state(seen) or "")

    # Nothing of the dead node is left on the broker.
    def leftovers() -> list[str]:
        listed = broker.ctl("list_queues", "name") + broker.ctl("list_bindings", "destination_name")
        return [line for line in listed.splitlines() if any(origin in line for origin in origins)]

    wait_until(lambda: not leftovers(), 60, interval=0.5, message="the dead node's queues and bindings to go")


def test_a_hung_broker_is_noticed_and_nothing_is_lost_after_it_wakes(cluster, broker):
    a, b = cluster.node(lmtp=True), cluster.node()
    ws = connect(b)
    cluster.deliver(a)
    before = email_state(ws.push(timeout=30, where=email_state))

    broker.pause()  # SIGSTOP: connections stay open, nothing answers
    paused = time.monotonic()
    during = [cluster.deliver(a)]  # LMTP stores meanwhile

    def noticed() -> bool:  # by the heartbeats of both of b's consumers (no connection was closed)
        log = b.stderr()
        return all(f"event=bus_disconnected bus={bus} " in log for bus in ("jmap", "mailbox"))

    wait_until(noticed, 60, interval=0.2, message="b to notice the hang")
    during.append(cluster.deliver(a))
    final = current_email_state(b)
    print(f"the hang was noticed within {time.monotonic() - paused:.1f}s")
    broker.resume()

    assert email_state(ws.push(timeout=90, where=lambda m: email_state(m) == final)) == final
    assert ws.close_code is None
    assert set(during) <= subjects_created_since(b, before)

"""Several nodes, each a separate ``serve`` process, on one Postgres and one RabbitMQ, as a cluster runs them:
mail taken over LMTP by one node is pushed to sockets on another; a node joins while clients are connected and
mail flows; a node leaves (SIGTERM) and its clients resume on another node by pushState with nothing missed."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import gevent
import pytest

from tests.support.lmtp_client import LMTPClient
from tests.support.servers import ServeProcess, add_user, start_serve
from tests.support.waiting import wait_until
from tests.support.ws_client import WsClient, basic

ALICE, PASSWORD = "alice@example.org", "alice-password-1"


class Cluster:
    """Nodes of one database and broker; each node's stderr is its log."""

    def __init__(self, database_url: str, broker_url: str, tmp_path: Path) -> None:
        self.database_url, self.broker_url, self.tmp_path = database_url, broker_url, tmp_path
        self.nodes: list[ServeProcess] = []
        self.sent = 0

    def node(self, lmtp: bool = False) -> ServeProcess:
        """A new node, once its buses are connected to the broker (sockets opened then miss nothing)."""
        node = start_serve(self.database_url, self.tmp_path, lmtp=lmtp, BROKER_URL=self.broker_url)
        self.nodes.append(node)
        connected = lambda bus: f"event=bus_connected bus={bus} " in node.stderr()  # noqa: E731
        wait_until(lambda: connected("mailbox") and connected("jmap"), 30, message="the buses connected")
        return node

    def deliver(self, node: ServeProcess) -> None:
        """One message for alice over ``node``'s LMTP."""
        assert node.lmtp_port is not None
        self.sent += 1
        message = f"From: bob@example.org\r\nSubject: number {self.sent}\r\n\r\nHi.\r\n".encode()
        with LMTPClient("127.0.0.1", node.lmtp_port) as lmtp:
            assert lmtp.lhlo().code == 250
            rcpt, data = lmtp.transaction("bob@example.org", [ALICE], message)
            assert [r.code for r in rcpt + data] == [250, 250], (rcpt, data)

    def stop(self) -> list[str]:
        for node in self.nodes:
            node.stop()
        return [node.stderr() for node in self.nodes]


@pytest.fixture
def cluster(postgres_server, rabbitmq, tmp_path) -> Iterator[Cluster]:
    url = postgres_server.new_database()
    add_user(url, tmp_path / "data", ALICE, PASSWORD)
    cluster = Cluster(url, rabbitmq.url, tmp_path)
    yield cluster
    for log in cluster.stop():
        assert "Traceback" not in log, log


def email_state(message: dict) -> str | None:
    """The Email state a StateChange carries (alice's only account), if any."""
    for types in message.get("changed", {}).values():
        if "Email" in types:
            return types["Email"]
    return None


def connect(node: ServeProcess, push_state: str | None = None) -> WsClient:
    client = WsClient(node.http_port, basic(ALICE, PASSWORD))
    client.enable_push(["Email"], push_state=push_state)
    return client


def test_mail_taken_by_one_node_is_pushed_to_every_socket_on_another(cluster):
    a, b = cluster.node(lmtp=True), cluster.node()
    clients = [connect(b) for _ in range(3)]
    cluster.deliver(a)
    states = {email_state(client.push(timeout=30, where=email_state)) for client in clients}
    assert len(states) == 1 and None not in states


def test_a_node_joins_and_one_leaves_while_mail_flows_and_its_clients_resume_elsewhere(cluster):
    a, b = cluster.node(lmtp=True), cluster.node()
    on_b = [connect(b) for _ in range(2)]
    cluster.deliver(a)
    for client in on_b:
        client.push(timeout=30, where=email_state)

    flowing = gevent.spawn(lambda: [cluster.deliver(a) for _ in range(3)])
    c = cluster.node()  # joins while the clients of b stay connected and mail flows
    flowing.get(timeout=60)
    on_c = connect(c)
    cluster.deliver(a)
    latest = email_state(on_c.push(timeout=30, where=email_state))
    # b's clients were pushed through it all, up to the latest state.
    last = [client.push(timeout=30, where=lambda m: email_state(m) == latest) for client in on_b]

    b.proc.send_signal(signal.SIGTERM)  # b leaves: its sockets are closed as "going away"
    assert [client.wait_closed(timeout=30) for client in on_b] == [1001, 1001]
    assert b.proc.wait(timeout=30) == 0
    cluster.deliver(a)  # while b's clients are away
    missed = email_state(on_c.push(timeout=30, where=email_state))
    assert missed != latest

    # They come back on c, from the pushState they last saw: the change made while away is pushed at once.
    resumed = [connect(c, push_state=m["pushState"]) for m in last]
    assert [email_state(client.push(timeout=30, where=email_state)) for client in resumed] == [missed, missed]
    cluster.deliver(a)
    after = email_state(on_c.push(timeout=30, where=email_state))
    assert [email_state(client.push(timeout=30, where=email_state)) for client in resumed] == [after, after]

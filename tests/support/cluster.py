"""Several ``serve`` nodes on one Postgres and one RabbitMQ, as a cluster runs them (tests/deploy/)."""

from __future__ import annotations

from pathlib import Path

from tests.support.lmtp_client import LMTPClient
from tests.support.servers import ServeProcess, start_serve
from tests.support.waiting import wait_until

ALICE, PASSWORD = "alice@example.org", "alice-password-1"


class Cluster:
    """Nodes of one database and broker, each started with ``env`` (its stderr is its log)."""

    def __init__(self, database_url: str, broker_url: str, tmp_path: Path, **env: str) -> None:
        self.database_url, self.broker_url, self.tmp_path = database_url, broker_url, tmp_path
        self.env = env
        self.nodes: list[ServeProcess] = []
        self.sent = 0

    def node(self, lmtp: bool = False) -> ServeProcess:
        """A new node, once its buses are connected to the broker (sockets opened then miss nothing)."""
        node = start_serve(self.database_url, self.tmp_path, lmtp=lmtp, BROKER_URL=self.broker_url, **self.env)
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


def email_state(message: dict) -> str | None:
    """The Email state a StateChange carries (alice's only account), if any."""
    for types in message.get("changed", {}).values():
        if "Email" in types:
            return types["Email"]
    return None

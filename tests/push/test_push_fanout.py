"""Push fan-out on real sockets: one delivery reaches every push-enabled WebSocket, however many there are
for one account and across many accounts (key listeners are called inline by the bus, never dropped).

The sockets are light byte-level clients (tests/support/push_sockets.py) against the app server in this
process: two file descriptors per socket. How long the fan-out takes: bench/push_fanout.py.
"""

from __future__ import annotations

import socket

import gevent
import pytest

from tests.support.jmap import PASSWORD
from tests.support.push_sockets import open_push_socket, read_text
from tests.support.servers import start_app
from tests.support.waiting import wait_until
from tests.support.ws_client import basic


@pytest.fixture
def server(config, db):
    # No pings (the light clients do not answer them); one user holds 1,500 sockets here.
    server = start_app(config, db, ws_ping_seconds=0, max_push_connections_per_user=2000)
    yield server
    server.stop(timeout=10)


def open_sockets(server, email: str, count: int) -> list[socket.socket]:
    """``count`` push-enabled sockets of ``email``, once the server has registered every one on the bus."""
    account = server.services.accounts.get(email).account_id
    bus = server.services.jmap_bus
    before = bus.listener_count(account)
    sockets = [open_push_socket(server.port, basic(email), timeout=60) for _ in range(count)]
    wait_until(lambda: bus.listener_count(account) == before + count, 60, message=f"{count} sockets of {email}")
    return sockets


def deliver(server, recipients: list[str]) -> None:
    """One message, delivered to each of ``recipients``."""
    raw = b"From: carol@remote.example\r\nSubject: to all\r\nMessage-ID: <fanout@remote>\r\n\r\nHi.\r\n"
    for recipient in recipients:
        server.services.mailboxes.deliver(recipient, raw)


def pushes(server, sockets: dict[str, list[socket.socket]]) -> dict[str, list[dict]]:
    """Deliver to every account of ``sockets`` and read the first message of every socket."""
    readers = {email: [gevent.spawn(read_text, sock) for sock in socks] for email, socks in sockets.items()}
    deliver(server, list(sockets))
    everyone = [reader for group in readers.values() for reader in group]
    gevent.joinall(everyone, timeout=120)
    missed = [reader for reader in everyone if not reader.successful()]
    assert not missed, f"{len(missed)} of {len(everyone)} sockets not pushed, e.g. {missed[0].exception!r}"
    return {email: [reader.value for reader in group] for email, group in readers.items()}


def close(sockets: dict[str, list[socket.socket]]) -> None:
    for socks in sockets.values():
        for sock in socks:
            sock.close()


def test_every_socket_of_one_user_is_pushed(server):
    email = "alice@example.org"
    server.services.accounts.create_user(email, PASSWORD)
    account = server.services.accounts.get(email).account_id
    sockets = {email: open_sockets(server, email, 1500)}
    try:
        received = pushes(server, sockets)[email]
        assert len(received) == 1500
        assert all(m["@type"] == "StateChange" and "Email" in m["changed"][account] for m in received)
    finally:
        close(sockets)


def test_every_socket_of_many_accounts_is_pushed(server):
    emails = [f"user{n}@example.org" for n in range(50)]
    for email in emails:
        server.services.accounts.create_user(email, PASSWORD)
    accounts = {email: server.services.accounts.get(email).account_id for email in emails}
    sockets = {email: open_sockets(server, email, 100) for email in emails}
    try:
        received = pushes(server, sockets)
        assert sum(len(messages) for messages in received.values()) == 5000
        for email, messages in received.items():
            assert all(m["@type"] == "StateChange" and set(m["changed"]) == {accounts[email]} for m in messages)
    finally:
        close(sockets)

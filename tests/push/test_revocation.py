"""Revoked credentials end the push connections opened with them, on real sockets: a password change, an
app-password revocation and a user deletion close WebSockets with 1008 and end EventSource streams (push
enabled or not); a password change leaves the sessions of app passwords (credentials of their own) open;
an undelegation takes the owner's account off the delegate's open socket, which stays open; tickets and
cached password checks made with a revoked credential are gone at once. A connection that missed the
revocation's event (it listened just after the revocation committed, or its node was cut off from the
broker) ends all the same: it checks its credential when it starts listening and at every resync."""

from __future__ import annotations

from collections.abc import Callable

import gevent.event
import pytest
import requests

from jmapmono.accounts.app_passwords import AppPasswords
from jmapmono.push.jmap_bus_events import REVOCATIONS_KEY, user_key
from jmapmono.runtime import Runtime
from jmapmono.store import open_database
from tests.support.eventsource_client import ALL, Stream
from tests.support.jmap import PASSWORD, basic_auth, cheap_password_hashing
from tests.support.servers import start_app
from tests.support.waiting import wait_until
from tests.support.ws_client import Rejected, WsClient, basic

ALICE, BOB = "alice@example.org", "bob@example.org"
MAIL = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"]
POLICY_VIOLATION = 1008


@pytest.fixture
def server(config, db, monkeypatch):
    cheap_password_hashing(monkeypatch)
    server = start_app(config, db)
    for email in (ALICE, BOB):
        server.services.accounts.create_user(email, PASSWORD)
    yield server
    server.stop()


def app_password(server, email: str, label: str = "phone") -> tuple[str, str]:
    """A new app password of ``email``: (its id, its token)."""
    user = server.services.accounts.require(email)
    created, token = AppPasswords(server.services.db, server.services.accounts).create(user, label)
    return created.id, token


def socket(server, authorization: str, push: bool = False) -> WsClient:
    """An open WebSocket the server is serving (a first round trip done), push enabled or not."""
    client = WsClient(server.port, authorization)
    if push:
        client.enable_push(None)
    else:
        client.barrier()
    return client


def stream(server, authorization: str) -> Stream:
    opened = Stream(server.port, ALL, {"Authorization": authorization})
    assert opened.status == 200
    return opened


def ended(opened: Stream) -> bool:
    """Read the stream to its last chunk (the socket's timeout bounds the wait)."""
    while opened.chunk() is not None:
        pass
    return True


def handled(server) -> None:
    """Every bus listener called so far has returned (so a connection it left open was left open): the
    bus calls key listeners inline, so once one connection saw an event, every listener of it has run."""
    assert server.services.jmap_bus.stats["key_blocked"] == 0


def bearer(token: str) -> str:
    return f"Bearer {token}"


def test_password_change_ends_the_connections_opened_with_the_password(server):
    _, token = app_password(server, ALICE)
    with_push, without_push = socket(server, basic(ALICE), push=True), socket(server, basic(ALICE))
    events = stream(server, basic(ALICE))
    app_socket, app_stream = socket(server, bearer(token)), stream(server, bearer(token))
    bob = socket(server, basic(BOB))

    server.services.accounts.set_password(ALICE, "a new password")

    assert with_push.wait_closed() == POLICY_VIOLATION
    assert without_push.wait_closed() == POLICY_VIOLATION
    assert ended(events)
    handled(server)
    # An app password is a credential of its own, still valid: its socket and stream stay (and bob's).
    app_socket.barrier()
    bob.barrier()
    assert not app_stream.ended and len(server.services.event_streams) == 1
    with pytest.raises(Rejected) as refused:
        socket(server, basic(ALICE))
    assert refused.value.status == 401
    socket(server, basic(ALICE, "a new password")).barrier()


def test_app_password_revocation_ends_only_the_connections_opened_with_it(server):
    phone, phone_token = app_password(server, ALICE, "phone")
    _, laptop_token = app_password(server, ALICE, "laptop")
    phone_socket, phone_stream = socket(server, bearer(phone_token), push=True), stream(server, bearer(phone_token))
    basic_phone = socket(server, basic(ALICE, phone_token))  # an app password in Basic is the same credential
    laptop, own = socket(server, bearer(laptop_token)), socket(server, basic(ALICE))

    r = requests.delete(f"{server.url}/jmap/app-passwords/{phone}", headers=basic_auth(ALICE), timeout=10)
    assert r.status_code == 204

    assert phone_socket.wait_closed() == POLICY_VIOLATION
    assert basic_phone.wait_closed() == POLICY_VIOLATION
    assert ended(phone_stream)
    handled(server)
    laptop.barrier()
    own.barrier()
    session = requests.get(f"{server.url}/jmap/session", headers={"Authorization": bearer(phone_token)}, timeout=10)
    assert session.status_code == 401
    with pytest.raises(Rejected) as refused:
        socket(server, bearer(phone_token))
    assert refused.value.status == 401


def test_user_deletion_ends_every_connection_of_the_user(server):
    _, token = app_password(server, ALICE)
    sockets = [socket(server, basic(ALICE), push=True), socket(server, bearer(token))]
    streams = [stream(server, basic(ALICE)), stream(server, bearer(token))]
    bob = socket(server, basic(BOB), push=True)

    server.services.accounts.delete(ALICE)

    assert [s.wait_closed() for s in sockets] == [POLICY_VIOLATION, POLICY_VIOLATION]
    assert all(ended(s) for s in streams)
    handled(server)
    bob.barrier()
    wait_until(lambda: len(server.services.websockets.sockets) == 1, message="alice's sockets to end")


def test_undelegation_takes_the_owners_account_off_the_delegates_open_socket(server, config):
    alice_account = server.services.accounts.get(ALICE).account_id
    server.services.accounts.delegate(ALICE, BOB)
    bob = socket(server, basic(BOB), push=True)
    name, result, _ = bob.call([["Mailbox/get", {"accountId": alice_account, "ids": None}, "m"]], "before", MAIL)[0]
    assert name == "Mailbox/get" and result["list"]

    cli = Runtime(config, open_database(config.database_url))  # another process's view, as `jmapmono user` has
    try:
        cli.accounts.undelegate(ALICE, BOB)
    finally:
        cli.close()
    bus = server.services.jmap_bus
    wait_until(lambda: bus.listener_count(alice_account) == 0, message="bob's listener on alice's account to go")

    name, error, _ = bob.call([["Mailbox/get", {"accountId": alice_account, "ids": None}, "m"]], "after", MAIL)[0]
    assert name == "error" and error["type"] == "accountNotFound"
    bob_account = server.services.accounts.get(BOB).account_id
    name, _, _ = bob.call([["Mailbox/get", {"accountId": bob_account, "ids": None}, "m"]], "own", MAIL)[0]
    assert name == "Mailbox/get"  # the delegate's own credential is still valid: the socket stays


def ticket(server, authorization: str) -> str:
    r = requests.post(f"{server.url}/jmap/ws/ticket", headers={"Authorization": authorization}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["ticket"]


def test_an_unused_ticket_dies_with_the_credential_it_was_made_with(server):
    _, token = app_password(server, ALICE)
    with_password, with_app_password = ticket(server, basic(ALICE)), ticket(server, bearer(token))

    server.services.accounts.set_password(ALICE, "a new password")

    with pytest.raises(Rejected) as refused:
        WsClient(server.port, path=f"/jmap/ws?ticket={with_password}", headers={"Origin": server.url})
    assert refused.value.status == 401
    WsClient(server.port, path=f"/jmap/ws?ticket={with_app_password}", headers={"Origin": server.url}).barrier()


def test_revocation_empties_the_users_cached_password_checks(server):
    cache = server.services.authenticator.cache
    for email in (ALICE, BOB):
        assert requests.get(f"{server.url}/jmap/session", headers=basic_auth(email), timeout=10).status_code == 200
    assert len(cache) == 2

    server.services.accounts.set_password(ALICE, "a new password")

    wait_until(lambda: len(cache) == 1, message="alice's cached check to go")
    assert requests.get(f"{server.url}/jmap/session", headers=basic_auth(ALICE), timeout=10).status_code == 401


def revoke_before_listening(server, monkeypatch, revoke: Callable[[], object]) -> None:
    """The seam between a connection's authentication and its first listener on its user's key (the JMAP
    bus's ``register_key``): there, ``revoke`` commits and its CredentialsRevoked is dispatched to every
    listener of the key (none of that connection yet) before the registration goes on."""
    bus = server.services.jmap_bus
    dispatched = gevent.event.Event()
    bus.register_key(REVOCATIONS_KEY, lambda event: dispatched.set())  # called after the user's key
    register = bus.register_key
    key = user_key(server.services.accounts.require(ALICE).id)

    def register_key(registered: str, listener):
        if registered == key and not dispatched.is_set():
            revoke()
            assert dispatched.wait(10), "the revocation was never dispatched"
        return register(registered, listener)

    monkeypatch.setattr(bus, "register_key", register_key)


@pytest.mark.parametrize("front", ["websocket", "eventsource"])
def test_a_revocation_committed_between_authentication_and_listening_still_ends_the_connection(
    server, monkeypatch, front
):
    revoke_before_listening(server, monkeypatch, lambda: server.services.accounts.set_password(ALICE, "a new one"))
    if front == "websocket":
        assert WsClient(server.port, basic(ALICE)).wait_closed() == POLICY_VIOLATION
    else:
        assert ended(stream(server, basic(ALICE)))
    handled(server)
    socket(server, basic(ALICE, "a new one"), push=True).barrier()  # the new password's connections stay


def test_a_revocation_missed_while_cut_off_from_the_broker_ends_the_connections_at_the_resync(server, monkeypatch):
    phone, phone_token = app_password(server, ALICE, "phone")
    _, laptop_token = app_password(server, ALICE, "laptop")
    revoked = [
        socket(server, basic(ALICE), push=True),
        socket(server, basic(ALICE)),
        socket(server, bearer(phone_token)),
    ]
    events = stream(server, basic(ALICE))
    laptop, bob = socket(server, bearer(laptop_token), push=True), socket(server, basic(BOB), push=True)
    accounts = server.services.accounts
    # The revocations commit, but their CredentialsRevoked never reach this node (as when it is cut off from
    # the broker while they are sent): nothing ends yet.
    monkeypatch.setattr(accounts, "on_credentials_revoked", [])
    accounts.set_password(ALICE, "a new password")
    assert AppPasswords(server.services.db, accounts).revoke(accounts.require(ALICE).id, phone)
    revoked[0].barrier()

    server.flow.resync()  # what the event flow runs once the JMAP bus has reconnected to the broker

    assert [s.wait_closed() for s in revoked] == [POLICY_VIOLATION] * 3
    assert ended(events)
    handled(server)
    laptop.barrier()
    bob.barrier()
    wait_until(lambda: len(server.services.websockets.sockets) == 2, message="the revoked sockets to end")

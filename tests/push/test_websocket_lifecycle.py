"""How WebSocket connections end, and what they cost meanwhile: pings, silent peers, client close and
abrupt disconnects, 1,000 connect/disconnect cycles (and 200 on RabbitMQ, bindings checked on the
broker), a client that stops reading next to one that reads, SIGTERM of ``serve`` and of gunicorn."""

from __future__ import annotations

import os
import signal
import socket

import amqp
import gevent
import pytest
from wsproto.events import Ping, Pong

from jmapmono.push.jmap_bus_events import user_key
from tests.support.jmap import PASSWORD
from tests.support.servers import start_app, start_gunicorn, start_serve
from tests.support.waiting import wait_until
from tests.support.ws_client import Closed, Rejected, WsClient, basic

ALICE, BOB = "alice@example.org", "bob@example.org"
CORE = ["urn:ietf:params:jmap:core"]


@pytest.fixture
def make_server(config, db):
    started = []

    def make(**overrides):
        server = start_app(config, db, **overrides)
        for email in (ALICE, BOB):
            server.services.accounts.create_user(email, PASSWORD)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def keys_of(server, email: str) -> tuple[str, str]:
    user = server.services.accounts.get(email)
    return user.account_id, user_key(user.id)


def listeners(server, email: str) -> int:
    bus = server.services.jmap_bus
    return sum(bus.listener_count(key) for key in keys_of(server, email))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- what an open socket holds ---------------------------------------------------------------------------------------


def test_an_open_socket_holds_no_request_handler_of_the_http_server(make_server):
    server = make_server()
    client = server.client(ALICE)
    client.enable_push(None)
    # The upgrade request ended: the HTTP server's handler (its greenlet, environ, Flask contexts) is gone.
    wait_until(lambda: len(server.server.pool) == 0, message="the upgrade request to end")
    assert client.call([["Core/echo", {"still": "served"}, "e"]], "r1", CORE)[0][1] == {"still": "served"}
    client.close()
    wait_until(lambda: not server.services.websockets.sockets, message="the socket to end")
    assert server.services.websockets.slots.open(server.services.accounts.get(ALICE).id) == 0


def test_an_echo_after_a_delegation_carries_the_new_session_state(make_server):
    server = make_server()
    client = server.client(ALICE)
    client.enable_push(None)

    def echo_state(request_id: str) -> str:
        client.send_request([["Core/echo", {}, "e"]], request_id, CORE)
        return client.response(request_id)["sessionState"]

    before = echo_state("r1")
    assert echo_state("r2") == before
    server.services.accounts.delegate(BOB, ALICE)  # Alice now sees Bob's account: her Session changed
    wait_until(lambda: echo_state(f"r{os.urandom(4).hex()}") != before, message="the new sessionState")


# -- liveness --------------------------------------------------------------------------------------------------------


def test_pings_keep_an_answering_peer_open(make_server):
    server = make_server(ws_ping_seconds=0.05, ws_ping_timeout_seconds=2)
    client = server.client(ALICE)
    # 50 pings, one every 0.05 s by the server's clock, take it past interval + timeout (2.05 s): answering
    # them keeps the socket open (a timeout far above the interval: a busy machine delays no answer that long).
    client.read_until(lambda: client.pings >= 50, timeout=30)
    assert client.call([["Core/echo", {"alive": True}, "e"]], using=CORE)[0][1] == {"alive": True}
    client.close()


def test_a_silent_peer_is_closed_and_its_listeners_unregistered(make_server, caplog):
    caplog.set_level("INFO", logger="jmapmono.push.websocket")
    server = make_server(ws_ping_seconds=0.2, ws_ping_timeout_seconds=0.3)
    client = server.client(ALICE, answer_pings=False)
    client.enable_push(None)
    assert listeners(server, ALICE) == 2
    wait_until(lambda: not server.services.websockets.sockets, timeout=10, message="the silent socket to be closed")
    assert listeners(server, ALICE) == 0
    assert client.wait_closed() in (1008, 1006)
    assert any("reason=ping_timeout" in r.getMessage() for r in caplog.records if "ws_close" in r.getMessage())


@pytest.mark.parametrize("how", ["close_frame", "tcp_reset"])
def test_client_close_or_vanishing_unregisters_everything(make_server, how, caplog):
    caplog.set_level("INFO", logger="jmapmono.push.websocket")
    server = make_server()
    client = server.client(ALICE)
    client.enable_push(None)
    assert listeners(server, ALICE) == 2
    if how == "close_frame":
        client.close(1000)
    else:
        client.sock.close()
    wait_until(
        lambda: listeners(server, ALICE) == 0 and not server.services.websockets.sockets, message="the unregistration"
    )
    line = wait_until(lambda: [r.getMessage() for r in caplog.records if "event=ws_close" in r.getMessage()])[0]
    assert ("code=1000" in line and "reason=client_close" in line) if how == "close_frame" else "code=1006" in line


def test_a_protocol_error_closes_with_its_code_and_unregisters(make_server):
    server = make_server()
    client = server.client(ALICE)
    client.enable_push(None)
    mask = b"\x01\x02\x03\x04"
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(b"\xff\xfe"))  # not UTF-8
    client.sock.sendall(b"\x81\x82" + mask + payload)  # FIN, text, masked, 2 bytes
    assert client.wait_closed() == 1007
    wait_until(
        lambda: listeners(server, ALICE) == 0 and not server.services.websockets.sockets, message="unregistration"
    )


def test_closing_every_socket_at_shutdown_sends_1001_and_unregisters(make_server):

    server = make_server()
    clients = [server.client(email) for email in (ALICE, ALICE, BOB)]
    for client in clients:
        client.enable_push(None)
    closing = gevent.spawn(server.services.websockets.close_all, timeout=5)  # waits for the clients' answers
    assert [client.wait_closed() for client in clients] == [1001, 1001, 1001]
    assert closing.get(timeout=5) == 3
    assert not server.services.websockets.sockets  # every socket ended before close_all returned
    assert listeners(server, ALICE) == 0 and listeners(server, BOB) == 0
    with pytest.raises(Rejected) as refused:  # a process shutting down takes no new socket
        server.client(ALICE)
    assert refused.value.status == 503


def test_a_thousand_connect_disconnect_cycles_leave_nothing_behind(make_server):
    server = make_server()
    bus, sockets, db = server.services.jmap_bus, server.services.websockets, server.services.db
    fds = open_fds() - db.pooled_connections()  # the store's pool grows with concurrency, up to its size
    for i in range(1000):
        client = server.client(ALICE)
        # The server reads one socket's messages in order: the enable is acted upon before the close.
        client.enable_push(None if i % 3 else ["Email"], sync=i % 100 == 0)
        if i % 100 == 0:
            assert listeners(server, ALICE) >= 2  # registered while open (earlier sockets may still be ending)
        if i % 2:
            client.close()
        else:
            client.sock.close()  # no close frame: the TCP connection just ends
    wait_until(lambda: not sockets.sockets, message="every socket to end")
    assert listeners(server, ALICE) == 0
    assert not [k for k in bus.keys() if k in keys_of(server, ALICE)]
    wait_until(lambda: open_fds() - db.pooled_connections() <= fds + 3, message="file descriptors to be released")


def routed(rabbitmq, routing_key: str) -> bool:
    """Does the broker route ``routing_key`` on the JMAP bus's exchange to any queue?"""
    returned: list[object] = []
    conn = amqp.Connection(f"127.0.0.1:{rabbitmq.port}", userid="guest", password="guest")
    conn.connect()
    try:
        channel = conn.channel()
        channel.events["basic_return"].add(lambda *args: returned.append(args))
        channel.confirm_select()
        channel.basic_publish_confirm(
            amqp.Message("probe"), exchange="jmapmono.jmap", routing_key=routing_key, mandatory=True
        )
        return not returned
    finally:
        conn.close()


def test_cycles_on_rabbitmq_leave_no_binding_on_the_broker(make_server, rabbitmq):
    server = make_server(broker_url=rabbitmq.url)
    assert server.flow.wait_ready(20), "the event flow did not connect to RabbitMQ"
    account_key, own_key = keys_of(server, ALICE)
    first = server.client(ALICE)
    first.enable_push(None)
    assert routed(rabbitmq, f"key.{account_key}") and routed(rabbitmq, f"key.{own_key}")
    first.close()
    for i in range(200):  # fewer than in memory: each first/last listener binds/unbinds on the broker
        client = server.client(ALICE)
        client.enable_push(None)
        client.close() if i % 2 else client.sock.close()
    wait_until(
        lambda: not server.services.websockets.sockets and listeners(server, ALICE) == 0, message="every socket to end"
    )
    assert not routed(rabbitmq, f"key.{account_key}") and not routed(rabbitmq, f"key.{own_key}")


# -- slow readers ----------------------------------------------------------------------------------------------------


def stop_reading(client, server_side) -> None:
    """Small buffers where the server's writes go: a client that does not read blocks them at once.
    (The server's receive buffer stays as it is: what stops the server reading must be the server.)"""
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    server_side.ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)


def test_a_client_that_stops_reading_neither_grows_memory_nor_delays_a_reading_one(make_server):
    limit = 65536
    server = make_server(ws_outbound_bytes=limit, ws_ping_seconds=0)
    bob_acc, alice_acc = keys_of(server, BOB)[0], keys_of(server, ALICE)[0]
    stuck = server.client(BOB)
    stuck.enable_push(None)
    [stuck_socket] = [s for s in server.services.websockets.sockets if s.principal.email == BOB]
    stop_reading(stuck, stuck_socket)
    payload = {"pad": "x" * 60_000}

    def flood() -> None:  # asks for 24 MB of responses, more than every buffer on the way, and reads none
        for i in range(400):
            stuck.send_request([["Core/echo", payload, "e"]], f"f{i}", CORE)

    flooding = gevent.spawn(flood)
    wait_until(lambda: stuck_socket.ws.messages_in > 10, message="the flood to be read")
    reader = server.client(ALICE)
    reader.enable_push(["Email"])
    high_water = 0
    for i in range(20):  # (the reading client's push latency meanwhile: bench/websocket_lifecycle.py)
        raw = f"Subject: {i}\r\nMessage-ID: <slow{i}@x>\r\n\r\nhi\r\n".encode()
        server.services.mailboxes.deliver(BOB, raw)  # pushes pile up for the stuck client too
        server.services.mailboxes.deliver(ALICE, raw)
        current = server.services.changes.state(alice_acc, "Email")
        reader.push(where=lambda m, now=current: m["changed"].get(alice_acc, {}).get("Email") == now)  # each one
        high_water = max(high_water, stuck_socket.ws.queued_bytes)
    # 24 MB is more than the kernel buffers hold: had the server kept reading, the flood would be over.
    assert not flooding.dead and stuck_socket.ws.messages_in < 400, "the server kept reading a stuck client"
    assert high_water <= limit + 61_000  # the bound, plus at most one message over it
    assert len(stuck_socket.channel._pending.get(bob_acc, {})) <= 7  # coalesced: one state per type
    flooding.kill()
    stuck.sock.close()
    wait_until(lambda: len(server.services.websockets.sockets) == 1, message="the stuck socket to end")
    assert listeners(server, BOB) == 0
    reader.close()


def test_a_ping_flood_from_a_client_that_does_not_read_queues_one_pong(make_server, monkeypatch):
    server = make_server(ws_ping_seconds=0)
    client = server.client(ALICE)
    [server_side] = server.services.websockets.sockets
    stop_reading(client, server_side)
    client.send_request([["Core/echo", {"pad": "x" * 1_000_000}, "e"]], "big", CORE)  # blocks the writer
    wait_until(lambda: server_side.ws._writer is not None and server_side.ws.messages_out == 1, message="a stuck write")
    ws = server_side.ws
    most = [0]
    send_control = ws._send_control

    def queued_and_counted(event) -> None:  # how many control frames wait, after each one queued
        send_control(event)
        most[0] = max(most[0], len(ws._control or ()))

    monkeypatch.setattr(ws, "_send_control", queued_and_counted)
    frame = client.ws.send(Ping(payload=b"p" * 100))

    def flood() -> None:  # 2 MB of pings whose pongs cannot be written: nobody reads them; then a last one
        for _ in range(20_000):
            client.sock.sendall(frame)
        client.sock.sendall(client.ws.send(Ping(payload=b"last")))

    flooding = gevent.spawn(flood)
    wait_until(lambda: flooding.dead, timeout=60, message="the flood to be sent")
    assert flooding.successful(), "the server keeps reading control frames"
    pongs = lambda: [bytes(e.payload) for e in ws._control or () if isinstance(e, Pong)]  # noqa: E731
    wait_until(lambda: pongs() == [b"last"], message="the server to read the last ping")  # so every one before it
    assert ws._writer is not None, "the write should still be stuck"
    assert most[0] <= 2 and len(ws._control or ()) <= 2  # only the latest pong waits, not 20,000
    client.sock.close()
    wait_until(lambda: not server.services.websockets.sockets, message="the socket to end")


# -- shutdown --------------------------------------------------------------------------------------------------------


def test_sigterm_of_serve_closes_websockets_with_1001(services, config, tmp_path):
    services.accounts.create_user(ALICE, PASSWORD)
    server = start_serve(config.database_url, tmp_path, lmtp=False)
    try:
        clients = [WsClient(server.http_port, basic(ALICE)) for _ in range(3)]
        for client in clients:
            client.enable_push(None)
        server.proc.send_signal(signal.SIGTERM)
        codes = [client.wait_closed(timeout=10) for client in clients]
        assert codes == [1001, 1001, 1001]  # closed by the server, not dropped (how long: bench/stop_time.py)
        assert server.proc.wait(timeout=10) == 0
        assert "event=websockets_closed count=3" in server.stderr()
    finally:
        server.stop()
    assert "Traceback" not in server.stderr()


def test_gunicorn_worker_serves_websockets_and_closes_them_at_sigterm(services, config, tmp_path):
    services.accounts.create_user(ALICE, PASSWORD)
    # A graceful timeout far longer than any wait below: a socket the worker left open until gunicorn
    # killed it would end with 1006 (no close frame), after the waits had failed.
    server = start_gunicorn(config.database_url, tmp_path / "data", tmp_path, graceful_timeout=120)
    try:
        client = WsClient(server.port, basic(ALICE))
        client.enable_push(["Email"])
        services.mailboxes.deliver(ALICE, b"Subject: via gunicorn\r\n\r\nhi\r\n")  # another process delivers
        account_id = services.accounts.get(ALICE).account_id
        assert client.push(where=lambda m: account_id in m["changed"])
        server.send_signal(signal.SIGTERM)
        assert client.wait_closed(timeout=30) == 1001  # closed by the worker at SIGTERM
        assert server.proc.wait(timeout=60) == 0
    except Closed as e:
        raise AssertionError(f"closed early: {e}\n{server.log()}") from None
    finally:
        server.stop(signal.SIGKILL)

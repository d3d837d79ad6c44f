"""How WebSocket connections end, and what they cost meanwhile: pings, silent peers, client close and
abrupt disconnects, 1,000 connect/disconnect cycles (and 200 on RabbitMQ, bindings checked on the
broker), a client that stops reading next to one that reads, SIGTERM of ``serve`` and of gunicorn."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import amqp
import gevent
import pytest
from wsproto.events import Ping

from jmapmono.push.jmap_bus_events import user_key
from tests.support.jmap import PASSWORD
from tests.support.servers import free_port, wait_for_port
from tests.support.ws_client import Closed, Rejected, WsClient, basic, start_server, wait_until
from tests.test_serve import serve_env, start_serve

ROOT = Path(__file__).resolve().parent.parent
ALICE, BOB = "alice@example.org", "bob@example.org"
CORE = ["urn:ietf:params:jmap:core"]


@pytest.fixture
def make_server(config, db):
    started = []

    def make(**overrides):
        server = start_server(config, db, **overrides)
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


# -- liveness --------------------------------------------------------------------------------------------------------


def test_pings_keep_an_answering_peer_open(make_server):
    server = make_server(ws_ping_seconds=0.1, ws_ping_timeout_seconds=0.3)
    client = server.client(ALICE)
    started = time.monotonic()
    client.read_until(lambda: client.pings >= 8, timeout=10)
    assert time.monotonic() - started > 0.4 + 0.3  # well past interval + timeout: answering pings keeps it open
    assert client.call([["Core/echo", {"alive": True}, "e"]], using=CORE)[0][1] == {"alive": True}
    client.close()


def test_a_silent_peer_is_closed_and_its_listeners_unregistered(make_server, caplog):
    caplog.set_level("INFO", logger="jmapmono.push.websocket")
    server = make_server(ws_ping_seconds=0.2, ws_ping_timeout_seconds=0.3)
    client = server.client(ALICE, answer_pings=False)
    client.enable_push(None)
    assert listeners(server, ALICE) == 2
    started = time.monotonic()
    wait_until(lambda: not server.services.websockets.sockets, timeout=10, what="the silent socket to be closed")
    assert time.monotonic() - started < 0.2 + 0.3 + 2.5
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
        lambda: listeners(server, ALICE) == 0 and not server.services.websockets.sockets, what="the unregistration"
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
    wait_until(lambda: listeners(server, ALICE) == 0 and not server.services.websockets.sockets, what="unregistration")


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
    bus, sockets = server.services.jmap_bus, server.services.websockets
    fds = open_fds()
    started = time.monotonic()
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
    wait_until(lambda: not sockets.sockets, what="every socket to end")
    elapsed = time.monotonic() - started
    assert listeners(server, ALICE) == 0
    assert not [k for k in bus.keys() if k in keys_of(server, ALICE)]
    wait_until(lambda: open_fds() <= fds + 3, what="file descriptors to be released")
    print(f"\n1000 WebSocket connect/enable/disconnect cycles: {elapsed:.2f}s ({elapsed:.2f} ms per cycle)")


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
        lambda: not server.services.websockets.sockets and listeners(server, ALICE) == 0, what="every socket to end"
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
    wait_until(lambda: stuck_socket.ws.messages_in > 10, what="the flood to be read")
    reader = server.client(ALICE)
    reader.enable_push(["Email"])
    worst = 0.0
    high_water = 0
    for i in range(20):
        raw = f"Subject: {i}\r\nMessage-ID: <slow{i}@x>\r\n\r\nhi\r\n".encode()
        server.services.mailboxes.deliver(BOB, raw)  # pushes pile up for the stuck client too
        sent = time.monotonic()
        server.services.mailboxes.deliver(ALICE, raw)
        reader.push(where=lambda m: alice_acc in m["changed"])
        worst = max(worst, time.monotonic() - sent)
        high_water = max(high_water, stuck_socket.ws.queued_bytes)
    # 24 MB is more than the kernel buffers hold: had the server kept reading, the flood would be over.
    assert not flooding.dead and stuck_socket.ws.messages_in < 400, "the server kept reading a stuck client"
    assert high_water <= limit + 61_000  # the bound, plus at most one message over it
    assert len(stuck_socket.channel._pending.get(bob_acc, {})) <= 7  # coalesced: one state per type
    assert worst < 1.0, f"the reading client waited {worst:.3f}s for a push"
    print(f"\nreading client's push latency next to a stuck one: worst {worst * 1000:.1f} ms over 20 deliveries")
    flooding.kill()
    stuck.sock.close()
    wait_until(lambda: len(server.services.websockets.sockets) == 1, what="the stuck socket to end")
    assert listeners(server, BOB) == 0
    reader.close()


def test_a_ping_flood_from_a_client_that_does_not_read_queues_one_pong(make_server):
    server = make_server(ws_ping_seconds=0)
    client = server.client(ALICE)
    [server_side] = server.services.websockets.sockets
    stop_reading(client, server_side)
    client.send_request([["Core/echo", {"pad": "x" * 1_000_000}, "e"]], "big", CORE)  # blocks the writer
    wait_until(lambda: server_side.ws._writer is not None and server_side.ws.messages_out == 1, what="a stuck write")
    frame = client.ws.send(Ping(payload=b"p" * 100))

    def flood() -> None:  # 2 MB of pings whose pongs cannot be written: nobody reads them
        for _ in range(20_000):
            client.sock.sendall(frame)

    flooding = gevent.spawn(flood)
    most = 0
    while not flooding.dead:
        most = max(most, len(server_side.ws._control))
        gevent.sleep(0.001)
    assert flooding.successful(), "the server keeps reading control frames"
    assert server_side.ws._writer is not None, "the write should still be stuck"
    assert most <= 2 and len(server_side.ws._control) <= 2  # only the latest pong waits, not 20,000
    client.sock.close()
    wait_until(lambda: not server.services.websockets.sockets, what="the socket to end")


# -- shutdown --------------------------------------------------------------------------------------------------------


def test_sigterm_of_serve_closes_websockets_promptly_with_1001(services, config, tmp_path):
    services.accounts.create_user(ALICE, PASSWORD)
    server = start_serve(config.database_url, tmp_path, lmtp=False)
    try:
        clients = [WsClient(server.http_port, basic(ALICE)) for _ in range(3)]
        for client in clients:
            client.enable_push(None)
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        codes = [client.wait_closed(timeout=10) for client in clients]
        assert codes == [1001, 1001, 1001]
        assert time.monotonic() - started < 2.0
        assert server.proc.wait(timeout=10) == 0
        assert "event=websockets_closed count=3" in server.stderr()
    finally:
        server.stop()
    assert "Traceback" not in server.stderr()


def test_gunicorn_worker_serves_websockets_and_closes_them_at_sigterm(services, config, tmp_path):
    services.accounts.create_user(ALICE, PASSWORD)
    port = free_port()
    env = serve_env(
        config.database_url, tmp_path / "data", PORT=str(port), JMAPMONO_BASE_URL=f"http://127.0.0.1:{port}"
    )
    argv = [sys.executable, "-m", "gunicorn", "-k", "gevent", "--no-control-socket", "--bind", f"127.0.0.1:{port}"]
    argv += ["--graceful-timeout", "10", "wsgi:app"]
    log = (tmp_path / "gunicorn.log").open("wb")
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=log)
    try:
        wait_for_port(port, 30, proc)
        client = WsClient(port, basic(ALICE))
        client.enable_push(["Email"])
        services.mailboxes.deliver(ALICE, b"Subject: via gunicorn\r\n\r\nhi\r\n")  # another process delivers
        account_id = services.accounts.get(ALICE).account_id
        assert client.push(where=lambda m: account_id in m["changed"])
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert client.wait_closed(timeout=10) == 1001
        assert time.monotonic() - started < 3.0  # not the 10 s graceful timeout
        assert proc.wait(timeout=15) == 0
    except Closed as e:
        raise AssertionError(f"closed early: {e}\n{(tmp_path / 'gunicorn.log').read_text()}") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()

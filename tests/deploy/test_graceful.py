"""SIGTERM lets work in progress finish, in every deployment form: an upload whose body is still arriving gets
its 201 (``serve``, the Procfile's gunicorn), an LMTP transaction whose DATA is still arriving gets its 250
(the lmtp process, ``serve``'s LMTP child); then the process exits 0. Sockets and streams closing at SIGTERM
(1001, the last chunk) are tested in tests/push."""

from __future__ import annotations

import base64
import json
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.eventsource_client import Stream
from tests.support.jmap import basic_auth
from tests.support.lmtp_client import LMTPClient
from tests.support.servers import add_user, port_open, start_gunicorn, start_lmtp, start_serve
from tests.support.waiting import wait_until
from tests.support.ws_client import WsClient, basic

ALICE, PASSWORD = "alice@example.org", "alice-password-1"
BODY = b"x" * 200_000


@dataclass
class Running:
    """A server process: where its HTTP (or LMTP) listens, its log, how to signal it and wait for its exit."""

    port: int
    log: Callable[[], str]
    signal: Callable[[int], None]
    wait: Callable[[float], int]


@pytest.fixture
def database(postgres_server, tmp_path) -> str:
    url = postgres_server.new_database()
    add_user(url, tmp_path / "data", ALICE, PASSWORD)
    return url


#: serve's HTTP server spawns handlers outside a pool, so its stop() does not wait for them: the process exits
#: under a request in progress. Strict: passes once make_http_server gives the server a gevent Pool.


def start_http(kind: str, database: str, tmp_path: Path) -> Iterator[Running]:
    if kind == "serve":
        serve = start_serve(database, tmp_path, lmtp=False)
        yield Running(serve.http_port, serve.stderr, serve.proc.send_signal, lambda t: serve.proc.wait(timeout=t))
        serve.stop()
    else:
        web = start_gunicorn(database, tmp_path / "data", tmp_path)  # the config file's graceful timeout
        yield Running(web.port, web.log, web.send_signal, lambda t: web.proc.wait(timeout=t))
        web.stop(signal.SIGKILL)


@pytest.fixture(params=["serve", "gunicorn"])
def http_server(request, database, tmp_path) -> Iterator[Running]:
    yield from start_http(request.param, database, tmp_path)


@pytest.fixture(params=["serve", "gunicorn"])
def http_server_for_upload(request, database, tmp_path) -> Iterator[Running]:
    yield from start_http(request.param, database, tmp_path)


@pytest.fixture(params=["lmtp", "serve"])
def lmtp_server(request, database, tmp_path) -> Iterator[Running]:
    if request.param == "lmtp":
        lmtp = start_lmtp(database, tmp_path)
        yield Running(lmtp.port, lmtp.log, lmtp.proc.send_signal, lambda t: lmtp.proc.wait(timeout=t))
        lmtp.stop()
    else:
        serve = start_serve(database, tmp_path)
        assert serve.lmtp_port is not None
        yield Running(serve.lmtp_port, serve.stderr, serve.proc.send_signal, lambda t: serve.proc.wait(timeout=t))
        serve.stop()


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """Status and body of one HTTP/1.1 response with a Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before the response: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(int(h.split(b":", 1)[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the response body"
        body += chunk
    return int(head.split()[1]), body


def test_an_upload_in_progress_at_sigterm_completes_then_the_server_exits_0(http_server_for_upload: Running):
    http_server = http_server_for_upload
    auth = base64.b64encode(f"{ALICE}:{PASSWORD}".encode()).decode()
    with socket.create_connection(("127.0.0.1", http_server.port), timeout=30) as sock:
        sock.sendall(
            f"GET /.well-known/jmap HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\n\r\n".encode()
        )
        status, body = read_response(sock)
        assert status == 200, body
        account_id = json.loads(body)["primaryAccounts"]["urn:ietf:params:jmap:mail"]
        head = f"POST /jmap/upload/{account_id}/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\n"
        head += f"Content-Type: application/octet-stream\r\nContent-Length: {len(BODY)}\r\n\r\n"
        sock.sendall(head.encode() + BODY[: len(BODY) // 2])

        http_server.signal(signal.SIGTERM)  # the request is in progress: half its body has yet to come
        # Stopping: it no longer accepts connections (gunicorn's arbiter and its worker both closed the listener).
        wait_until(lambda: not port_open(http_server.port), 30, message="the server to stop listening")
        sock.sendall(BODY[len(BODY) // 2 :])
        status, body = read_response(sock)
        assert status == 201, body
        assert json.loads(body)["size"] == len(BODY)
    assert http_server.wait(60) == 0, http_server.log()
    assert "Traceback" not in http_server.log()


def test_lmtp_data_in_progress_at_sigterm_gets_its_250_then_the_server_exits_0(lmtp_server: Running):
    message = b"From: bob@example.org\r\nSubject: finished at shutdown\r\n\r\n" + b"line\r\n" * 20_000
    with LMTPClient("127.0.0.1", lmtp_server.port, timeout=30) as client:
        assert client.lhlo().code == 250
        assert client.mail("bob@example.org").code == 250
        assert client.rcpt(ALICE).code == 250
        assert client.command("DATA").code == 354
        client.send(message[: len(message) // 2])

        lmtp_server.signal(signal.SIGTERM)  # DATA is in progress: half the message has yet to come
        wait_until(lambda: "event=lmtp_stopping" in lmtp_server.log(), 30, message="the server to be stopping")
        client.send(message[len(message) // 2 :] + b".\r\n")
        reply = client.read_reply()
        assert reply.code == 250, reply
    assert lmtp_server.wait(60) == 0, lmtp_server.log()
    assert "event=lmtp_delivery" in lmtp_server.log() and "Traceback" not in lmtp_server.log()


def test_sigterm_ends_event_streams_and_closes_websockets_at_once_then_the_server_exits_0(http_server: Running):
    path = "/jmap/eventsource?types=*&closeafter=no&ping=0"
    streams = [Stream(http_server.port, path, basic_auth(ALICE, PASSWORD), timeout=30) for _ in range(2)]
    for stream in streams:
        assert stream.status == 200 and "id" in stream.block()
    sockets = [WsClient(http_server.port, basic(ALICE, PASSWORD)) for _ in range(2)]
    for client in sockets:
        client.enable_push(None)
    wait_until(lambda: http_server.log().count("event=eventsource_open") == 2, 30, message="the streams to open")

    http_server.signal(signal.SIGTERM)
    assert [stream.chunk() for stream in streams] == [None, None]  # the last chunk: ended, not cut
    assert [client.wait_closed(timeout=30) for client in sockets] == [1001, 1001]
    assert http_server.wait(60) == 0, http_server.log()
    for stream in streams:
        stream.close()
    assert "Traceback" not in http_server.log()

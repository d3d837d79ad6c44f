"""permessage-deflate against a compression bomb, on real sockets: a compressed message is inflated no
further than maxSizeRequest, answered with the same RequestError ``limit`` as a plain over-size message,
and the socket (and a fresh one) still works afterwards."""

from __future__ import annotations

import tracemalloc
from dataclasses import replace

import pytest
from wsproto.events import Message

from jmapmono.push.ws_deflate import BoundedDeflate, incomplete_tail
from tests.support.jmap import PASSWORD
from tests.support.servers import start_app
from tests.support.waiting import wait_until

CORE = ["urn:ietf:params:jmap:core"]
ERR = "urn:ietf:params:jmap:error:"
ALICE = "alice@example.org"
LIMIT = 1_000_000
#: 64 MB of zeros: about 62 KB once compressed.
BOMB = 64 * 1024 * 1024


@pytest.fixture
def server(config, db):
    server = start_app(config, db, limits=replace(config.limits, max_size_request=LIMIT))
    server.services.accounts.create_user(ALICE, PASSWORD)
    yield server
    server.stop()


def server_side(server):
    """The server's WebSocket of the one client connected."""
    [session] = wait_until(lambda: list(server.services.websockets.sockets), message="the socket to be served")
    return session.ws


def bomb_frames(client, fragments: int) -> bytes:
    """The wire bytes of one text message of BOMB zeros, compressed by the client, in ``fragments`` frames."""
    part = "\x00" * (BOMB // fragments)
    return b"".join(client.ws.send(Message(data=part, message_finished=n == fragments - 1)) for n in range(fragments))


@pytest.mark.parametrize("fragments", [1, 64])
def test_a_compression_bomb_gets_a_limit_error_and_is_never_inflated_whole(server, fragments):
    client = server.client(ALICE, deflate=True)
    assert client.extensions and client.extensions[0].name == "permessage-deflate"
    ws = server_side(server)
    wire = bomb_frames(client, fragments)
    assert len(wire) < BOMB // 500  # a bomb indeed
    tracemalloc.start()
    try:
        client.sock.sendall(wire)
        error = client.recv()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error["@type"] == "RequestError" and error["type"] == ERR + "limit"
    assert error["limit"] == "maxSizeRequest"
    # What the connection inflated of the message: one byte past the limit, then it stopped.
    assert ws.inflater.largest_inflated == LIMIT + 1
    assert peak < 5 * LIMIT, f"{peak} bytes allocated at the peak while the bomb was read"
    # The socket stays open, and the client's next compressed message is read afresh.
    payload = {"text": "all work and no play makes jack a dull boy " * 200}
    assert client.call([["Core/echo", payload, "c"]], using=CORE)[0][1] == payload
    assert ws.inflater.too_large is False and ws.is_open
    client.close()
    fresh = server.client(ALICE, deflate=True)
    assert fresh.call([["Core/echo", payload, "c"]], using=CORE)[0][1] == payload
    fresh.close()


def test_a_compressed_message_just_under_the_limit_is_read_whole(server):
    client = server.client(ALICE, deflate=True)
    head = '{"@type": "Request", "using": ["urn:ietf:params:jmap:core"], "methodCalls": [["Core/echo", {"pad": "'
    tail = '"}, "c"]], "id": "big"}'
    pad = "é" * ((LIMIT - len(head) - len(tail)) // 2)  # two bytes each: pieces end inside characters
    client.send_text(head + pad + tail)
    response = client.response("big")
    assert response["@type"] == "Response" and response["methodResponses"][0][1] == {"pad": pad}
    client.close()


def test_an_over_size_message_of_multibyte_text_still_gets_the_limit_error(server):
    client = server.client(ALICE, deflate=True)
    client.send_text("é" * LIMIT)  # valid UTF-8 of twice the limit: what was handed on ends on a character
    error = client.recv()
    assert error["@type"] == "RequestError" and error["limit"] == "maxSizeRequest"
    assert client.call([["Core/echo", {"after": 1}, "c"]], using=CORE)[0][1] == {"after": 1}
    client.close()


def test_incomplete_tail_finds_a_character_cut_in_two():
    text = "aé€😀".encode()
    assert [incomplete_tail(text[:n]) for n in range(len(text) + 1)] == [0, 0, 1, 0, 1, 2, 0, 1, 2, 3, 0]
    assert incomplete_tail(b"\x80\x80\x80\x80") == 0  # not UTF-8: left for the decoder to refuse
    assert BoundedDeflate(10).client_no_context_takeover  # the rest of an over-size message can be skipped

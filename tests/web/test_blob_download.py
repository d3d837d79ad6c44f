"""Downloads stream from the store over a real socket (the app on the HTTP server ``serve`` builds), one user's
concurrent downloads are bounded, and a body part is served without parsing its message again."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket

import pytest
import requests

from jmapmono.jmap import email_blobs
from jmapmono.mailbox.blobs import DOWNLOAD_SLICE
from jmapmono.web.blobs import download_slots
from tests.support.jmap import PASSWORD
from tests.support.servers import start_app
from tests.support.waiting import wait_until

BIG = 20 * 1024 * 1024 + 12_345


@pytest.fixture
def http(config, db):
    server = start_app(config, db, flow=False, max_concurrent_downloads=2)
    yield server
    server.stop()


def _user(server, email: str):
    user, _ = server.services.accounts.create_user(email, PASSWORD)
    return user


def _url(server, account_id: str, blob_id: str, name: str = "big.bin") -> str:
    return f"{server.url}/jmap/download/{account_id}/{blob_id}/{name}"


def _auth(email: str) -> str:
    return "Basic " + base64.b64encode(f"{email}:{PASSWORD}".encode()).decode()


def test_a_large_blob_streams_from_the_store_in_slices(http, monkeypatch):
    alice = _user(http, "alice@example.org")
    data = os.urandom(BIG)
    blob = http.services.blobs.upload(alice.account_id, alice.id, data, "application/octet-stream")
    slices: list[int] = []
    read_range = http.services.blobs.read_range

    def counted(blob_id: str, offset: int, length: int) -> bytes | None:
        out = read_range(blob_id, offset, length)
        slices.append(len(out or b""))
        return out

    def whole(*args, **kwargs):
        raise AssertionError("a download must not read the whole blob at once")

    monkeypatch.setattr(http.services.blobs, "read_range", counted)
    monkeypatch.setattr(http.services.blobs, "read", whole)
    digest = hashlib.sha256()
    with requests.get(_url(http, alice.account_id, blob.blob_id), auth=(alice.email, PASSWORD), stream=True) as r:
        assert r.status_code == 200
        assert r.headers["Content-Length"] == str(BIG) and "Transfer-Encoding" not in r.headers
        received = 0
        for piece in r.iter_content(256 * 1024):
            digest.update(piece)
            received += len(piece)
    assert received == BIG and digest.digest() == hashlib.sha256(data).digest()
    # Read a slice at a time as the client took them, never more than one slice in one piece.
    assert len(slices) == -(-BIG // DOWNLOAD_SLICE) and max(slices) == DOWNLOAD_SLICE and sum(slices) == BIG
    # A range reads only its own slices.
    slices.clear()
    start = 3 * DOWNLOAD_SLICE - 10
    ranged = requests.get(
        _url(http, alice.account_id, blob.blob_id),
        auth=(alice.email, PASSWORD),
        headers={"Range": f"bytes={start}-{start + 99}"},
        timeout=30,
    )
    assert ranged.status_code == 206 and ranged.content == data[start : start + 100]
    assert ranged.headers["Content-Range"] == f"bytes {start}-{start + 99}/{BIG}"
    assert slices == [100]


def _hold_download(server, email: str, url: str) -> socket.socket:
    """A download whose client reads nothing: the server stays blocked writing it."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    path = url.split(str(server.port), 1)[1]
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {_auth(email)}\r\n\r\n".encode())
    return sock


def test_concurrent_downloads_of_a_user_are_bounded(http):
    alice = _user(http, "alice@example.org")
    bob = _user(http, "bob@example.org")
    data = os.urandom(BIG)
    blob = http.services.blobs.upload(alice.account_id, alice.id, data, "application/octet-stream")
    small = http.services.blobs.upload(bob.account_id, bob.id, b"bob's", "text/plain")
    url = _url(http, alice.account_id, blob.blob_id)
    slots = download_slots(http.server.application)
    held = [_hold_download(http, alice.email, url) for _ in range(2)]
    try:
        wait_until(lambda: slots.active(alice.id) == 2, 30, message="two downloads in progress")
        refused = requests.get(url, auth=(alice.email, PASSWORD), timeout=30)
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
        assert refused.headers["Content-Type"] == "application/problem+json"
        assert json.loads(refused.content)["status"] == 429
        # Another user is not limited by alice's downloads.
        other = requests.get(_url(http, bob.account_id, small.blob_id), auth=(bob.email, PASSWORD), timeout=30)
        assert (other.status_code, other.content) == (200, b"bob's")
        # A client that goes away gives its slot back.
        held.pop().close()
        wait_until(lambda: slots.active(alice.id) == 1, 30, message="the closed download's slot to be freed")
        again = requests.get(url, auth=(alice.email, PASSWORD), timeout=60)
        assert again.status_code == 200 and again.content == data
        assert slots.active(alice.id) == 1
    finally:
        for sock in held:
            sock.close()
    wait_until(lambda: slots.active(alice.id) == 0, 30, message="every slot to be freed")


def _message_with_parts(attachment: bytes) -> bytes:
    encoded = base64.encodebytes(attachment)
    return (
        b"From: a@example.org\r\nTo: alice@example.org\r\nSubject: parts\r\nMessage-ID: <parts@example.org>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
        b"--B\r\nContent-Type: text/plain\r\n\r\nthe text\r\n"
        b"--B\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=a.bin\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded + b"--B\r\n"
        b"Content-Type: text/plain; name=notes.txt\r\nContent-Disposition: attachment\r\n\r\nsmall notes\r\n--B--\r\n"
    )


def test_body_parts_are_served_without_parsing_the_message_again(http, monkeypatch):
    alice = _user(http, "alice@example.org")
    attachment = os.urandom(3_000_000)
    delivered = http.services.mailboxes.deliver(alice.email, _message_with_parts(attachment))
    parses: list[int] = []
    parse = email_blobs.parse_mime

    def counted(raw: bytes):
        parses.append(len(raw))
        return parse(raw)

    monkeypatch.setattr(email_blobs, "parse_mime", counted)
    auth = (alice.email, PASSWORD)
    for part, expected in (("2", attachment), ("3", b"small notes"), ("2", attachment), ("1", b"the text")):
        r = requests.get(_url(http, alice.account_id, f"{delivered.blob_id}_{part}"), auth=auth, timeout=30)
        assert r.status_code == 200 and r.content == expected, part
    assert len(parses) == 1  # the first part parsed the message; the others read only their own octets
    missing = requests.get(_url(http, alice.account_id, f"{delivered.blob_id}_9"), auth=auth, timeout=30)
    assert missing.status_code == 404

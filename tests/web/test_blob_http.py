"""Upload and download over real HTTP (gevent's WSGI server on a loopback socket), on both backends."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from urllib.parse import quote

import gevent
import gevent.event
import pytest
import requests
from werkzeug.http import parse_options_header

from jmapmono.accounts.users import AccountAccess
from jmapmono.jmap import registry
from jmapmono.mailbox.blobs import blob_id_for
from jmapmono.runtime import Runtime
from jmapmono.store import StoreError
from jmapmono.web.app import create_app
from jmapmono.web.blobs import upload_slots
from tests.support.servers import start_http
from tests.support.waiting import wait_until

PASSWORD = "correct horse battery"
LIMIT_TYPE = "urn:ietf:params:jmap:error:limit"


class Http:
    """A running server on the test's database, with one logged-in session per user."""

    def __init__(self, config, db, **limits) -> None:
        config = config.with_overrides(limits=dataclasses.replace(config.limits, **limits))
        self.services = Runtime(config, db)
        self.app = create_app(self.services)
        self.server = start_http(self.app)
        self.base = self.server.url
        self.services.config = self.services.config.with_overrides(base_url=self.base)  # for the Session's URLs
        self.users = {}

    def user(self, email: str):
        user, _ = self.services.accounts.create_user(email, PASSWORD)
        session = requests.Session()
        session.auth = (email, PASSWORD)
        self.users[email] = (user, session)
        return user, session

    def upload(self, session, account_id: str, data, headers=None) -> requests.Response:
        return session.post(f"{self.base}/jmap/upload/{account_id}/", data=data, headers=headers or {}, timeout=10)

    def download(self, session, account_id: str, blob_id: str, name: str = "f.bin", **kw) -> requests.Response:
        url = f"{self.base}/jmap/download/{account_id}/{blob_id}/{quote(name, safe='')}"
        return session.get(url, timeout=10, **kw)

    def close(self) -> None:
        self.server.stop(timeout=1)
        for _, session in self.users.values():
            session.close()


@pytest.fixture
def make_http(config, db):
    made = []

    def make(**limits) -> Http:
        http = Http(config, db, **limits)
        made.append(http)
        return http

    yield make
    for http in made:
        http.close()


@pytest.fixture
def http(make_http) -> Http:
    return make_http()


def _problem(response: requests.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    return body


# -- upload and download --------------------------------------------------------------------------------------------


def test_binary_round_trip_is_exact(http):
    alice, s = http.user("alice@example.org")
    data = bytes(range(256)) * 3 + os.urandom(100_000) + b"\r\n.\r\n\x00"
    r = http.upload(s, alice.account_id, data, {"Content-Type": "image/png"})
    assert r.status_code == 201
    assert r.headers["Content-Type"] == "application/json"
    assert r.json() == {
        "accountId": alice.account_id,
        "blobId": blob_id_for(data),
        "type": "image/png",
        "size": len(data),
    }
    d = http.download(s, alice.account_id, r.json()["blobId"], "photo.png")
    assert d.status_code == 200
    assert d.content == data
    assert d.headers["Content-Type"] == "image/png"  # the stored type when no type parameter is given
    assert d.headers["Content-Length"] == str(len(data))


def test_upload_type_is_kept_as_given_and_defaults_to_octet_stream(http):
    alice, s = http.user("alice@example.org")
    r = http.upload(s, alice.account_id, b"<p>x</p>", {"Content-Type": "Text/HTML ;charset=ISO-8859-1"})
    assert r.json()["type"] == "text/html; charset=ISO-8859-1"
    r = http.upload(s, alice.account_id, b"%PDF-1.7 looks like a PDF")  # never sniffed
    assert r.json()["type"] == "application/octet-stream"
    d = http.download(s, alice.account_id, r.json()["blobId"])
    assert d.headers["Content-Type"] == "application/octet-stream"
    empty = http.upload(s, alice.account_id, b"", {"Content-Type": "text/plain"})
    assert empty.status_code == 201 and empty.json()["size"] == 0


def test_type_parameter_wins_exactly(http):
    alice, s = http.user("alice@example.org")
    blob_id = http.upload(s, alice.account_id, b"hello", {"Content-Type": "application/x-stored"}).json()["blobId"]
    for wanted in ("text/plain", "text/html; charset=utf-8", "application/vnd.custom+json"):
        d = http.download(s, alice.account_id, blob_id, params={"type": wanted})
        assert d.status_code == 200
        assert d.headers["Content-Type"] == wanted
        assert d.content == b"hello"
    bad = http.download(s, alice.account_id, blob_id, params={"type": "text/plain\r\nX-Injected: 1"})
    _problem(bad, 400)
    assert "X-Injected" not in bad.headers


@pytest.mark.parametrize(
    ("name", "fallback"),
    [
        ("report.pdf", "report.pdf"),
        ("résumé 2024.pdf", "resume 2024.pdf"),
        ('say "hi"; now.txt', "say _hi_; now.txt"),
        ("back\\slash.txt", "back_slash.txt"),
        ("日本語.txt", "download.txt"),
        ("文書", "download"),
        ("a\r\nSet-Cookie: x=1", "a__Set-Cookie: x=1"),
    ],
)
def test_content_disposition_names_the_file_safely(http, name, fallback):
    alice, s = http.user("alice@example.org")
    blob_id = http.upload(s, alice.account_id, b"data").json()["blobId"]
    d = http.download(s, alice.account_id, blob_id, name)
    assert d.status_code == 200
    assert "Set-Cookie" not in d.headers
    header = d.headers["Content-Disposition"]
    assert header.startswith("attachment;")
    assert f'filename="{fallback}"' in header
    disposition, options = parse_options_header(header)
    assert disposition == "attachment"
    expected = name.replace("\r", "_").replace("\n", "_")
    # filename* (RFC 5987) carries the exact name whenever the ASCII fallback differs.
    assert options["filename"] == expected
    assert ("filename*=UTF-8''" in header) == (fallback != expected)


def test_caching_etag_and_conditional_get(http):
    alice, s = http.user("alice@example.org")
    blob_id = http.upload(s, alice.account_id, b"immutable").json()["blobId"]
    d = http.download(s, alice.account_id, blob_id)
    assert d.headers["Cache-Control"] == "private, immutable, max-age=31536000"
    assert d.headers["ETag"] == f'"{blob_id}"'
    again = http.download(s, alice.account_id, blob_id, headers={"If-None-Match": d.headers["ETag"]})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["ETag"] == f'"{blob_id}"'
    other = http.download(s, alice.account_id, blob_id, headers={"If-None-Match": '"Gsomethingelse"'})
    assert other.status_code == 200 and other.content == b"immutable"


def test_single_range_gives_206(http):
    alice, s = http.user("alice@example.org")
    data = bytes(range(100))
    blob_id = http.upload(s, alice.account_id, data).json()["blobId"]
    d = http.download(s, alice.account_id, blob_id, headers={"Range": "bytes=10-19"})
    assert d.status_code == 206
    assert d.content == data[10:20]
    assert d.headers["Content-Range"] == "bytes 10-19/100"
    tail = http.download(s, alice.account_id, blob_id, headers={"Range": "bytes=-5"})
    assert (tail.status_code, tail.content) == (206, data[-5:])
    several = http.download(s, alice.account_id, blob_id, headers={"Range": "bytes=0-1,5-6"})
    assert (several.status_code, several.content) == (200, data)  # several ranges: ignored, whole body
    outside = http.download(s, alice.account_id, blob_id, headers={"Range": "bytes=500-600"})
    _problem(outside, 416)
    assert outside.headers["Content-Range"] == "bytes */100"


def test_accounts_cannot_read_each_others_blobs(http):
    alice, sa = http.user("alice@example.org")
    bob, sb = http.user("bob@example.org")
    data = b"alice's secret"
    blob_id = http.upload(sa, alice.account_id, data).json()["blobId"]
    _problem(http.download(sb, alice.account_id, blob_id), 404)  # not his account
    _problem(http.download(sb, bob.account_id, blob_id), 404)  # not in his account
    # Bob uploads identical bytes: same id, readable in his own account only.
    assert http.upload(sb, bob.account_id, data).json()["blobId"] == blob_id
    assert http.download(sb, bob.account_id, blob_id).content == data
    _problem(http.download(sb, alice.account_id, blob_id), 404)
    _problem(http.download(sa, alice.account_id, "Gunknown"), 404)
    _problem(http.download(sa, alice.account_id, "not*valid"), 404)


def test_unreferenced_upload_in_a_shared_account_is_only_for_the_uploader(http):
    alice, sa = http.user("alice@example.org")
    bob, sb = http.user("bob@example.org")
    http.services.accounts.delegate("alice@example.org", "bob@example.org")
    r = http.upload(sb, alice.account_id, b"bob's draft attachment")
    assert r.status_code == 201 and r.json()["accountId"] == alice.account_id
    assert http.download(sb, alice.account_id, r.json()["blobId"]).status_code == 200
    _problem(http.download(sa, alice.account_id, r.json()["blobId"]), 404)


def test_upload_refusals(http, monkeypatch):
    alice, s = http.user("alice@example.org")
    bob, _ = http.user("bob@example.org")
    _problem(http.upload(s, bob.account_id, b"x"), 404)
    _problem(http.upload(s, "anonexistent", b"x"), 404)
    _problem(http.upload(requests.Session(), alice.account_id, b"x"), 401)
    _problem(http.upload(s, alice.account_id, b"x", {"Content-Type": "text/plain; name=\x7f"}), 400)
    real_access = http.services.accounts.access

    def read_only(user_id, account_id):
        access = real_access(user_id, account_id)
        return access and AccountAccess(access.account_id, access.name, access.owner_user_id, access.is_personal, True)

    monkeypatch.setattr(http.services.accounts, "access", read_only)
    _problem(http.upload(s, alice.account_id, b"x"), 403)


def test_database_outage_is_a_503_not_a_500(http, monkeypatch):
    alice, s = http.user("alice@example.org")
    blob_id = http.upload(s, alice.account_id, b"x").json()["blobId"]

    def unavailable(*args, **kwargs):
        raise StoreError("postgres: connection refused")

    monkeypatch.setattr(http.services.blobs, "upload", unavailable)
    monkeypatch.setattr(http.services.blobs, "lookup", unavailable)
    assert _problem(http.upload(s, alice.account_id, b"y"), 503)["status"] == 503
    r = http.download(s, alice.account_id, blob_id)
    _problem(r, 503)
    assert r.headers["Retry-After"] == "5"
    assert upload_slots(http.app).active(alice.id) == 0  # the failed upload gave its slot back


def test_download_needs_authentication(http):
    alice, s = http.user("alice@example.org")
    blob_id = http.upload(s, alice.account_id, b"x").json()["blobId"]
    r = requests.get(f"{http.base}/jmap/download/{alice.account_id}/{blob_id}/x", timeout=10)
    _problem(r, 401)


# -- limits ---------------------------------------------------------------------------------------------------------


def test_size_limit_from_content_length_before_the_body_is_sent(make_http):
    http = make_http(max_size_upload=1000)
    alice, s = http.user("alice@example.org")
    assert http.upload(s, alice.account_id, b"x" * 1000).status_code == 201
    body = _problem(http.upload(s, alice.account_id, b"x" * 1001), 413)
    assert (body["type"], body["limit"]) == (LIMIT_TYPE, "maxSizeUpload")
    # Announce 10 MB and send nothing: the refusal must come from the header alone.
    with socket.create_connection(("127.0.0.1", http.server.port), timeout=10) as sock:
        sock.sendall(_request_head(alice.account_id, {"Content-Length": "10000000"}))
        status, payload = _read_response(sock)
    assert status == 413
    assert json.loads(payload)["limit"] == "maxSizeUpload"


def test_size_limit_on_a_chunked_body_while_streaming(make_http):
    http = make_http(max_size_upload=1000)
    alice, s = http.user("alice@example.org")
    ok = http.upload(s, alice.account_id, (b"y" * 250 for _ in range(4)))  # chunked, no Content-Length
    assert ok.status_code == 201 and ok.json()["size"] == 1000
    body = _problem(http.upload(s, alice.account_id, (b"z" * 300 for _ in range(5))), 413)
    assert (body["type"], body["limit"]) == (LIMIT_TYPE, "maxSizeUpload")
    # A body that has not ended yet is refused as soon as it passes the limit.
    with socket.create_connection(("127.0.0.1", http.server.port), timeout=10) as sock:
        sock.sendall(_request_head(alice.account_id, {"Transfer-Encoding": "chunked"}))
        for _ in range(3):
            sock.sendall(b"190\r\n" + b"w" * 400 + b"\r\n")  # 1,200 octets so far, no last chunk
        status, payload = _read_response(sock)
    assert status == 413
    assert json.loads(payload)["limit"] == "maxSizeUpload"
    with http.services.db.read() as tx:
        assert tx.value("SELECT COUNT(*) AS n FROM blobs") == 1


def test_concurrent_upload_limit_per_user(make_http):
    http = make_http(max_concurrent_upload=2)
    alice, sa = http.user("alice@example.org")
    bob, sb = http.user("bob@example.org")
    release = gevent.event.Event()

    def slow_body(tag: bytes):
        yield tag + b" first half;"
        release.wait()
        yield b" second half"

    def held_upload(tag: bytes) -> requests.Response:
        with requests.Session() as session:  # its own connection
            session.auth = ("alice@example.org", PASSWORD)
            return http.upload(session, alice.account_id, slow_body(tag))

    held = [gevent.spawn(held_upload, tag) for tag in (b"one", b"two")]
    slots = upload_slots(http.app)
    try:
        wait_until(lambda: slots.active(alice.id) == 2, message="two uploads in progress")
        body = _problem(http.upload(sa, alice.account_id, b"third"), 429)
        assert (body["type"], body["limit"]) == (LIMIT_TYPE, "maxConcurrentUpload")
        assert http.upload(sb, bob.account_id, b"bob is not limited by alice").status_code == 201
    finally:
        release.set()
    results = [g.get(timeout=10) for g in held]
    assert [r.status_code for r in results] == [201, 201]
    assert sorted(r.json()["size"] for r in results) == [27, 27]
    assert slots.active(alice.id) == 0
    assert http.upload(sa, alice.account_id, b"after").status_code == 201


def _request_head(account_id: str, headers: dict[str, str]) -> bytes:
    import base64

    token = base64.b64encode(f"alice@example.org:{PASSWORD}".encode()).decode()
    lines = [f"POST /jmap/upload/{account_id}/ HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Basic {token}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_response(sock: socket.socket) -> tuple[int, bytes]:
    """Status and body of one HTTP/1.1 response with a Content-Length."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before a response"
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the body"
        body += chunk
    return int(lines[0].split()[1]), body[:length]


# -- Blob/copy through the API --------------------------------------------------------------------------------------


def test_blob_copy_through_the_api(http):
    alice, sa = http.user("alice@example.org")
    bob, _ = http.user("bob@example.org")
    http.services.accounts.delegate("bob@example.org", "alice@example.org")
    blob_id = http.upload(sa, alice.account_id, b"copy me").json()["blobId"]
    request = {
        "using": [registry.CORE],
        "methodCalls": [
            ["Blob/copy", {"fromAccountId": alice.account_id, "accountId": bob.account_id, "blobIds": [blob_id]}, "0"],
            ["Blob/copy", {"fromAccountId": alice.account_id, "accountId": alice.account_id, "blobIds": []}, "1"],
        ],
    }
    r = sa.post(f"{http.base}/jmap/api", json=request, timeout=10)
    assert r.status_code == 200, r.text
    (name0, args0, _), (name1, args1, _) = r.json()["methodResponses"]
    assert name0 == "Blob/copy" and args0["copied"] == {blob_id: blob_id} and args0["notCopied"] is None
    assert (name1, args1["type"]) == ("error", "invalidArguments")
    assert http.download(sa, bob.account_id, blob_id).content == b"copy me"


def test_session_url_templates_lead_here(http):
    alice, s = http.user("alice@example.org")
    session = s.get(f"{http.base}/.well-known/jmap", timeout=10)
    assert session.status_code == 200, session.text
    templates = session.json()
    r = s.post(templates["uploadUrl"].replace("{accountId}", alice.account_id), data=b"via the session", timeout=10)
    assert r.status_code == 201, r.text
    download_url = (
        templates["downloadUrl"]
        .replace("{accountId}", alice.account_id)
        .replace("{blobId}", r.json()["blobId"])
        .replace("{name}", quote("notes.txt"))
        .replace("{type}", quote("text/plain", safe=""))
    )
    d = s.get(download_url, timeout=10)
    assert (d.status_code, d.content, d.headers["Content-Type"]) == (200, b"via the session", "text/plain")

"""JMAP over WebSocket (RFC 8887), the protocol on real sockets: discovery, the upgrade's refusals
(401/429/400/403/426, never a 101), tickets, requests and RequestErrors, limits, binary frames,
permessage-deflate."""

from __future__ import annotations

import base64
import http.client
import json
import os
import zlib

import gevent
import gevent.event
import pytest
import requests
from wsproto.events import Message

from jmapmono.jmap import registry
from jmapmono.jmap.websocket_capability import websocket_url
from jmapmono.store import open_database
from tests.support.jmap import PASSWORD, cheap_password_hashing
from tests.support.servers import AppServer, start_app
from tests.support.waiting import wait_until
from tests.support.ws_client import Rejected, WsClient, basic

CORE = ["urn:ietf:params:jmap:core"]
ERR = "urn:ietf:params:jmap:error:"


@pytest.fixture
def make_server(config, db, monkeypatch):
    cheap_password_hashing(monkeypatch)
    started = []

    def make(**overrides):
        server = start_app(config, db, **overrides)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def server(make_server):
    server = make_server()
    for email in ("alice@example.org", "bob@example.org"):
        server.services.accounts.create_user(email, PASSWORD)
    return server


def account_of(server, email: str) -> str:
    return server.services.accounts.get(email).account_id


def upgrade_headers(**extra: str) -> dict[str, str]:
    headers = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Protocol": "jmap",
    }
    headers.update(extra)
    return headers


def raw_upgrade(server, headers: dict[str, str], path: str = "/jmap/ws") -> tuple[int, dict[str, str], bytes]:
    """Send an upgrade request by hand (any headers); the status, headers and body of a refusal."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    body = response.read() if response.status != 101 else b""
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


# -- discovery -------------------------------------------------------------------------------------------------------


def test_session_advertises_an_absolute_websocket_url_with_push(server):
    session = requests.get(f"{server.url}/.well-known/jmap", headers={"Authorization": basic("alice@example.org")})
    cap = session.json()["capabilities"]["urn:ietf:params:jmap:websocket"]
    assert cap == {"url": f"ws://127.0.0.1:{server.port}/jmap/ws", "supportsPush": True}
    assert "urn:ietf:params:jmap:websocket" not in session.json()["primaryAccounts"]
    https = server.services.config.with_overrides(base_url="https://mail.example.org/")
    assert websocket_url(https) == "wss://mail.example.org/jmap/ws"


# -- refusals: never a 101 -------------------------------------------------------------------------------------------


def test_plain_get_is_426_with_a_problem_document_not_500(server):
    r = requests.get(f"{server.url}/jmap/ws")
    assert r.status_code == 426
    assert r.headers["Upgrade"] == "websocket"
    assert r.headers["Content-Type"] == "application/problem+json"
    assert r.json()["status"] == 426
    assert requests.post(f"{server.url}/jmap/ws").status_code == 405


def test_wrong_websocket_version_is_426(server):
    status, headers, _ = raw_upgrade(server, upgrade_headers(**{"Sec-WebSocket-Version": "8"}))
    assert status == 426 and headers["sec-websocket-version"] == "13"


def test_bad_key_is_400(server):
    status, _, body = raw_upgrade(
        server, upgrade_headers(Authorization=basic("alice@example.org"), **{"Sec-WebSocket-Key": "short"})
    )
    assert status == 400 and b"Sec-WebSocket-Key" in body


@pytest.mark.parametrize(
    "authorization",
    [None, basic("alice@example.org", "wrong password"), basic("nobody@example.org"), "Bearer jm_notatoken"],
)
def test_missing_or_bad_credentials_get_401_and_no_upgrade(server, authorization):
    with pytest.raises(Rejected) as refused:
        WsClient(server.port, authorization)
    assert refused.value.status == 401
    assert refused.value.headers["www-authenticate"].startswith("Basic")
    assert refused.value.json()["status"] == 401


def test_repeated_failures_are_rate_limited_with_429(make_server):
    server = make_server(login_failures_per_minute=2)
    server.services.accounts.create_user("alice@example.org", PASSWORD)
    statuses = []
    for _ in range(4):
        with pytest.raises(Rejected) as refused:
            WsClient(server.port, basic("alice@example.org", "wrong"))
        statuses.append(refused.value.status)
    assert statuses[:2] == [401, 401] and statuses[-1] == 429
    assert int(refused.value.headers["retry-after"]) > 0


@pytest.mark.parametrize("offered", [[], ["notjmap"], ["jmapx", "xjmap"], ["JMAP2"]])
def test_jmap_must_be_one_of_the_offered_tokens(server, offered):
    with pytest.raises(Rejected) as refused:
        WsClient(server.port, basic("alice@example.org"), subprotocols=offered)
    assert refused.value.status == 400
    assert "jmap subprotocol" in refused.value.json()["detail"]


def test_jmap_among_other_tokens_is_answered_with_exactly_jmap(server):
    client = WsClient(server.port, basic("alice@example.org"), subprotocols=["notjmap", "jmap", "chat"])
    assert client.subprotocol == "jmap"
    assert client.call([["Core/echo", {"ok": 1}, "c"]]) == [["Core/echo", {"ok": 1}, "c"]]
    client.close()


def test_origin_is_checked_when_present(make_server):
    server = make_server(ws_allowed_origins=("https://app.example.org",))
    server.services.accounts.create_user("alice@example.org", PASSWORD)
    auth = basic("alice@example.org")
    for origin in ("https://evil.example", "null", "http://app.example.org"):
        with pytest.raises(Rejected) as refused:
            WsClient(server.port, auth, headers={"Origin": origin})
        assert refused.value.status == 403
    for headers in ({}, {"Origin": "https://APP.example.org:443"}, {"Origin": server.url}):
        WsClient(server.port, auth, headers=headers).close()  # none, an allowed one, the server's own


def test_a_page_served_under_another_name_of_the_server_may_open_it(make_server):
    """The web inbox opened at 127.0.0.1 while the Session says https://mail.example.org: the page's Origin is
    the host the upgrade was sent to, so it is this server's own page; other origins are still refused."""
    server = make_server(base_url="https://mail.example.org")
    server.services.accounts.create_user("alice@example.org", PASSWORD)
    auth = basic("alice@example.org")
    for origin in (f"http://127.0.0.1:{server.port}", "https://mail.example.org"):
        WsClient(server.port, auth, headers={"Origin": origin}).close()
    for origin in ("http://127.0.0.1", f"http://127.0.0.2:{server.port}", "https://evil.example"):
        with pytest.raises(Rejected) as refused:
            WsClient(server.port, auth, headers={"Origin": origin})
        assert refused.value.status == 403


# -- tickets ---------------------------------------------------------------------------------------------------------


def get_ticket(server, authorization: str, **headers: str) -> str:
    r = requests.post(f"{server.url}/jmap/ws/ticket", headers={"Authorization": authorization, **headers})
    assert r.status_code == 200, r.text
    assert r.headers["Cache-Control"] == "no-store"
    return r.json()["ticket"]


def test_ticket_is_single_use_and_needs_an_allowed_origin(server):
    assert requests.post(f"{server.url}/jmap/ws/ticket").status_code == 401
    ticket = get_ticket(server, basic("alice@example.org"))
    for headers in ({}, {"Origin": "https://evil.example"}):  # refused before the ticket is spent
        with pytest.raises(Rejected) as refused:
            WsClient(server.port, path=f"/jmap/ws?ticket={ticket}", headers=headers)
        assert refused.value.status == 403
    client = WsClient(server.port, path=f"/jmap/ws?ticket={ticket}", headers={"Origin": server.url})
    session = client.call([["Mailbox/get", {"accountId": account_of(server, "alice@example.org")}, "m"]])
    assert session[0][0] == "Mailbox/get"
    client.close()
    with pytest.raises(Rejected) as reused:
        WsClient(server.port, path=f"/jmap/ws?ticket={ticket}", headers={"Origin": server.url})
    assert reused.value.status == 401
    with pytest.raises(Rejected) as forged:
        WsClient(server.port, path="/jmap/ws?ticket=wst_forged", headers={"Origin": server.url})
    assert forged.value.status == 401


def test_ticket_from_one_node_works_on_another_and_is_stored_hashed(server, config):
    other_db = open_database(config.database_url)  # a second process's own connection to the same database
    try:
        from jmapmono.runtime import Runtime

        node = server.services.config.with_overrides(port=0, base_url=server.url)  # same public URL, own port
        other = AppServer(Runtime(node, other_db))
        try:
            ticket = get_ticket(server, basic("alice@example.org"))
            with server.services.db.read() as tx:
                stored = [r["ticket_hash"] for r in tx.query("SELECT ticket_hash FROM ws_tickets")]
            assert stored and ticket not in stored
            client = WsClient(other.port, path=f"/jmap/ws?ticket={ticket}", headers={"Origin": server.url})
            assert client.call([["Core/echo", {}, "e"]], using=CORE)[0][0] == "Core/echo"
            client.close()
        finally:
            other.stop()
    finally:
        other_db.close()


def test_expired_ticket_and_revoked_app_password_are_refused(make_server):
    server = make_server(ws_ticket_seconds=0)
    user, _ = server.services.accounts.create_user("alice@example.org", PASSWORD)
    ticket = get_ticket(server, basic("alice@example.org"))
    with pytest.raises(Rejected) as expired:
        WsClient(server.port, path=f"/jmap/ws?ticket={ticket}", headers={"Origin": server.url})
    assert expired.value.status == 401

    from jmapmono.accounts.app_passwords import AppPasswords

    server.services.config = server.services.config.with_overrides(ws_ticket_seconds=60)
    app_passwords = AppPasswords(server.services.db, server.services.accounts)
    created, token = app_passwords.create(user, "phone")
    ticket = get_ticket(server, f"Bearer {token}")
    app_passwords.revoke(user.id, created.id)
    with pytest.raises(Rejected) as revoked:
        WsClient(server.port, path=f"/jmap/ws?ticket={ticket}", headers={"Origin": server.url})
    assert revoked.value.status == 401


def test_ticket_endpoint_allows_configured_origins_cross_origin(make_server):
    server = make_server(ws_allowed_origins=("https://app.example.org",))
    server.services.accounts.create_user("alice@example.org", PASSWORD)
    pre = requests.options(f"{server.url}/jmap/ws/ticket", headers={"Origin": "https://app.example.org"})
    assert pre.headers["Access-Control-Allow-Origin"] == "https://app.example.org"
    assert "Authorization" in pre.headers["Access-Control-Allow-Headers"]
    elsewhere = requests.options(f"{server.url}/jmap/ws/ticket", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in elsewhere.headers
    ticket = get_ticket(server, basic("alice@example.org"), Origin="https://app.example.org")
    WsClient(server.port, path=f"/jmap/ws?ticket={ticket}", headers={"Origin": "https://app.example.org"}).close()


# -- requests --------------------------------------------------------------------------------------------------------


def test_request_gets_a_response_with_its_id(server):
    client = server.client("alice@example.org")
    client.send_request([["Core/echo", {"hello": True, "high": 5}, "b3ff"]], "R1", CORE)
    response = client.recv()
    assert response["@type"] == "Response" and response["requestId"] == "R1"
    assert response["methodResponses"] == [["Core/echo", {"hello": True, "high": 5}, "b3ff"]]
    assert isinstance(response["sessionState"], str)
    client.send_request([["Core/echo", {}, "x"]], None, CORE)
    anonymous = client.recv()
    assert anonymous["@type"] == "Response" and "requestId" not in anonymous
    client.close()


def test_users_cannot_use_each_others_accounts(server):
    client = server.client("bob@example.org")
    alice = account_of(server, "alice@example.org")
    name, error, _ = client.call([["Mailbox/get", {"accountId": alice}, "m"]])[0]
    assert name == "error" and error["type"] == "accountNotFound"
    client.close()


@pytest.mark.parametrize(
    ("message", "kind", "request_id"),
    [
        ("this is not json", "notJSON", None),
        ('{"@type": "Request", "id": "d", "id": "e"}', "notJSON", None),
        ("[1, 2]", "notRequest", None),
        ('{"using": [], "methodCalls": []}', "notRequest", None),
        ('{"@type": "Subscribe", "id": "s1"}', "notRequest", "s1"),
        ('{"@type": "Request", "id": "r1", "using": "core", "methodCalls": []}', "notRequest", "r1"),
        ('{"@type": "Request", "id": 7, "using": [], "methodCalls": []}', "notRequest", None),
        ('{"@type": "Request", "id": "r2", "using": ["urn:x"], "methodCalls": []}', "unknownCapability", "r2"),
        ('{"@type": "WebSocketPushEnable", "dataTypes": "Email"}', "notRequest", None),
        ('{"@type": "WebSocketPushEnable", "dataTypes": null, "pushState": 5}', "notRequest", None),
    ],
)
def test_invalid_messages_get_a_request_error_and_the_socket_stays_open(server, message, kind, request_id):
    client = server.client("alice@example.org")
    client.send_text(message)
    error = client.recv()
    assert error["@type"] == "RequestError"
    assert error["type"] == ERR + kind and error["status"] == 400 and error["detail"]
    assert error.get("requestId") == request_id
    assert client.call([["Core/echo", {"still": "open"}, "c"]], using=CORE)[0][1] == {"still": "open"}
    client.close()


def test_too_many_method_calls_is_a_limit_error(make_server):
    server = make_server()
    server.services.accounts.create_user("alice@example.org", PASSWORD)
    client = server.client("alice@example.org")
    calls = [["Core/echo", {}, str(i)] for i in range(server.services.config.limits.max_calls_in_request + 1)]
    client.send_request(calls, "big", CORE)
    error = client.response("big")
    assert error["@type"] == "RequestError" and error["type"] == ERR + "limit"
    assert error["limit"] == "maxCallsInRequest"
    client.close()


@pytest.fixture
def slow_method(monkeypatch):
    """``Test/wait``: returns once the test sets the event (to hold requests in progress)."""
    release = gevent.event.Event()

    def wait(inv):
        release.wait(10)
        return {"waited": True}

    monkeypatch.setitem(registry.METHODS, "Test/wait", registry.MethodSpec("Test/wait", registry.CORE, wait, False))
    return release


def test_requests_run_concurrently_and_may_answer_out_of_order(server, slow_method):
    client = server.client("alice@example.org")
    client.send_request([["Test/wait", {}, "w"]], "slow", CORE)
    client.send_request([["Core/echo", {"n": 1}, "e"]], "fast", CORE)
    first = client.recv()
    assert first["requestId"] == "fast"  # answered while "slow" still runs
    slow_method.set()
    assert client.response("slow")["methodResponses"] == [["Test/wait", {"waited": True}, "w"]]
    client.close()


def test_max_concurrent_requests_is_enforced_per_user(make_server, slow_method):
    server = make_server()
    server.services.accounts.create_user("alice@example.org", PASSWORD)
    limit = server.services.config.limits.max_concurrent_requests
    client = server.client("alice@example.org")
    for i in range(limit):
        client.send_request([["Test/wait", {}, "w"]], f"hold{i}", CORE)
    client.send_request([["Core/echo", {}, "e"]], "excess", CORE)
    error = client.response("excess")
    assert error["@type"] == "RequestError" and error["type"] == ERR + "limit"
    assert error["limit"] == "maxConcurrentRequests"
    # The same user's HTTP requests share the limit.
    body = {"using": CORE, "methodCalls": [["Core/echo", {}, "h"]]}
    http = requests.post(
        f"{server.url}/jmap/api",
        data=json.dumps(body),
        headers={"Authorization": basic("alice@example.org"), "Content-Type": "application/json"},
    )
    assert http.status_code == 400 and http.json()["limit"] == "maxConcurrentRequests"
    slow_method.set()
    for i in range(limit):
        assert client.response(f"hold{i}")["@type"] == "Response"
    assert client.call([["Core/echo", {}, "again"]], using=CORE)[0][0] == "Core/echo"
    client.close()


def test_message_over_max_size_request_is_refused_before_it_ends(make_server):
    server = make_server()
    server.services.accounts.create_user("alice@example.org", PASSWORD)
    limit = server.services.config.limits.max_size_request
    client = server.client("alice@example.org")
    head = '{"@type": "Request", "using": [], "methodCalls": [], "pad": "' + "x" * (limit + 10)
    client.sock.sendall(client.ws.send(Message(data=head, message_finished=False)))
    error = client.recv()  # before the message is even finished: it is not buffered whole
    assert error["@type"] == "RequestError" and error["type"] == ERR + "limit"
    assert error["limit"] == "maxSizeRequest"
    client.sock.sendall(client.ws.send(Message(data='"}', message_finished=True)))
    assert client.call([["Core/echo", {"after": 1}, "c"]], using=CORE)[0][1] == {"after": 1}
    client.close()


def test_binary_frames_close_with_1003(server):
    client = server.client("alice@example.org")
    client.send_bytes(b'{"@type": "Request"}')
    assert client.wait_closed() == 1003


# -- permessage-deflate ----------------------------------------------------------------------------------------------


def read_frame(sock) -> tuple[int, bytes]:
    """One whole frame from the raw socket: (first header byte, payload)."""
    sock.settimeout(10)

    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            assert chunk, "connection closed"
            data += chunk
        return data

    first, second = exactly(2)
    length = second & 0x7F
    if length == 126:
        length = int.from_bytes(exactly(2), "big")
    elif length == 127:
        length = int.from_bytes(exactly(8), "big")
    return first, exactly(length)


def test_deflate_is_negotiated_without_context_takeover_and_compresses(server):
    client = server.client("alice@example.org", deflate=True)
    [extension] = client.extensions
    assert extension.name == "permessage-deflate"
    assert extension.server_no_context_takeover and extension.client_no_context_takeover
    # The client's own frames are compressed too (wsproto compresses what it sends).
    payload = {"text": "all work and no play makes jack a dull boy " * 200}
    client.send_request([["Core/echo", payload, "c"]], "big", CORE)
    first, body = read_frame(client.sock)
    assert first & 0x80 and first & 0x0F == 0x1  # FIN, text
    assert first & 0x40, "RSV1: the frame is compressed"
    plain = zlib.decompressobj(-15).decompress(body + b"\x00\x00\xff\xff")
    response = json.loads(plain)
    assert response["requestId"] == "big" and response["methodResponses"][0][1] == payload
    assert len(body) * 10 < len(plain)
    client.sock.close()


def test_no_deflate_unless_offered_or_when_disabled(make_server):
    server = make_server(ws_deflate=False)
    server.services.accounts.create_user("alice@example.org", PASSWORD)
    offered_but_off = server.client("alice@example.org", deflate=True)
    assert offered_but_off.extensions == []
    offered_but_off.close()
    other = make_server()
    not_offered = WsClient(other.port, basic("alice@example.org"))
    assert not_offered.extensions == []
    not_offered.close()


def test_open_and_close_are_logged_once_each(server, caplog):
    caplog.set_level("INFO", logger="jmapmono.push.websocket")
    client = server.client("alice@example.org")
    client.call([["Core/echo", {}, "c"]], using=CORE)
    client.close()
    wait_until(lambda: any("event=ws_close" in r.getMessage() for r in caplog.records), message="the close line")
    opened = [r.getMessage() for r in caplog.records if "event=ws_open" in r.getMessage()]
    closed = [r.getMessage() for r in caplog.records if "event=ws_close" in r.getMessage()]
    assert len(opened) == 1 and "user=alice@example.org" in opened[0] and "via=basic" in opened[0]
    assert len(closed) == 1
    assert all(f in closed[0] for f in ("user=alice@example.org", "requests=1", "pushes=0", "code=1000", "ms="))


def test_websocket_settings_are_validated_at_start():
    from jmapmono.config import ConfigError, load_config

    config = load_config({"JMAPMONO_WS_ALLOWED_ORIGINS": "https://App.example.org:443/, http://localhost:3000 *"})
    assert config.ws_allowed_origins == ("https://app.example.org", "http://localhost:3000", "*")
    for env in (
        {"JMAPMONO_WS_ALLOWED_ORIGINS": "app.example.org"},
        {"JMAPMONO_WS_ALLOWED_ORIGINS": "https://app.example.org/path"},
        {"JMAPMONO_WS_PING_SECONDS": "-1"},
        {"JMAPMONO_WS_DEFLATE": "maybe"},
        {"JMAPMONO_WS_OUTBOUND_BYTES": "10"},
    ):
        with pytest.raises(ConfigError, match=next(iter(env))):
            load_config(env)

"""POST /jmap/api: request-level behaviour (RFC 8620 §3.3, §3.4, §3.6.1), on both backends."""

from __future__ import annotations

import base64
import json
import logging
import socket
from dataclasses import replace

import gevent
import pytest
import requests
from gevent.event import Event

from jmapmono.jmap import registry
from jmapmono.jmap.registry import CORE
from jmapmono.runtime import Runtime
from jmapmono.web.app import create_app
from tests.support.servers import AppServer, start_http
from tests.support.waiting import wait_until

ERR = "urn:ietf:params:jmap:error:"
TEST_CAP = "urn:jmapmono:test:hold"
PASSWORD = "correct horse battery"


def basic(email: str, password: str = PASSWORD) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{email}:{password}".encode()).decode()}


@pytest.fixture
def alice(services):
    user, _ = services.accounts.create_user("alice@example.org", PASSWORD)
    return user


def post(client, body, headers, content_type="application/json"):
    data = body if isinstance(body, bytes) else json.dumps(body)
    return client.post("/jmap/api", data=data, headers=headers, content_type=content_type)


def echo_request(n: int = 1, **extra) -> dict:
    return {"using": [CORE], "methodCalls": [["Core/echo", {"n": i}, f"c{i}"] for i in range(n)], **extra}


def assert_problem(response, kind: str, status: int = 400, case: object = None) -> dict:
    assert response.status_code == status, (case, response.get_data(as_text=True))
    assert response.headers["Content-Type"] == "application/problem+json"
    body = response.get_json(force=True)
    assert body["type"] == ERR + kind, (case, body)
    assert body["status"] == status
    assert body["detail"]
    return body


# --- success path --------------------------------------------------------------------------------------------------


def test_echo_round_trip_and_session_state(client, alice):
    request = {
        "using": [CORE],
        "methodCalls": [["Core/echo", {"hello": True, "high": 5, "nested": {"list": [1, "two", None]}}, "b3ff"]],
    }
    r = post(client, request, basic(alice.email))
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    body = r.get_json()
    assert body["methodResponses"] == [["Core/echo", request["methodCalls"][0][1], "b3ff"]]
    session = client.get("/.well-known/jmap", headers=basic(alice.email)).get_json()
    assert body["sessionState"] == session["state"]
    assert "createdIds" not in body


def test_created_ids_are_returned_only_when_given(client, alice):
    r = post(client, echo_request(createdIds={"k1": "id1", "k2": "id2"}), basic(alice.email))
    assert r.get_json()["createdIds"] == {"k1": "id1", "k2": "id2"}
    r = post(client, echo_request(createdIds={}), basic(alice.email))
    assert r.get_json()["createdIds"] == {}


def test_unknown_request_properties_are_ignored(client, alice):
    r = post(client, echo_request(somethingNew={"x": 1}), basic(alice.email))
    assert r.status_code == 200
    assert r.get_json()["methodResponses"][0][0] == "Core/echo"


def test_charset_utf8_parameter_is_accepted(client, alice):
    r = post(client, echo_request(), basic(alice.email), content_type="application/json; charset=UTF-8")
    assert r.status_code == 200


def test_empty_using_processes_every_call_as_unknown_method(client, alice):
    request = {"using": [], "methodCalls": [["Core/echo", {}, "a"], ["Core/echo", {}, "b"]]}
    r = post(client, request, basic(alice.email))
    assert r.status_code == 200
    assert [(m[0], m[1]["type"], m[2]) for m in r.get_json()["methodResponses"]] == [
        ("error", "unknownMethod", "a"),
        ("error", "unknownMethod", "b"),
    ]


def test_one_log_line_per_request(client, alice, caplog):
    caplog.set_level(logging.INFO, logger="jmapmono.api")
    post(client, {"using": [CORE], "methodCalls": [["Core/echo", {}, "a"], ["Nope/x", {}, "b"]]}, basic(alice.email))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("event=api ")]
    assert len(lines) == 1
    line = lines[0]
    assert "user=alice@example.org" in line and "calls=2" in line and "methods=Core/echo,Nope/x" in line
    assert "errors=1" in line and " ms=" in line


# --- authentication and HTTP method --------------------------------------------------------------------------------


def test_requires_credentials(client, alice):
    r = post(client, echo_request(), {})
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Basic")
    assert post(client, echo_request(), basic(alice.email, "wrong")).status_code == 401


def test_get_is_not_allowed_without_a_500(client, alice):
    r = client.get("/jmap/api", headers=basic(alice.email))
    assert r.status_code == 405
    assert r.headers["Allow"] == "POST"
    assert r.headers["Content-Type"] == "application/problem+json"
    assert r.get_json()["status"] == 405


def test_each_api_request_has_the_request_log_line_of_every_route(client, alice, caplog):
    caplog.set_level(logging.INFO, logger="jmapmono.http")
    post(client, echo_request(), basic(alice.email))
    post(client, echo_request(), basic(alice.email, "wrong"))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("event=http ")]
    assert len(lines) == 2
    assert "method=POST path=/jmap/api status=200 user=alice@example.org" in lines[0] and " ms=" in lines[0]
    assert "status=401 user=- " in lines[1]


def test_a_response_carries_its_length_and_language(client, alice):
    r = post(client, echo_request(), basic(alice.email))
    assert r.headers["Content-Type"] == "application/json"
    assert r.headers["Content-Language"] == "en"
    assert int(r.headers["Content-Length"]) == len(r.data)


# --- notJSON -------------------------------------------------------------------------------------------------------


WRONG_CONTENT_TYPES = [
    "text/plain",
    "application/x-www-form-urlencoded",
    "application/jsonx",
    "application/json; charset=latin-1",
    "",
]


def test_wrong_content_type_is_not_json_415(client, alice):
    for content_type in WRONG_CONTENT_TYPES:
        r = post(client, echo_request(), basic(alice.email), content_type=content_type)
        assert_problem(r, "notJSON", 415, case=content_type)


NOT_I_JSON = {
    "text": b"this is not json",
    "truncated": b'{"using": ["urn:ietf:params:jmap:core"], "methodCalls": [}',
    "bad-utf8": b'{"using": ["urn:ietf:params:\xffjmap:core"], "methodCalls": []}',
    "bom": b"\xef\xbb\xbf" + json.dumps(echo_request()).encode(),
    "duplicate-name": b'{"using": [], "using": ["urn:ietf:params:jmap:core"], "methodCalls": []}',
    "nan": b'{"using": ["urn:ietf:params:jmap:core"], "methodCalls": [["Core/echo", {"x": NaN}, "c"]]}',
    "lone-surrogate": b'{"using": [], "methodCalls": [["Core/echo", {"x": "\\ud800"}, "c"]]}',
    "huge-int": b'{"using": [], "methodCalls": [["Core/echo", {"x": 1' + b"1" * 5000 + b'}, "c"]]}',
    "deep": b"[" * 100_000 + b"]" * 100_000,
    "empty": b"",
}


def test_not_i_json_is_not_json_400(client, alice):
    for case, body in NOT_I_JSON.items():
        assert_problem(post(client, body, basic(alice.email)), "notJSON", case=case)


def test_paired_surrogate_escapes_are_fine(client, alice):
    body = b'{"using": ["urn:ietf:params:jmap:core"], "methodCalls": [["Core/echo", {"x": "\\ud83d\\ude00"}, "c"]]}'
    r = post(client, body, basic(alice.email))
    assert r.status_code == 200
    assert r.get_json()["methodResponses"][0][1] == {"x": "\U0001f600"}


# --- notRequest ----------------------------------------------------------------------------------------------------


NOT_REQUESTS = [
    {"foo": "bar"},
    [],
    "a string",
    42,
    None,
    {"methodCalls": []},
    {"using": [CORE]},
    {"using": CORE, "methodCalls": []},
    {"using": [CORE, 7], "methodCalls": []},
    {"using": [CORE], "methodCalls": {}},
    {"using": [CORE], "methodCalls": [["Core/echo", {}]]},
    {"using": [CORE], "methodCalls": [["Core/echo", {}, "c", "extra"]]},
    {"using": [CORE], "methodCalls": [["Core/echo", [], "c"]]},
    {"using": [CORE], "methodCalls": [[1, {}, "c"]]},
    {"using": [CORE], "methodCalls": [["Core/echo", {}, 3]]},
    {"using": [CORE], "methodCalls": ["Core/echo"]},
    {"using": [CORE], "methodCalls": [], "createdIds": []},
    {"using": [CORE], "methodCalls": [], "createdIds": None},
    {"using": [CORE], "methodCalls": [], "createdIds": {"k": 1}},
]


def test_json_that_is_not_a_request_is_not_request_400(client, alice):
    for case in NOT_REQUESTS:
        assert_problem(post(client, case, basic(alice.email)), "notRequest", case=case)


# --- unknownCapability and limits ----------------------------------------------------------------------------------


def test_unknown_capability_is_an_http_level_error(client, alice):
    r = post(client, {"using": [CORE, "https://example.com/apis/foobar"], "methodCalls": []}, basic(alice.email))
    body = assert_problem(r, "unknownCapability")
    assert "https://example.com/apis/foobar" in body["detail"]


def test_too_many_calls_is_a_limit_error(client, services, alice):
    limit = services.config.limits.max_calls_in_request
    assert post(client, echo_request(limit), basic(alice.email)).status_code == 200
    body = assert_problem(post(client, echo_request(limit + 1), basic(alice.email)), "limit")
    assert body["limit"] == "maxCallsInRequest"


def small_request_limit_app(services: Runtime, size: int = 4096):
    config = services.config.with_overrides(limits=replace(services.config.limits, max_size_request=size))
    return create_app(Runtime(config, services.db))


def test_oversize_body_is_refused_from_content_length(services, alice):
    client = small_request_limit_app(services).test_client()
    padding = "x" * 5000
    body = assert_problem(post(client, echo_request(padding=padding), basic(alice.email)), "limit")
    assert body["limit"] == "maxSizeRequest"
    assert post(client, echo_request(padding="x" * 3000), basic(alice.email)).status_code == 200


@pytest.fixture
def live(services, alice):
    """A real HTTP server on a loopback port with a 4 KiB maxSizeRequest; yields its base URL."""
    server = start_http(small_request_limit_app(services))
    yield server.url
    server.stop(timeout=5)


def chunks(data: bytes, size: int = 1000):
    for i in range(0, len(data), size):
        yield data[i : i + size]


def test_oversize_body_over_a_real_socket(live, alice):
    url, auth = live + "/jmap/api", basic(alice.email)
    headers = {**auth, "Content-Type": "application/json"}
    big = json.dumps(echo_request(padding="x" * 20_000)).encode()
    r = requests.post(url, data=big, headers=headers, timeout=10)  # Content-Length
    assert r.status_code == 400 and r.json()["limit"] == "maxSizeRequest"
    r = requests.post(url, data=chunks(big), headers=headers, timeout=10)  # chunked, no Content-Length
    assert "Content-Length" not in r.request.headers
    assert r.status_code == 400 and r.json()["limit"] == "maxSizeRequest"
    small = json.dumps(echo_request(3, padding="y" * 2000)).encode()
    r = requests.post(url, data=chunks(small), headers=headers, timeout=10)
    assert r.status_code == 200
    assert [m[2] for m in r.json()["methodResponses"]] == ["c0", "c1", "c2"]
    r = requests.post(url, data=b"\xff\xfe", headers=headers, timeout=10)
    assert r.status_code == 400 and r.json()["type"] == ERR + "notJSON"
    r = requests.post(url, data=small, headers={**auth, "Content-Type": "text/plain"}, timeout=10)
    assert r.status_code == 415 and r.headers["Content-Type"] == "application/problem+json"


def test_served_responses_are_not_held_back_by_nagle(services, app, alice):
    """pywsgi sends headers and body separately: the listener must set TCP_NODELAY (else ~40 ms per request)."""
    server = AppServer(services, app=app, flow=False, port=0)  # the HTTP server serve builds
    try:
        assert server.server.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        with requests.Session() as http:
            url, headers = f"{server.url}/jmap/api", basic(alice.email)
            for _ in range(3):
                assert http.post(url, json=echo_request(), headers=headers, timeout=10).status_code == 200
    finally:
        server.stop(timeout=5)


# --- maxConcurrentRequests -----------------------------------------------------------------------------------------


@pytest.fixture
def hold():
    """A test-only capability with ``Hold/wait``, which blocks until released; removed afterwards."""
    registry.load_all()  # snapshot the real registrations, not an empty registry
    methods, capabilities = dict(registry.METHODS), dict(registry.CAPABILITIES)
    state = {"entered": 0, "release": Event()}

    def wait(inv):
        state["entered"] += 1
        assert state["release"].wait(timeout=20)
        return {"waited": True}

    registry.capability(TEST_CAP, lambda services: {})
    registry.method("Hold/wait", TEST_CAP, needs_account=False)(wait)
    yield state
    state["release"].set()
    registry.METHODS.clear()
    registry.METHODS.update(methods)
    registry.CAPABILITIES.clear()
    registry.CAPABILITIES.update(capabilities)


HOLD = {"using": [CORE, TEST_CAP], "methodCalls": [["Hold/wait", {}, "h"]]}


def test_too_many_concurrent_requests_per_user(client, services, alice, hold):
    bob, _ = services.accounts.create_user("bob@example.org", PASSWORD)
    limit = services.config.limits.max_concurrent_requests
    held = [gevent.spawn(post, client, HOLD, basic(alice.email)) for _ in range(limit)]
    wait_until(lambda: hold["entered"] == limit, message="every held request to be in")
    body = assert_problem(post(client, echo_request(), basic(alice.email)), "limit")
    assert body["limit"] == "maxConcurrentRequests"
    assert post(client, echo_request(), basic(bob.email)).status_code == 200  # the limit is per user
    hold["release"].set()
    gevent.joinall(held, timeout=20, raise_error=True)
    assert [g.value.status_code for g in held] == [200] * limit
    assert services.request_guard.in_progress(alice.id) == 0
    assert post(client, echo_request(), basic(alice.email)).status_code == 200


def test_concurrency_slot_is_released_after_errors(client, services, alice):
    limit = services.config.limits.max_concurrent_requests
    for _ in range(limit + 1):
        assert_problem(post(client, b"nope", basic(alice.email)), "notJSON")
        assert_problem(post(client, {"using": ["urn:x"], "methodCalls": []}, basic(alice.email)), "unknownCapability")
    assert services.request_guard.in_progress(alice.id) == 0
    assert post(client, echo_request(), basic(alice.email)).status_code == 200


def test_concurrent_requests_over_a_real_socket(live, services, alice, hold):
    url, headers = live + "/jmap/api", {**basic(alice.email), "Content-Type": "application/json"}
    limit = services.config.limits.max_concurrent_requests
    send = lambda body: requests.post(url, data=json.dumps(body), headers=headers, timeout=20)  # noqa: E731
    held = [gevent.spawn(send, HOLD) for _ in range(limit)]
    wait_until(lambda: hold["entered"] == limit, message="every held request to be in")
    r = send(echo_request())
    assert r.status_code == 400 and r.json() == {**r.json(), "type": ERR + "limit", "limit": "maxConcurrentRequests"}
    hold["release"].set()
    gevent.joinall(held, timeout=20, raise_error=True)
    assert all(g.value.json()["methodResponses"] == [["Hold/wait", {"waited": True}, "h"]] for g in held)
    assert send(echo_request()).status_code == 200

"""The Session resource (RFC 8620 §2) at /.well-known/jmap and /jmap/session, on both backends."""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import pytest
import requests

from jmapmono.jmap import registry
from jmapmono.jmap.registry import CORE
from jmapmono.runtime import Runtime
from jmapmono.web.app import create_app
from tests.support.servers import start_http

PASSWORD = "correct horse battery"
TEST_CAP = "urn:jmapmono:test:notes"
LIMIT_NAMES = {
    "maxSizeUpload",
    "maxConcurrentUpload",
    "maxSizeRequest",
    "maxConcurrentRequests",
    "maxCallsInRequest",
    "maxObjectsInGet",
    "maxObjectsInSet",
    "collationAlgorithms",
}


def basic(email: str, password: str = PASSWORD) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{email}:{password}".encode()).decode()}


@pytest.fixture
def alice(services):
    return services.accounts.create_user("alice@example.org", PASSWORD)[0]


def get_session(client, email: str) -> dict:
    r = client.get("/.well-known/jmap", headers=basic(email))
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.headers["Content-Type"] == "application/json"
    assert "no-store" in r.headers["Cache-Control"] and "no-cache" in r.headers["Cache-Control"]
    return r.get_json()


@pytest.fixture
def notes_capability():
    """A test account capability (primary) with per-account values; removed afterwards."""
    registry.load_all()  # snapshot the real registrations, not an empty registry
    capabilities = dict(registry.CAPABILITIES)
    values: dict[str, dict | None] = {}
    registry.capability(TEST_CAP, lambda s: {"maxNotes": 7}, lambda s, account_id: values.get(account_id, {"n": 1}))
    yield values
    registry.CAPABILITIES.clear()
    registry.CAPABILITIES.update(capabilities)


def test_requires_credentials(client, alice):
    for path in ("/.well-known/jmap", "/jmap/session"):
        r = client.get(path)
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"].startswith("Basic")
        assert r.headers["Content-Type"] == "application/problem+json"
        assert client.get(path, headers=basic(alice.email, "wrong")).status_code == 401


def test_session_contents(client, services, alice):
    session = get_session(client, alice.email)
    core = session["capabilities"][CORE]
    assert set(core) == LIMIT_NAMES
    limits = services.config.limits
    assert core["maxSizeUpload"] == limits.max_size_upload
    assert core["maxConcurrentRequests"] == limits.max_concurrent_requests
    assert core["maxObjectsInSet"] == limits.max_objects_in_set
    assert "i;unicode-casemap" in core["collationAlgorithms"]
    assert set(session["capabilities"]) == set(registry.CAPABILITIES)
    assert session["username"] == "alice@example.org"
    account = session["accounts"][alice.account_id]
    assert account["name"] == "alice@example.org"
    assert account["isPersonal"] is True and account["isReadOnly"] is False
    assert CORE not in account["accountCapabilities"]
    assert CORE not in session["primaryAccounts"]
    assert isinstance(session["state"], str) and session["state"]
    assert get_session(client, alice.email) == session  # stable while nothing changes
    assert client.get("/jmap/session", headers=basic(alice.email)).get_json() == session


def test_urls_are_absolute_templates_from_the_public_base_url(services, alice):
    config = services.config.with_overrides(base_url="https://mail.example.org/")
    session = get_session(create_app(Runtime(config, services.db)).test_client(), alice.email)
    assert session["apiUrl"] == "https://mail.example.org/jmap/api"
    assert session["downloadUrl"] == "https://mail.example.org/jmap/download/{accountId}/{blobId}/{name}?type={type}"
    assert session["uploadUrl"] == "https://mail.example.org/jmap/upload/{accountId}/"
    assert session["eventSourceUrl"] == (
        "https://mail.example.org/jmap/eventsource?types={types}&closeafter={closeafter}&ping={ping}"
    )


def test_delegated_account_appears_and_changes_the_state(client, services, alice, notes_capability):
    bob, _ = services.accounts.create_user("bob@example.org", PASSWORD)
    before = get_session(client, alice.email)
    assert list(before["accounts"]) == [alice.account_id]
    assert before["primaryAccounts"][TEST_CAP] == alice.account_id
    assert before["capabilities"][TEST_CAP] == {"maxNotes": 7}

    services.accounts.delegate(bob.email, alice.email)
    after = get_session(client, alice.email)
    assert after["state"] != before["state"]
    shared = after["accounts"][bob.account_id]
    assert {k: v for k, v in shared.items() if k != "accountCapabilities"} == {
        "name": "bob@example.org",
        "isPersonal": False,
        "isReadOnly": False,
    }
    assert shared["accountCapabilities"][TEST_CAP] == {"n": 1}
    assert set(after["primaryAccounts"].values()) == {alice.account_id}  # the own account stays primary
    assert get_session(client, bob.email)["accounts"].keys() == {bob.account_id}  # delegation is one way

    services.accounts.undelegate(bob.email, alice.email)
    assert get_session(client, alice.email)["state"] == before["state"]


def test_state_follows_account_capabilities_and_api_session_state(client, services, alice, notes_capability):
    first = get_session(client, alice.email)
    notes_capability[alice.account_id] = None  # the account loses the capability: capabilities are read when
    with services.db.transaction() as tx:  # a Session is built, and a principal's is kept until a commit
        tx.execute("UPDATE users SET email = email WHERE id = ?", (alice.id,))
    second = get_session(client, alice.email)
    assert TEST_CAP not in second["accounts"][alice.account_id]["accountCapabilities"]
    assert TEST_CAP not in second["primaryAccounts"]
    assert second["state"] != first["state"]
    r = client.post(
        "/jmap/api",
        data=json.dumps({"using": [CORE], "methodCalls": []}),
        headers=basic(alice.email),
        content_type="application/json",
    )
    assert r.get_json() == {"methodResponses": [], "sessionState": second["state"]}


def test_a_principals_session_is_kept_until_a_commit_anywhere(services, alice):
    from jmapmono.accounts.principal import Principal

    services.db.hears_others = True  # as under a running event flow (Postgres: the doorbell tells of others)
    sessions = services.sessions
    alice_p = Principal(alice.id, alice.email, alice.account_id)
    sessions.get(alice_p)  # the first Session ever makes the web push key (a commit), as the app's start does
    first = sessions.get(alice_p)
    assert sessions.get(alice_p) is first  # nothing committed: the same Session, not built again
    bob, _ = services.accounts.create_user("bob@example.org", PASSWORD)
    bob_p = Principal(bob.id, bob.email, bob.account_id)
    assert sessions.get(bob_p).document["username"] == "bob@example.org"  # kept per principal
    services.accounts.delegate(bob.email, alice.email)  # a commit
    after = sessions.get(alice_p)
    assert after is not first and bob.account_id in after.accounts
    assert after.state != first.state


def test_state_follows_configured_limits(services, alice):
    one = get_session(create_app(services).test_client(), alice.email)
    config = services.config.with_overrides(limits=replace(services.config.limits, max_calls_in_request=64))
    two = get_session(create_app(Runtime(config, services.db)).test_client(), alice.email)
    assert two["capabilities"][CORE]["maxCallsInRequest"] == 64
    assert two["state"] != one["state"]


def test_well_known_over_a_real_socket_is_served_directly(app, alice):
    server = start_http(app)
    try:
        url = f"{server.url}/.well-known/jmap"
        r = requests.get(url, headers=basic(alice.email), allow_redirects=False, timeout=10)
        assert r.status_code == 200 and r.json()["username"] == alice.email
        assert requests.get(url, allow_redirects=False, timeout=10).status_code == 401
    finally:
        server.stop(timeout=5)

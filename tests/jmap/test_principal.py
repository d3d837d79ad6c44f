"""Principal/get|changes|query over real HTTP (RFC 9670 §3: "A Principal represents an individual, group,
location (e.g., a room), resource (e.g., a projector), or other entity in a collaborative environment").
Individuals only, the users of the caller's email domain; their id is the principal id ``shareWith`` takes."""

from __future__ import annotations

import pytest

from tests.jmap.test_sharing import _Http
from tests.support.jmap import PASSWORD, JmapClient
from tests.support.servers import start_app

USING = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:principals"]


@pytest.fixture
def server(config, db):
    server = start_app(config, db)
    yield server
    server.stop()


def test_principals_are_the_users_of_the_callers_domain(server):
    accounts = server.services.accounts
    alice, _ = accounts.create_user("alice@example.org", PASSWORD)
    bob, _ = accounts.create_user("bob@example.org", PASSWORD)
    accounts.create_user("mallory@elsewhere.example", PASSWORD)
    client = JmapClient(_Http(server.url), alice.email, alice.account_id)

    (name, got, _), (_, query, _) = client.responses(
        [
            ["Principal/get", {"accountId": alice.account_id, "ids": None}, "g"],
            ["Principal/query", {"accountId": alice.account_id, "filter": {"email": "bob"}}, "q"],
        ],
        USING,
    )
    assert name == "Principal/get"
    assert {p["id"]: p["email"] for p in got["list"]} == {alice.account_id: alice.email, bob.account_id: bob.email}
    assert all(p["type"] == "individual" for p in got["list"])
    assert query["ids"] == [bob.account_id]

    name, changes, _ = client.responses(
        [["Principal/changes", {"accountId": alice.account_id, "sinceState": got["state"]}, "c"]], USING
    )[0]
    assert name == "Principal/changes" and changes["created"] == changes["updated"] == changes["destroyed"] == []
    accounts.create_user("carol@example.org", PASSWORD)
    name, error, _ = client.responses(
        [["Principal/changes", {"accountId": alice.account_id, "sinceState": got["state"]}, "c"]], USING
    )[0]
    assert (name, error["type"]) == ("error", "cannotCalculateChanges")

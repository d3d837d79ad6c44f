"""RFC 8620 conformance, black-box through POST /jmap/api and the blob endpoints, grouped by RFC section:
§2 Session, §3 requests and responses, §4 Core/echo, §6 binary data, §7.2 PushSubscription. The standard
methods (§5) are in test_core_methods.py.

Each test reads like a conformance suite's check: the exact response argument sets, error types and their
extra properties, and the RFC's own examples.
"""

from __future__ import annotations

import json
import re

import pytest

from jmapmono.jmap.submission import parse_utc_date
from tests.support.emails import message, roles
from tests.support.jmap import ALL, CORE, MAIL, JmapClient
from tests.support.push_receiver import PushReceiver

ERR = "urn:ietf:params:jmap:error:"
UTC_DATE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z")


def post(client: JmapClient, body: object, content_type: str = "application/json"):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.client.post("/jmap/api", data=data, headers=client.headers, content_type=content_type)


def problem(response, kind: str) -> dict:
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.headers["Content-Type"].startswith("application/problem+json")
    body = response.get_json(force=True)
    assert body["type"] == ERR + kind and body["status"] == 400
    return body


def one(client: JmapClient, method: str, args: dict, using: list[str] | None = None) -> tuple[str, dict]:
    name, result, call_id = client.responses([[method, args, "c0"]], using)[0]
    assert call_id == "c0"
    return name, result


@pytest.fixture
def config(config):
    """Loopback push receivers (private targets and http://) allowed, as in a lab deployment."""
    return config.with_overrides(push_allow_private_targets=True)


# --- §2 The JMAP Session resource ----------------------------------------------------------------------------------


def test_session_resource_has_every_required_property(alice, bob, services):
    r = alice.client.get("/.well-known/jmap", headers=alice.headers)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    session = r.get_json()
    assert set(session) >= {
        "capabilities",
        "accounts",
        "primaryAccounts",
        "username",
        "apiUrl",
        "downloadUrl",
        "uploadUrl",
        "eventSourceUrl",
        "state",
    }
    core = session["capabilities"][CORE]
    for limit in (
        "maxSizeUpload",
        "maxConcurrentUpload",
        "maxSizeRequest",
        "maxConcurrentRequests",
        "maxCallsInRequest",
        "maxObjectsInGet",
        "maxObjectsInSet",
    ):
        assert isinstance(core[limit], int) and core[limit] > 0, limit
    assert isinstance(core["collationAlgorithms"], list)
    assert session["username"] == "alice@example.org"
    for var in ("{accountId}", "{blobId}", "{type}", "{name}"):
        assert var in session["downloadUrl"]
    assert "{accountId}" in session["uploadUrl"]
    for var in ("{types}", "{closeafter}", "{ping}"):
        assert var in session["eventSourceUrl"]
    account = session["accounts"][alice.account_id]
    assert account["name"] and account["isPersonal"] is True and account["isReadOnly"] is False
    # Core is not an account capability; the mail capabilities are, and alice's own account is primary for them.
    assert CORE not in account["accountCapabilities"] and CORE not in session["primaryAccounts"]
    for cap in (MAIL, "urn:ietf:params:jmap:submission", "urn:ietf:params:jmap:vacationresponse"):
        assert cap in session["capabilities"] and cap in account["accountCapabilities"]
        assert session["primaryAccounts"][cap] == alice.account_id
    assert bob.account_id not in session["accounts"]

    # sessionState of every API response is the Session's state; both move when the accounts change.
    assert alice.request([])["sessionState"] == session["state"]
    services.accounts.delegate("bob@example.org", "alice@example.org")
    again = alice.client.get("/jmap/session", headers=alice.headers).get_json()
    assert again["state"] != session["state"] and again["accounts"][bob.account_id]["isPersonal"] is False
    assert alice.request([])["sessionState"] == again["state"]


def test_session_requires_authentication(client, alice):
    assert client.get("/.well-known/jmap").status_code == 401


# --- §3.6.1 request-level errors ----------------------------------------------------------------------------------


def test_request_level_errors_are_problem_documents(alice):
    problem(post(alice, "{not json"), "notJSON")
    problem(post(alice, {"foo": "bar"}), "notRequest")  # valid JSON, not a Request: 400, never 200
    problem(post(alice, {"using": [CORE], "methodCalls": [["Core/echo", {}]]}), "notRequest")
    body = problem(post(alice, {"using": [CORE, "urn:example:nope"], "methodCalls": []}), "unknownCapability")
    assert "urn:example:nope" in body["detail"]
    wrong_type = post(alice, json.dumps({"using": [CORE], "methodCalls": []}), content_type="text/plain")
    assert 400 <= wrong_type.status_code < 500
    calls = [["Core/echo", {}, str(i)] for i in range(17)]  # maxCallsInRequest is 16
    assert problem(post(alice, {"using": [CORE], "methodCalls": calls}), "limit")["limit"] == "maxCallsInRequest"


def test_empty_using_processes_the_request_but_every_method_is_unknown(alice):
    calls = [["Core/echo", {"a": 1}, "0"], ["Mailbox/get", {"accountId": alice.account_id}, "1"]]
    r = post(alice, {"using": [], "methodCalls": calls})
    assert r.status_code == 200
    responses = r.get_json()["methodResponses"]
    assert [(r[0], r[1]["type"], r[2]) for r in responses] == [
        ("error", "unknownMethod", "0"),
        ("error", "unknownMethod", "1"),
    ]


# --- §3.3, §3.4, §3.6.2 requests, responses, method errors --------------------------------------------------------


def test_method_errors_are_in_place_and_later_calls_still_run(alice):
    a = alice.account_id
    responses = alice.responses(
        [
            ["Mailbox/get", {"ids": []}, "noAccount"],
            ["Mailbox/get", {"accountId": "nope", "ids": []}, "badAccount"],
            ["Foo/bar", {}, "unknown"],
            ["Mailbox/get", {"accountId": a, "ids": []}, "fine"],
            ["Mailbox/get", {"accountId": a, "ids": [], "bogus": 1}, "unknownArgument"],
            ["Mailbox/get", {"accountId": a, "ids": "x"}, "badType"],
        ]
    )
    assert [(r[0], r[1].get("type"), r[2]) for r in responses] == [
        ("error", "invalidArguments", "noAccount"),  # accountId is required, never defaulted
        ("error", "accountNotFound", "badAccount"),
        ("error", "unknownMethod", "unknown"),
        ("Mailbox/get", None, "fine"),
        ("error", "invalidArguments", "unknownArgument"),
        ("error", "invalidArguments", "badType"),
    ]
    # A method whose capability the client did not opt in to is unknown, even if the server has it.
    name, error = one(alice, "Mailbox/get", {"accountId": a, "ids": []}, using=[CORE])
    assert (name, error["type"]) == ("error", "unknownMethod")


def test_another_users_account_is_not_found(alice, bob):
    """Not forbidden: the account's existence is not revealed."""
    name, error = one(alice, "Mailbox/get", {"accountId": bob.account_id, "ids": []})
    assert (name, error["type"]) == ("error", "accountNotFound")


def test_created_ids_are_returned_only_when_sent_and_carry_new_creations(alice):
    a = alice.account_id
    create = ["Mailbox/set", {"accountId": a, "create": {"new": {"name": "New"}}}, "0"]
    plain = alice.request([create])
    assert "createdIds" not in plain
    body = alice.request(
        [
            ["Mailbox/set", {"accountId": a, "create": {"n2": {"name": "N2", "parentId": "#given"}}}, "0"],
        ],
        createdIds={"given": plain["methodResponses"][0][1]["created"]["new"]["id"]},
    )
    n2 = body["methodResponses"][0][1]["created"]["n2"]["id"]
    assert body["createdIds"] == {"given": plain["methodResponses"][0][1]["created"]["new"]["id"], "n2": n2}


# --- §3.7 result references ----------------------------------------------------------------------------------------


def test_rfc_3_7_example_chains_four_calls_with_result_references(alice, services):
    services.mailboxes.deliver("alice@example.org", message("Hello", "m1@example.org"))
    reply = message("Re: Hello", "m2@example.org").replace(
        b"Message-ID", b"In-Reply-To: <m1@example.org>\r\nMessage-ID"
    )
    services.mailboxes.deliver("alice@example.org", reply)
    a = alice.account_id
    responses = alice.responses(
        [
            [
                "Email/query",
                {
                    "accountId": a,
                    "filter": {"inMailbox": roles(services, a)["inbox"]},
                    "sort": [{"property": "receivedAt", "isAscending": False}],
                    "collapseThreads": True,
                    "position": 0,
                    "limit": 10,
                    "calculateTotal": True,
                },
                "t0",
            ],
            [
                "Email/get",
                {
                    "accountId": a,
                    "#ids": {"resultOf": "t0", "name": "Email/query", "path": "/ids"},
                    "properties": ["threadId"],
                },
                "t1",
            ],
            [
                "Thread/get",
                {"accountId": a, "#ids": {"resultOf": "t1", "name": "Email/get", "path": "/list/*/threadId"}},
                "t2",
            ],
            [
                "Email/get",
                {
                    "accountId": a,
                    "#ids": {"resultOf": "t2", "name": "Thread/get", "path": "/list/*/emailIds"},
                    "properties": ["from", "receivedAt", "subject"],
                },
                "t3",
            ],
        ]
    )
    assert [r[0] for r in responses] == ["Email/query", "Email/get", "Thread/get", "Email/get"]
    assert responses[0][1]["total"] == 1 and len(responses[0][1]["ids"]) == 1  # one thread, collapsed
    (thread,) = responses[2][1]["list"]
    assert thread["id"] == responses[1][1]["list"][0]["threadId"] and len(thread["emailIds"]) == 2
    emails = responses[3][1]["list"]
    assert [e["id"] for e in emails] == thread["emailIds"]
    assert [e["subject"] for e in emails] == ["Hello", "Re: Hello"]
    assert set(emails[0]) == {"id", "from", "receivedAt", "subject"}


def test_result_reference_errors(alice):
    a = alice.account_id
    responses = alice.responses(
        [
            ["Mailbox/query", {"accountId": a}, "q"],
            [
                "Mailbox/get",
                {"accountId": a, "#ids": {"resultOf": "nope", "name": "Mailbox/query", "path": "/ids"}},
                "1",
            ],
            ["Mailbox/get", {"accountId": a, "#ids": {"resultOf": "q", "name": "Mailbox/get", "path": "/ids"}}, "2"],
            ["Mailbox/get", {"accountId": a, "#ids": {"resultOf": "q", "name": "Mailbox/query", "path": "/nope"}}, "3"],
            ["Mailbox/get", {"accountId": a, "#ids": {"resultOf": "later", "name": "Core/echo", "path": ""}}, "4"],
            [
                "Mailbox/get",
                {"accountId": a, "ids": [], "#ids": {"resultOf": "q", "name": "Mailbox/query", "path": "/ids"}},
                "5",
            ],
            ["Core/echo", {}, "later"],
            ["Mailbox/get", {"accountId": a, "#ids": {"resultOf": "q", "name": "Mailbox/query", "path": "/ids"}}, "6"],
        ]
    )
    kinds = [(r[0], r[1].get("type")) for r in responses]
    assert kinds[1:5] == [("error", "invalidResultReference")] * 4  # unknown id, wrong name, bad path, no look-ahead
    assert kinds[5] == ("error", "invalidArguments")  # both ids and #ids
    assert kinds[7] == ("Mailbox/get", None) and len(responses[7][1]["list"]) == len(responses[0][1]["ids"])


# --- §4 Core/echo ---------------------------------------------------------------------------------------------------


def test_rfc_4_1_core_echo_example(alice):
    r = post(alice, {"using": [CORE], "methodCalls": [["Core/echo", {"hello": True, "high": 5}, "b3ff"]]})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    assert r.get_json()["methodResponses"] == [["Core/echo", {"hello": True, "high": 5}, "b3ff"]]
    assert r.headers["Content-Language"] == "en"  # §3.8: the language of descriptions and details


# --- §6 binary data ---------------------------------------------------------------------------------------------------


def test_upload_and_download(alice, bob):
    r = alice.client.post(
        f"/jmap/upload/{alice.account_id}/",
        data=b"hello world",
        headers={**alice.headers, "Content-Type": "text/plain"},
    )
    assert r.status_code == 201
    uploaded = r.get_json()
    assert set(uploaded) == {"accountId", "blobId", "type", "size"}
    assert (uploaded["accountId"], uploaded["type"], uploaded["size"]) == (alice.account_id, "text/plain", 11)
    blob = uploaded["blobId"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,255}", blob)

    url = f"/jmap/download/{alice.account_id}/{blob}/hello.txt?type=application/x-custom"
    got = alice.client.get(url, headers=alice.headers)
    assert got.status_code == 200 and got.data == b"hello world"
    assert got.headers["Content-Type"] == "application/x-custom"  # exactly the type parameter
    assert "hello.txt" in got.headers["Content-Disposition"]
    assert alice.client.get(f"/jmap/download/{alice.account_id}/Gnope/x", headers=alice.headers).status_code == 404
    # Another user cannot read it, through her account or his own.
    assert bob.client.get(url, headers=bob.headers).status_code == 404
    assert bob.client.get(f"/jmap/download/{bob.account_id}/{blob}/x", headers=bob.headers).status_code == 404


def test_blob_copy(alice, bob, services):
    services.accounts.delegate("bob@example.org", "alice@example.org")
    # An upload into bob's (shared) account, readable by its uploader only until something references it.
    r = alice.client.post(f"/jmap/upload/{bob.account_id}/", data=b"bob's", headers=alice.headers)
    blob = r.get_json()["blobId"]
    assert bob.client.get(f"/jmap/download/{bob.account_id}/{blob}/f", headers=bob.headers).status_code == 404
    same = alice.error("Blob/copy", {"fromAccountId": alice.account_id, "blobIds": [blob]})
    assert same["type"] == "invalidArguments"
    result = alice.call("Blob/copy", {"fromAccountId": bob.account_id, "blobIds": [blob, "Gmissing"]})
    assert set(result) == {"fromAccountId", "accountId", "copied", "notCopied"}
    assert result["fromAccountId"] == bob.account_id and result["accountId"] == alice.account_id
    assert list(result["copied"]) == [blob] and result["notCopied"]["Gmissing"]["type"] == "notFound"
    got = alice.client.get(f"/jmap/download/{alice.account_id}/{result['copied'][blob]}/f", headers=alice.headers)
    assert got.data == b"bob's"
    assert alice.error("Blob/copy", {"fromAccountId": "nope", "blobIds": []})["type"] == "fromAccountNotFound"
    unknown = alice.error("Blob/copy", {"fromAccountId": bob.account_id, "blobIds": [], "bogus": 1})
    assert unknown["type"] == "invalidArguments"


# --- §7.2 PushSubscription --------------------------------------------------------------------------------------------


@pytest.fixture
def receiver():
    r = PushReceiver()
    yield r
    r.stop()


def push(client: JmapClient, method: str, args: dict) -> tuple[str, dict]:
    return one(client, method, args, using=[CORE])


def test_rfc_7_2_3_push_subscription_example_flow(alice, receiver):
    name, listed = push(alice, "PushSubscription/get", {"ids": None})
    assert name == "PushSubscription/get" and listed == {"list": [], "notFound": []}  # no accountId, no state

    name, result = push(
        alice,
        "PushSubscription/set",
        {"create": {"4f29": {"deviceClientId": "a889-ffea-910", "url": receiver.url(), "types": None}}},
    )
    assert name == "PushSubscription/set"
    assert set(result) == {"created", "updated", "destroyed", "notCreated", "notUpdated", "notDestroyed"}
    created = result["created"]["4f29"]
    assert created["keys"] is None and UTC_DATE.fullmatch(created["expires"])
    (request,) = receiver.wait("/push")
    verification = request.json()
    assert verification["@type"] == "PushVerification" and verification["pushSubscriptionId"] == created["id"]

    name, got = push(alice, "PushSubscription/get", {"ids": None})
    (sub,) = got["list"]
    assert set(sub) == {"id", "deviceClientId", "verificationCode", "expires", "types"}  # never url, keys
    assert sub["types"] is None and sub["verificationCode"] is None

    name, wrong = push(alice, "PushSubscription/set", {"update": {sub["id"]: {"verificationCode": "guess"}}})
    assert wrong["notUpdated"][sub["id"]]["type"] == "invalidProperties"
    code = verification["verificationCode"]
    name, right = push(alice, "PushSubscription/set", {"update": {sub["id"]: {"verificationCode": code}}})
    assert right["updated"] == {sub["id"]: None}
    far = "2099-08-13T00:00:00Z"
    name, extended = push(alice, "PushSubscription/set", {"update": {sub["id"]: {"expires": far}}})
    capped = extended["updated"][sub["id"]]["expires"]  # the server limits the expiry and says so
    assert parse_utc_date(capped) < parse_utc_date(far)
    name, forbidden = push(alice, "PushSubscription/get", {"ids": None, "properties": ["url"]})
    assert (name, forbidden["type"]) == ("error", "forbidden")
    name, destroyed = push(alice, "PushSubscription/set", {"destroy": [sub["id"]]})
    assert destroyed["destroyed"] == [sub["id"]]
    assert push(alice, "PushSubscription/get", {"ids": None})[1]["list"] == []


def test_using_all_capabilities_is_accepted(alice):
    assert alice.request([["Core/echo", {}, "0"]], using=ALL)["methodResponses"][0][0] == "Core/echo"

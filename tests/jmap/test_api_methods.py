"""POST /jmap/api: method-level behaviour (RFC 8620 §3.6.2, §3.7, §5.3 creation ids, §4 Core/echo).

Test-only methods are registered under a test capability for each test and removed afterwards.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging

import pytest

from jmapmono.jmap import registry
from jmapmono.jmap.errors import MethodError
from jmapmono.jmap.registry import CORE
from jmapmono.store import StoreError

TEST_CAP = "urn:jmapmono:test:things"
PASSWORD = "correct horse battery"
USING = [CORE, TEST_CAP]


def basic(email: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{email}:{PASSWORD}".encode()).decode()}


class Api:
    """Posts method calls as one user and returns the methodResponses."""

    def __init__(self, client, email: str) -> None:
        self.client, self.headers = client, basic(email)

    def request(self, calls: list, using: list[str] = USING, **extra) -> dict:
        body = json.dumps({"using": using, "methodCalls": calls, **extra})
        r = self.client.post("/jmap/api", data=body, headers=self.headers, content_type="application/json")
        assert r.status_code == 200, r.get_data(as_text=True)
        return r.get_json()

    def calls(self, calls: list, using: list[str] = USING, **extra) -> list:
        return self.request(calls, using, **extra)["methodResponses"]


def errors(responses: list) -> list:
    return [(r[1]["type"] if r[0] == "error" else r[0], r[2]) for r in responses]


@pytest.fixture
def things():
    """Register the test capability and its methods; restore the registry afterwards."""
    registry.load_all()  # snapshot the real registrations, not an empty registry
    methods, capabilities = dict(registry.METHODS), dict(registry.CAPABILITIES)
    state = {"unsupported": set(), "next": 0}

    registry.capability(TEST_CAP, lambda s: {"testing": True}, lambda s, a: None if a in state["unsupported"] else {})

    @registry.method("Thing/get", TEST_CAP)
    def get(inv):
        return {"accountId": inv.account_id, "ids": [inv.resolve_id(i) for i in inv.args.get("ids") or []]}

    @registry.method("Thing/create", TEST_CAP, writes=True)
    def create(inv):
        created = {}
        for cid in inv.args.get("create", {}):
            state["next"] += 1
            inv.created_ids[cid] = created_id = f"T{state['next']}"
            created[cid] = {"id": created_id}
        return {"accountId": inv.account_id, "created": created}

    @registry.method("Thing/fail", TEST_CAP, needs_account=False)
    def fail(inv):
        raise RuntimeError("secret-internal-detail")

    @registry.method("Thing/notDict", TEST_CAP, needs_account=False)
    def not_dict(inv):
        return ["not", "a", "dict"]

    @registry.method("Thing/unencodable", TEST_CAP, needs_account=False)
    def unencodable(inv):
        return {"value": object()}

    @registry.method("Thing/unavailable", TEST_CAP, needs_account=False)
    def unavailable(inv):
        raise StoreError("postgres: connection refused")

    @registry.method("Thing/refuse", TEST_CAP, needs_account=False)
    def refuse(inv):
        raise MethodError("cannotCalculateChanges", "too old", extra=1)

    @registry.method("Thing/implicit", TEST_CAP, needs_account=False)
    def implicit(inv):
        inv.extra_responses.append(("Thing/sideEffect", {"done": [1, 2]}, inv.call_id))
        return {"main": True}

    @registry.method("Thing/args", TEST_CAP, needs_account=False)
    def args(inv):
        return {"received": inv.args}

    yield state
    registry.METHODS.clear()
    registry.METHODS.update(methods)
    registry.CAPABILITIES.clear()
    registry.CAPABILITIES.update(capabilities)


@pytest.fixture
def alice(services):
    return services.accounts.create_user("alice@example.org", PASSWORD)[0]


@pytest.fixture
def users(services, alice):
    """Alice and Bob (only the tests that need a second account pay for creating it)."""
    return alice, services.accounts.create_user("bob@example.org", PASSWORD)[0]


@pytest.fixture
def as_alice(client, alice):
    return Api(client, alice.email)


# --- Core/echo and unknownMethod -----------------------------------------------------------------------------------


def test_core_echo_returns_its_arguments_unchanged(as_alice):
    args = {"hello": True, "high": 5, "none": None, "list": [1, {"a": "é"}], "accountId": "whatever"}
    assert as_alice.calls([["Core/echo", args, "b3ff"], ["Core/echo", {}, "e"]], using=[CORE]) == [
        ["Core/echo", args, "b3ff"],
        ["Core/echo", {}, "e"],
    ]


def test_unknown_method_and_method_outside_using(as_alice, alice, things):
    account = alice.account_id
    responses = as_alice.calls(
        [
            ["Nope/get", {"accountId": account}, "a"],
            ["Thing/get", {"accountId": account}, "b"],  # its capability is not in using
            ["Core/echo", {"ok": 1}, "c"],
        ],
        using=[CORE],
    )
    assert errors(responses) == [("unknownMethod", "a"), ("unknownMethod", "b"), ("Core/echo", "c")]


# --- account checks ------------------------------------------------------------------------------------------------


def test_missing_or_ill_typed_account_id_is_invalid_arguments(as_alice, things):
    responses = as_alice.calls(
        [["Thing/get", {}, "a"], ["Thing/get", {"accountId": 7}, "b"], ["Thing/get", {"accountId": None}, "c"]]
    )
    assert errors(responses) == [("invalidArguments", "a"), ("invalidArguments", "b"), ("invalidArguments", "c")]
    assert "accountId" in responses[0][1]["description"]


def test_account_not_found_unless_delegated(services, client, as_alice, users, things):
    alice, bob = users
    calls = [["Thing/get", {"accountId": bob.account_id}, "a"], ["Thing/get", {"accountId": "aNoSuchAccount"}, "b"]]
    assert errors(as_alice.calls(calls)) == [("accountNotFound", "a"), ("accountNotFound", "b")]
    services.accounts.delegate(bob.email, alice.email)
    assert errors(as_alice.calls(calls)) == [("Thing/get", "a"), ("accountNotFound", "b")]
    services.accounts.undelegate(bob.email, alice.email)
    assert errors(as_alice.calls(calls)) == [("accountNotFound", "a"), ("accountNotFound", "b")]


def test_account_not_supported_by_method(services, as_alice, users, things):
    alice, bob = users
    services.accounts.delegate(bob.email, alice.email)
    things["unsupported"].add(bob.account_id)
    responses = as_alice.calls(
        [["Thing/get", {"accountId": bob.account_id}, "a"], ["Thing/get", {"accountId": alice.account_id}, "b"]]
    )
    assert errors(responses) == [("accountNotSupportedByMethod", "a"), ("Thing/get", "b")]


def test_core_methods_work_with_any_visible_account(as_alice, alice, things):
    methods = dict(registry.METHODS)
    registry.method("Thing/coreGet", CORE)(lambda inv: {"accountId": inv.account_id})
    try:
        responses = as_alice.calls([["Thing/coreGet", {"accountId": alice.account_id}, "a"]], using=[CORE])
    finally:
        registry.METHODS.clear()
        registry.METHODS.update(methods)
    assert responses == [["Thing/coreGet", {"accountId": alice.account_id}, "a"]]


def test_account_read_only_refuses_writes_only(services, monkeypatch, as_alice, users, things):
    alice, bob = users
    services.accounts.delegate(bob.email, alice.email)
    real = services.accounts.accessible_accounts

    def read_only_delegations(user_id):
        return {k: v if v.is_personal else dataclasses.replace(v, is_read_only=True) for k, v in real(user_id).items()}

    monkeypatch.setattr(services.accounts, "accessible_accounts", read_only_delegations)
    responses = as_alice.calls(
        [
            ["Thing/create", {"accountId": bob.account_id, "create": {"k": {}}}, "a"],
            ["Thing/get", {"accountId": bob.account_id}, "b"],
            ["Thing/create", {"accountId": alice.account_id, "create": {"k": {}}}, "c"],
        ]
    )
    assert errors(responses) == [("accountReadOnly", "a"), ("Thing/get", "b"), ("Thing/create", "c")]


def test_forbidden_from_a_call_policy(services, as_alice, alice, things):
    def no_creating(inv, spec):
        if spec.writes:
            raise MethodError("forbidden", "creating is not allowed here")

    services.call_policies.append(no_creating)
    try:
        account = alice.account_id
        responses = as_alice.calls(
            [
                ["Thing/create", {"accountId": account, "create": {"k": {}}}, "a"],
                ["Thing/get", {"accountId": account}, "b"],
            ]
        )
    finally:
        services.call_policies.remove(no_creating)
    assert errors(responses) == [("forbidden", "a"), ("Thing/get", "b")]


# --- failures inside handlers --------------------------------------------------------------------------------------


def test_handler_failures_become_server_fail_and_processing_continues(as_alice, things, caplog):
    caplog.set_level(logging.INFO, logger="jmapmono.api")
    responses = as_alice.calls(
        [
            ["Thing/fail", {}, "a"],
            ["Thing/notDict", {}, "b"],
            ["Thing/unavailable", {}, "c"],
            ["Thing/refuse", {}, "d"],
            ["Thing/unencodable", {}, "e"],
            ["Core/echo", {"still": "here"}, "f"],
        ]
    )
    assert errors(responses) == [
        ("serverFail", "a"),
        ("serverFail", "b"),
        ("serverUnavailable", "c"),
        ("cannotCalculateChanges", "d"),
        ("serverFail", "e"),
        ("Core/echo", "f"),
    ]
    assert responses[3][1] == {"type": "cannotCalculateChanges", "description": "too old", "extra": 1}
    assert responses[5][1] == {"still": "here"}
    text = json.dumps(responses)
    assert "secret-internal-detail" not in text and "Traceback" not in text and "connection refused" not in text
    failures = [r for r in caplog.records if r.getMessage().startswith("event=method_failed")]
    assert len(failures) == 2 and failures[0].exc_info is not None
    assert "secret-internal-detail" in str(failures[0].exc_info[1])
    assert failures[0].getMessage().split("ref=")[1] in responses[0][1]["description"]


# --- result references ---------------------------------------------------------------------------------------------


def test_result_reference_simple_example(as_alice, things):
    responses = as_alice.calls(
        [
            ["Thing/args", {"created": ["f1", "f4"], "nested": {"a/b": {"~k": 3}}}, "t0"],
            ["Thing/args", {"#ids": {"resultOf": "t0", "name": "Thing/args", "path": "/received/created"}}, "t1"],
            ["Thing/args", {"#v": {"resultOf": "t0", "name": "Thing/args", "path": "/received/nested/a~1b/~0k"}}, "t2"],
            ["Thing/args", {"#first": {"resultOf": "t0", "name": "Thing/args", "path": "/received/created/1"}}, "t3"],
            ["Thing/args", {"#all": {"resultOf": "t0", "name": "Thing/args", "path": ""}}, "t4"],
        ]
    )
    assert responses[1][1] == {"received": {"ids": ["f1", "f4"]}}
    assert responses[2][1] == {"received": {"v": 3}}
    assert responses[3][1] == {"received": {"first": "f4"}}
    assert responses[4][1]["received"]["all"] == responses[0][1]


def test_result_reference_rfc_example_with_star(as_alice, alice, things):
    """RFC 8620 §3.7's second example, with canned mail data."""
    query_ids = ["msg1023", "msg223", "msg110"]
    thread_of = {"msg1023": "trd194", "msg223": "trd114", "msg110": "trd194"}
    emails_of = {"trd194": ["msg1020", "msg1021", "msg1023"], "trd114": ["msg201", "msg223"]}

    def email_query(inv):
        return {"accountId": inv.account_id, "queryState": "abcdefg", "position": 0, "total": 101, "ids": query_ids}

    def email_get(inv):
        found = [{"id": i, "threadId": thread_of[i]} for i in inv.args["ids"] if i in thread_of]
        return {"accountId": inv.account_id, "state": "123456", "list": found, "notFound": [], "args": inv.args}

    def thread_get(inv):
        found = [{"id": t, "emailIds": emails_of[t]} for t in inv.args["ids"]]
        return {"accountId": inv.account_id, "state": "123456", "list": found, "notFound": [], "args": inv.args}

    registry.method("Email/query", TEST_CAP)(email_query)
    registry.method("Email/get", TEST_CAP)(email_get)
    registry.method("Thread/get", TEST_CAP)(thread_get)
    a = alice.account_id
    responses = as_alice.calls(
        [
            ["Email/query", {"accountId": a, "filter": {"inMailbox": "id_of_inbox"}, "limit": 10}, "t0"],
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
    assert responses[1][1]["args"]["ids"] == query_ids
    assert responses[2][1]["args"]["ids"] == ["trd194", "trd114", "trd194"]
    assert responses[3][1]["args"] == {
        "accountId": a,
        "ids": ["msg1020", "msg1021", "msg1023", "msg201", "msg223", "msg1020", "msg1021", "msg1023"],
        "properties": ["from", "receivedAt", "subject"],
    }


def test_star_maps_objects_and_flattens_nested_arrays(as_alice, things):
    data = {"rows": [{"v": 1, "l": [1, 2]}, {"v": 2, "l": []}, {"v": 3, "l": [[4], 5]}], "grid": [[1, 2], [3]]}
    ref = lambda path: {"resultOf": "d", "name": "Thing/args", "path": "/received" + path}  # noqa: E731
    responses = as_alice.calls(
        [
            ["Thing/args", data, "d"],
            ["Thing/args", {"#x": ref("/rows/*/v")}, "a"],
            ["Thing/args", {"#x": ref("/rows/*/l")}, "b"],
            ["Thing/args", {"#x": ref("/grid/*")}, "c"],
            ["Thing/args", {"#x": ref("/rows/*/missing")}, "e"],
        ]
    )
    assert [r[1].get("received", {}).get("x") for r in responses[1:4]] == [[1, 2, 3], [1, 2, [4], 5], [1, 2, 3]]
    assert errors(responses[4:]) == [("invalidResultReference", "e")]


def test_failed_result_references(as_alice, things):
    good = {"resultOf": "t0", "name": "Thing/args", "path": "/received/x"}
    responses = as_alice.calls(
        [
            ["Thing/args", {"x": [10, 20]}, "t0"],
            ["Thing/fail", {}, "t9"],
            ["Thing/args", {"#v": {**good, "resultOf": "nope"}}, "a"],
            ["Thing/args", {"#v": {**good, "name": "Thing/other"}}, "b"],
            ["Thing/args", {"#v": {**good, "path": "/received/y"}}, "c"],
            ["Thing/args", {"#v": {**good, "path": "/received/x/2"}}, "d"],
            ["Thing/args", {"#v": {**good, "path": "/received/x/01"}}, "e"],
            ["Thing/args", {"#v": {**good, "path": "received/x"}}, "f"],
            ["Thing/args", {"#v": {**good, "path": "/received/x/0/deeper"}}, "g"],
            ["Thing/args", {"#v": {"resultOf": "t0", "name": "Thing/args"}}, "h"],
            ["Thing/args", {"#v": "t0"}, "i"],
            ["Thing/args", {"#v": {**good, "resultOf": "t9", "name": "Thing/fail"}}, "j"],
            ["Thing/args", {"#v": {**good, "resultOf": "m"}}, "k"],  # a later call
            ["Thing/args", {"v": 1, "#v": good}, "l"],
            ["Thing/args", {"#v": {**good, "path": "/received/x/1"}}, "m"],
        ]
    )
    assert errors(responses[2:]) == [
        ("invalidResultReference", "a"),
        ("invalidResultReference", "b"),
        ("invalidResultReference", "c"),
        ("invalidResultReference", "d"),
        ("invalidResultReference", "e"),
        ("invalidResultReference", "f"),
        ("invalidResultReference", "g"),
        ("invalidResultReference", "h"),
        ("invalidResultReference", "i"),
        ("invalidResultReference", "j"),
        ("invalidResultReference", "k"),
        ("invalidArguments", "l"),
        ("Thing/args", "m"),
    ]
    assert responses[-1][1] == {"received": {"v": 20}}


def test_references_reach_implicit_responses_by_name(as_alice, things):
    responses = as_alice.calls(
        [
            ["Thing/implicit", {}, "s"],
            ["Thing/args", {"#v": {"resultOf": "s", "name": "Thing/sideEffect", "path": "/done"}}, "a"],
            ["Thing/args", {"#v": {"resultOf": "s", "name": "Thing/implicit", "path": "/main"}}, "b"],
        ]
    )
    assert responses[:2] == [["Thing/implicit", {"main": True}, "s"], ["Thing/sideEffect", {"done": [1, 2]}, "s"]]
    assert responses[2][1] == {"received": {"v": [1, 2]}}
    assert responses[3][1] == {"received": {"v": True}}


def test_resolved_values_are_copies(as_alice, things):
    responses = as_alice.calls(
        [
            ["Thing/args", {"x": {"k": [1]}}, "t0"],
            ["Thing/args", {"#x": {"resultOf": "t0", "name": "Thing/args", "path": "/received/x"}}, "t1"],
        ]
    )
    assert responses[0][1] is not responses[1][1]["received"]["x"]
    assert responses[0][1] == {"received": {"x": {"k": [1]}}}


def test_account_id_may_be_a_result_reference(as_alice, alice, things):
    a = alice.account_id
    responses = as_alice.calls(
        [
            ["Thing/get", {"accountId": a}, "t0"],
            ["Thing/get", {"#accountId": {"resultOf": "t0", "name": "Thing/get", "path": "/accountId"}}, "t1"],
        ]
    )
    assert errors(responses) == [("Thing/get", "t0"), ("Thing/get", "t1")]


# --- creation ids --------------------------------------------------------------------------------------------------


def test_creation_ids_flow_between_calls_and_round_trip(as_alice, alice, things):
    a = alice.account_id
    body = as_alice.request(
        [
            ["Thing/create", {"accountId": a, "create": {"k1": {}, "k2": {}}}, "c1"],
            ["Thing/get", {"accountId": a, "ids": ["#k2", "#seed", "plain"]}, "g1"],
            ["Thing/get", {"accountId": a, "ids": ["#unknown"]}, "g2"],
        ],
        createdIds={"seed": "S42"},
    )
    responses = body["methodResponses"]
    created = responses[0][1]["created"]
    assert responses[1][1]["ids"] == [created["k2"]["id"], "S42", "plain"]
    assert errors(responses[2:]) == [("invalidArguments", "g2")]
    assert body["createdIds"] == {"seed": "S42", "k1": created["k1"]["id"], "k2": created["k2"]["id"]}


def test_created_ids_absent_from_response_when_not_in_request(as_alice, alice, things):
    body = as_alice.request([["Thing/create", {"accountId": alice.account_id, "create": {"k1": {}}}, "c1"]])
    assert "createdIds" not in body
    assert body["methodResponses"][0][1]["created"]["k1"]["id"].startswith("T")

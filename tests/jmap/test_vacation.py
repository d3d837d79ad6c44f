"""VacationResponse/get and /set (RFC 8621 §8): the singleton, its rules and errors, the change log."""

import json

import pytest

DEFAULT = {
    "id": "singleton",
    "isEnabled": False,
    "fromDate": None,
    "toDate": None,
    "subject": None,
    "textBody": None,
    "htmlBody": None,
}
AWAY = {
    "isEnabled": True,
    "fromDate": "2024-07-01T00:00:00Z",
    "toDate": "2024-07-15T12:30:00.250Z",
    "subject": "Away until the 15th",
    "textBody": "I am on holiday.",
    "htmlBody": "<p>I am on <b>holiday</b>.</p>",
}


def vacation(client):
    return client.call("VacationResponse/get", ids=None)


def update(client, patch, **args):
    return client.call("VacationResponse/set", update={"singleton": patch}, **args)


def test_default_is_a_disabled_singleton(alice):
    got = vacation(alice)
    assert got["list"] == [DEFAULT] and got["notFound"] == []
    got = alice.call("VacationResponse/get", ids=["singleton", "other"], properties=["isEnabled"])
    assert got["list"] == [{"id": "singleton", "isEnabled": False}] and got["notFound"] == ["other"]
    assert alice.call("VacationResponse/get", ids=[])["list"] == []


def test_update_every_property(alice, services):
    before = vacation(alice)["state"]
    out = update(alice, AWAY)
    assert out["updated"] == {"singleton": None} and out["oldState"] == before != out["newState"]
    got = vacation(alice)
    assert got["list"] == [{"id": "singleton", **AWAY}] and got["state"] == out["newState"]
    with services.db.read() as tx:
        event = json.loads(tx.value("SELECT event FROM event_outbox ORDER BY id DESC LIMIT 1"))
    assert event["type"] == "StatesChanged" and event["states"] == {"VacationResponse": out["newState"]}
    assert event["changes"] == {"VacationResponse": {"created": [], "updated": ["singleton"], "destroyed": []}}
    out = update(alice, {"fromDate": None, "htmlBody": None, "isEnabled": False})
    assert vacation(alice)["list"] == [{**DEFAULT, **AWAY, "fromDate": None, "htmlBody": None, "isEnabled": False}]
    same = update(alice, {"subject": AWAY["subject"]})  # nothing changes: the state stays
    assert same["updated"] == {"singleton": None} and same["newState"] == same["oldState"] == out["newState"]


def test_create_and_destroy_are_refused_with_singleton(alice):
    state = vacation(alice)["state"]
    out = alice.call("VacationResponse/set", create={"v": {"isEnabled": True}}, destroy=["singleton"])
    assert out["notCreated"]["v"]["type"] == "singleton"
    assert out["notDestroyed"]["singleton"]["type"] == "singleton"
    assert out["created"] is None and out["destroyed"] is None and out["newState"] == state
    out = alice.call("VacationResponse/set", update={"other": {"isEnabled": True}})
    assert out["notUpdated"]["other"]["type"] == "notFound"
    assert vacation(alice)["list"] == [DEFAULT]


@pytest.mark.parametrize(
    "patch, props",
    [
        ({"isEnabled": "yes"}, ["isEnabled"]),
        ({"isEnabled": None}, ["isEnabled"]),
        ({"fromDate": "tomorrow"}, ["fromDate"]),
        ({"toDate": "2024-07-01T00:00:00+02:00"}, ["toDate"]),
        ({"toDate": "2024-07-01t00:00:00z"}, ["toDate"]),
        ({"subject": 5}, ["subject"]),
        ({"textBody": ["x"]}, ["textBody"]),
        ({"color": "red"}, ["color"]),
        ({"id": "other"}, ["id"]),
        ({"isEnabled": 1, "htmlBody": False}, ["isEnabled", "htmlBody"]),
    ],
)
def test_invalid_properties(alice, patch, props):
    state = vacation(alice)["state"]
    out = update(alice, patch)
    assert out["updated"] is None
    error = out["notUpdated"]["singleton"]
    assert error["type"] == "invalidProperties" and sorted(error["properties"]) == sorted(props)
    assert vacation(alice) == {**vacation(alice), "list": [DEFAULT], "state": state}


def test_if_in_state_and_changes_arguments(alice):
    state = vacation(alice)["state"]
    assert alice.error("VacationResponse/set", ifInState="nope", update={"singleton": {}})["type"] == "stateMismatch"
    out = update(alice, {"isEnabled": True}, ifInState=state)
    assert out["newState"] != state
    assert alice.error("VacationResponse/set", ifInState=state, update={})["type"] == "stateMismatch"
    assert alice.error("VacationResponse/get", ids=None, properties=["nope"])["type"] == "invalidArguments"
    assert alice.error("VacationResponse/set", onSuccess=1)["type"] == "invalidArguments"


def test_each_account_has_its_own(alice, bob):
    update(alice, {"isEnabled": True})
    assert vacation(bob)["list"] == [DEFAULT]

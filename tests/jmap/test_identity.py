"""Identity/get, /changes, /set (RFC 8621 §6): the default identity, CRUD, forbiddenFrom, the change log."""

import json

import pytest

from tests.support.clock import one_millisecond

FULL = {
    "name": "Alice B",
    "email": "alice@example.org",
    "replyTo": [{"name": "Alice", "email": "alice@example.org"}],
    "bcc": [{"name": None, "email": "alice+archive@example.org"}],
    "textSignature": "-- \nAlice\nMaster of Email",
    "htmlSignature": "<div><b>Alice</b></div>",
}


def identities(client, **args):
    return client.call("Identity/get", {"ids": None, **args})


def create(client, obj, cid="i1"):
    return client.call("Identity/set", {"create": {cid: obj}})


def outbox_events(services):
    with services.db.read() as tx:
        return [json.loads(r["event"]) for r in tx.query("SELECT event FROM event_outbox ORDER BY id")]


def test_every_account_has_a_default_identity_for_its_address(alice):
    got = identities(alice)
    assert got["state"] != "0"
    assert got["notFound"] == []
    [default] = got["list"]
    assert default == {
        "id": default["id"],
        "name": "",
        "email": "alice@example.org",
        "replyTo": None,
        "bcc": None,
        "textSignature": "",
        "htmlSignature": "",
        "mayDelete": False,
    }
    again = identities(alice)  # created once, not on every call
    assert again["list"] == [default] and again["state"] == got["state"]
    changes = alice.call("Identity/changes", sinceState="0")
    assert changes["created"] == [default["id"]] and changes["newState"] == got["state"]


def test_create_then_get_changes_and_push_event(alice, services):
    before = identities(alice)["state"]
    out = create(alice, FULL)
    assert out["oldState"] == before and out["newState"] != before
    created = out["created"]["i1"]
    assert set(created) == {"id", "mayDelete"} and created["mayDelete"] is True  # the rest is as sent
    got = alice.call("Identity/get", ids=[created["id"], "nope"])
    assert got["list"] == [{"id": created["id"], **FULL, "mayDelete": True}]
    assert got["notFound"] == ["nope"] and got["state"] == out["newState"]
    changes = alice.call("Identity/changes", sinceState=before)
    assert (changes["created"], changes["updated"], changes["destroyed"]) == ([created["id"]], [], [])
    assert changes["newState"] == out["newState"] and changes["hasMoreChanges"] is False
    event = outbox_events(services)[-1]
    assert event["type"] == "StatesChanged" and event["account_id"] == alice.account_id
    assert event["states"] == {"Identity": out["newState"]}
    assert event["changes"]["Identity"]["created"] == [created["id"]]
    # What push makes of it: a StateChange for the account with the new Identity state.
    from jmapmono.events.outbox_relay import to_event
    from jmapmono.push.change_listener import to_jmap

    push, keys = to_jmap(to_event(1, json.dumps(event)))
    assert keys == [alice.account_id]
    assert push.payload == {"accountId": alice.account_id, "changed": {"Identity": out["newState"]}, "at": event["at"]}


def test_defaults_are_reported_in_created(alice):
    created = create(alice, {"email": "alice@example.org"})["created"]["i1"]
    assert created == {
        "id": created["id"],
        "name": "",
        "replyTo": None,
        "bcc": None,
        "textSignature": "",
        "htmlSignature": "",
        "mayDelete": True,
    }


@pytest.mark.parametrize(
    "obj, error, props",
    [
        ({"email": "bob@example.org"}, "forbiddenFrom", ["email"]),
        ({"email": "*@example.org"}, "forbiddenFrom", ["email"]),
        ({"email": "ALICE@example.org.evil"}, "forbiddenFrom", ["email"]),
        ({"email": "not an address"}, "invalidProperties", ["email"]),
        ({"name": "no email"}, "invalidProperties", ["email"]),
        ({"email": "alice@example.org", "name": 5}, "invalidProperties", ["name"]),
        ({"email": "alice@example.org", "bcc": [{"email": "nope"}]}, "invalidProperties", ["bcc"]),
        ({"email": "alice@example.org", "replyTo": "alice@example.org"}, "invalidProperties", ["replyTo"]),
        ({"email": "alice@example.org", "textSignature": None}, "invalidProperties", ["textSignature"]),
        ({"email": "alice@example.org", "color": "red"}, "invalidProperties", ["color"]),
        ({"email": "alice@example.org", "id": "I1"}, "invalidProperties", ["id"]),
        ({"email": "alice@example.org", "mayDelete": False}, "invalidProperties", ["mayDelete"]),
    ],
)
def test_create_errors(alice, obj, error, props):
    state = identities(alice)["state"]
    out = create(alice, obj)
    assert out["created"] is None
    assert out["notCreated"]["i1"]["type"] == error
    assert out["notCreated"]["i1"].get("properties", props) == props
    assert out["newState"] == state == identities(alice)["state"]
    assert len(identities(alice)["list"]) == 1


def test_address_match_ignores_case(alice):
    out = create(alice, {"email": "Alice@Example.ORG"})
    assert out["created"], out


def test_update(alice):
    iid = create(alice, FULL)["created"]["i1"]["id"]
    state = identities(alice)["state"]
    out = alice.call(
        "Identity/set",
        update={iid: {"name": "A. B.", "bcc": None, "htmlSignature": None, "textSignature": "bye"}},
    )
    assert out["updated"] == {iid: None} and out["oldState"] == state and out["newState"] != state
    [got] = alice.call("Identity/get", ids=[iid])["list"]
    assert (got["name"], got["bcc"], got["htmlSignature"], got["textSignature"]) == ("A. B.", None, "", "bye")
    assert got["replyTo"] == FULL["replyTo"]
    changes = alice.call("Identity/changes", sinceState=state)
    assert (changes["created"], changes["updated"], changes["destroyed"]) == ([], [iid], [])
    same = alice.call("Identity/set", update={iid: {"name": "A. B."}})  # no change: no new state
    assert same["updated"] == {iid: None} and same["newState"] == out["newState"]


@pytest.mark.parametrize(
    "patch, props",
    [
        ({"email": "other@example.org"}, ["email"]),
        ({"mayDelete": False}, ["mayDelete"]),
        ({"id": "other"}, ["id"]),
        ({"name": ["x"]}, ["name"]),
        ({"replyTo": [{"name": "x"}]}, ["replyTo"]),
        ({"color": "red"}, ["color"]),
    ],
)
def test_update_errors(alice, patch, props):
    iid = create(alice, FULL)["created"]["i1"]["id"]
    out = alice.call("Identity/set", update={iid: patch})
    assert out["updated"] is None
    assert out["notUpdated"][iid]["type"] == "invalidProperties"
    assert out["notUpdated"][iid]["properties"] == props
    [got] = alice.call("Identity/get", ids=[iid])["list"]
    assert got == {"id": iid, **FULL, "mayDelete": True}


def test_update_same_email_is_allowed_and_unknown_id_not_found(alice):
    iid = create(alice, FULL)["created"]["i1"]["id"]
    out = alice.call("Identity/set", update={iid: {"email": "alice@example.org"}, "Inope": {"name": "x"}})
    assert out["updated"] == {iid: None}
    assert out["notUpdated"]["Inope"]["type"] == "notFound"


def test_destroy(alice):
    default = identities(alice)["list"][0]["id"]
    iid = create(alice, FULL)["created"]["i1"]["id"]
    state = identities(alice)["state"]
    out = alice.call("Identity/set", destroy=[iid, default, "Inope"])
    assert out["destroyed"] == [iid]
    assert out["notDestroyed"][default]["type"] == "forbidden"
    assert out["notDestroyed"]["Inope"]["type"] == "notFound"
    assert [i["id"] for i in identities(alice)["list"]] == [default]
    changes = alice.call("Identity/changes", sinceState=state)
    assert (changes["created"], changes["updated"], changes["destroyed"]) == ([], [], [iid])


def test_created_then_destroyed_within_the_window_is_not_reported(alice):
    state = identities(alice)["state"]
    iid = create(alice, FULL)["created"]["i1"]["id"]
    alice.call("Identity/set", destroy=[iid])
    changes = alice.call("Identity/changes", sinceState=state)
    assert (changes["created"], changes["updated"], changes["destroyed"]) == ([], [], [])


def test_creation_id_usable_later_in_the_request(alice):
    responses = alice.responses(
        [
            ["Identity/set", {"accountId": alice.account_id, "create": {"new": FULL}}, "a"],
            ["Identity/set", {"accountId": alice.account_id, "update": {"#new": {"name": "Renamed"}}}, "b"],
            ["Identity/get", {"accountId": alice.account_id, "ids": ["#new"], "properties": ["name"]}, "c"],
        ]
    )
    iid = responses[0][1]["created"]["new"]["id"]
    assert responses[1][1]["updated"] == {iid: None}
    assert responses[2][1]["list"] == [{"id": iid, "name": "Renamed"}]


def test_properties_and_arguments(alice):
    got = alice.call("Identity/get", ids=None, properties=["email"])
    assert got["list"] == [{"id": got["list"][0]["id"], "email": "alice@example.org"}]
    assert alice.error("Identity/get", ids=None, properties=["nope"])["type"] == "invalidArguments"
    assert alice.error("Identity/get", ids=None, color=1)["type"] == "invalidArguments"
    assert alice.error("Identity/set", ifInState="zz")["type"] == "stateMismatch"
    assert alice.error("Identity/changes", sinceState="zzzzzz")["type"] == "cannotCalculateChanges"
    assert alice.call("Identity/get", ids=[])["list"] == []


def test_delegate_sees_the_owners_identities_and_sends_only_as_the_owner(services, alice, bob):
    services.accounts.delegate("alice@example.org", "bob@example.org")
    got = bob.call("Identity/get", {"accountId": alice.account_id, "ids": None})
    assert [i["email"] for i in got["list"]] == ["alice@example.org"]
    out = bob.call("Identity/set", {"accountId": alice.account_id, "create": {"x": {"email": "bob@example.org"}}})
    assert out["notCreated"]["x"]["type"] == "forbiddenFrom"
    assert [i["email"] for i in identities(bob)["list"]] == ["bob@example.org"]  # bob's own account


def test_deleting_the_user_removes_its_sending_data(services, alice):
    iid = create(alice, FULL)["created"]["i1"]["id"]
    alice.call("VacationResponse/set", update={"singleton": {"isEnabled": True}})
    drafts = services.mailboxes.mailbox_by_role(alice.account_id, "drafts").id
    raw = b"From: alice@example.org\r\nTo: alice@example.org\r\nSubject: note to self\r\n\r\nhi\r\n"
    email_id = services.mailboxes.append(alice.account_id, raw, [drafts]).id
    sent = alice.call("EmailSubmission/set", create={"s": {"identityId": iid, "emailId": email_id}})
    assert sent["created"]["s"]["deliveryStatus"]["alice@example.org"]["delivered"] == "yes"  # local: no relay
    tables = ("identities", "vacation_responses", "email_submissions")

    def counts():
        with services.db.read() as tx:
            return [tx.value(f"SELECT COUNT(*) FROM {t} WHERE account_id = ?", (alice.account_id,)) for t in tables]

    assert counts() == [2, 1, 1]
    services.accounts.delete("alice@example.org")
    assert counts() == [0, 0, 0]


def test_identities_made_in_one_millisecond_are_listed_in_the_order_made(alice, monkeypatch):
    identities(alice)  # the default one exists before
    names = [f"Alias {i}" for i in range(6)]
    with one_millisecond(monkeypatch):
        made = alice.call(
            "Identity/set",
            {"create": {f"i{n}": {"name": name, "email": "alice@example.org"} for n, name in enumerate(names)}},
        )["created"]
    assert [i["name"] for i in identities(alice)["list"]] == ["", *names]  # the default first, then oldest first
    assert [i["id"] for i in identities(alice)["list"][1:]] == [made[f"i{n}"]["id"] for n in range(len(names))]

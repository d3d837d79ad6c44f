"""Mailbox/set over HTTP (RFC 8621 §2.5, RFC 8620 §5.3), on both backends: creation with server-set
properties and #creationId parents, every SetError (alreadyExists, mailboxHasChild, mailboxHasEmail,
notFound, invalidProperties incl. parent loops, forbidden) and stateMismatch, onDestroyRemoveEmails,
per-user isSubscribed, one event per call, and an exact change log after every call."""

from __future__ import annotations

import json

import pytest

from jmapmono.mailbox import counts

COUNTS = ["totalEmails", "unreadEmails", "totalThreads", "unreadThreads"]


def raw(subject: str, msgid: str) -> bytes:
    return f"From: bob@example.org\r\nSubject: {subject}\r\nMessage-ID: <{msgid}>\r\n\r\nhi\r\n".encode()


def boxes(client, account_id: str | None = None) -> dict[str, dict]:
    args = {"ids": None} if account_id is None else {"ids": None, "accountId": account_id}
    return {mb["name"]: mb for mb in client.call("Mailbox/get", args)["list"]}


def mset(client, **args) -> dict:
    return client.call("Mailbox/set", args)


def events(db) -> list[dict]:
    with db.read() as tx:
        return [json.loads(r["event"]) for r in tx.query("SELECT event FROM event_outbox ORDER BY id")]


def assert_exact_changes(client, r: dict, created=(), updated=(), destroyed=()) -> None:
    """Mailbox/changes from the call's oldState reports exactly these, and Mailbox/get's state is newState."""
    c = client.call("Mailbox/changes", {"sinceState": r["oldState"]})
    assert (sorted(c["created"]), sorted(c["updated"]), sorted(c["destroyed"])) == (
        sorted(created),
        sorted(updated),
        sorted(destroyed),
    )
    assert c["newState"] == r["newState"] == client.call("Mailbox/get", {"ids": []})["state"]


# --- create --------------------------------------------------------------------------------------------------------


def test_create_returns_server_set_and_default_properties(alice):
    r = mset(alice, create={"w": {"name": "Work"}})
    created = r["created"]["w"]
    assert set(created) == {"id", "parentId", "role", "sortOrder", *COUNTS, "myRights", "isSubscribed"}
    assert created["parentId"] is None and created["role"] is None and created["sortOrder"] == 0
    assert all(created[c] == 0 for c in COUNTS) and created["isSubscribed"] is True
    assert all(created["myRights"].values()) and len(created["myRights"]) == 9
    got = alice.call("Mailbox/get", {"ids": [created["id"]]})["list"][0]
    assert got == {**created, "name": "Work"}
    assert r["notCreated"] is None and r["updated"] is None and r["destroyed"] is None
    assert_exact_changes(alice, r, created=[created["id"]])


def test_a_child_may_name_a_parent_created_later_in_the_same_map(alice):
    acc = alice.account_id
    create = {
        "child": {"name": "Child", "parentId": "#parent", "sortOrder": 3},
        "parent": {"name": "Parent", "role": "Memos", "isSubscribed": False},
    }
    responses = alice.responses(
        [
            ["Mailbox/set", {"accountId": acc, "create": create}, "0"],
            ["Mailbox/get", {"accountId": acc, "ids": ["#child"], "properties": ["parentId"]}, "1"],
            ["Mailbox/set", {"accountId": acc, "create": {"g": {"name": "G", "parentId": "#child"}}}, "2"],
        ]
    )
    r, got, later = (response[1] for response in responses)
    parent, child = r["created"]["parent"], r["created"]["child"]
    assert child["parentId"] == parent["id"]  # sent as a reference: the server reports the id
    assert parent["role"] == "memos"  # normalised: reported back
    assert "isSubscribed" not in parent and child["isSubscribed"] is True  # sent vs defaulted
    assert got["list"] == [{"id": child["id"], "parentId": parent["id"]}]  # creation ids last the whole request
    assert later["created"]["g"]["parentId"] == child["id"]
    tree = boxes(alice)
    assert tree["Parent"]["isSubscribed"] is False and tree["Parent"]["role"] == "memos"
    assert tree["G"]["parentId"] == tree["Child"]["id"] and tree["Child"]["parentId"] == tree["Parent"]["id"]
    assert tree["Child"]["sortOrder"] == 3


def test_creation_reference_loops_and_unknown_references_are_invalid(alice):
    r = mset(
        alice,
        create={
            "a": {"name": "A", "parentId": "#b"},
            "b": {"name": "B", "parentId": "#a"},
            "self": {"name": "S", "parentId": "#self"},
            "lost": {"name": "L", "parentId": "#nowhere"},
            "orphan": {"name": "O", "parentId": "#bad"},
            "bad": {"name": ""},
        },
    )
    assert r["created"] is None
    for key in ("a", "b", "self", "lost", "orphan"):
        assert r["notCreated"][key]["type"] == "invalidProperties" and r["notCreated"][key]["properties"] == [
            "parentId"
        ], key
    assert r["notCreated"]["bad"]["properties"] == ["name"]
    assert r["newState"] == r["oldState"]


def test_sibling_names_are_unique_case_insensitively(alice):
    work = mset(alice, create={"w": {"name": "Work"}})["created"]["w"]["id"]
    r = mset(
        alice, create={"dup": {"name": "INBOX"}, "same": {"name": "work"}, "ok": {"name": "Inbox", "parentId": work}}
    )
    assert r["notCreated"]["dup"]["type"] == "alreadyExists"
    assert r["notCreated"]["same"]["type"] == "alreadyExists"
    assert "ok" in r["created"]
    clash = mset(alice, create={"x": {"name": "Fresh"}, "y": {"name": "fRESH"}})  # within one call too
    assert list(clash["created"]) == ["x"] and clash["notCreated"]["y"]["type"] == "alreadyExists"
    inner = r["created"]["ok"]["id"]
    moved = mset(alice, update={inner: {"parentId": None}})  # next to the top-level Inbox
    assert moved["notUpdated"][inner]["type"] == "alreadyExists"
    renamed = mset(alice, update={work: {"name": "TRASH"}})
    assert renamed["notUpdated"][work]["type"] == "alreadyExists"


@pytest.mark.parametrize(
    "obj, properties",
    [
        ({}, ["name"]),
        ({"name": ""}, ["name"]),
        ({"name": "   "}, ["name"]),
        ({"name": 5}, ["name"]),
        ({"name": "é" * 128}, ["name"]),  # 256 bytes of UTF-8
        ({"name": "bad\x07name"}, ["name"]),
        ({"name": "line\u2028break"}, ["name"]),
        ({"name": "R", "role": "favourites"}, ["role"]),
        ({"name": "R", "role": "inbox"}, ["role"]),  # the account has one
        ({"name": "R", "role": 3}, ["role"]),
        ({"name": "R", "sortOrder": -1}, ["sortOrder"]),
        ({"name": "R", "sortOrder": 2**31}, ["sortOrder"]),
        ({"name": "R", "sortOrder": True}, ["sortOrder"]),
        ({"name": "R", "isSubscribed": "yes"}, ["isSubscribed"]),
        ({"name": "R", "parentId": "Bnowhere"}, ["parentId"]),
        ({"name": "R", "parentId": "not an id"}, ["parentId"]),
        ({"name": "R", "totalEmails": 0}, ["totalEmails"]),
        ({"name": "R", "myRights": {}}, ["myRights"]),
        ({"name": "R", "id": "Bmine"}, ["id"]),
        ({"name": "R", "colour": "red"}, ["colour"]),
        ({"name": 1, "sortOrder": "x", "unreadThreads": 3}, ["name", "sortOrder", "unreadThreads"]),
    ],
)
def test_invalid_properties_on_create(alice, obj, properties):
    r = mset(alice, create={"c": obj})
    error = r["notCreated"]["c"]
    assert error["type"] == "invalidProperties" and sorted(error["properties"]) == properties
    assert r["created"] is None and r["newState"] == r["oldState"]


def test_name_limits_accept_the_largest_name_and_normalise_to_nfc(alice):
    r = mset(alice, create={"big": {"name": "é" * 127 + "x"}, "nfd": {"name": "Cafe\u0301"}})
    assert "name" not in r["created"]["big"]
    assert r["created"]["nfd"]["name"] == "Café"  # changed by the server: reported
    assert "Café" in boxes(alice)


def test_depth_is_limited_to_the_advertised_maximum(alice):
    parent, ids = None, []
    for depth in range(1, 11):
        r = mset(alice, create={"d": {"name": f"D{depth}", "parentId": parent}})
        parent = r["created"]["d"]["id"]
        ids.append(parent)
    too_deep = mset(alice, create={"d": {"name": "D11", "parentId": parent}})
    assert too_deep["notCreated"]["d"]["properties"] == ["parentId"]
    other = mset(alice, create={"o": {"name": "Other"}, "o2": {"name": "Sub", "parentId": "#o"}})["created"]
    moved = mset(alice, update={other["o"]["id"]: {"parentId": ids[8]}})  # its child would be at depth 11
    assert moved["notUpdated"][other["o"]["id"]]["properties"] == ["parentId"]
    assert mset(alice, update={other["o2"]["id"]: {"parentId": ids[8]}})["updated"] == {other["o2"]["id"]: None}


def test_a_delegate_creates_in_the_owners_account_subscribed_for_themselves(services, alice, bob):
    services.accounts.delegate("alice@example.org", "bob@example.org")
    r = bob.call("Mailbox/set", {"accountId": alice.account_id, "create": {"b": {"name": "Bob's"}}})
    assert r["created"]["b"]["isSubscribed"] is True
    assert boxes(bob, alice.account_id)["Bob's"]["isSubscribed"] is True
    assert boxes(alice)["Bob's"]["isSubscribed"] is False


# --- update --------------------------------------------------------------------------------------------------------


def test_rename_move_reorder_and_re_role(alice):
    made = mset(alice, create={"a": {"name": "A"}, "b": {"name": "B"}})["created"]
    a, b = made["a"]["id"], made["b"]["id"]
    junk = boxes(alice)["Junk"]["id"]
    r = mset(
        alice,
        update={
            a: {"name": "Renamed", "sortOrder": 7},
            b: {"parentId": a, "role": "FLAGGED"},
            junk: {"role": None, "name": "Spam"},
        },
    )
    assert r["updated"] == {a: None, b: {"role": "flagged"}, junk: None}
    now = boxes(alice)
    assert now["Renamed"]["sortOrder"] == 7 and now["B"]["parentId"] == a and now["B"]["role"] == "flagged"
    assert now["Spam"]["role"] is None
    assert_exact_changes(alice, r, updated=[a, b, junk])
    back = mset(alice, update={b: {"parentId": None, "sortOrder": None, "role": None}})
    assert back["updated"] == {b: {"sortOrder": 0}}  # null: the default, which the client may not know
    assert boxes(alice)["B"]["parentId"] is None and boxes(alice)["B"]["sortOrder"] == 0


def test_parent_loops_are_invalid(alice):
    made = mset(
        alice,
        create={
            "top": {"name": "Top"},
            "mid": {"name": "Mid", "parentId": "#top"},
            "leaf": {"name": "Leaf", "parentId": "#mid"},
        },
    )["created"]
    top, mid = made["top"]["id"], made["mid"]["id"]
    r = mset(alice, update={top: {"parentId": top}, mid: {"parentId": made["leaf"]["id"]}})
    assert r["notUpdated"][top]["properties"] == ["parentId"]
    assert r["notUpdated"][mid]["properties"] == ["parentId"]
    assert r["updated"] is None and r["newState"] == r["oldState"]
    cross = mset(alice, update={top: {"parentId": made["leaf"]["id"]}})
    assert cross["notUpdated"][top]["type"] == "invalidProperties"
    assert boxes(alice)["Top"]["parentId"] is None


def test_update_errors(alice):
    inbox = boxes(alice)["Inbox"]
    trash = boxes(alice)["Trash"]["id"]
    r = mset(
        alice,
        update={
            "Bnowhere": {"name": "X"},
            inbox["id"]: {"role": "archive"},
            trash: {"name": None},
        },
    )
    assert r["notUpdated"]["Bnowhere"]["type"] == "notFound"
    assert r["notUpdated"][inbox["id"]]["type"] == "forbidden"  # the Inbox keeps its role
    assert r["notUpdated"][trash]["properties"] == ["name"]
    cases = [
        ({"totalEmails": 5}, "invalidProperties", ["totalEmails"]),
        ({"myRights/mayDelete": False}, "invalidProperties", ["myRights"]),
        ({"id": "Bother"}, "invalidProperties", ["id"]),
        ({"isSubscribed": None}, "invalidProperties", ["isSubscribed"]),
        ({"sortOrder": "high"}, "invalidProperties", ["sortOrder"]),
        ({"colour": "red"}, "invalidProperties", ["colour"]),
        ({"parentId": "#nowhere"}, "invalidProperties", ["parentId"]),
        ({"role": "trash"}, "invalidProperties", ["role"]),  # Trash has it
        ({"name/first": "x"}, "invalidPatch", None),
        ({"myRights/nothing/deeper": True}, "invalidPatch", None),
    ]
    for patch, kind, properties in cases:
        error = mset(alice, update={boxes(alice)["Sent"]["id"]: patch})["notUpdated"]
        (e,) = error.values()
        assert e["type"] == kind, patch
        assert properties is None or e["properties"] == properties, patch
    same = mset(alice, update={inbox["id"]: {k: v for k, v in inbox.items()}})  # the whole object back
    assert same["updated"] == {inbox["id"]: None} and same["newState"] == same["oldState"]
    assert mset(alice, update={inbox["id"]: {"myRights/mayDelete": False}})["updated"] == {inbox["id"]: None}


def test_is_subscribed_is_per_user(services, alice, bob):
    services.accounts.delegate("alice@example.org", "bob@example.org")
    sent = boxes(alice)["Sent"]["id"]
    r = bob.call("Mailbox/set", {"accountId": alice.account_id, "update": {sent: {"isSubscribed": True}}})
    assert r["updated"] == {sent: None}
    assert boxes(bob, alice.account_id)["Sent"]["isSubscribed"] is True
    again = bob.call("Mailbox/set", {"accountId": alice.account_id, "update": {sent: {"isSubscribed": True}}})
    assert again["newState"] == again["oldState"]  # already subscribed: nothing changed
    mset(alice, update={sent: {"isSubscribed": False}})
    assert boxes(alice)["Sent"]["isSubscribed"] is False
    assert boxes(bob, alice.account_id)["Sent"]["isSubscribed"] is True


def test_update_and_destroy_may_name_a_creation_of_the_same_call(alice):
    r = mset(
        alice,
        create={"tmp": {"name": "Tmp"}, "keep": {"name": "Keep"}},
        update={"#keep": {"name": "Kept", "parentId": "#tmp"}},
        destroy=["#tmp"],
    )
    keep, tmp = r["created"]["keep"]["id"], r["created"]["tmp"]["id"]
    assert r["updated"] == {keep: {"parentId": tmp}}
    assert r["notUpdated"] is None and r["destroyed"] is None
    assert list(r["notDestroyed"]) == [tmp] and r["notDestroyed"][tmp]["type"] == "mailboxHasChild"
    assert boxes(alice)["Kept"]["parentId"] == tmp


def test_unknown_creation_references_in_update_are_refused(alice):
    assert alice.error("Mailbox/set", {"update": {"#missing": {"name": "X"}}})["type"] == "invalidArguments"


# --- destroy -------------------------------------------------------------------------------------------------------


@pytest.fixture
def filled(services, alice) -> dict:
    """Folder 'Box' holding m1 (only there) and m2 (also in the Inbox); 'Parent'/'Kid' with m3 in Parent."""
    made = mset(
        alice,
        create={"box": {"name": "Box"}, "parent": {"name": "Parent"}, "kid": {"name": "Kid", "parentId": "#parent"}},
    )
    ids = {k: v["id"] for k, v in made["created"].items()}
    mgr, acc = services.mailboxes, alice.account_id
    inbox = boxes(alice)["Inbox"]["id"]
    ids["m1"] = mgr.append(acc, raw("one", "1@x"), [ids["box"]]).id
    ids["m2"] = mgr.append(acc, raw("two", "2@x"), [ids["box"], inbox]).id
    ids["m3"] = mgr.append(acc, raw("three", "3@x"), [ids["parent"]]).id
    ids["inbox"] = inbox
    return ids


def test_destroy_with_emails_needs_on_destroy_remove_emails(services, alice, filled):
    r = mset(alice, destroy=[filled["box"]])
    assert r["notDestroyed"][filled["box"]]["type"] == "mailboxHasEmail" and r["destroyed"] is None
    assert r["newState"] == r["oldState"]
    mark = len(events(services.db))
    r = mset(alice, destroy=[filled["box"]], onDestroyRemoveEmails=True)
    assert r["destroyed"] == [filled["box"]]
    found, _ = services.mailboxes.get_messages(alice.account_id, [filled["m1"], filled["m2"]])
    assert set(found) == {filled["m2"]}  # m1 was only there: destroyed; m2 lives on in the Inbox
    assert found[filled["m2"]].mailbox_ids == {filled["inbox"]}
    inbox = boxes(alice)["Inbox"]
    with services.db.read() as tx:
        assert counts.recount(tx, inbox["id"]).to_json() == {c: inbox[c] for c in COUNTS}
    assert [e["type"] for e in events(services.db)[mark:]] == ["MailboxesChanged"]
    assert_exact_changes(alice, r, destroyed=[filled["box"]])  # the Inbox's counts did not move


def test_a_mailbox_with_children_is_never_destroyed_nor_emptied(services, alice, filled):
    for remove in (False, True):
        r = mset(alice, destroy=[filled["parent"]], onDestroyRemoveEmails=remove)
        assert r["notDestroyed"][filled["parent"]]["type"] == "mailboxHasChild"
        assert r["newState"] == r["oldState"]
    found, _ = services.mailboxes.get_messages(alice.account_id, [filled["m3"]])
    assert found[filled["m3"]].mailbox_ids == {filled["parent"]}  # its email was not touched
    assert boxes(alice)["Parent"]["totalEmails"] == 1


def test_destroying_a_parent_with_its_children_in_one_call_works(services, alice, filled):
    r = mset(alice, destroy=[filled["parent"], filled["kid"]], onDestroyRemoveEmails=True)
    assert sorted(r["destroyed"]) == sorted([filled["parent"], filled["kid"]]) and r["notDestroyed"] is None
    assert services.mailboxes.get_messages(alice.account_id, [filled["m3"]])[0] == {}


def test_destroy_errors_and_the_rfc_example(alice):
    """RFC 8621 §2.6: rename one mailbox and destroy another we may not destroy, with ifInState."""
    now = boxes(alice)
    state = alice.call("Mailbox/get", {"ids": []})["state"]
    r = mset(
        alice,
        ifInState=state,
        update={now["Archive"]["id"]: {"name": "Maybe important mail"}},
        destroy=[now["Inbox"]["id"], "Bnowhere"],
    )
    assert r["oldState"] == state and r["newState"] != state
    assert r["updated"] == {now["Archive"]["id"]: None}
    assert r["notDestroyed"][now["Inbox"]["id"]]["type"] == "forbidden"
    assert r["notDestroyed"]["Bnowhere"]["type"] == "notFound"
    assert_exact_changes(alice, r, updated=[now["Archive"]["id"]])


# --- the call as a whole -------------------------------------------------------------------------------------------


def test_if_in_state_mismatch_changes_nothing(services, alice):
    old = alice.call("Mailbox/get", {"ids": []})["state"]
    mset(alice, create={"x": {"name": "X"}})
    error = alice.error("Mailbox/set", {"ifInState": old, "create": {"y": {"name": "Y"}}, "destroy": ["Bnowhere"]})
    assert error["type"] == "stateMismatch"
    assert "Y" not in boxes(alice)


def test_one_event_per_call_and_exact_changes(services, alice, filled):
    trash = boxes(alice)["Trash"]["id"]
    mark = len(events(services.db))
    r = mset(
        alice,
        create={"n1": {"name": "N1"}, "n2": {"name": "N2", "parentId": "#n1"}, "bad": {"name": "Trash"}},
        update={trash: {"sortOrder": 99}, filled["kid"]: {"isSubscribed": False}},
        destroy=[filled["box"]],
        onDestroyRemoveEmails=True,
    )
    assert r["notCreated"]["bad"]["type"] == "alreadyExists"
    new = events(services.db)[mark:]
    assert [e["type"] for e in new] == ["MailboxesChanged"]
    assert {c["name"] for c in new[0]["created"]} == {"N1", "N2"}
    assert new[0]["states"]["Mailbox"] == r["newState"] and "Email" in new[0]["states"]
    created = [r["created"]["n1"]["id"], r["created"]["n2"]["id"]]
    assert_exact_changes(alice, r, created=created, updated=[trash, filled["kid"]], destroyed=[filled["box"]])


def test_call_level_errors(alice, services):
    assert alice.error("Mailbox/set", {"create": []})["type"] == "invalidArguments"
    assert alice.error("Mailbox/set", {"destroy": "all"})["type"] == "invalidArguments"
    assert alice.error("Mailbox/set", {"onDestroyRemoveEmails": "yes"})["type"] == "invalidArguments"
    assert alice.error("Mailbox/set", {"removeEmails": True})["type"] == "invalidArguments"
    limit = services.config.limits.max_objects_in_set
    too_many = {f"c{i}": {"name": f"n{i}"} for i in range(limit + 1)}
    assert alice.error("Mailbox/set", {"create": too_many})["type"] == "requestTooLarge"
    nothing = mset(alice)
    assert nothing["oldState"] == nothing["newState"] and nothing["created"] is None

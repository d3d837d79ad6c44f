"""Email/set update and destroy (RFC 8621 §4.6): keyword and mailbox patches, immutable properties, creation
ids, ifInState, and one event and one state change per call."""

from __future__ import annotations

import json

import pytest

from tests.support.emails import get, message, roles

# --- updates -------------------------------------------------------------------------------------------------------


@pytest.fixture
def mail(alice, services):
    """Three delivered emails in alice's inbox and her mailbox ids by role."""
    ids = [services.mailboxes.deliver("alice@example.org", message(f"m{i}", f"m{i}@x")).message_id for i in range(3)]
    return ids, roles(services, alice.account_id)


def test_keyword_patches(alice, mail):
    (m1, m2, _), _ = mail
    result = alice.call(
        "Email/set",
        {
            "update": {
                m1: {"keywords/$seen": True, "keywords/$Flagged": True},
                m2: {"keywords": {"$Answered": True, "custom": True}},
            }
        },
    )
    assert result["updated"] == {m1: None, m2: None}
    found = {e["id"]: e["keywords"] for e in get(alice, [m1, m2], ["keywords"])}
    assert found == {m1: {"$seen": True, "$flagged": True}, m2: {"$answered": True, "custom": True}}
    alice.call("Email/set", {"update": {m1: {"keywords/$seen": None, "keywords/unknown": None}}})
    assert get(alice, [m1], ["keywords"])[0]["keywords"] == {"$flagged": True}
    alice.call("Email/set", {"update": {m1: {"keywords": None}}})
    assert get(alice, [m1], ["keywords"])[0]["keywords"] == {}
    escaped = alice.call("Email/set", {"update": {m1: {"keywords/a~1b~0c": True}}})
    assert escaped["updated"] == {m1: None}
    assert get(alice, [m1], ["keywords"])[0]["keywords"] == {"a/b~c": True}


BAD_PATCHES = [
    ({"keywords/$seen": False}, "invalidProperties"),
    ({"keywords/a b": True}, "invalidProperties"),
    ({"keywords": {"$seen": "yes"}}, "invalidProperties"),
    ({"keywords": ["$seen"]}, "invalidProperties"),
    ({"keywords/$seen/x": True}, "invalidPatch"),
    ({"keywords": {}, "keywords/$seen": True}, "invalidPatch"),
    ({"mailboxIds/Mnope": True}, "invalidProperties"),
    ({"mailboxIds/#nope": True}, "invalidProperties"),
    ({"mailboxIds": {}}, "invalidProperties"),
    ({"mailboxIds": {"Mnope": True}}, "invalidProperties"),
    ({"subject": "changed"}, "invalidProperties"),
    ({"blobId": "Gother"}, "invalidProperties"),
    ({"bodyStructure/type": "text/html"}, "invalidProperties"),
    ({"header:Subject:asText": "changed"}, "invalidProperties"),
    ({"header:From:asDate": None}, "invalidProperties"),
    ({"whatever": 1}, "invalidProperties"),
]


def test_invalid_updates(alice, services):
    """Each bad patch is refused on its own (one call holds them all) and changes nothing."""
    from jmapmono.mailbox.model import NewMessage

    inbox = roles(services, alice.account_id)["inbox"]
    items = [NewMessage(message(f"u{i}", f"u{i}@x"), (inbox,)) for i in range(len(BAD_PATCHES))]
    created = services.mailboxes.append_many(alice.account_id, items).created
    ids = [created[i].id for i in range(len(BAD_PATCHES))]
    result = alice.call("Email/set", {"update": {i: patch for i, (patch, _) in zip(ids, BAD_PATCHES, strict=True)}})
    assert result["updated"] is None and result["oldState"] == result["newState"]
    for message_id, (patch, error) in zip(ids, BAD_PATCHES, strict=True):
        refusal = result["notUpdated"][message_id]
        assert refusal["type"] == error, (patch, refusal)
        if error == "invalidProperties":
            assert refusal["properties"], (patch, refusal)
    found = get(alice, ids, ["keywords", "mailboxIds"])
    assert all(e["keywords"] == {} and e["mailboxIds"] == {inbox: True} for e in found)


def test_immutable_properties_may_be_sent_unchanged(alice, mail):
    (m1, _, _), _ = mail
    (email,) = get(
        alice,
        [m1],
        [
            "id",
            "blobId",
            "threadId",
            "size",
            "receivedAt",
            "subject",
            "from",
            "preview",
            "header:Subject:asText",
            "textBody",
        ],
    )
    result = alice.call("Email/set", {"update": {m1: {**email, "keywords/$seen": True}}})
    assert result["updated"] == {m1: None}, result
    wrong = alice.call("Email/set", {"update": {m1: {**email, "size": email["size"] + 1, "subject": "no"}}})
    assert wrong["notUpdated"][m1]["type"] == "invalidProperties"
    assert sorted(wrong["notUpdated"][m1]["properties"]) == ["size", "subject"]


def test_mailbox_patches_and_moves(alice, mail):
    (m1, m2, m3), r = mail
    old = alice.call("Email/get", {"ids": []})["state"]
    result = alice.call(
        "Email/set",
        {
            "update": {
                m1: {f"mailboxIds/{r['archive']}": True, f"mailboxIds/{r['inbox']}": None},  # a move
                m2: {f"mailboxIds/{r['archive']}": True},  # now in two mailboxes
                m3: {"mailboxIds": {r["trash"]: True}},  # replaced whole
            }
        },
    )
    assert result["updated"] == {m1: None, m2: None, m3: None}
    found = {e["id"]: e["mailboxIds"] for e in get(alice, [m1, m2, m3], ["mailboxIds"])}
    assert found == {m1: {r["archive"]: True}, m2: {r["inbox"]: True, r["archive"]: True}, m3: {r["trash"]: True}}
    changes = alice.call("Email/changes", {"sinceState": old})
    assert sorted(changes["updated"]) == sorted([m1, m2, m3]) and changes["created"] == changes["destroyed"] == []
    assert changes["newState"] == result["newState"] and result["oldState"] == old
    last = alice.call("Email/set", {"update": {m1: {f"mailboxIds/{r['archive']}": None}}})
    assert last["notUpdated"][m1]["type"] == "invalidProperties"
    assert last["notUpdated"][m1]["properties"] == ["mailboxIds"]
    assert get(alice, [m1], ["mailboxIds"])[0]["mailboxIds"] == {r["archive"]: True}


def test_not_found_and_cross_account_updates(alice, bob, mail, services):
    (m1, _, _), r = mail
    result = bob.call("Email/set", {"update": {m1: {"keywords/$seen": True}}, "destroy": [m1]})
    assert result["notUpdated"][m1]["type"] == "notFound"
    assert result["notDestroyed"][m1]["type"] == "notFound"
    assert get(alice, [m1], ["keywords"])[0]["keywords"] == {}


def test_destroy(alice, mail):
    (m1, m2, _), _ = mail
    old = alice.call("Email/get", {"ids": []})["state"]
    result = alice.call("Email/set", {"destroy": [m1, "Mmissing", m2]})
    assert sorted(result["destroyed"]) == sorted([m1, m2])
    assert result["notDestroyed"] == {"Mmissing": {"type": "notFound", "description": "no email Mmissing"}}
    assert sorted(alice.call("Email/get", {"ids": [m1, m2]})["notFound"]) == sorted([m1, m2])
    changes = alice.call("Email/changes", {"sinceState": old})
    assert sorted(changes["destroyed"]) == sorted([m1, m2]) and changes["newState"] == result["newState"]


# --- creation ids, states, limits ------------------------------------------------------------------------------------


def test_creation_ids_within_the_call_and_across_calls(alice, services):
    r = roles(services, alice.account_id)
    response = alice.request(
        [
            [
                "Email/set",
                {
                    "accountId": alice.account_id,
                    "create": {"d1": {"mailboxIds": {"#box": True}, "subject": "draft"}},
                    "update": {
                        "#d1": {"keywords/$draft": True, "mailboxIds/#box": None, f"mailboxIds/{r['drafts']}": True}
                    },
                },
                "0",
            ],
            [
                "Email/get",
                {"accountId": alice.account_id, "ids": ["#d1"], "properties": ["keywords", "mailboxIds"]},
                "1",
            ],
            ["Email/set", {"accountId": alice.account_id, "update": {"#d1": {"keywords/$seen": True}}}, "2"],
        ],
        createdIds={"box": r["archive"]},
    )
    (_, first, _), (_, got, _), (_, second, _) = response["methodResponses"]
    draft = first["created"]["d1"]["id"]
    assert first["updated"] == {draft: None}
    assert got["list"] == [{"id": draft, "keywords": {"$draft": True}, "mailboxIds": {r["drafts"]: True}}]
    assert response["createdIds"] == {"box": r["archive"], "d1": draft}
    assert second["updated"] == {draft: None}
    assert get(alice, [draft], ["keywords"])[0]["keywords"] == {"$draft": True, "$seen": True}


def test_failed_creation_referenced_in_the_same_call(alice, services):
    result = alice.call(
        "Email/set",
        {
            "create": {"bad": {"subject": "no mailbox"}},
            "update": {"#bad": {"keywords/$seen": True}},
            "destroy": ["#bad"],
        },
    )
    assert result["notCreated"]["bad"]["type"] == "invalidProperties"
    assert result["notUpdated"]["#bad"]["type"] == "notFound"
    assert result["notDestroyed"]["#bad"]["type"] == "notFound"


def test_if_in_state(alice, mail):
    (m1, _, _), _ = mail
    state = alice.call("Email/get", {"ids": []})["state"]
    error = alice.error("Email/set", {"ifInState": "zzz", "update": {m1: {"keywords/$seen": True}}})
    assert error["type"] == "stateMismatch"
    assert get(alice, [m1], ["keywords"])[0]["keywords"] == {}
    ok = alice.call("Email/set", {"ifInState": state, "update": {m1: {"keywords/$seen": True}}})
    assert ok["oldState"] == state and ok["newState"] != state
    assert alice.error("Email/set", {"ifInState": state, "destroy": [m1]})["type"] == "stateMismatch"
    assert alice.call("Email/get", {"ids": []})["state"] == ok["newState"]


def test_state_mismatch_inside_the_transaction(alice, mail, services, monkeypatch):
    """A write landing between the up-front check and the operation still makes the call fail as a whole."""
    (m1, m2, _), _ = mail
    from jmapmono.mailbox.changes import ChangeLog

    state = alice.call("Email/get", {"ids": []})["state"]
    real = ChangeLog.state

    def racing(self, account_id, type):
        current = real(self, account_id, type)
        services.mailboxes.set_keywords(account_id, [m2], add=["$flagged"])  # another client, just now
        return current

    monkeypatch.setattr(ChangeLog, "state", racing)
    error = alice.error("Email/set", {"ifInState": state, "update": {m1: {"keywords/$seen": True}}})
    assert error["type"] == "stateMismatch"
    monkeypatch.undo()
    assert get(alice, [m1], ["keywords"])[0]["keywords"] == {}


def test_bulk_update_is_one_event_and_one_operation(alice, services):
    from jmapmono.mailbox.model import NewMessage

    inbox = roles(services, alice.account_id)["inbox"]
    appended = services.mailboxes.append_many(
        alice.account_id, [NewMessage(message(f"bulk {i}", f"b{i}@x"), (inbox,)) for i in range(50)]
    )
    ids = [a.id for a in appended.created.values()]
    old = alice.call("Email/get", {"ids": []})["state"]
    with services.db.read() as tx:
        mark = int(tx.value("SELECT COALESCE(MAX(id), 0) FROM event_outbox"))
    result = alice.call("Email/set", {"update": {i: {"keywords/$seen": True} for i in ids}})
    assert len(result["updated"]) == 50
    with services.db.read() as tx:
        events = [json.loads(r["event"]) for r in tx.query("SELECT event FROM event_outbox WHERE id > ?", (mark,))]
    assert len(events) == 1
    assert events[0]["type"] == "FlagsUpdated" and sorted(events[0]["message_ids"]) == sorted(ids)
    assert events[0]["states"]["Email"] == result["newState"]
    changes = alice.call("Email/changes", {"sinceState": old})
    assert sorted(changes["updated"]) == sorted(ids) and not changes["hasMoreChanges"]
    assert changes["newState"] == result["newState"] == alice.call("Email/get", {"ids": []})["state"]
    counts = {mb.id: mb.counts for mb in services.mailboxes.get_mailboxes(alice.account_id)[0]}
    assert counts[inbox].unread_emails == 0 and counts[inbox].total_emails == 50


def test_arguments(alice, services):
    assert alice.error("Email/set", {"create": {"k": {}}, "bogus": 1})["type"] == "invalidArguments"
    assert alice.error("Email/set", {"update": []})["type"] == "invalidArguments"
    assert alice.error("Email/set", {"destroy": ["#neverCreated"]})["type"] == "invalidArguments"
    limit = services.config.limits.max_objects_in_set
    error = alice.error("Email/set", {"destroy": [f"M{i}" for i in range(limit + 1)]})
    assert error["type"] == "requestTooLarge"
    nothing = alice.call("Email/set", {})
    assert nothing["oldState"] == nothing["newState"] and nothing["created"] is None

"""RFC 8620 §5 conformance: the standard methods /get, /changes, /set, /copy, /query and /queryChanges,
black-box through POST /jmap/api on real data types (Mailbox, Email), grouped by RFC section.

Each test reads like a conformance suite's check: the exact response argument sets, null versus empty,
error types and their extra properties, and state strings moving exactly when data changes.
"""

from __future__ import annotations

from tests.support.emails import message, roles
from tests.support.jmap import JmapClient

GET_KEYS = {"accountId", "state", "list", "notFound"}
CHANGES_KEYS = {"accountId", "oldState", "newState", "hasMoreChanges", "created", "updated", "destroyed"}
SET_KEYS = {
    "accountId",
    "oldState",
    "newState",
    "created",
    "updated",
    "destroyed",
    "notCreated",
    "notUpdated",
    "notDestroyed",
}
QUERY_KEYS = {"accountId", "queryState", "canCalculateChanges", "position", "ids"}


def state(client: JmapClient, type_: str) -> str:
    return client.call(f"{type_}/get", ids=[])["state"]


def new_mailbox(client: JmapClient, name: str, **props) -> str:
    result = client.call("Mailbox/set", create={"k": {"name": name, **props}})
    assert result["notCreated"] is None, result
    return result["created"]["k"]["id"]


# --- §5.1 /get ------------------------------------------------------------------------------------------------------


def test_get_ids_and_properties(alice):
    everything = alice.call("Mailbox/get", ids=None)
    assert set(everything) == GET_KEYS and everything["accountId"] == alice.account_id
    assert len(everything["list"]) == 6 and everything["notFound"] == []
    assert isinstance(everything["state"], str) and everything["state"]
    first = everything["list"][0]["id"]

    empty = alice.call("Mailbox/get", ids=[])
    assert (empty["list"], empty["notFound"]) == ([], [])
    some = alice.call("Mailbox/get", ids=[first, "nope", first, "nope"], properties=["name"])
    assert some["list"] == [{"id": first, "name": everything["list"][0]["name"]}]  # id always, once
    assert some["notFound"] == ["nope"]
    only_id = alice.call("Mailbox/get", ids=[first], properties=[])
    assert only_id["list"] == [{"id": first}]
    omitted = alice.call("Mailbox/get", {})  # ids omitted = null
    assert len(omitted["list"]) == 6
    error = alice.error("Mailbox/get", ids=None, properties=["name", "bogus"])
    assert error["type"] == "invalidArguments"
    assert alice.error("Mailbox/get", ids=[f"x{i}" for i in range(501)])["type"] == "requestTooLarge"


# --- §5.2 /changes ---------------------------------------------------------------------------------------------------


def test_changes_report_each_record_once_in_the_right_list(alice):
    before = state(alice, "Mailbox")
    kept = new_mailbox(alice, "Kept")
    gone = new_mailbox(alice, "Gone")
    alice.call("Mailbox/set", update={kept: {"name": "Kept 2"}})
    middle = state(alice, "Mailbox")
    alice.call("Mailbox/set", update={gone: {"name": "Gone 2"}})
    alice.call("Mailbox/set", destroy=[gone])
    temp = new_mailbox(alice, "Temp")
    alice.call("Mailbox/set", destroy=[temp])

    all_ = alice.call("Mailbox/changes", sinceState=before)
    assert set(all_) == CHANGES_KEYS | {"updatedProperties"}
    assert all_["oldState"] == before and all_["newState"] == state(alice, "Mailbox")
    # created then updated: created only; created then destroyed: in neither created nor updated
    assert (all_["created"], all_["updated"]) == ([kept], [])
    assert gone not in all_["created"] and temp not in all_["created"]
    assert all_["hasMoreChanges"] is False

    since_middle = alice.call("Mailbox/changes", sinceState=middle)
    assert since_middle["created"] == [] and since_middle["updated"] == []  # updated then destroyed: destroyed
    assert gone in since_middle["destroyed"]

    same = alice.call("Mailbox/changes", sinceState=all_["newState"])
    assert (same["oldState"], same["newState"]) == (all_["newState"], all_["newState"])
    assert (same["created"], same["updated"], same["destroyed"], same["hasMoreChanges"]) == ([], [], [], False)


def test_changes_max_changes_pages_through_intermediate_states(alice):
    before = state(alice, "Mailbox")
    made = [new_mailbox(alice, f"Box {i}") for i in range(3)]
    seen, since, pages = [], before, 0
    while True:
        page = alice.call("Mailbox/changes", sinceState=since, maxChanges=1)
        total = len(page["created"]) + len(page["updated"]) + len(page["destroyed"])
        assert total <= 1
        seen += page["created"]
        since, pages = page["newState"], pages + 1
        if not page["hasMoreChanges"]:
            break
        assert pages < 10
    assert seen == made and since == state(alice, "Mailbox")
    for bad in (0, -1, "1"):
        assert alice.error("Mailbox/changes", sinceState=before, maxChanges=bad)["type"] == "invalidArguments"
    assert alice.error("Mailbox/changes", {})["type"] == "invalidArguments"  # sinceState is required
    assert alice.error("Mailbox/changes", sinceState="not-a-state")["type"] == "cannotCalculateChanges"


# --- §5.3 /set -------------------------------------------------------------------------------------------------------


def test_set_response_shape_and_states(alice):
    before = state(alice, "Mailbox")
    result = alice.call("Mailbox/set", create={"a": {"name": "A"}})
    assert set(result) == SET_KEYS
    assert result["oldState"] == before and result["newState"] != before
    assert result["newState"] == state(alice, "Mailbox")
    assert (result["updated"], result["destroyed"], result["notCreated"]) == (None, None, None)
    assert (result["notUpdated"], result["notDestroyed"]) == (None, None)
    created = result["created"]["a"]
    # The server-set and defaulted properties come back, not the ones sent as they were stored.
    assert "name" not in created and created["id"] and created["parentId"] is None and created["sortOrder"] == 0
    assert created["totalEmails"] == 0 and isinstance(created["myRights"], dict)

    # Nothing changed: no state change, and an empty /set is not an error.
    noop = alice.call("Mailbox/set", {})
    assert noop["oldState"] == noop["newState"] == result["newState"]
    assert all(noop[k] is None for k in SET_KEYS - {"accountId", "oldState", "newState"})


def test_set_if_in_state_mismatch_changes_nothing(alice):
    current = state(alice, "Mailbox")
    error = alice.error("Mailbox/set", ifInState=current + "x", create={"a": {"name": "A"}})
    assert error["type"] == "stateMismatch"
    assert state(alice, "Mailbox") == current
    assert "A" not in [m["name"] for m in alice.call("Mailbox/get", ids=None)["list"]]
    ok = alice.call("Mailbox/set", ifInState=current, create={"a": {"name": "A"}})
    assert ok["oldState"] == current and ok["created"]


def test_set_per_record_errors(alice):
    inbox = alice.call("Mailbox/query", filter={"role": "inbox"})["ids"][0]
    result = alice.call(
        "Mailbox/set",
        create={"bad": {"name": "X", "totalEmails": 3, "bogus": 1}},
        update={"nope": {"name": "Y"}, inbox: {"sortOrder/deep": 1}},
        destroy=["nope"],
    )
    assert result["created"] is None and result["updated"] is None and result["destroyed"] is None
    bad = result["notCreated"]["bad"]
    assert bad["type"] == "invalidProperties" and set(bad["properties"]) == {"totalEmails", "bogus"}
    assert result["notUpdated"]["nope"]["type"] == "notFound"
    assert result["notUpdated"][inbox]["type"] == "invalidPatch"
    assert result["notDestroyed"]["nope"]["type"] == "notFound"
    ids = [f"x{i}" for i in range(501)]
    assert alice.error("Mailbox/set", destroy=ids)["type"] == "requestTooLarge"
    assert alice.error("Mailbox/set", create=[])["type"] == "invalidArguments"


def test_set_creation_ids_are_usable_in_the_same_and_later_calls(alice):
    a = alice.account_id
    responses = alice.responses(
        [
            [
                "Mailbox/set",
                {
                    "accountId": a,
                    "create": {"child": {"name": "Child", "parentId": "#parent"}, "parent": {"name": "P"}},
                },
                "0",
            ],
            ["Mailbox/get", {"accountId": a, "ids": ["#child"], "properties": ["parentId"]}, "1"],
            ["Mailbox/set", {"accountId": a, "update": {"#parent": {"name": "Parent"}}, "destroy": ["#child"]}, "2"],
        ]
    )
    created = responses[0][1]["created"]
    parent, child = created["parent"]["id"], created["child"]["id"]
    assert responses[1][1]["list"] == [{"id": child, "parentId": parent}]
    assert responses[2][1]["updated"] == {parent: None} and responses[2][1]["destroyed"] == [child]


# --- §5.4 /copy ------------------------------------------------------------------------------------------------------


def test_copy_between_accounts_and_destroy_original(alice, bob, services):
    services.accounts.delegate("bob@example.org", "alice@example.org")
    original = services.mailboxes.deliver("bob@example.org", message("Copy me", "copy@example.org")).message_id
    inbox = roles(services, alice.account_id)["inbox"]
    assert alice.error("Email/copy", fromAccountId=alice.account_id, create={})["type"] == "invalidArguments"
    assert alice.error("Email/copy", fromAccountId="nope", create={})["type"] == "fromAccountNotFound"
    assert alice.error("Email/copy", fromAccountId=bob.account_id, ifFromInState="x", create={})["type"] == (
        "stateMismatch"
    )
    responses = alice.responses(
        [
            [
                "Email/copy",
                {
                    "accountId": alice.account_id,
                    "fromAccountId": bob.account_id,
                    "create": {"c": {"id": original, "mailboxIds": {inbox: True}}, "m": {"id": "nope"}},
                    "onSuccessDestroyOriginal": True,
                },
                "0",
            ]
        ]
    )
    (name, copy, _), (implicit_name, implicit, call_id) = responses
    assert name == "Email/copy" and set(copy) == {
        "fromAccountId",
        "accountId",
        "oldState",
        "newState",
        "created",
        "notCreated",
    }
    assert copy["fromAccountId"] == bob.account_id and copy["accountId"] == alice.account_id
    assert set(copy["created"]["c"]) == {"id", "blobId", "threadId", "size"}
    assert copy["notCreated"]["m"]["type"] == "notFound"
    assert copy["newState"] == state(alice, "Email")
    # The implicit Foo/set destroying the original follows, on the from account, with the same call id.
    assert (implicit_name, implicit["accountId"], implicit["destroyed"], call_id) == (
        "Email/set",
        bob.account_id,
        [original],
        "0",
    )
    assert bob.call("Email/get", ids=[original], properties=["id"])["notFound"] == [original]


# --- §5.5 /query ------------------------------------------------------------------------------------------------------


def test_query_window_position_anchor_limit_total(alice):
    for i in range(4):
        new_mailbox(alice, f"Q{i}", sortOrder=100 + i)
    full = alice.call("Mailbox/query", sort=[{"property": "sortOrder"}])
    assert set(full) == QUERY_KEYS  # total only when asked, limit only when the server capped it
    ids = full["ids"]
    assert len(ids) == 10 and full["position"] == 0

    def q(**args):
        return alice.call("Mailbox/query", sort=[{"property": "sortOrder"}], **args)

    page = q(position=2, limit=3, calculateTotal=True)
    assert (page["ids"], page["position"], page["total"]) == (ids[2:5], 2, 10)
    assert q(position=-3)["ids"] == ids[-3:] and q(position=-3)["position"] == 7
    assert q(position=-100)["position"] == 0
    past = q(position=50)
    assert past["ids"] == []  # not an error
    assert q(anchor=ids[4], anchorOffset=-2, limit=2)["ids"] == ids[2:4]
    assert q(anchor=ids[4], anchorOffset=-9)["position"] == 0  # clamped
    assert q(anchor=ids[4], position=8)["ids"] == ids[4:]  # position ignored with an anchor
    assert q(limit=0)["ids"] == []
    assert alice.error("Mailbox/query", anchor="nope")["type"] == "anchorNotFound"
    assert alice.error("Mailbox/query", limit=-1)["type"] == "invalidArguments"
    assert alice.error("Mailbox/query", sort=[{"property": "totalEmails"}])["type"] == "unsupportedSort"
    assert alice.error("Mailbox/query", sort=[{"property": "name", "collation": "i;nope"}])["type"] == (
        "unsupportedSort"
    )
    assert alice.error("Mailbox/query", filter={"nope": 1})["type"] == "unsupportedFilter"
    assert alice.error("Mailbox/query", filter={"hasAnyRole": "yes"})["type"] == "invalidArguments"  # wrong type
    assert alice.call("Mailbox/query", filter=None, sort=None)["ids"] == ids  # null filter and sort: the defaults
    # Null for an argument with a default takes the default, as omitting it does (a lenient reading of §3.5).
    nulls = {"position": None, "anchorOffset": None, "calculateTotal": None, "limit": None, "anchor": None}
    lenient = alice.call("Mailbox/query", {**nulls, "sort": [{"property": "sortOrder", "isAscending": None}]})
    assert lenient["ids"] == ids and lenient["position"] == 0 and "total" not in lenient
    assert alice.call("Mailbox/set", destroy=[], onDestroyRemoveEmails=None)["destroyed"] is None


def test_query_default_collation_is_unicode_casemap(alice):
    """Recommended, not required (server-dependent default): i;unicode-casemap ignores case."""
    for name in ("beta", "Alpha", "gamma"):
        new_mailbox(alice, name, sortOrder=50)
    found = alice.call("Mailbox/query", filter={"name": "a"}, sort=[{"property": "name"}])["ids"]
    names = {m["id"]: m["name"] for m in alice.call("Mailbox/get", ids=found, properties=["name"])["list"]}
    ordered = [names[i] for i in found]
    assert ordered.index("Alpha") < ordered.index("beta") < ordered.index("gamma")


# --- §5.6 /queryChanges --------------------------------------------------------------------------------------------


def splice(old: list[str], changes: dict) -> list[str]:
    """What a client does with a /queryChanges response (RFC 8620 §5.6)."""
    out = [i for i in old if i not in set(changes["removed"])]
    for item in changes["added"]:
        out.insert(item["index"], item["id"])
    return out


def test_query_changes_splice_reproduces_the_new_results(alice):
    a_box = new_mailbox(alice, "Alpha", sortOrder=7)
    b_box = new_mailbox(alice, "Bravo", sortOrder=8)
    args = {"sort": [{"property": "sortOrder"}, {"property": "name"}], "filter": {"hasAnyRole": False}}
    old = alice.call("Mailbox/query", args)
    alice.call("Mailbox/set", update={b_box: {"sortOrder": 1}}, destroy=[a_box])
    new_mailbox(alice, "Charlie", sortOrder=3)
    now = alice.call("Mailbox/query", args)
    changes = alice.call("Mailbox/queryChanges", {**args, "sinceQueryState": old["queryState"], "calculateTotal": True})
    assert set(changes) == {"accountId", "oldQueryState", "newQueryState", "removed", "added", "total"}
    assert changes["oldQueryState"] == old["queryState"] and changes["newQueryState"] == now["queryState"]
    assert changes["total"] == len(now["ids"])
    assert [a["index"] for a in changes["added"]] == sorted(a["index"] for a in changes["added"])
    assert splice(old["ids"], changes) == now["ids"]
    too_many = alice.error("Mailbox/queryChanges", {**args, "sinceQueryState": old["queryState"], "maxChanges": 1})
    assert too_many["type"] == "tooManyChanges"
    assert alice.error("Mailbox/queryChanges", {**args, "sinceQueryState": "nope"})["type"] == (
        "cannotCalculateChanges"
    )

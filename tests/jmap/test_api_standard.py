"""The standard-method helpers (RFC 8620 §5) through a tiny test-only data type, ``Widget``.

``Widget`` keeps its records in memory and is registered for each test, then removed: it exists
only to drive ``jmapmono.jmap.method_args`` through real requests, on both backends.
"""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import pytest

from jmapmono.jmap import method_args as standard
from jmapmono.jmap import registry
from jmapmono.jmap.api import evaluate_pointer
from jmapmono.jmap.errors import MethodError, SetError
from jmapmono.jmap.registry import CORE
from jmapmono.runtime import Runtime
from jmapmono.web.app import create_app

CAP = "urn:jmapmono:test:widgets"
USING = [CORE, CAP]
PASSWORD = "correct horse battery"
PROPERTIES = ["id", "name", "size", "tags"]


class Widgets:
    """In-memory records per account with a counter state; the handlers use only the standard helpers."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, dict]] = {}
        self.states: dict[str, int] = {}
        self.next_id = 0

    def state(self, account_id: str) -> str:
        return f"s{self.states.get(account_id, 0)}"

    def get(self, inv):
        get = standard.parse_get(inv, PROPERTIES, default_properties=["name"])
        records = self.records.setdefault(inv.account_id, {})
        if get.ids is None:
            standard.check_max_objects_in_get(inv, len(records))
        return standard.get_response(get, self.state(inv.account_id), records)

    def set(self, inv):
        args = standard.parse_set(inv)
        account = inv.account_id
        old = self.state(account)
        standard.check_if_in_state(args.if_in_state, old)
        records = self.records.setdefault(account, {})
        created, not_created, updated, not_updated, destroyed, not_destroyed = {}, {}, {}, {}, [], {}
        for cid, obj in args.create.items():
            if not isinstance(obj.get("name"), str):
                not_created[cid] = SetError("invalidProperties", "name is required", properties=["name"])
                continue
            self.next_id += 1
            wid = f"W{self.next_id}"
            records[wid] = {"id": wid, "name": obj["name"], "size": 0, "tags": {}}
            inv.created_ids[cid] = wid
            created[cid] = {"id": wid, "size": 0, "tags": {}}
        for wid, patch in args.update.items():
            if wid not in records:
                not_updated[wid] = SetError("notFound")
                continue
            try:
                records[wid] = standard.apply_patch(records[wid], patch)
                updated[wid] = None
            except SetError as e:
                not_updated[wid] = e
        for wid in args.destroy:
            if records.pop(wid, None) is None:
                not_destroyed[wid] = SetError("notFound")
            else:
                destroyed.append(wid)
        if created or updated or destroyed:
            self.states[account] = self.states.get(account, 0) + 1
        return standard.set_response(
            account,
            old,
            self.state(account),
            created=created,
            updated=updated,
            destroyed=destroyed,
            not_created=not_created,
            not_updated=not_updated,
            not_destroyed=not_destroyed,
        )

    def changes(self, inv):
        args = standard.parse_changes(inv)
        current = self.state(inv.account_id)
        if args.since_state != current:
            raise MethodError("cannotCalculateChanges")
        return standard.changes_response(inv.account_id, args.since_state, current, False, [], [], [])

    def query(self, inv):
        query = standard.parse_query(inv)
        records = list(self.records.get(inv.account_id, {}).values())
        if query.filter is not None:
            records = [r for r in records if query.filter.get("name", "") in r["name"]]
        for comparator in reversed(query.sort):
            records.sort(key=lambda r, c=comparator: r[c.property], reverse=not comparator.is_ascending)
        ids = [r["id"] for r in records]
        position, page, limit = standard.query_window(query, ids, max_limit=5)
        return standard.query_response(query, "q1", position, page, len(ids), limit=limit)


@pytest.fixture
def widgets():
    registry.load_all()  # snapshot the real registrations, not an empty registry
    methods, capabilities = dict(registry.METHODS), dict(registry.CAPABILITIES)
    w = Widgets()
    registry.capability(CAP, lambda s: {}, lambda s, a: {})
    registry.method("Widget/get", CAP)(w.get)
    registry.method("Widget/set", CAP, writes=True)(w.set)
    registry.method("Widget/changes", CAP)(w.changes)
    registry.method("Widget/query", CAP)(w.query)
    yield w
    registry.METHODS.clear()
    registry.METHODS.update(methods)
    registry.CAPABILITIES.clear()
    registry.CAPABILITIES.update(capabilities)


@pytest.fixture
def alice(services):
    return services.accounts.create_user("alice@example.org", PASSWORD)[0]


@pytest.fixture
def call(services, alice, widgets):
    """Run method calls as Alice on an app whose maxObjectsInGet and maxObjectsInSet are 3."""
    limits = replace(services.config.limits, max_objects_in_get=3, max_objects_in_set=3)
    client = create_app(Runtime(services.config.with_overrides(limits=limits), services.db)).test_client()
    auth = {"Authorization": "Basic " + base64.b64encode(f"{alice.email}:{PASSWORD}".encode()).decode()}

    def run(*calls) -> list:
        calls = [[name, {"accountId": alice.account_id, **args}, f"c{i}"] for i, (name, args) in enumerate(calls)]
        body = json.dumps({"using": USING, "methodCalls": calls})
        r = client.post("/jmap/api", data=body, headers=auth, content_type="application/json")
        assert r.status_code == 200, r.get_data(as_text=True)
        return [r[1] if r[0] != "error" else ("error", r[1]["type"]) for r in r.get_json()["methodResponses"]]

    return run


def make(call, *names: str) -> list[str]:
    """Create widgets named ``names`` (in /set calls of at most maxObjectsInSet = 3); return their ids."""
    ids = []
    for start in range(0, len(names), 3):
        batch = names[start : start + 3]
        created = call(("Widget/set", {"create": {f"k{i}": {"name": n} for i, n in enumerate(batch)}}))[0]["created"]
        ids += [created[f"k{i}"]["id"] for i in range(len(batch))]
    return ids


# --- /get ----------------------------------------------------------------------------------------------------------


def test_get_ids_and_properties(call):
    w1, w2 = make(call, "one", "two")
    r = call(
        ("Widget/get", {"ids": []}),
        ("Widget/get", {"ids": [w2, w1, w2, "Wnope"]}),
        ("Widget/get", {"ids": [w1], "properties": ["size", "size"]}),
        ("Widget/get", {"ids": [w1], "properties": PROPERTIES}),
        ("Widget/get", {"ids": None, "properties": ["id"]}),
    )
    assert r[0] == {"accountId": r[0]["accountId"], "state": "s1", "list": [], "notFound": []}
    assert r[1]["list"] == [{"id": w2, "name": "two"}, {"id": w1, "name": "one"}]  # default properties + id
    assert r[1]["notFound"] == ["Wnope"]
    assert r[2]["list"] == [{"id": w1, "size": 0}]  # id always, nothing unrequested
    assert r[3]["list"] == [{"id": w1, "name": "one", "size": 0, "tags": {}}]
    assert sorted(x["id"] for x in r[4]["list"]) == sorted([w1, w2])


def test_get_argument_errors_and_limits(call):
    make(call, "a", "b", "c")
    r = call(
        ("Widget/get", {"ids": ["W1"], "properties": ["name", "colour"]}),
        ("Widget/get", {"ids": ["not an id"]}),
        ("Widget/get", {"ids": ["x" * 256]}),
        ("Widget/get", {"ids": "W1"}),
        ("Widget/get", {"ids": ["W1"], "properties": "name"}),
        ("Widget/get", {"ids": ["W1", "W2", "W3", "W4"]}),
        ("Widget/get", {"ids": ["W1", "W2", "W3", "W1"]}),  # 3 distinct ids: within the limit
        ("Widget/get", {}),  # all 3 records: within the limit
    )
    assert r[:6] == [("error", "invalidArguments")] * 5 + [("error", "requestTooLarge")]
    assert len(r[6]["list"]) == 3 and len(r[7]["list"]) == 3
    make(call, "d")
    assert call(("Widget/get", {})) == [("error", "requestTooLarge")]


def test_get_resolves_creation_ids(call):
    r = call(
        ("Widget/set", {"create": {"new": {"name": "fresh"}}}),
        ("Widget/get", {"ids": ["#new"]}),
        ("Widget/get", {"ids": ["#never"]}),
    )
    assert r[1]["list"] == [{"id": r[0]["created"]["new"]["id"], "name": "fresh"}]
    assert r[2] == ("error", "invalidArguments")


# --- /set ----------------------------------------------------------------------------------------------------------


def test_set_create_update_destroy_with_creation_ids(call):
    r = call(
        ("Widget/set", {"create": {"a": {"name": "A"}, "b": {"name": "B"}, "bad": {}}}),
        ("Widget/set", {"update": {"#a": {"name": "A2", "tags/blue": True}}, "destroy": ["#b"]}),
        ("Widget/get", {"ids": ["#a", "#b"], "properties": ["name", "tags"]}),
    )
    a, b = r[0]["created"]["a"]["id"], r[0]["created"]["b"]["id"]
    assert r[0]["notCreated"]["bad"] == {
        "type": "invalidProperties",
        "description": "name is required",
        "properties": ["name"],
    }
    assert r[0]["oldState"] == "s0" and r[0]["newState"] == "s1"
    assert r[0]["updated"] is None and r[0]["destroyed"] is None and r[0]["notUpdated"] is None
    assert r[1]["updated"] == {a: None} and r[1]["destroyed"] == [b]
    assert r[2]["list"] == [{"id": a, "name": "A2", "tags": {"blue": True}}] and r[2]["notFound"] == [b]


def test_set_patch_errors_are_per_record(call):
    (w,) = make(call, "w")
    r = call(
        (
            "Widget/set",
            {"update": {w: {"missing/x": 1}, "Wnope": {"name": "x"}}},
        ),
        ("Widget/set", {"update": {w: {"tags": {}, "tags/x": True}}}),
        ("Widget/set", {"update": {w: {"tags/red": True, "name": None}}}),
        ("Widget/get", {"ids": [w], "properties": ["tags"]}),
    )
    assert r[0]["notUpdated"][w]["type"] == "invalidPatch"
    assert r[0]["notUpdated"]["Wnope"]["type"] == "notFound"
    assert r[1]["notUpdated"][w]["type"] == "invalidPatch"
    assert r[2]["updated"] == {w: None}
    assert r[3]["list"] == [{"id": w, "tags": {"red": True}}]


def test_set_if_in_state_and_limits(call):
    (w,) = make(call, "w")  # state s1
    r = call(
        ("Widget/set", {"ifInState": "s0", "update": {w: {"name": "stale"}}}),
        ("Widget/set", {"create": {"a": {"name": "1"}, "b": {"name": "2"}}, "update": {w: {}}, "destroy": ["W9"]}),
        ("Widget/set", {"ifInState": "s1", "update": {w: {"name": "fresh"}}}),
        ("Widget/get", {"ids": [w]}),
    )
    assert r[0] == ("error", "stateMismatch")
    assert r[1] == ("error", "requestTooLarge")
    assert r[2]["oldState"] == "s1" and r[2]["newState"] == "s2"
    assert r[3]["list"] == [{"id": w, "name": "fresh"}]


def test_set_argument_errors(call):
    r = call(
        ("Widget/set", {"create": {"not valid!": {"name": "x"}}}),
        ("Widget/set", {"create": {"k": "not an object"}}),
        ("Widget/set", {"create": []}),
        ("Widget/set", {"update": {"W1": 5}}),
        ("Widget/set", {"destroy": "W1"}),
        ("Widget/set", {"ifInState": 3}),
        ("Widget/set", {}),
    )
    assert r[:6] == [("error", "invalidArguments")] * 6
    assert r[6]["created"] is None and r[6]["newState"] == "s0"


# --- /changes and /query -------------------------------------------------------------------------------------------


def test_changes_arguments(call):
    r = call(
        ("Widget/changes", {"sinceState": "s0", "maxChanges": 0}),
        ("Widget/changes", {"sinceState": "s0", "maxChanges": -1}),
        ("Widget/changes", {"sinceState": "s0", "maxChanges": "5"}),
        ("Widget/changes", {"sinceState": "s0", "maxChanges": True}),
        ("Widget/changes", {}),
        ("Widget/changes", {"sinceState": "s0", "maxChanges": None}),
        ("Widget/changes", {"sinceState": "s0", "maxChanges": 10}),
        ("Widget/changes", {"sinceState": "s7"}),
    )
    assert r[:5] == [("error", "invalidArguments")] * 5
    assert r[5]["newState"] == "s0" and r[5]["hasMoreChanges"] is False and r[6]["created"] == []
    assert r[7] == ("error", "cannotCalculateChanges")


def test_query_window_sort_and_total(call):
    ids = make(call, "e", "c", "a", "d", "b", "f", "g")  # W1..W7; sorted by name: a b c d e f g
    by_name = dict(zip(["e", "c", "a", "d", "b", "f", "g"], ids, strict=True))
    order = [by_name[n] for n in "abcdefg"]
    sort = [{"property": "name"}]
    r = call(
        ("Widget/query", {"sort": sort, "position": 1, "limit": 2, "calculateTotal": True}),
        ("Widget/query", {"sort": sort, "position": -2}),
        ("Widget/query", {"sort": sort, "position": -20, "limit": 1}),
        ("Widget/query", {"sort": sort, "anchor": by_name["c"], "anchorOffset": -1, "limit": 2, "position": 5}),
        ("Widget/query", {"sort": sort, "anchor": by_name["a"], "anchorOffset": -3, "limit": 1}),
        ("Widget/query", {"sort": [{"property": "name", "isAscending": False}], "limit": 3}),
        ("Widget/query", {"sort": sort, "position": 50}),
        ("Widget/query", {"filter": {"name": "b"}}),
    )
    assert r[0]["ids"] == order[1:3] and r[0]["position"] == 1 and r[0]["total"] == 7 and "limit" not in r[0]
    assert r[1]["ids"] == order[5:] and r[1]["position"] == 5 and "total" not in r[1]
    assert r[2]["ids"] == order[:1] and r[2]["position"] == 0
    assert r[3]["ids"] == order[1:3] and r[3]["position"] == 1
    assert r[4]["ids"] == order[:1] and r[4]["position"] == 0
    assert r[5]["ids"] == order[::-1][:3]
    assert r[6]["ids"] == [] and r[6]["position"] == 50
    assert r[7]["ids"] == [by_name["b"]]
    assert r[1]["limit"] == 5  # no limit given: clamped to the server's maximum and reported


def test_query_argument_errors(call):
    r = call(
        ("Widget/query", {"limit": -1}),
        ("Widget/query", {"position": "0"}),
        ("Widget/query", {"anchor": "not an id!"}),
        ("Widget/query", {"calculateTotal": "yes"}),
        ("Widget/query", {"sort": {"property": "name"}}),
        ("Widget/query", {"sort": [{"isAscending": True}]}),
        ("Widget/query", {"sort": [{"property": "name", "isAscending": "no"}]}),
        ("Widget/query", {"filter": {"operator": "XOR", "conditions": []}}),
        ("Widget/query", {"filter": {"operator": "AND", "conditions": [{"operator": "OR"}]}}),
        ("Widget/query", {"filter": ["name"]}),
        ("Widget/query", {"anchor": "Wmissing"}),
        ("Widget/query", {"sort": [{"property": "name", "collation": "i;klingon"}]}),
        ("Widget/query", {"sort": [{"property": "name", "collation": "i;unicode-casemap"}], "limit": 99}),
    )
    assert r[:10] == [("error", "invalidArguments")] * 10
    assert r[10] == ("error", "anchorNotFound")
    assert r[11] == ("error", "unsupportedSort")
    assert r[12]["ids"] == [] and r[12]["limit"] == 5


# --- pure helpers (no storage) -------------------------------------------------------------------------------------


def test_id_format():
    assert standard.is_id("a") and standard.is_id("A-z_09" * 42) and standard.is_id("x" * 255)
    for bad in ["", "x" * 256, "a b", "ä", "a=", "a/b", "a.b", None, 5]:
        assert not standard.is_id(bad), bad


def test_int_arguments():
    assert standard.arg_int({"n": -(2**53) + 1}, "n") == -(2**53) + 1
    assert standard.arg_unsigned_int({"n": 2**53 - 1}, "n") == 2**53 - 1
    assert standard.arg_unsigned_int({}, "n", None, nullable=True) is None
    assert standard.arg_int({"n": 4.0}, "n") == 4
    for args in [{"n": 2**53}, {"n": True}, {"n": 1.5}, {"n": "1"}, {"n": None}, {}]:
        with pytest.raises(MethodError) as e:
            standard.arg_int(args, "n")
        assert e.value.type == "invalidArguments"
    with pytest.raises(MethodError):
        standard.arg_unsigned_int({"n": -1}, "n")


def test_unknown_arguments_are_named():
    standard.reject_unknown_arguments({"accountId": "a", "ids": None}, {"accountId", "ids", "properties"})
    with pytest.raises(MethodError) as e:
        standard.reject_unknown_arguments({"accountId": "a", "zz": 1, "aa": 2}, {"accountId"})
    assert e.value.to_json()["arguments"] == ["aa", "zz"]


def test_apply_patch_rules():
    record = {"id": "W1", "name": "n", "tags": {"a": True}, "list": [1, {"x": 1}], "deep": {"inner": {"k": 1}}}
    out = standard.apply_patch(
        record, {"tags/b": True, "tags/a": None, "deep/inner/k": 2, "name": "m", "slash~1key": 1}
    )
    assert out["tags"] == {"b": True} and out["deep"] == {"inner": {"k": 2}} and out["name"] == "m"
    assert out["slash/key"] == 1
    assert record["tags"] == {"a": True} and record["deep"] == {"inner": {"k": 1}}  # the original is untouched
    for bad in [{"list/0": 2}, {"list/1/x": 2}, {"nope/x": 1}, {"deep": {}, "deep/inner/k": 3}, {"": 1}, {"tags/": 1}]:
        with pytest.raises(SetError) as e:
            standard.apply_patch(record, bad)
        assert e.value.type == "invalidPatch", bad


def test_json_pointer_escapes_and_star():
    doc = {"a/b": {"m~n": [10, 20]}, "list": [{"v": [1]}, {"v": [2, 3]}], "*": "star-key"}
    assert evaluate_pointer(doc, "/a~1b/m~0n/1") == 20
    assert evaluate_pointer(doc, "/list/*/v") == [1, 2, 3]
    assert evaluate_pointer(doc, "/*") == "star-key"  # "*" is an ordinary key on objects
    assert evaluate_pointer({"x": []}, "/x/*/y") == []

"""Mailbox/get, /changes, /query and /queryChanges over HTTP (RFC 8621 §2.1–2.4), on both backends:
every property, per-user isSubscribed with a delegate, counts agreeing with the store, updatedProperties
after a delivery (count-only) vs a rename, every filter and sort (collations, sortAsTree, filterAsTree),
and queryChanges results that splice a cached result into exactly the new one."""

from __future__ import annotations

import pytest

from jmapmono.mailbox import counts

COUNTS = ["totalEmails", "unreadEmails", "totalThreads", "unreadThreads"]
RIGHTS = {
    "mayReadItems",
    "mayAddItems",
    "mayRemoveItems",
    "maySetSeen",
    "maySetKeywords",
    "mayCreateChild",
    "mayRename",
    "mayDelete",
    "maySubmit",
}


def raw(subject: str, msgid: str, extra: str = "") -> bytes:
    return f"From: bob@example.org\r\nSubject: {subject}\r\nMessage-ID: <{msgid}>\r\n{extra}\r\nhi\r\n".encode()


def by_name(client, account_id: str | None = None) -> dict[str, dict]:
    args = {"ids": None} if account_id is None else {"ids": None, "accountId": account_id}
    return {mb["name"]: mb for mb in client.call("Mailbox/get", args)["list"]}


def create(client, **objects) -> dict[str, str]:
    """Create mailboxes (creation id -> properties); returns creation id -> mailbox id."""
    r = client.call("Mailbox/set", {"create": objects})
    assert not r["notCreated"], r["notCreated"]
    return {k: v["id"] for k, v in r["created"].items()}


# --- Mailbox/get ---------------------------------------------------------------------------------------------------


def test_get_all_returns_every_property_of_the_default_mailboxes(alice):
    r = alice.call("Mailbox/get", {"ids": None})
    assert r["accountId"] == alice.account_id and r["notFound"] == []
    boxes = {mb["role"]: mb for mb in r["list"]}
    assert set(boxes) == {"inbox", "drafts", "sent", "archive", "junk", "trash"}
    for mb in r["list"]:
        assert set(mb) == {"id", "name", "parentId", "role", "sortOrder", *COUNTS, "myRights", "isSubscribed"}
        assert mb["parentId"] is None and mb["isSubscribed"] is True
        assert all(mb[c] == 0 for c in COUNTS)
        assert set(mb["myRights"]) == RIGHTS
        assert all(v is True for k, v in mb["myRights"].items() if k != "mayDelete")
    assert boxes["inbox"]["name"] == "Inbox" and boxes["inbox"]["myRights"]["mayDelete"] is False
    assert boxes["trash"]["myRights"]["mayDelete"] is True


def test_get_by_ids_with_properties_not_found_and_bad_arguments(alice):
    inbox = by_name(alice)["Inbox"]["id"]
    r = alice.call("Mailbox/get", {"ids": [inbox, "Bnope"], "properties": ["name", "totalEmails"]})
    assert r["list"] == [{"id": inbox, "name": "Inbox", "totalEmails": 0}]
    assert r["notFound"] == ["Bnope"]
    assert alice.call("Mailbox/get", {"ids": []})["list"] == []
    assert alice.error("Mailbox/get", {"ids": None, "properties": ["colour"]})["type"] == "invalidArguments"
    assert alice.error("Mailbox/get", {"ids": "all"})["type"] == "invalidArguments"
    assert alice.error("Mailbox/get", {"ids": None, "sinceState": "1"})["type"] == "invalidArguments"
    assert alice.error("Mailbox/get", {"ids": None, "accountId": "nobody"})["type"] == "accountNotFound"


def test_counts_follow_mail_and_agree_with_the_memberships(services, alice):
    mgr = services.mailboxes
    first = mgr.deliver("alice@example.org", raw("one", "1@x"))
    mgr.deliver("alice@example.org", raw("Re: one", "2@x", "In-Reply-To: <1@x>\r\n"))
    third = mgr.deliver("alice@example.org", raw("other", "3@x"))
    mgr.set_keywords(alice.account_id, [first.message_id, third.message_id], add=["$seen"])
    inbox = by_name(alice)["Inbox"]
    assert [inbox[c] for c in COUNTS] == [3, 1, 2, 1]
    with services.db.read() as tx:
        assert counts.recount(tx, inbox["id"]).to_json() == {c: inbox[c] for c in COUNTS}


def test_counts_match_email_query_totals_in_one_request(services, alice):
    """Clarification Q24: Mailbox/get, then Email/query totals (on the indexed path and on the general one),
    then Mailbox/changes reporting nothing: equal."""
    mgr = services.mailboxes
    first = mgr.deliver("alice@example.org", raw("one", "1@x"))
    mgr.deliver("alice@example.org", raw("Re: one", "2@x", "In-Reply-To: <1@x>\r\n"))
    mgr.deliver("alice@example.org", raw("other", "3@x"))
    mgr.set_keywords(alice.account_id, [first.message_id], add=["$seen"])
    boxes = by_name(alice)
    inbox, archive = boxes["Inbox"]["id"], boxes["Archive"]["id"]
    acc = alice.account_id
    both = mgr.append(acc, raw("filed", "4@x"), [archive]).id
    mgr.move_messages(acc, [both], add=[inbox])  # in two mailboxes: counted in each

    def total(call_id: str, filter_: dict, collapse: bool = False) -> list:
        args = {"accountId": acc, "filter": filter_, "calculateTotal": True, "collapseThreads": collapse}
        return ["Email/query", args, call_id]

    general = {"operator": "AND", "conditions": [{"inMailbox": inbox}, {}]}  # not the indexed inbox view
    calls = [["Mailbox/get", {"accountId": acc, "ids": [inbox]}, "g"]]
    calls += [total("emails", {"inMailbox": inbox}), total("threads", {"inMailbox": inbox}, collapse=True)]
    calls += [total("unread", {"inMailbox": inbox, "notKeyword": "$seen"})]
    calls += [total("emails-general", general), total("threads-general", general, collapse=True)]
    calls += [
        [
            "Mailbox/changes",
            {"accountId": acc, "#sinceState": {"resultOf": "g", "name": "Mailbox/get", "path": "/state"}},
            "c",
        ]
    ]
    responses = alice.responses(calls)
    assert all(r[0] != "error" for r in responses), responses
    got, emails, threads, unread, emails_general, threads_general, changes = (r[1] for r in responses)
    assert changes["updated"] == changes["created"] == changes["destroyed"] == []
    mb = got["list"][0]
    assert (mb["totalEmails"], mb["totalThreads"], mb["unreadEmails"]) == (4, 3, 3)
    assert (emails["total"], threads["total"], unread["total"]) == (4, 3, 3)
    assert (emails_general["total"], threads_general["total"]) == (4, 3)


def test_a_delegate_has_full_rights_and_subscriptions_of_their_own(services, alice, bob):
    services.accounts.delegate("alice@example.org", "bob@example.org")
    mine = by_name(alice)
    theirs = by_name(bob, alice.account_id)
    assert set(theirs) == set(mine)
    assert all(mb["isSubscribed"] is False for mb in theirs.values())  # shared: not subscribed by default
    assert theirs["Trash"]["myRights"] == mine["Trash"]["myRights"] == dict.fromkeys(RIGHTS, True)
    inbox = mine["Inbox"]["id"]
    bob.call("Mailbox/set", {"accountId": alice.account_id, "update": {inbox: {"isSubscribed": True}}})
    alice.call("Mailbox/set", {"update": {mine["Trash"]["id"]: {"isSubscribed": False}}})
    assert by_name(bob, alice.account_id)["Inbox"]["isSubscribed"] is True
    assert by_name(bob, alice.account_id)["Trash"]["isSubscribed"] is False
    assert by_name(alice)["Inbox"]["isSubscribed"] is True
    assert by_name(alice)["Trash"]["isSubscribed"] is False
    q = bob.call("Mailbox/query", {"accountId": alice.account_id, "filter": {"isSubscribed": True}})
    assert q["ids"] == [inbox]
    assert all(mb["isSubscribed"] for mb in by_name(bob).values())  # bob's own account: his own subscriptions
    assert alice.error("Mailbox/get", {"ids": None, "accountId": bob.account_id})["type"] == "accountNotFound"


# --- Mailbox/changes -----------------------------------------------------------------------------------------------


def test_rfc_example_changes_after_a_delivery_are_count_only(services, alice):
    """RFC 8621 §2.6: Mailbox/changes then back-referenced Mailbox/get of /created and /updated."""
    state = alice.call("Mailbox/get", {"ids": None})["state"]
    inbox = by_name(alice)["Inbox"]["id"]
    services.mailboxes.deliver("alice@example.org", raw("hello", "h@x"))
    ref = {"resultOf": "0", "name": "Mailbox/changes"}
    responses = alice.responses(
        [
            ["Mailbox/changes", {"accountId": alice.account_id, "sinceState": state}, "0"],
            ["Mailbox/get", {"accountId": alice.account_id, "#ids": {**ref, "path": "/created"}}, "1"],
            [
                "Mailbox/get",
                {
                    "accountId": alice.account_id,
                    "#ids": {**ref, "path": "/updated"},
                    "#properties": {**ref, "path": "/updatedProperties"},
                },
                "2",
            ],
        ]
    )
    changes, created, updated = (r[1] for r in responses)
    assert changes["oldState"] == state and changes["newState"] != state and changes["hasMoreChanges"] is False
    assert changes["updated"] == [inbox] and changes["created"] == changes["destroyed"] == []
    assert changes["updatedProperties"] == COUNTS
    assert created["list"] == [] and created["state"] == changes["newState"]
    assert updated["list"] == [
        {"id": inbox, "totalEmails": 1, "unreadEmails": 1, "totalThreads": 1, "unreadThreads": 1}
    ]


def test_a_rename_makes_updated_properties_null(services, alice):
    junk = by_name(alice)["Junk"]["id"]
    state = alice.call("Mailbox/get", {"ids": []})["state"]
    r = alice.call("Mailbox/set", {"update": {junk: {"name": "Spam"}}})
    changes = alice.call("Mailbox/changes", {"sinceState": state})
    assert changes["updated"] == [junk] and changes["updatedProperties"] is None
    assert changes["newState"] == r["newState"]
    services.mailboxes.deliver("alice@example.org", raw("x", "x@x"))
    mixed = alice.call("Mailbox/changes", {"sinceState": state})
    assert mixed["updatedProperties"] is None  # the window holds a rename too
    after = alice.call("Mailbox/changes", {"sinceState": r["newState"]})
    assert after["updatedProperties"] == COUNTS
    nothing = alice.call("Mailbox/changes", {"sinceState": after["newState"]})
    assert nothing["updated"] == [] and nothing["updatedProperties"] is None
    assert nothing["newState"] == nothing["oldState"] == after["newState"]


def test_changes_pages_and_refuses_unknown_states(alice):
    state = alice.call("Mailbox/get", {"ids": []})["state"]
    ids = create(alice, a={"name": "A"}, b={"name": "B"}, c={"name": "C"})
    seen, since = [], state
    for _ in range(5):
        page = alice.call("Mailbox/changes", {"sinceState": since, "maxChanges": 2})
        assert len(page["created"]) <= 2
        seen += page["created"]
        since = page["newState"]
        if not page["hasMoreChanges"]:
            break
    assert sorted(seen) == sorted(ids.values())
    assert since == alice.call("Mailbox/get", {"ids": []})["state"]
    assert alice.error("Mailbox/changes", {"sinceState": "not-a-state"})["type"] == "cannotCalculateChanges"
    assert alice.error("Mailbox/changes", {"sinceState": "zzzzzz"})["type"] == "cannotCalculateChanges"
    assert alice.error("Mailbox/changes", {"sinceState": state, "maxChanges": 0})["type"] == "invalidArguments"
    assert alice.error("Mailbox/changes", {})["type"] == "invalidArguments"


# --- Mailbox/query -------------------------------------------------------------------------------------------------


@pytest.fixture
def tree(alice) -> dict[str, str]:
    """Default mailboxes plus Work(10)/{projects(1)/Alpha(0), Admin(1)}, Personal(10)/{Family(0), Étienne(0)};
    Junk and Family unsubscribed. Returns name -> id."""
    made = create(
        alice,
        work={"name": "Work", "sortOrder": 10},
        projects={"name": "projects", "sortOrder": 1, "parentId": "#work"},
        alpha={"name": "Alpha", "parentId": "#projects"},
        admin={"name": "Admin", "sortOrder": 1, "parentId": "#work"},
        personal={"name": "Personal", "sortOrder": 10},
        family={"name": "Family", "parentId": "#personal", "isSubscribed": False},
        etienne={"name": "Étienne", "parentId": "#personal"},
    )
    ids = {name: mb["id"] for name, mb in by_name(alice).items()}
    alice.call("Mailbox/set", {"update": {ids["Junk"]: {"isSubscribed": False}}})
    assert ids["Family"] == made["family"]
    return ids


def query(client, names: dict[str, str], **args) -> list[str]:
    """The query's ids as names."""
    back = {v: k for k, v in names.items()}
    return [back[i] for i in client.call("Mailbox/query", args)["ids"]]


DEFAULT_ORDER = [
    "Alpha", "Étienne", "Family", "Admin", "Inbox", "projects", "Drafts", "Sent", "Archive", "Junk", "Trash",
    "Personal", "Work",
]  # fmt: skip
TREE_ORDER = [
    "Inbox", "Drafts", "Sent", "Archive", "Junk", "Trash", "Personal", "Étienne", "Family", "Work", "Admin",
    "projects", "Alpha",
]  # fmt: skip
NON_ROLE = ["Alpha", "Étienne", "Family", "Admin", "projects", "Personal", "Work"]


@pytest.mark.parametrize(
    "filter_, expected",
    [
        (None, DEFAULT_ORDER),
        ({}, DEFAULT_ORDER),
        ({"parentId": None}, ["Inbox", "Drafts", "Sent", "Archive", "Junk", "Trash", "Personal", "Work"]),
        ({"name": "A"}, ["Alpha", "Family", "Admin", "Drafts", "Archive", "Trash", "Personal"]),
        ({"name": "tienn"}, ["Étienne"]),
        ({"role": "inbox"}, ["Inbox"]),
        ({"role": None}, NON_ROLE),
        ({"hasAnyRole": True}, ["Inbox", "Drafts", "Sent", "Archive", "Junk", "Trash"]),
        ({"hasAnyRole": False}, NON_ROLE),
        ({"isSubscribed": False}, ["Family", "Junk"]),
        ({"operator": "AND", "conditions": [{"name": "a"}, {"hasAnyRole": True}]}, ["Drafts", "Archive", "Trash"]),
        ({"operator": "OR", "conditions": [{"role": "inbox"}, {"name": "ily"}]}, ["Family", "Inbox"]),
        ({"operator": "NOT", "conditions": [{"hasAnyRole": True}, {"name": "al"}]}, ["Étienne", "Family", "Admin",
                                                                                    "projects", "Work"]),
        (
            {"operator": "AND", "conditions": [{"operator": "NOT", "conditions": [{"name": "a"}]}, {"parentId": None}]},
            ["Inbox", "Sent", "Junk", "Work"],
        ),
    ],
)  # fmt: skip
def test_every_filter(alice, tree, filter_, expected):
    assert query(alice, tree, filter=filter_) == expected


def test_parent_id_filter_names_one_level(alice, tree):
    assert query(alice, tree, filter={"parentId": tree["Work"]}) == ["Admin", "projects"]
    assert query(alice, tree, filter={"parentId": tree["Alpha"]}) == []


@pytest.mark.parametrize(
    "sort, expected",
    [
        (
            [{"property": "name"}],
            ["Admin", "Alpha", "Archive", "Drafts", "Étienne", "Family", "Inbox", "Junk", "Personal", "projects",
             "Sent", "Trash", "Work"],
        ),
        (
            [{"property": "name", "collation": "i;ascii-casemap"}],
            ["Admin", "Alpha", "Archive", "Drafts", "Family", "Inbox", "Junk", "Personal", "projects", "Sent",
             "Trash", "Work", "Étienne"],
        ),
        (
            [{"property": "name", "isAscending": False}],
            ["Work", "Trash", "Sent", "projects", "Personal", "Junk", "Inbox", "Family", "Étienne", "Drafts",
             "Archive", "Alpha", "Admin"],
        ),
        (
            [{"property": "sortOrder", "isAscending": False}, {"property": "name"}],
            ["Personal", "Work", "Trash", "Junk", "Archive", "Sent", "Drafts", "Admin", "Inbox", "projects", "Alpha",
             "Étienne", "Family"],
        ),
        ([{"property": "sortOrder"}, {"property": "name"}], DEFAULT_ORDER),
    ],
)  # fmt: skip
def test_every_sort(alice, tree, sort, expected):
    assert query(alice, tree, sort=sort) == expected


def test_sort_ties_are_stable_and_numeric_collation_parses_numbers(alice):
    made = create(alice, **{f"n{i}": {"name": name, "sortOrder": 50} for i, name in enumerate(["10x", "9y", "z"])})
    names = {v: k for k, v in made.items()}
    assert alice.call("Mailbox/query", {"filter": {"name": "0X"}})["ids"] == [made["n0"]]
    numeric = alice.call(
        "Mailbox/query",
        {"filter": {"hasAnyRole": False}, "sort": [{"property": "name", "collation": "i;ascii-numeric"}]},
    )["ids"]
    assert [names[i] for i in numeric] == ["n1", "n0", "n2"]  # 9 < 10 < no digits
    by_order = alice.call("Mailbox/query", {"filter": {"hasAnyRole": False}, "sort": [{"property": "sortOrder"}]})
    again = alice.call("Mailbox/query", {"filter": {"hasAnyRole": False}, "sort": [{"property": "sortOrder"}]})
    assert by_order["ids"] == again["ids"] and sorted(by_order["ids"]) == by_order["ids"]  # ties: by id


def test_sort_as_tree_puts_parents_first_and_orders_siblings(alice, tree):
    assert query(alice, tree, sortAsTree=True) == TREE_ORDER
    by_name_desc = query(alice, tree, sortAsTree=True, sort=[{"property": "name", "isAscending": False}])
    assert by_name_desc == [
        "Work", "projects", "Alpha", "Admin", "Trash", "Sent", "Personal", "Family", "Étienne", "Junk", "Inbox",
        "Drafts", "Archive",
    ]  # fmt: skip


def test_filter_as_tree_needs_every_ancestor_to_match(alice, tree):
    assert query(alice, tree, filter={"name": "a"}, sortAsTree=True) == [
        "Drafts", "Archive", "Trash", "Personal", "Family", "Admin", "Alpha",
    ]  # fmt: skip
    assert query(alice, tree, filter={"name": "a"}, sortAsTree=True, filterAsTree=True) == [
        "Drafts", "Archive", "Trash", "Personal", "Family",
    ]  # fmt: skip
    assert query(alice, tree, filter={"hasAnyRole": False}, filterAsTree=True) == NON_ROLE


def test_query_window_total_and_state(alice, tree):
    full = alice.call("Mailbox/query", {"sortAsTree": True})
    assert full["queryState"] == alice.call("Mailbox/get", {"ids": []})["state"]
    assert full["canCalculateChanges"] is True and "total" not in full
    page = alice.call("Mailbox/query", {"sortAsTree": True, "position": 2, "limit": 3, "calculateTotal": True})
    assert page["ids"] == full["ids"][2:5] and page["position"] == 2 and page["total"] == 13
    tail = alice.call("Mailbox/query", {"sortAsTree": True, "position": -2})
    assert tail["ids"] == full["ids"][-2:] and tail["position"] == 11
    anchored = alice.call("Mailbox/query", {"sortAsTree": True, "anchor": tree["Work"], "anchorOffset": -1})
    assert anchored["ids"] == full["ids"][8:]
    past = alice.call("Mailbox/query", {"position": 50})
    assert past["ids"] == []


@pytest.mark.parametrize(
    "args, error",
    [
        ({"sort": [{"property": "totalEmails"}]}, "unsupportedSort"),
        ({"sort": [{"property": "name", "collation": "i;octet"}]}, "unsupportedSort"),
        ({"filter": {"hasKeyword": "$seen"}}, "unsupportedFilter"),
        ({"filter": {"operator": "AND", "conditions": [{"colour": "red"}]}}, "unsupportedFilter"),
        ({"filter": {"name": 5}}, "invalidArguments"),
        ({"filter": {"hasAnyRole": "yes"}}, "invalidArguments"),
        ({"filter": {"parentId": "not an id"}}, "invalidArguments"),
        ({"filter": {"operator": "XOR", "conditions": []}}, "invalidArguments"),
        ({"sortAsTree": "yes"}, "invalidArguments"),
        ({"limit": -1}, "invalidArguments"),
        ({"anchor": "Bnope"}, "anchorNotFound"),
        ({"collapseThreads": True}, "invalidArguments"),
    ],
)
def test_query_errors(alice, args, error):
    assert alice.error("Mailbox/query", args)["type"] == error


# --- Mailbox/queryChanges ------------------------------------------------------------------------------------------


def splice(old: list[str], removed: list[str], added: list[dict]) -> list[str]:
    """What a client does with a queryChanges response (RFC 8620 §5.6)."""
    gone = set(removed)
    ids = [i for i in old if i not in gone]
    for item in sorted(added, key=lambda a: a["index"]):
        ids.insert(item["index"], item["id"])
    return ids


QUERIES = [
    {},
    {"sort": [{"property": "name"}]},
    {"filter": {"name": "a"}, "sort": [{"property": "name", "isAscending": False}]},
    {"filter": {"isSubscribed": True}},
    {"sortAsTree": True},
    {"sortAsTree": True, "filterAsTree": True, "filter": {"name": "r"}},
    {"filter": {"parentId": None}, "sort": [{"property": "sortOrder"}]},
]


def test_query_changes_splice_a_cached_result_into_the_new_one(services, alice, tree):
    before = [alice.call("Mailbox/query", q) for q in QUERIES]
    r = alice.call(
        "Mailbox/set",
        {
            "create": {"new": {"name": "Newcomer", "parentId": tree["Personal"]}},
            "update": {
                tree["Admin"]: {"name": "Zadmin"},
                tree["Family"]: {"parentId": tree["Work"], "isSubscribed": True},
                tree["Work"]: {"name": "Aardvark"},  # moves its whole subtree in tree order
                tree["Drafts"]: {"isSubscribed": False},
            },
            "destroy": [tree["Alpha"]],
        },
    )
    assert not (r["notCreated"] or r["notUpdated"] or r["notDestroyed"])
    services.mailboxes.deliver("alice@example.org", raw("count only", "c@x"))
    for q, old in zip(QUERIES, before, strict=True):
        now = alice.call("Mailbox/query", q)
        diff = alice.call("Mailbox/queryChanges", {**q, "sinceQueryState": old["queryState"], "calculateTotal": True})
        assert diff["oldQueryState"] == old["queryState"] and diff["newQueryState"] == now["queryState"]
        assert diff["total"] == len(now["ids"])
        assert splice(old["ids"], diff["removed"], diff["added"]) == now["ids"], q
        assert [a["index"] for a in diff["added"]] == sorted(a["index"] for a in diff["added"])
        assert tree["Alpha"] in diff["removed"] or tree["Alpha"] not in old["ids"]


def test_query_changes_after_only_count_changes_are_empty(services, alice, tree):
    old = alice.call("Mailbox/query", {"sortAsTree": True})
    services.mailboxes.deliver("alice@example.org", raw("one", "1@x"))
    diff = alice.call("Mailbox/queryChanges", {"sortAsTree": True, "sinceQueryState": old["queryState"]})
    assert diff["removed"] == [] and diff["added"] == [] and "total" not in diff
    assert diff["newQueryState"] != old["queryState"]
    same = alice.call("Mailbox/queryChanges", {"sinceQueryState": diff["newQueryState"]})
    assert same["removed"] == same["added"] == []


def test_query_changes_errors(alice, tree):
    state = alice.call("Mailbox/query", {})["queryState"]
    alice.call("Mailbox/set", {"update": {tree["Admin"]: {"name": "B"}, tree["Work"]: {"name": "C"}}})
    assert alice.error("Mailbox/queryChanges", {"sinceQueryState": "bogus"})["type"] == "cannotCalculateChanges"
    assert alice.error("Mailbox/queryChanges", {"sinceQueryState": state, "maxChanges": 3})["type"] == "tooManyChanges"
    ok = alice.call("Mailbox/queryChanges", {"sinceQueryState": state, "maxChanges": 4, "upToId": tree["Inbox"]})
    assert sorted(ok["removed"]) == sorted([tree["Admin"], tree["Work"]]) and len(ok["added"]) == 2
    assert alice.error("Mailbox/queryChanges", {})["type"] == "invalidArguments"
    missing_sort = {"sinceQueryState": state, "sort": [{"property": "role"}]}
    assert alice.error("Mailbox/queryChanges", missing_sort)["type"] == "unsupportedSort"
    assert alice.error("Mailbox/queryChanges", {"sinceQueryState": state, "position": 1})["type"] == "invalidArguments"

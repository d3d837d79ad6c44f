"""RFC 8621 conformance for Mailbox and Thread, black-box through POST /jmap/api, grouped by RFC section:
§1.3 capabilities, §2 Mailbox, §3 Thread (Identity, EmailSubmission and VacationResponse: in
test_mail_sending.py).

The RFC's own examples are reproduced, and the expert rulings on mailbox names (alreadyExists),
mailboxHasChild with onDestroyRemoveEmails, and totalEmails agreeing with Email/query's total.
"""

from __future__ import annotations

import random

from tests.support.emails import message, roles
from tests.support.jmap import JmapClient

SUBMISSION = "urn:ietf:params:jmap:submission"
VACATION = "urn:ietf:params:jmap:vacationresponse"
MAIL = "urn:ietf:params:jmap:mail"
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


def new_mailbox(client: JmapClient, name: str, **props) -> str:
    result = client.call("Mailbox/set", create={"k": {"name": name, **props}})
    assert result["notCreated"] is None, result
    return result["created"]["k"]["id"]


def deliver(services, subject: str, msgid: str, to: str = "alice@example.org", extra: str = "") -> str:
    raw = message(subject, msgid)
    if extra:
        raw = raw.replace(b"Message-ID", extra.encode() + b"\r\nMessage-ID", 1)
    return services.mailboxes.deliver(to, raw).message_id


def counts(client: JmapClient, mailbox_id: str) -> dict:
    (got,) = client.call("Mailbox/get", ids=[mailbox_id], properties=COUNTS)["list"]
    return {k: got[k] for k in COUNTS}


# --- §1.3 capabilities ------------------------------------------------------------------------------------------------


def test_account_capabilities(alice):
    session = alice.client.get("/.well-known/jmap", headers=alice.headers).get_json()
    assert session["capabilities"][MAIL] == {} and session["capabilities"][SUBMISSION] == {}
    assert session["capabilities"][VACATION] == {}
    caps = session["accounts"][alice.account_id]["accountCapabilities"]
    mail = caps[MAIL]
    assert set(mail) == {
        "maxMailboxesPerEmail",
        "maxMailboxDepth",
        "maxSizeMailboxName",
        "maxSizeAttachmentsPerEmail",
        "emailQuerySortOptions",
        "mayCreateTopLevelMailbox",
    }
    assert mail["maxMailboxesPerEmail"] is None or mail["maxMailboxesPerEmail"] >= 1
    assert mail["maxSizeMailboxName"] >= 100  # MUST be at least 100
    assert {"receivedAt"} <= set(mail["emailQuerySortOptions"])
    assert set(caps[SUBMISSION]) == {"maxDelayedSend", "submissionExtensions"}
    assert caps[VACATION] == {}


# --- §2 Mailbox -------------------------------------------------------------------------------------------------------


def test_mailbox_properties_and_types(alice):
    mailboxes = alice.call("Mailbox/get", ids=None)["list"]
    props = {"id", "name", "parentId", "role", "sortOrder", *COUNTS, "myRights", "isSubscribed"}
    for mb in mailboxes:
        assert set(mb) == props
        assert isinstance(mb["name"], str) and mb["name"]
        assert all(isinstance(mb[c], int) and mb[c] >= 0 for c in COUNTS)
        assert set(mb["myRights"]) == RIGHTS and all(isinstance(v, bool) for v in mb["myRights"].values())
        assert 0 <= mb["sortOrder"] < 2**31 and isinstance(mb["isSubscribed"], bool)
    given = [mb["role"] for mb in mailboxes if mb["role"]]
    assert len(given) == len(set(given)) and "inbox" in given  # one mailbox per role
    assert all(r == r.lower() for r in given)


def test_rfc_2_6_changes_example_with_updated_properties_back_reference(alice, services):
    a = alice.account_id
    email = deliver(services, "Hi", "c1@example.org")
    inbox = roles(services, a)["inbox"]
    since = alice.call("Mailbox/get", ids=[])["state"]
    alice.call("Email/set", update={email: {"keywords/$seen": True}})  # only counts move
    calls = [
        ["Mailbox/changes", {"accountId": a, "sinceState": since}, "0"],
        [
            "Mailbox/get",
            {"accountId": a, "#ids": {"resultOf": "0", "name": "Mailbox/changes", "path": "/created"}},
            "1",
        ],
        [
            "Mailbox/get",
            {
                "accountId": a,
                "#ids": {"resultOf": "0", "name": "Mailbox/changes", "path": "/updated"},
                "#properties": {"resultOf": "0", "name": "Mailbox/changes", "path": "/updatedProperties"},
            },
            "2",
        ],
    ]
    changes, created, updated = (r[1] for r in alice.responses(calls))
    assert changes["updated"] == [inbox] and changes["created"] == [] and changes["destroyed"] == []
    assert sorted(changes["updatedProperties"]) == sorted(COUNTS)
    assert created["list"] == [] and created["notFound"] == []
    assert updated["state"] == changes["newState"]
    assert updated["list"] == [
        {"id": inbox, "totalEmails": 1, "unreadEmails": 0, "totalThreads": 1, "unreadThreads": 0}
    ]

    # A rename is not a count change: updatedProperties is null, and the same back reference fetches everything.
    renamed_since = changes["newState"]
    alice.call("Mailbox/set", update={inbox: {"sortOrder": 9}})
    again = alice.call("Mailbox/changes", sinceState=renamed_since)
    assert again["updated"] == [inbox] and again["updatedProperties"] is None


def test_rfc_2_6_rename_one_and_fail_to_destroy_another(alice, services):
    boxes = roles(services, alice.account_id)
    other = new_mailbox(alice, "Important mail")
    current = alice.call("Mailbox/get", ids=[])["state"]
    result = alice.call(
        "Mailbox/set",
        ifInState=current,
        update={other: {"name": "Maybe important mail"}},
        destroy=[boxes["inbox"]],
    )
    assert result["oldState"] == current and result["newState"] != current
    assert result["updated"] == {other: None} and result["destroyed"] is None
    assert result["notDestroyed"][boxes["inbox"]]["type"] == "forbidden"
    assert alice.call("Mailbox/get", ids=[other], properties=["name"])["list"][0]["name"] == "Maybe important mail"


def test_mailbox_create_rules(alice):
    parent = new_mailbox(alice, "Parent")
    result = alice.call(
        "Mailbox/set",
        create={
            "dup": {"name": "Parent"},
            "child": {"name": "Parent", "parentId": parent},  # same name, other parent: fine
            "empty": {"name": ""},
            "role": {"name": "Second inbox", "role": "inbox"},
            "badrole": {"name": "R", "role": "no-such-role"},
            "order": {"name": "O", "sortOrder": 2**31},
            "negative": {"name": "N", "sortOrder": -1},
            "ghost": {"name": "G", "parentId": "nope"},
            "serverset": {"name": "S", "unreadEmails": 0},
            "noname": {"parentId": parent},
        },
    )
    nc = result["notCreated"]
    assert list(result["created"]) == ["child"]
    assert nc["dup"]["type"] == "alreadyExists" and nc["dup"]["existingId"] == parent
    for key, prop in [
        ("empty", "name"),
        ("role", "role"),
        ("badrole", "role"),
        ("order", "sortOrder"),
        ("negative", "sortOrder"),
        ("ghost", "parentId"),
        ("serverset", "unreadEmails"),
        ("noname", "name"),
    ]:
        assert nc[key]["type"] == "invalidProperties" and prop in nc[key]["properties"], (key, nc[key])
    # Renaming onto a sibling's name is refused the same way.
    other = new_mailbox(alice, "Other")
    clash = alice.call("Mailbox/set", update={other: {"name": "Parent"}})["notUpdated"][other]
    assert clash["type"] == "alreadyExists" and clash["existingId"] == parent
    # No loops: a mailbox cannot move under itself or its descendant.
    child = result["created"]["child"]["id"]
    loop = alice.call("Mailbox/set", update={parent: {"parentId": child}})["notUpdated"][parent]
    assert loop["type"] == "invalidProperties" and loop["properties"] == ["parentId"]


def test_mailbox_set_rules_hold_for_the_final_state_not_between_items(alice, services):
    """RFC 8620 §5.3: "rename an object A => B and simultaneously rename another object B => A. If the final
    state is valid, this is allowed." The same goes for roles, for a parent and child trading places, and for
    names a creation or an update takes from a mailbox renamed or destroyed in the same call."""
    boxes = roles(services, alice.account_id)
    a, b = new_mailbox(alice, "A"), new_mailbox(alice, "B")
    since = alice.call("Mailbox/get", ids=[])["state"]
    swapped = alice.call("Mailbox/set", update={a: {"name": "B"}, b: {"name": "A"}})
    assert swapped["updated"] == {a: None, b: None} and swapped["notUpdated"] is None
    names = {m["id"]: m["name"] for m in alice.call("Mailbox/get", ids=[a, b], properties=["name"])["list"]}
    assert names == {a: "B", b: "A"}
    assert sorted(alice.call("Mailbox/changes", sinceState=since)["updated"]) == sorted([a, b])

    roles_swapped = alice.call(
        "Mailbox/set", update={boxes["archive"]: {"role": "junk"}, boxes["junk"]: {"role": "archive"}}
    )
    assert roles_swapped["notUpdated"] is None
    got = alice.call("Mailbox/get", ids=[boxes["archive"], boxes["junk"]], properties=["role"])["list"]
    assert {m["id"]: m["role"] for m in got} == {boxes["archive"]: "junk", boxes["junk"]: "archive"}

    child = new_mailbox(alice, "Child", parentId=a)
    flipped = alice.call("Mailbox/set", update={a: {"parentId": child}, child: {"parentId": None}})
    assert flipped["notUpdated"] is None
    looped = alice.call("Mailbox/set", update={child: {"parentId": a}})["notUpdated"][child]
    assert looped["type"] == "invalidProperties" and looped["properties"] == ["parentId"]

    taken = alice.call("Mailbox/set", create={"new": {"name": "A"}}, update={b: {"name": "Z"}})
    assert taken["notCreated"] is None and taken["updated"] == {b: None}
    gone = new_mailbox(alice, "Gone")
    freed = alice.call("Mailbox/set", update={b: {"name": "Gone"}}, destroy=[gone])
    assert freed["updated"] == {b: None} and freed["destroyed"] == [gone]
    # Two updates wanting the same name: one wins, the other is refused; nothing untouched ever yields.
    both = alice.call("Mailbox/set", update={b: {"name": "Same"}, child: {"name": "Same"}})
    assert list(both["updated"]) == [b] and both["notUpdated"][child]["type"] == "alreadyExists"
    kept = alice.call("Mailbox/set", update={b: {"name": "Inbox"}})["notUpdated"][b]
    assert kept["type"] == "alreadyExists" and kept["existingId"] == boxes["inbox"]


def test_mailbox_has_child_wins_over_on_destroy_remove_emails(alice, services):
    parent = new_mailbox(alice, "Parent")
    child = new_mailbox(alice, "Child", parentId=parent)
    email = deliver(services, "Keep me", "keep@example.org")
    alice.call("Email/set", update={email: {"mailboxIds": {parent: True}}})
    before = alice.call("Mailbox/get", ids=[])["state"]
    result = alice.call("Mailbox/set", destroy=[parent], onDestroyRemoveEmails=True)
    assert result["destroyed"] is None and result["notDestroyed"][parent]["type"] == "mailboxHasChild"
    assert result["newState"] == before
    # Neither the child nor the email went anywhere.
    assert alice.call("Mailbox/get", ids=[parent, child], properties=[])["notFound"] == []
    (kept,) = alice.call("Email/get", ids=[email], properties=["mailboxIds"])["list"]
    assert kept["mailboxIds"] == {parent: True}


def test_mailbox_destroy_with_emails(alice, services):
    inbox = roles(services, alice.account_id)["inbox"]
    box = new_mailbox(alice, "Box")
    only_here = deliver(services, "Only here", "only@example.org")
    also_inbox = deliver(services, "Also inbox", "also@example.org")
    alice.call(
        "Email/set",
        update={only_here: {"mailboxIds": {box: True}}, also_inbox: {f"mailboxIds/{box}": True}},
    )
    refused = alice.call("Mailbox/set", destroy=[box])
    assert refused["notDestroyed"][box]["type"] == "mailboxHasEmail"
    email_state = alice.call("Email/get", ids=[])["state"]
    done = alice.call("Mailbox/set", destroy=[box], onDestroyRemoveEmails=True)
    assert done["destroyed"] == [box]
    got = alice.call("Email/get", ids=[only_here, also_inbox], properties=["mailboxIds"])
    assert got["notFound"] == [only_here] and got["list"] == [{"id": also_inbox, "mailboxIds": {inbox: True}}]
    changes = alice.call("Email/changes", sinceState=email_state)
    assert changes["destroyed"] == [only_here] and changes["updated"] == [also_inbox]


def test_mailbox_counts_and_consistency_with_email_query(alice, services):
    a = alice.account_id
    inbox = roles(services, a)["inbox"]
    first = deliver(services, "Thread", "t1@example.org")
    deliver(services, "Re: Thread", "t2@example.org", extra="In-Reply-To: <t1@example.org>")
    deliver(services, "Alone", "t3@example.org")
    alice.call("Email/set", update={first: {"keywords": {"$seen": True}}})
    assert counts(alice, inbox) == {"totalEmails": 3, "unreadEmails": 2, "totalThreads": 2, "unreadThreads": 2}
    responses = alice.responses(
        [
            ["Mailbox/get", {"accountId": a, "ids": [inbox], "properties": ["totalEmails", "unreadEmails"]}, "0"],
            ["Email/query", {"accountId": a, "filter": {"inMailbox": inbox}, "calculateTotal": True}, "1"],
            [
                "Email/query",
                {"accountId": a, "filter": {"inMailbox": inbox, "notKeyword": "$seen"}, "calculateTotal": True},
                "2",
            ],
        ]
    )
    got = responses[0][1]["list"][0]
    assert got["totalEmails"] == responses[1][1]["total"] == 3
    assert got["unreadEmails"] == responses[2][1]["total"] == 2
    # A draft is not unread.
    alice.call("Email/set", update={first: {"keywords": {"$draft": True}}})
    assert counts(alice, inbox)["unreadEmails"] == 2


def test_rfc_2_unread_threads_example_with_the_trash(alice, services):
    """§2 unreadThreads: a thread of an unread email in the trash and a read one in the inbox counts 1 for the
    trash and 0 for the inbox."""
    boxes = roles(services, alice.account_id)
    read = deliver(services, "Topic", "u1@example.org")
    unread = deliver(services, "Re: Topic", "u2@example.org", extra="In-Reply-To: <u1@example.org>")
    alice.call(
        "Email/set", update={read: {"keywords": {"$seen": True}}, unread: {"mailboxIds": {boxes["trash"]: True}}}
    )
    assert counts(alice, boxes["inbox"])["unreadThreads"] == 0
    assert counts(alice, boxes["trash"])["unreadThreads"] == 1
    assert counts(alice, boxes["trash"])["unreadEmails"] == 1 and counts(alice, boxes["inbox"])["unreadEmails"] == 0


def test_subscriptions_are_per_user_and_default_false_in_shared_accounts(alice, bob, services):
    services.accounts.delegate("bob@example.org", "alice@example.org")
    own = new_mailbox(alice, "Mine")
    assert alice.call("Mailbox/get", ids=[own], properties=["isSubscribed"])["list"][0]["isSubscribed"] is True
    shared = alice.call("Mailbox/get", accountId=bob.account_id, ids=None, properties=["isSubscribed"])["list"]
    assert shared and all(m["isSubscribed"] is False for m in shared)
    assert all(m["isSubscribed"] for m in bob.call("Mailbox/get", ids=None, properties=["isSubscribed"])["list"])
    target = shared[0]["id"]
    alice.call("Mailbox/set", accountId=bob.account_id, update={target: {"isSubscribed": True}})
    mine = alice.call("Mailbox/get", accountId=bob.account_id, ids=[target], properties=["isSubscribed"])
    assert mine["list"][0]["isSubscribed"] is True
    assert bob.call("Mailbox/get", ids=[target], properties=["isSubscribed"])["list"][0]["isSubscribed"] is True


def test_mailbox_query_filters_and_tree_sorting(alice, services):
    inbox = roles(services, alice.account_id)["inbox"]
    top = new_mailbox(alice, "Zeta", sortOrder=1)
    sub_b = new_mailbox(alice, "b-child", parentId=top)
    sub_a = new_mailbox(alice, "A-child", parentId=top)
    grand = new_mailbox(alice, "grand", parentId=sub_b)
    alice.call("Mailbox/set", update={sub_a: {"isSubscribed": False}})

    def ids(**args):
        return alice.call("Mailbox/query", args)["ids"]

    assert ids(filter={"parentId": top}, sort=[{"property": "name"}]) == [sub_a, sub_b]
    assert top in ids(filter={"parentId": None}) and sub_a not in ids(filter={"parentId": None})
    assert ids(filter={"role": "inbox"}) == [inbox]
    assert inbox not in ids(filter={"hasAnyRole": False}) and ids(filter={"hasAnyRole": True})
    assert ids(filter={"isSubscribed": False}) == [sub_a]
    assert ids(filter={"name": "CHILD"}, sort=[{"property": "name"}]) == [sub_a, sub_b]  # contains, any case
    assert set(ids(filter={"operator": "NOT", "conditions": [{"hasAnyRole": True}]})) == {top, sub_a, sub_b, grand}
    # sortAsTree: every mailbox right after its ancestors, siblings by the comparators.
    tree = ids(filter={"hasAnyRole": False}, sort=[{"property": "name", "isAscending": False}], sortAsTree=True)
    assert tree == [top, sub_b, grand, sub_a]
    # filterAsTree: only mailboxes whose ancestors all match too.
    assert ids(filter={"name": "child"}, filterAsTree=True) == []
    assert ids(
        filter={"operator": "AND", "conditions": [{"name": "a"}, {"hasAnyRole": False}]},
        filterAsTree=True,
        sortAsTree=True,
    ) == [
        top,
        sub_a,
    ]


# --- §3 Thread --------------------------------------------------------------------------------------------------------


def test_rfc_3_1_1_thread_get_and_thread_changes(alice, services):
    first = deliver(services, "Topic", "th1@example.org")
    thread = alice.call("Email/get", ids=[first], properties=["threadId"])["list"][0]["threadId"]
    since = alice.call("Thread/get", ids=[])["state"]
    second = deliver(services, "Re: Topic", "th2@example.org", extra="References: <th1@example.org>")
    got = alice.call("Thread/get", ids=[thread, "nope"])
    assert set(got) == {"accountId", "state", "list", "notFound"}
    dates = {e["id"]: e["receivedAt"] for e in alice.call("Email/get", ids=[first, second])["list"]}
    oldest_first = sorted([first, second], key=lambda i: (dates[i], i))  # equal dates: by id (stable)
    assert got["list"] == [{"id": thread, "emailIds": oldest_first}]
    assert got["notFound"] == ["nope"]
    changes = alice.call("Thread/changes", sinceState=since)
    assert (changes["created"], changes["updated"], changes["destroyed"]) == ([], [thread], [])
    assert changes["newState"] == got["state"]

    alice.call("Email/set", destroy=[first, second])
    gone = alice.call("Thread/changes", sinceState=changes["newState"])
    assert gone["destroyed"] == [thread] and gone["updated"] == []
    assert alice.call("Thread/get", ids=[thread])["notFound"] == [thread]


def test_random_mailbox_set_calls_never_leave_an_invalid_tree(alice):
    """Many updates per call, swaps and moves included: whatever is accepted, the tree stays valid and a refused
    update changes nothing."""
    rnd = random.Random(8620)
    names = ["A", "B", "a", "C"]
    for _ in range(15):
        before = {m["id"]: m for m in alice.call("Mailbox/get", ids=None)["list"]}
        ids = list(before)
        update = {
            t: rnd.choice(
                [
                    {"name": rnd.choice(names)},
                    {"parentId": rnd.choice([*ids, None])},
                    {"role": rnd.choice([None, "archive", "junk", "flagged"])},
                    {"name": rnd.choice(names), "parentId": rnd.choice([*ids, None])},
                ]
            )
            for t in rnd.sample(ids, min(4, len(ids)))
        }
        create = {"c": {"name": rnd.choice(names), "parentId": rnd.choice([*ids, None])}}
        result = alice.call("Mailbox/set", create=create, update=update)
        after = {m["id"]: m for m in alice.call("Mailbox/get", ids=None)["list"]}
        assert result["newState"] == alice.call("Mailbox/get", ids=[])["state"]
        siblings = [(m["parentId"], m["name"].casefold()) for m in after.values()]
        assert len(siblings) == len(set(siblings))
        given = [m["role"] for m in after.values() if m["role"]]
        assert len(given) == len(set(given))
        for m in after.values():
            seen, current = set(), m["id"]
            while current is not None:
                assert current not in seen
                seen.add(current)
                current = after[current]["parentId"]
            assert len(seen) <= 10
        for key in result["updated"] or {}:
            assert all(after[key][p] == v for p, v in update[key].items() if p != "name")
        for key in result["notUpdated"] or {}:
            assert after[key] == before[key]


def test_a_large_cycle_of_moves_is_refused_item_by_item(alice):
    """300 mailboxes each moved under the next, in one call: a loop and a 300-deep chain to refuse, not an error."""
    count = 300
    created = alice.call("Mailbox/set", create={f"m{i}": {"name": f"M{i}"} for i in range(count)})["created"]
    ids = [created[f"m{i}"]["id"] for i in range(count)]
    result = alice.call("Mailbox/set", update={ids[i]: {"parentId": ids[(i + 1) % count]} for i in range(count)})
    refused = result["notUpdated"]
    assert len(result["updated"]) + len(refused) == count
    assert all(e["type"] == "invalidProperties" and e["properties"] == ["parentId"] for e in refused.values())
    parents = {m["id"]: m["parentId"] for m in alice.call("Mailbox/get", ids=ids, properties=["parentId"])["list"]}
    for start in ids:
        depth, current = 0, start
        while current is not None:
            depth, current = depth + 1, parents.get(current)
        assert depth <= 10

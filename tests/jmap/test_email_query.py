"""Email/query and Email/queryChanges (RFC 8621 §4.4, §4.5) as this server implements them, both backends:
filter conditions and operators beyond what the conformance suite checks (several mailboxes, time zones,
encoded and accented names, header names in any case, nested operators), every sort with its tie-break,
collapseThreads under another sort, the window on the general (unindexed) path, limits, caps and creation
ids, the errors particular to this server, and queryChanges replayed step by step.

What the RFC requires of every server (each filter condition, the window, the RFC's examples, the errors
it names) is in tests/conformance/test_email_search.py; text search and the full-text index in
tests/mailbox/test_search.py; totals against the Mailbox counts (Q24) in tests/jmap/test_mailbox.py."""

from __future__ import annotations

import pytest

from jmapmono.jmap.email_query import SORT_PROPERTIES
from jmapmono.mailbox import search_query
from tests.support.emails import MINUTE, T0, Box, mail


@pytest.fixture
def box(services, alice) -> Box:
    return Box(services, alice)


@pytest.fixture
def data(box: Box) -> dict[str, str]:
    """Four emails in two threads across Inbox, Archive and Trash."""
    return {
        "e1": box.add(
            subject="Quarterly report",
            cc="Carol <carol@example.net>",
            bcc="dave@example.org",
            body="The numbers are attached",
            msgid="q1@x",
            attachment=True,
            keywords=["$seen"],
            at=T0,
            date="Mon, 01 Jan 2024 12:00:00 +0000",
        ),
        "e2": box.add(
            subject="Re: Quarterly report",
            frm="bob@example.org",
            to="Alice Sender <alice@example.com>",
            msgid="q2@x",
            reply_to="q1@x",
            boxes=[box.inbox, box.archive],
            keywords=["$seen", "$flagged"],
            at=T0 + MINUTE,
            date="Mon, 01 Jan 2024 09:00:00 +0000",
        ),
        "e3": box.add(
            subject="Lunch?",
            frm="=?utf-8?q?=C3=89mile_Zola?= <emile@example.fr>",
            headers=("X-Priority: 1",),
            body="Shall we have lunch on Friday?",
            boxes=[box.archive],
            at=T0 + 2 * MINUTE,
            date="Mon, 01 Jan 2024 11:00:00 +0000",
        ),
        "e4": box.add(
            subject="Cheap offer", frm="zed@spam.example", boxes=[box.trash], keywords=["$junk"], at=T0 + 3 * MINUTE
        ),
    }


def named(data: dict[str, str], ids: list[str]) -> set[str]:
    by_id = {v: k for k, v in data.items()}
    return {by_id[i] for i in ids}


def test_filter_conditions_beyond_the_conformance_suite(box, data):
    """Each condition of §4.4.1 is checked once in the conformance suite; these are the cases it leaves out."""
    cases = [
        ({"inMailboxOtherThan": [box.inbox]}, {"e2", "e3", "e4"}),  # e2 is in Inbox and Archive: it stays
        ({"inMailboxOtherThan": []}, {"e1", "e2", "e3", "e4"}),
        ({"after": "2024-01-01T11:01:00+01:00"}, {"e2", "e3", "e4"}),  # a UTCDate with an offset is an instant
        ({"hasAttachment": True}, {"e1"}),
        ({"from": "Zola"}, {"e3"}),  # the display name, decoded from an encoded word (Q10)
        ({"from": "émile"}, {"e3"}),  # accents fold
        ({"subject": '"report quarterly"'}, set()),  # a phrase keeps its order
        ({"header": ["x-priority", "1"]}, {"e3"}),  # a header name in any case
        ({"header": ["X-Priority", "2"]}, set()),
        ({"inMailbox": box.inbox, "hasKeyword": "$flagged"}, {"e2"}),  # several properties: all apply
    ]
    for condition, expected in cases:
        assert named(data, box.ids(condition)) == expected, condition


def test_filter_operators_nest(box, data):
    inbox, flagged = {"inMailbox": box.inbox}, {"hasKeyword": "$flagged"}
    cases = [  # (flat AND, OR, NOT and empty AND, OR: in the conformance suite)
        ({"operator": "AND", "conditions": [inbox, {"operator": "NOT", "conditions": [flagged]}]}, {"e1"}),
        (
            {
                "operator": "OR",
                "conditions": [
                    {"operator": "AND", "conditions": [inbox, flagged]},
                    {"operator": "NOT", "conditions": [{"inMailboxOtherThan": [box.trash]}]},
                ],
            },
            {"e2", "e4"},
        ),
        ({"operator": "NOT", "conditions": []}, {"e1", "e2", "e3", "e4"}),
    ]
    for f, expected in cases:
        assert named(data, box.ids(f)) == expected, f


def test_every_sort_with_id_as_final_tie_break(box, data):
    e1, e2, e3, e4 = (data[k] for k in ("e1", "e2", "e3", "e4"))
    by = lambda prop, asc=True, **kw: box.ids(sort=[{"property": prop, "isAscending": asc, **kw}])  # noqa: E731
    assert by("receivedAt", False) == box.ids() == [e4, e3, e2, e1]  # the default: newest first
    assert by("receivedAt") == [e1, e2, e3, e4]
    assert by("sentAt") == [e2, e4, e3, e1]  # 09:00, 10:00, 11:00, 12:00
    sizes = box.client.call("Email/get", {"ids": [e1, e2, e3, e4], "properties": ["size"]})["list"]
    assert by("size", False) == [s["id"] for s in sorted(sizes, key=lambda s: (-s["size"], s["id"]))]
    assert by("from") == [e1, e2, e3, e4]  # Alice Sender, bob@example.org (no name), Émile Zola, zed@spam…
    assert by("to") == [e2, *sorted([e1, e3, e4])]  # Alice Sender, then three Bob Receivers by id
    assert by("to", False) == [*sorted([e1, e3, e4]), e2]
    same = sorted([e1, e2])  # "Re: Quarterly report" has the base subject of "Quarterly report"
    assert by("subject") == [e4, e3, *same]
    assert by("subject", False) == [*same, e3, e4]  # ties stay by id, ascending
    flagged_first = [
        {"property": "hasKeyword", "keyword": "$flagged", "isAscending": False},
        {"property": "receivedAt"},
    ]
    assert box.ids(sort=flagged_first) == [e2, e1, e3, e4]
    some = [{"property": "someInThreadHaveKeyword", "keyword": "$flagged", "isAscending": False}]
    assert box.ids(sort=[*some, {"property": "receivedAt"}]) == [e1, e2, e3, e4]
    every = [{"property": "allInThreadHaveKeyword", "keyword": "$seen", "isAscending": True}]
    assert box.ids(sort=[*every, {"property": "receivedAt", "isAscending": False}]) == [e4, e3, e2, e1]


def test_string_sort_collations(box):
    """Each collation named (i;unicode-casemap being the default is in the conformance suite, Q11)."""
    names = ["zoe", "Émile", "adam", "Bob", "10 x", "9 y"]
    ids = {n: box.add(subject=n, frm=f"{n} <{i}@x.org>", at=T0 + i) for i, n in enumerate(names)}
    order = lambda collation=None: [  # noqa: E731
        next(n for n, i in ids.items() if i == x)
        for x in box.ids(sort=[{"property": "from", **({"collation": collation} if collation else {})}])
    ]
    assert order("i;unicode-casemap") == ["10 x", "9 y", "adam", "Bob", "Émile", "zoe"]  # case, accents fold
    assert order("i;ascii-casemap") == ["10 x", "9 y", "adam", "Bob", "zoe", "Émile"]  # É is not ASCII
    assert order("i;ascii-numeric")[:2] == ["9 y", "10 x"]  # numbers first, by value


def test_collapse_threads_keeps_the_first_email_of_each_thread_in_any_sort(box, data):
    """The first of its thread in the query's own sort (by receivedAt: in the conformance suite)."""
    e2, e3 = data["e2"], data["e3"]
    general = {"inMailboxOtherThan": [box.trash]}
    assert box.ids(general, sort=[{"property": "sentAt"}], collapseThreads=True) == [e2, e3]  # e2 sent before e1


def test_position_anchor_limit_and_total_on_the_general_path(box):
    """The window (RFC 8620 §5.5) on the path that filters rows rather than walking an index (the indexed
    path is what the conformance suite's window test runs)."""
    ids = [box.add(subject=f"m{i}", at=T0 + i * MINUTE) for i in range(7)][::-1]  # newest first
    assert box.query(filter={"inMailbox": box.inbox})["canCalculateChanges"] is True  # indexed
    f = {"inMailbox": box.inbox, "minSize": 1}  # minSize: not indexed
    q = lambda **a: box.query(filter=f, **a)  # noqa: E731
    assert q()["canCalculateChanges"] is False
    r = q(position=2, limit=3, calculateTotal=True)
    assert (r["position"], r["ids"], r["total"]) == (2, ids[2:5], 7) and "limit" not in r
    assert "total" not in q()
    r = q(position=-2)
    assert (r["position"], r["ids"]) == (5, ids[5:])
    assert q(position=-100)["position"] == 0
    r = q(position=10, calculateTotal=True)
    assert (r["position"], r["ids"], r["total"]) == (10, [], 7)
    r = q(anchor=ids[3], anchorOffset=-1, limit=2, position=99)  # position is ignored with an anchor
    assert (r["position"], r["ids"]) == (2, ids[2:4])
    assert q(anchor=ids[1], anchorOffset=-5)["position"] == 0
    assert q(anchor=ids[6], anchorOffset=3)["ids"] == []
    assert q(limit=0)["ids"] == []
    assert box.error(filter=f, anchor="Mnothere") == "anchorNotFound"
    other = box.add(subject="elsewhere", boxes=[box.archive])
    assert box.error(filter=f, anchor=other) == "anchorNotFound"
    # What the conformance suite does not check on the indexed path either:
    indexed = lambda **a: box.query(filter={"inMailbox": box.inbox}, **a)  # noqa: E731
    assert indexed(position=2, limit=3)["ids"] == ids[2:5] and "limit" not in indexed(position=2, limit=3)
    assert indexed(anchor=ids[6], anchorOffset=3)["ids"] == []
    assert box.error(filter={"inMailbox": box.inbox}, anchor=other) == "anchorNotFound"


def test_limit_is_capped_and_reported_when_it_cuts(box, monkeypatch):
    monkeypatch.setattr(search_query, "MAX_LIMIT", 3)
    for i in range(4):
        box.add(subject=f"m{i}", at=T0 + i)
    for f in ({"inMailbox": box.inbox}, {"text": "m"}):
        r = box.query(filter=f)
        assert len(r["ids"]) == 3 and r["limit"] == 3
        r = box.query(filter=f, position=1, limit=10)
        assert len(r["ids"]) == 3 and "limit" not in r  # nothing left out


def test_another_accounts_mailbox_gives_nothing(box, bob, services):
    box.add(subject="mine")
    bobs_inbox = services.mailboxes.mailbox_by_role(bob.account_id, "inbox").id
    services.mailboxes.append(bob.account_id, mail("secret"), [bobs_inbox])
    r = box.query(filter={"inMailbox": bobs_inbox}, calculateTotal=True, collapseThreads=True)
    assert (r["ids"], r["total"]) == ([], 0)
    assert box.ids({"operator": "OR", "conditions": [{"inMailbox": bobs_inbox}]}) == []


def test_creation_id_references_in_filters(box):
    """``#creationId`` of a mailbox created earlier in the request (here: passed in createdIds)."""
    fresh = box.services.mailboxes.create_mailbox(box.account, "Fresh").id
    in_fresh = box.add(subject="x", boxes=[fresh])
    call = ["Email/query", {"accountId": box.account, "filter": {"inMailboxOtherThan": ["#new"]}}, "0"]
    assert box.client.request([call], createdIds={"new": box.inbox})["methodResponses"][0][1]["ids"] == [in_fresh]
    call = ["Email/query", {"accountId": box.account, "filter": {"inMailbox": "#new"}}, "0"]
    assert box.client.request([call], createdIds={"new": fresh})["methodResponses"][0][1]["ids"] == [in_fresh]


def test_advertised_sort_options_are_the_supported_ones(box):
    session = box.client.client.get("/.well-known/jmap", headers=box.client.headers, follow_redirects=True).get_json()
    options = session["accounts"][box.account]["accountCapabilities"]["urn:ietf:params:jmap:mail"]
    assert set(options["emailQuerySortOptions"]) == set(SORT_PROPERTIES)
    for prop in SORT_PROPERTIES:
        box.query(sort=[{"property": prop, "keyword": "$seen", "collation": "i;unicode-casemap"}])


@pytest.mark.parametrize(
    "args, error",
    [
        ({"sort": [{"property": "someInThreadHaveKeyword", "keyword": 7}]}, "invalidArguments"),
        ({"filter": {"inMailbox": 5}}, "invalidArguments"),
        ({"filter": {"inMailboxOtherThan": "x"}}, "invalidArguments"),
        ({"filter": {"after": "2024-01-01"}}, "invalidArguments"),
        ({"filter": {"hasAttachment": "yes"}}, "invalidArguments"),
        ({"filter": {"text": None}}, "invalidArguments"),
        ({"filter": {"header": ["bad name:", "x"]}}, "invalidArguments"),
        ({"filter": {"inMailbox": "#unknownCreationId"}}, "invalidArguments"),
        (
            {"filter": {"operator": "OR", "conditions": [{"hasKeyword": f"k{i}"} for i in range(600)]}},
            "unsupportedFilter",
        ),
        ({"filter": {"inMailboxOtherThan": [f"M{i}" for i in range(1001)]}}, "unsupportedFilter"),
        ({"filter": {"text": " ".join(["word"] * 1001)}}, "unsupportedFilter"),
        ({"collapseThreads": "yes"}, "invalidArguments"),
        ({"sinceQueryState": "0"}, "invalidArguments"),  # a queryChanges argument
    ],
)
def test_errors(box, args, error):
    """Errors beyond those the conformance suite checks (unknown sort, filter and argument, bad syntax)."""
    assert box.error(**args) == error


# --- Email/queryChanges (RFC 8621 §4.5, RFC 8620 §5.6) --------------------------------------------------------------


def replay(old: list[str], changes: dict) -> list[str]:
    """The client's side of RFC 8620 §5.6: splice out ``removed``, splice in ``added`` lowest index first."""
    indexes = [a["index"] for a in changes["added"]]
    assert indexes == sorted(indexes)
    removed = set(changes["removed"])
    ids = [i for i in old if i not in removed]
    for a in changes["added"]:
        ids.insert(a["index"], a["id"])
    return ids[: changes["total"]] if "total" in changes else ids


@pytest.mark.parametrize(
    "scope, ascending, collapse",
    [
        ("inbox", False, False),
        ("inbox", False, True),
        ("inbox", True, True),
        ("all", False, False),
        ("all", True, True),
    ],
)
def test_query_changes_replay_to_the_new_results(box, scope, ascending, collapse):
    sort = [{"property": "receivedAt", "isAscending": ascending}]
    args = {"filter": {"inMailbox": box.inbox} if scope == "inbox" else None, "sort": sort, "collapseThreads": collapse}
    t = [box.add(subject=f"T{i}", msgid=f"t{i}@x", at=T0 + i * MINUTE) for i in range(5)]
    other = box.add(subject="elsewhere", boxes=[box.archive], at=T0 + 6 * MINUTE)
    mailboxes = box.services.mailboxes
    steps = [
        lambda: box.add(subject="Re: T1", reply_to="t1@x", at=T0 + 10 * MINUTE),  # a reply: a new thread head
        lambda: box.add(subject="new", at=T0 + 2 * MINUTE + 1),  # lands in the middle
        lambda: mailboxes.set_keywords(box.account, [t[2]], add=["$seen"]),
        lambda: mailboxes.move_messages(box.account, [t[3]], add=[box.archive], remove=[box.inbox]),
        lambda: mailboxes.move_messages(box.account, [other], add=[box.inbox]),
        lambda: mailboxes.destroy_messages(box.account, [t[4]]),
        lambda: mailboxes.destroy_messages(box.account, [t[1]]),  # the older email of a thread
    ]
    first = box.query(**args)
    assert first["canCalculateChanges"] is True
    state, cached = first["queryState"], first["ids"]
    for step in steps:
        step()
        qc = box.client.call("Email/queryChanges", {**args, "sinceQueryState": state, "calculateTotal": True})
        now = box.query(**args, calculateTotal=True)
        assert qc["oldQueryState"] == state and qc["newQueryState"] == now["queryState"] != state
        assert qc["total"] == now["total"] and replay(cached, qc) == now["ids"]
        state, cached = now["queryState"], now["ids"]
    qc = box.client.call("Email/queryChanges", {**args, "sinceQueryState": first["queryState"]})
    assert replay(first["ids"], qc) == cached  # all at once
    qc = box.client.call("Email/queryChanges", {**args, "sinceQueryState": state})
    assert (qc["removed"], qc["added"], qc["newQueryState"]) == ([], [], state)


def test_query_changes_answers_exactly_what_moved(box):
    """After new mail and a delete, queryChanges names exactly those two (the RFC lets a server say more; its
    §4.10 sync, spliced, is in the conformance suite)."""
    old = [box.add(subject=f"m{i}", at=T0 + i * MINUTE) for i in range(4)][::-1]
    args = {"filter": {"inMailbox": box.inbox}, "sort": [{"property": "receivedAt", "isAscending": False}]}
    q = box.query(**args, collapseThreads=True, limit=2)
    new = box.add(subject="fresh", at=T0 + 9 * MINUTE)
    box.services.mailboxes.destroy_messages(box.account, [old[1]])
    a = box.account
    (_, changes, _), (_, qc, _) = box.client.responses(
        [
            ["Email/changes", {"accountId": a, "sinceState": q["queryState"], "maxChanges": 50}, "3"],
            [
                "Email/queryChanges",
                {**args, "accountId": a, "collapseThreads": True, "sinceQueryState": q["queryState"],
                 "upToId": q["ids"][-1], "maxChanges": 25, "calculateTotal": True},
                "11",
            ],
        ]
    )  # fmt: skip
    assert (changes["created"], changes["destroyed"]) == ([new], [old[1]])
    assert qc == {
        "accountId": a,
        "oldQueryState": q["queryState"],
        "newQueryState": changes["newState"],
        "removed": [old[1]],
        "added": [{"id": new, "index": 0}],
        "total": 4,
    }


def test_up_to_id_trims_added_only_for_immutable_queries(box):
    ids = [box.add(subject=f"m{i}", at=T0 + i * MINUTE) for i in range(4)][::-1]
    by_date = [{"property": "receivedAt", "isAscending": False}]
    state = box.query(sort=by_date)["queryState"]
    newest = box.add(subject="newest", at=T0 + 9 * MINUTE)
    oldest = box.add(subject="oldest", at=T0 - MINUTE)
    for f, expected in ((None, [newest]), ({"inMailbox": box.inbox}, [newest, oldest])):  # inMailbox is mutable
        args = {"filter": f, "sort": by_date, "upToId": ids[1], "sinceQueryState": state}
        qc = box.client.call("Email/queryChanges", args)
        assert [a["id"] for a in qc["added"]] == expected and qc["removed"] == []


def test_query_changes_limits_and_errors(box, services):
    box.add(subject="a", at=T0)
    args = {"filter": {"inMailbox": box.inbox}}
    state = box.query(**args)["queryState"]
    assert box.client.call("Email/queryChanges", {**args, "sinceQueryState": state, "maxChanges": 0})["added"] == []
    box.add(subject="b", at=T0 + 1)
    box.add(subject="c", at=T0 + 2)
    err = lambda **a: box.error("Email/queryChanges", **a)  # noqa: E731
    # (tooManyChanges, an unknown state, a text filter, a missing sinceQueryState, position: conformance suite)
    assert len(box.client.call("Email/queryChanges", {**args, "sinceQueryState": state, "maxChanges": 2})["added"]) == 2
    assert err(**args, sinceQueryState="zzzzzz") == "cannotCalculateChanges"  # in the future
    text = {"filter": {"text": "a"}}
    assert box.query(**text)["canCalculateChanges"] is False
    current = box.query(**text)["queryState"]
    qc = box.client.call("Email/queryChanges", {**text, "sinceQueryState": current, "calculateTotal": True})
    assert (qc["removed"], qc["added"], qc["total"]) == ([], [], 3)  # nothing changed: nothing to calculate
    assert err(**args, sinceQueryState=state, maxChanges=-1) == "invalidArguments"
    assert err(filter={"nope": 1}, sinceQueryState=state) == "unsupportedFilter"
    services.changes.prune(10**15)  # the log no longer reaches back to `state`
    assert err(**args, sinceQueryState=state) == "cannotCalculateChanges"

"""RFC 8621 §4.4 Email/query, §4.5 Email/queryChanges and §5 SearchSnippet conformance, black box through
POST /jmap/api on SQLite and Postgres. Tests of what the RFC only recommends (body search, the default
collation: clarifications Q9, Q11) say so in their names."""

from __future__ import annotations

from tests.conformance.test_email import raw, state
from tests.support.emails import roles
from tests.support.jmap import JmapClient

QUERY_RESPONSE = {"accountId", "queryState", "canCalculateChanges", "position", "ids"}


def mail(services, client: JmapClient, *headers: str, body: str = "Hello.\r\n") -> str:
    return services.mailboxes.deliver(client.email, raw(*headers, body=body)).message_id


def query(client: JmapClient, **args) -> list[str]:
    return client.call("Email/query", args)["ids"]


def splice(ids: list[str], changes: dict) -> list[str]:
    """What a client makes of its cached results and a /queryChanges response (RFC 8620 §5.6)."""
    out = [i for i in ids if i not in set(changes["removed"])]
    for item in sorted(changes["added"], key=lambda a: a["index"]):
        out.insert(item["index"], item["id"])
    return out


# -- §4.4 Email/query ------------------------------------------------------------------------------------------------


def test_query_response_and_window(services, alice):
    """RFC 8620 §5.5: total only when asked; negative position from the end; position past the end is empty;
    an anchor replaces position and its offset is clamped at 0; anchorNotFound; limit must be unsigned."""
    ids = [mail(services, alice, "From: x@example.com", f"Subject: {n}") for n in range(5)]
    # The default sort is receivedAt, newest first. Deliveries within one millisecond tie, and the tie-break
    # (id) is the server's, so the window checks below use the order the server answered with.
    plain = alice.call("Email/query", {})
    newest = plain["ids"]
    got = {
        e["id"]: e["receivedAt"] for e in alice.call("Email/get", {"ids": ids, "properties": ["receivedAt"]})["list"]
    }
    assert sorted(newest) == sorted(ids) and [got[i] for i in newest] == sorted(got.values(), reverse=True)
    assert set(plain) == QUERY_RESPONSE and plain["position"] == 0
    assert plain["queryState"] == state(alice)
    page = alice.call("Email/query", {"position": -2, "calculateTotal": True})
    assert (page["position"], page["ids"], page["total"]) == (3, newest[3:], 5)
    assert alice.call("Email/query", {"position": 9})["ids"] == []
    assert alice.call("Email/query", {"position": -9, "limit": 1})["ids"] == newest[:1]
    anchored = alice.call("Email/query", {"anchor": newest[2], "anchorOffset": -1, "limit": 2, "position": 4})
    assert (anchored["position"], anchored["ids"]) == (1, newest[1:3])
    assert alice.call("Email/query", {"anchor": newest[1], "anchorOffset": -5})["position"] == 0
    assert alice.error("Email/query", {"anchor": "Mnotthere"})["type"] == "anchorNotFound"
    assert alice.call("Email/query", {"limit": 0})["ids"] == []
    for bad in ({"limit": -1}, {"position": "0"}, {"calculateTotal": "yes"}, {"anchor": "not an id!"}):
        assert alice.error("Email/query", bad)["type"] == "invalidArguments", bad


def test_null_takes_the_default_of_a_defaulted_argument(services, alice):
    ids = [mail(services, alice, "From: x@example.com", f"Subject: {n}") for n in range(2)]
    nulls = {"position": None, "anchorOffset": None, "calculateTotal": None, "collapseThreads": None}
    result = alice.call("Email/query", {**nulls, "filter": None, "sort": None, "anchor": None, "limit": None})
    assert sorted(result["ids"]) == sorted(ids) and result["position"] == 0 and "total" not in result
    since = result["queryState"]
    changes = alice.call("Email/queryChanges", {"sinceQueryState": since, "calculateTotal": None, "maxChanges": None})
    assert changes["removed"] == [] and changes["added"] == [] and "total" not in changes


def test_query_errors(services, alice):
    """unsupportedSort / unsupportedFilter for what the server does not know; invalidArguments for bad syntax."""
    errors = {
        "unsupportedSort": [
            {"sort": [{"property": "bogus"}]},
            {"sort": [{"property": "subject", "collation": "i;bogus"}]},
        ],
        "unsupportedFilter": [{"filter": {"bogus": "x"}}, {"filter": {"operator": "OR", "conditions": [{"x": 1}]}}],
        "invalidArguments": [
            {"sort": [{"property": "hasKeyword"}]},  # §4.4.2: MUST also have a keyword
            {"sort": [{"property": "someInThreadHaveKeyword", "keyword": ""}]},
            {"sort": [{"property": "receivedAt", "isAscending": "no"}]},
            {"filter": {"header": []}},  # §4.4.1: one or two elements
            {"filter": {"header": ["a", "b", "c"]}},
            {"filter": {"before": "yesterday"}},
            {"filter": {"minSize": -1}},
            {"filter": {"operator": "XOR", "conditions": []}},
            {"filter": {"operator": "AND"}},
            {"filter": "text"},
            {"bogus": 1},
        ],
    }
    for kind, cases in errors.items():
        for args in cases:
            assert alice.error("Email/query", args)["type"] == kind, args


def test_filter_conditions(services, alice):
    """§4.4.1 (the required part: no body search): every condition, operators, an empty condition."""
    r = roles(services, alice.account_id)
    a = mail(services, alice, 'From: "Alice Sender" <alice@example.com>', "To: to@x.org", "Subject: Lunch plans")
    b = mail(services, alice, "From: bob@example.com", "Cc: cc@x.org", "Subject: Re: lunch", body="y" * 2000)
    c = mail(services, alice, "From: carol@example.com", "Bcc: secret@x.org", "Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=")
    alice.call("Email/set", {"update": {b: {"keywords/$flagged": True, "mailboxIds": {r["trash"]: True}}}})
    size_b = alice.call("Email/get", {"ids": [b], "properties": ["size"]})["list"][0]["size"]
    everything = {a, b, c}
    cases = [
        ({}, everything),
        ({"from": "Alice"}, {a}),  # clarifications Q10: display name and address
        ({"from": "alice@example"}, {a}),
        ({"to": "to@x"}, {a}),
        ({"cc": "cc@x"}, {b}),
        ({"bcc": "secret"}, {c}),
        ({"subject": "LUNCH"}, {a, b}),
        ({"subject": "grüße"}, {c}),  # encoded words decoded before matching
        ({"text": "carol"}, {c}),
        ({"text": "secret"}, {c}),
        ({"text": "lunch bob"}, {b}),  # every token must match
        ({"inMailbox": r["trash"]}, {b}),
        ({"inMailboxOtherThan": [r["trash"]]}, {a, c}),
        ({"hasKeyword": "$Flagged"}, {b}),
        ({"notKeyword": "$flagged"}, {a, c}),
        ({"minSize": size_b}, {b}),
        ({"maxSize": size_b}, {a, c}),  # strictly less than
        ({"hasAttachment": False}, everything),
        ({"header": ["CC"]}, {b}),
        ({"header": ["Subject", "plans"]}, {a}),
        ({"before": "2000-01-01T00:00:00Z"}, set()),
        ({"after": "2000-01-01T00:00:00Z"}, everything),
        ({"operator": "AND", "conditions": [{"subject": "lunch"}, {"from": "bob"}]}, {b}),
        ({"operator": "OR", "conditions": [{"from": "carol"}, {"from": "bob"}]}, {b, c}),
        ({"operator": "NOT", "conditions": [{"from": "carol"}, {"from": "bob"}]}, {a}),
        ({"operator": "OR", "conditions": []}, set()),
        ({"operator": "AND", "conditions": []}, everything),
    ]
    for f, expected in cases:
        assert set(query(alice, filter=f)) == expected, f
    received = alice.call("Email/get", {"ids": [a], "properties": ["receivedAt"]})["list"][0]["receivedAt"]
    assert a not in query(alice, filter={"before": received}) and a in query(alice, filter={"after": received})


def test_thread_keyword_conditions_and_sorts(services, alice):
    first = mail(services, alice, "From: x@example.com", "Subject: thread", "Message-ID: <t1@x>")
    reply = mail(services, alice, "From: y@example.com", "Subject: Re: thread", "In-Reply-To: <t1@x>")
    alone = mail(services, alice, "From: z@example.com", "Subject: alone")
    alice.call("Email/set", {"update": {first: {"keywords/$seen": True}, alone: {"keywords/$seen": True}}})
    assert set(query(alice, filter={"allInThreadHaveKeyword": "$seen"})) == {alone}
    assert set(query(alice, filter={"someInThreadHaveKeyword": "$seen"})) == {first, reply, alone}
    assert set(query(alice, filter={"noneInThreadHaveKeyword": "$seen"})) == set()
    by_all = query(alice, sort=[{"property": "allInThreadHaveKeyword", "keyword": "$seen", "isAscending": False}])
    assert by_all[0] == alone
    by_some = query(alice, sort=[{"property": "someInThreadHaveKeyword", "keyword": "$seen"}, {"property": "size"}])
    assert set(by_some) == {first, reply, alone}
    by_keyword = query(alice, sort=[{"property": "hasKeyword", "keyword": "$seen"}])
    assert by_keyword[0] == reply


def test_rfc_sort_example(services, alice):
    """§4.4.2's example: flagged threads first, then by subject (i;ascii-casemap), then newest first."""
    inbox = roles(services, alice.account_id)["inbox"]
    ids = {}
    subjects = (("b1", "beta"), ("a1", "Alpha"), ("f1", "zulu"), ("b2", "Beta"), ("f2", "apple"))
    for n, (key, subject) in enumerate(subjects):  # received a second apart: b2 after b1, whatever the clock
        raw_message = raw("From: x@example.com", f"Subject: {subject}")
        ids[key] = services.mailboxes.append(
            alice.account_id, raw_message, [inbox], received_at=(1_700_000_000 + n) * 1000
        ).id
    alice.call(
        "Email/set", {"update": {ids["f1"]: {"keywords/$flagged": True}, ids["f2"]: {"keywords/$flagged": True}}}
    )
    sort = [
        {"property": "someInThreadHaveKeyword", "keyword": "$flagged", "isAscending": False},
        {"property": "subject", "collation": "i;ascii-casemap"},
        {"property": "receivedAt", "isAscending": False},
    ]
    assert query(alice, sort=sort) == [ids[k] for k in ("f2", "f1", "a1", "b2", "b1")]


def test_body_search_recommended(services, alice):
    """§4.4.1 SHOULD (clarifications Q9): text and body find words in text/plain and text/html bodies,
    not in markup; a quoted phrase matches words in sequence."""
    plain = mail(services, alice, "From: x@example.com", "Subject: a", body="The foosball competition is on.\r\n")
    html = mail(
        services,
        alice,
        "From: x@example.com",
        "Subject: b",
        "Content-Type: text/html",
        body='<html><head><style>.hidden{}</style></head><body><p class="marker">Meet at noon</p></body></html>',
    )
    assert query(alice, filter={"body": "foosball"}) == [plain]
    assert query(alice, filter={"text": "noon"}) == [html]
    assert query(alice, filter={"body": "marker"}) == [] and query(alice, filter={"body": "hidden"}) == []
    assert query(alice, filter={"body": '"foosball competition"'}) == [plain]
    assert query(alice, filter={"body": '"competition foosball"'}) == []


def test_default_collation_is_unicode_casemap_recommended(services, alice):
    """Clarifications Q11: i;unicode-casemap when the Comparator names none (case and accents fold)."""
    ids = {s: mail(services, alice, "From: x@example.com", f"Subject: {s}") for s in ("b", "Éclair", "a", "C", "e")}
    expected = [ids[s] for s in ("a", "b", "C", "e", "Éclair")]
    assert query(alice, sort=[{"property": "subject"}]) == expected


def test_collapse_threads(services, alice):
    """§4.4.3: only the first email of each thread in the sorted list stays, at its own position."""
    inbox = roles(services, alice.account_id)["inbox"]

    def at(second: int, *headers: str) -> str:  # distinct received dates: the order under test is by date
        raw_message = raw("From: x@example.com", *headers)
        appended = services.mailboxes.append(alice.account_id, raw_message, [inbox], received_at=second * 1000)
        return appended.id

    old = at(1_700_000_000, "Subject: t", "Message-ID: <c1@x>")
    other = at(1_700_000_001, "Subject: other")
    new = at(1_700_000_002, "Subject: Re: t", "In-Reply-To: <c1@x>")
    for f in ({}, {"inMailbox": inbox}, {"from": "x@"}):
        result = alice.call("Email/query", {"filter": f, "collapseThreads": True, "calculateTotal": True})
        assert (result["ids"], result["total"]) == ([new, other], 2), f
        oldest_first = [{"property": "receivedAt", "isAscending": True}]
        assert query(alice, filter=f, collapseThreads=True, sort=oldest_first) == [old, other], f
    error = alice.error("Email/query", {"collapseThreads": True, "anchor": old})
    assert error["type"] == "anchorNotFound"  # collapsed away: not in the results


# -- §4.5 Email/queryChanges -----------------------------------------------------------------------------------------


def test_rfc_client_sync_example(services, alice):
    """§4.10: the first load with back-references, then the resync after changes on another device,
    whose queryChanges spliced into the cache gives the current query; totals agree with the Mailbox (Q24)."""
    inbox = roles(services, alice.account_id)["inbox"]

    def at(second: int, *headers: str) -> str:  # distinct received dates: the order under test is by date
        appended = services.mailboxes.append(alice.account_id, raw(*headers), [inbox], received_at=second * 1000)
        return appended.id

    ids = [at(1_700_000_000 + n, "From: x@example.com", f"Subject: s{n}", f"Message-ID: <s{n}@x>") for n in range(4)]
    reply = at(1_700_000_004, "From: y@example.com", "Subject: Re: s1", "In-Reply-To: <s1@x>")
    q = {"filter": {"inMailbox": inbox}, "sort": [{"isAscending": False, "property": "receivedAt"}]}
    q["collapseThreads"] = True
    first = alice.responses(
        [
            [
                "Email/query",
                {"accountId": alice.account_id, **q, "position": 0, "limit": 30, "calculateTotal": True},
                "0",
            ],
            [
                "Email/get",
                {"accountId": alice.account_id, "#ids": ref("0", "Email/query", "/ids"), "properties": ["threadId"]},
                "1",
            ],
            ["Thread/get", {"accountId": alice.account_id, "#ids": ref("1", "Email/get", "/list/*/threadId")}, "2"],
            [
                "Email/get",
                {
                    "accountId": alice.account_id,
                    "#ids": ref("2", "Thread/get", "/list/*/emailIds"),
                    "properties": ["threadId", "keywords", "subject"],
                },
                "3",
            ],
            ["Mailbox/get", {"accountId": alice.account_id, "ids": [inbox], "properties": ["totalThreads"]}, "4"],
        ]
    )
    assert [name for name, _, _ in first] == ["Email/query", "Email/get", "Thread/get", "Email/get", "Mailbox/get"]
    listed = first[0][1]
    assert listed["canCalculateChanges"] is True and listed["total"] == 4 == first[4][1]["list"][0]["totalThreads"]
    assert listed["ids"] == [reply, ids[3], ids[2], ids[0]]  # the newest email of each thread, newest first
    assert [t["emailIds"] for t in first[2][1]["list"]] == [[ids[1], reply], [ids[3]], [ids[2]], [ids[0]]]
    assert len(first[3][1]["list"]) == 5
    assert {e["threadId"] for e in first[3][1]["list"]} == {e["threadId"] for e in first[1][1]["list"]}
    since_email, since_query = first[1][1]["state"], listed["queryState"]
    alice.call("Email/set", {"update": {ids[3]: {"keywords/$seen": True}}, "destroy": [ids[0], ids[2]]})
    arrived = mail(services, alice, "From: z@example.com", "Subject: new")
    resync = alice.responses(
        [
            ["Email/changes", {"accountId": alice.account_id, "sinceState": since_email, "maxChanges": 50}, "3"],
            [
                "Email/queryChanges",
                {
                    "accountId": alice.account_id,
                    **q,
                    "sinceQueryState": since_query,
                    "upToId": ids[0],
                    "maxChanges": 25,
                    "calculateTotal": True,
                },
                "11",
            ],
            ["Email/query", {"accountId": alice.account_id, **q, "calculateTotal": True}, "12"],
        ]
    )
    changes, query_changes, now = (r[1] for r in resync)
    assert changes["created"] == [arrived] and changes["updated"] == [ids[3]]
    assert sorted(changes["destroyed"]) == sorted([ids[0], ids[2]])
    assert set(query_changes) == {"accountId", "oldQueryState", "newQueryState", "removed", "added", "total"}
    assert query_changes["oldQueryState"] == since_query and query_changes["newQueryState"] == now["queryState"]
    assert splice(listed["ids"], query_changes) == now["ids"] and query_changes["total"] == now["total"] == 3


def ref(call_id: str, name: str, path: str) -> dict:
    return {"resultOf": call_id, "name": name, "path": path}


def test_query_changes_errors(services, alice):
    mail(services, alice, "From: x@example.com", "Subject: one")
    since = alice.call("Email/query", {"filter": {"text": "one"}})["queryState"]
    assert alice.call("Email/queryChanges", {"filter": {"text": "one"}, "sinceQueryState": since})["added"] == []
    mail(services, alice, "From: x@example.com", "Subject: one more")
    error = alice.error("Email/queryChanges", {"filter": {"text": "one"}, "sinceQueryState": since})
    assert error["type"] == "cannotCalculateChanges"  # canCalculateChanges was false for this query
    assert alice.error("Email/queryChanges", {"sinceQueryState": since, "maxChanges": 0})["type"] == "tooManyChanges"
    assert alice.error("Email/queryChanges", {})["type"] == "invalidArguments"
    assert alice.error("Email/queryChanges", {"sinceQueryState": since, "position": 0})["type"] == "invalidArguments"
    assert alice.error("Email/queryChanges", {"sinceQueryState": "bogus"})["type"] == "cannotCalculateChanges"


# -- §5 SearchSnippet ------------------------------------------------------------------------------------------------


def test_rfc_search_snippet_example(services, alice):
    """§5.2: subject and preview with <mark>ed matches and &, <, > escaped; nulls where nothing matched."""
    nothing = mail(services, alice, "From: x@example.com", "Subject: unrelated", body="Nothing here.\r\n")
    both = mail(
        services,
        alice,
        "From: x@example.com",
        "Subject: The Foosball competition",
        body="This year the foosball competition will be held in the Stadium de France.\r\n",
    )
    body_only = mail(
        services,
        alice,
        "From: x@example.com",
        "Subject: results",
        body="the Foo/bar method results often returns <1 widget rather than the complete set & more\r\n",
    )
    result = alice.call("SearchSnippet/get", {"filter": {"text": "foo"}, "emailIds": [nothing, both, body_only]})
    assert set(result) == {"accountId", "list", "notFound"} and result["notFound"] is None
    snippets = {s["emailId"]: s for s in result["list"]}
    assert set(snippets) == {nothing, both, body_only}
    assert all(set(s) == {"emailId", "subject", "preview"} for s in snippets.values())
    assert snippets[nothing]["subject"] is None and snippets[nothing]["preview"] is None
    assert snippets[both]["subject"] == "The <mark>Foo</mark>sball competition"
    assert "the <mark>foo</mark>sball competition" in snippets[both]["preview"]
    assert snippets[body_only]["subject"] is None
    preview = snippets[body_only]["preview"]
    assert (
        "the <mark>Foo</mark>/bar method" in preview and "returns &lt;1 widget" in preview and "&amp; more" in preview
    )
    assert len(preview.encode()) <= 255


def test_search_snippet_arguments(services, alice):
    e = mail(services, alice, "From: x@example.com", "Subject: snippet")
    found = alice.call("SearchSnippet/get", {"filter": {"subject": "snip"}, "emailIds": [e, "Mnotthere"]})
    assert found["notFound"] == ["Mnotthere"] and found["list"] == [
        {"emailId": e, "subject": "<mark>snip</mark>pet", "preview": None}
    ]
    unfiltered = alice.call("SearchSnippet/get", {"filter": None, "emailIds": [e]})
    assert unfiltered["list"] == [{"emailId": e, "subject": None, "preview": None}]
    assert alice.error("SearchSnippet/get", {"filter": {"bogus": 1}, "emailIds": [e]})["type"] == "unsupportedFilter"
    assert alice.error("SearchSnippet/get", {"filter": None})["type"] == "invalidArguments"
    limit = services.config.limits.max_objects_in_get
    too_many = {"filter": None, "emailIds": [f"M{n}" for n in range(limit + 1)]}
    assert alice.error("SearchSnippet/get", too_many)["type"] == "requestTooLarge"

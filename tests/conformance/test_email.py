"""RFC 8621 conformance of Email (§4) and EmailDelivery push (§1.5), black box through POST /jmap/api.

Each test reads as a check an independent conformance suite makes: the exact response arguments, null
versus empty, types, error types and their extra properties, state strings, and the RFC's own examples.
Email/query, Email/queryChanges and SearchSnippet (§4.4, §4.5, §5) are in test_email_search.py,
Email/copy, Email/import and Email/parse (§4.7–§4.9) in test_email_import.py.
Every test runs on SQLite and Postgres.
"""

from __future__ import annotations

import re

import pytest

from tests.support.emails import download, roles, upload
from tests.support.eventsource_client import listening, stream_server
from tests.support.jmap import JmapClient
from tests.support.waiting import wait_until

UTC_DATE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
GET_RESPONSE = {"accountId", "state", "list", "notFound"}
SET_RESPONSE = {"accountId", "oldState", "newState", "created", "updated", "destroyed"}
SET_RESPONSE |= {"notCreated", "notUpdated", "notDestroyed"}
CHANGES_RESPONSE = {"accountId", "oldState", "newState", "hasMoreChanges", "created", "updated", "destroyed"}
CREATED = {"id", "blobId", "threadId", "size"}


def raw(*headers: str, body: str = "Hello.\r\n") -> bytes:
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode()


def one(client: JmapClient, email_id: str, properties: list[str], **args) -> dict:
    result = client.call("Email/get", {"ids": [email_id], "properties": properties, **args})
    assert result["notFound"] == [], result
    return result["list"][0]


def state(client: JmapClient) -> str:
    return client.call("Email/get", {"ids": []})["state"]


def set_error(client: JmapClient, obj: dict) -> dict:
    result = client.call("Email/set", {"create": {"k": obj}})
    assert result["created"] is None, result
    return result["notCreated"]["k"]


# -- §1.5 EmailDelivery ----------------------------------------------------------------------------------------------


def test_email_delivery_moves_for_every_new_email_from_outside_and_nothing_else(services, alice, bob):
    """RFC 8621 §1.5: MUST change whenever a new Email is added (delivery, import, copy); SHOULD NOT otherwise."""
    inbox = roles(services, alice.account_id)["inbox"]
    delivery = lambda: services.changes.state(alice.account_id, "EmailDelivery")  # noqa: E731
    before = delivery()
    delivered = services.mailboxes.deliver(alice.email, raw("From: x@example.com", "Subject: one"))
    after_delivery = delivery()
    assert after_delivery != before
    alice.call("Email/set", {"update": {delivered.message_id: {"keywords/$seen": True}}})
    assert delivery() == after_delivery  # marked read: Email moved, EmailDelivery did not
    blob = upload(alice, raw("From: y@example.com", "Subject: imported"), "message/rfc822")
    imported = alice.call("Email/import", {"emails": {"i": {"blobId": blob, "mailboxIds": {inbox: True}}}})
    after_import = delivery()
    assert after_import != after_delivery and imported["created"]["i"]
    alice.call("Email/set", {"destroy": [delivered.message_id]})
    assert delivery() == after_import  # deleted: no change
    services.accounts.delegate(bob.email, alice.email)
    original = services.mailboxes.deliver(bob.email, raw("From: z@example.com", "Subject: to copy"))
    before_copy = delivery()
    copied = alice.call(
        "Email/copy",
        {"fromAccountId": bob.account_id, "create": {"c": {"id": original.message_id, "mailboxIds": {inbox: True}}}},
    )
    assert copied["created"]["c"] and delivery() != before_copy


@pytest.fixture
def server(services, app, alice):
    """EventSource streams from a real HTTP server with the event flow running."""
    with stream_server(services, app) as connect:
        yield connect


def test_email_delivery_push_and_the_changes_it_announces(services, server, alice):
    """A client pushed only EmailDelivery hears of new mail, not of a flag change, and catches up with
    Email/changes from its last Email state (RFC 8621 §1.5.1)."""
    inbox = roles(services, alice.account_id)["inbox"]
    old = services.mailboxes.deliver(alice.email, raw("From: x@example.com", "Subject: old")).message_id
    since = state(alice)
    stream = server("/jmap/eventsource?types=EmailDelivery&closeafter=no&ping=0")
    stream.block()
    wait_until(lambda: listening(services, alice.account_id) == 1, message="the stream's listener")
    alice.call("Email/set", {"update": {old: {"keywords/$seen": True}}})  # pushes no EmailDelivery
    blob = upload(alice, raw("From: y@example.com", "Subject: new"), "message/rfc822")
    new = alice.call("Email/import", {"emails": {"i": {"blobId": blob, "mailboxIds": {inbox: True}}}})
    data, _ = stream.state()  # the first state event is the import's: the flag change sent nothing
    assert data == {
        "@type": "StateChange",
        "changed": {alice.account_id: {"EmailDelivery": services.changes.state(alice.account_id, "EmailDelivery")}},
    }
    changes = alice.call("Email/changes", {"sinceState": since})
    assert changes["created"] == [new["created"]["i"]["id"]] and changes["updated"] == [old]
    assert changes["newState"] == state(alice) and changes["hasMoreChanges"] is False


# -- §4.1.1 metadata -------------------------------------------------------------------------------------------------


def test_metadata_types_lowercase_keywords_and_size(services, alice):
    inbox = roles(services, alice.account_id)["inbox"]
    message = raw("From: x@example.com", "Subject: meta", body="x" * 100)
    blob = upload(alice, message, "message/rfc822")
    created = alice.call(
        "Email/import",
        {"emails": {"i": {"blobId": blob, "mailboxIds": {inbox: True}, "keywords": {"$SEEN": True, "Custom": True}}}},
    )["created"]["i"]
    assert set(created) == CREATED and created["size"] == len(message)
    email = one(alice, created["id"], ["blobId", "threadId", "mailboxIds", "keywords", "size", "receivedAt"])
    assert email["keywords"] == {"$seen": True, "custom": True}  # servers MUST return keywords in lowercase
    assert email["mailboxIds"] == {inbox: True}
    assert UTC_DATE.fullmatch(email["receivedAt"]) and email["threadId"] and email["blobId"] == blob
    assert download(alice, email["blobId"]) == message and email["size"] == len(message)
    alice.call("Email/set", {"update": {created["id"]: {"keywords/$Flagged": True}}})
    assert one(alice, created["id"], ["keywords"])["keywords"] == {"$seen": True, "custom": True, "$flagged": True}


# -- §4.1.2 header field forms ---------------------------------------------------------------------------------------

RFC_ADDRESS_LIST = (
    '"  James Smythe" <james@example.com>, Friends:\r\n  jane@example.com, =?UTF-8?Q?John_Sm=C3=AEth?=\r\n'
    "  <john@example.com>;"
)


def test_rfc_address_list_examples(services, alice):
    """§4.1.2.3 and §4.1.2.4: the RFC's address-list parsed as Addresses and as GroupedAddresses."""
    d = services.mailboxes.deliver(alice.email, raw(f"To: {RFC_ADDRESS_LIST}", "Subject: x"))
    email = one(alice, d.message_id, ["to", "header:To:asAddresses", "header:To:asGroupedAddresses"])
    james = {"name": "James Smythe", "email": "james@example.com"}
    jane = {"name": None, "email": "jane@example.com"}
    john = {"name": "John Sm\u00eeth", "email": "john@example.com"}
    assert email["to"] == email["header:To:asAddresses"] == [james, jane, john]
    assert email["header:To:asGroupedAddresses"] == [
        {"name": None, "addresses": [james]},
        {"name": "Friends", "addresses": [jane, john]},
    ]


def test_date_form_keeps_the_zone_of_the_field(services, alice):
    """§4.1.2.6: a Date (RFC 8620 §1.4, not a UTCDate) of the date-time as written; sentAt is identical to
    header:Date:asDate whether read from the stored summary or from the message, and in Email/parse."""
    message = raw(
        "From: x@example.com",
        "Date: Thu, 13 Feb 1997 09:00:00 +0100",
        "Resent-Date: Fri, 14 Feb 1997 21:30:00 -0530",
        "X-Unknown-Zone: Sat, 15 Feb 1997 10:00:00 -0000",
        "X-Bad-Date: yesterday",
    )
    d = services.mailboxes.deliver(alice.email, message)
    assert one(alice, d.message_id, ["sentAt"])["sentAt"] == "1997-02-13T09:00:00+01:00"
    props = ["sentAt", "header:Date:asDate", "header:Resent-Date:asDate", "header:X-Unknown-Zone:asDate"]
    email = one(alice, d.message_id, [*props, "header:X-Bad-Date:asDate", "headers"])
    assert email["sentAt"] == email["header:Date:asDate"] == "1997-02-13T09:00:00+01:00"
    assert email["header:Resent-Date:asDate"] == "1997-02-14T21:30:00-05:30"
    assert email["header:X-Unknown-Zone:asDate"] == "1997-02-15T10:00:00Z"  # -0000: no zone information
    assert email["header:X-Bad-Date:asDate"] is None
    parsed = alice.call("Email/parse", {"blobIds": [d.blob_id], "properties": props})["parsed"][d.blob_id]
    assert parsed == {p: email[p] for p in props}
    undated = services.mailboxes.deliver(alice.email, raw("From: x@example.com", "Subject: no date"))
    assert one(alice, undated.message_id, ["sentAt"])["sentAt"] is None


def test_dates_before_the_year_1000_keep_four_digits(services, alice):
    """RFC 3339's date-fullyear is 4 digits: a Date field of the year 999 is "0999-…", in every form."""
    message = raw(
        "From: x@example.com", "Date: Mon, 01 Jan 999 10:00:00 +0200", "X-Seen: Mon, 01 Jan 999 10:00:00 +0000"
    )
    d = services.mailboxes.deliver(alice.email, message)
    email = one(alice, d.message_id, ["sentAt", "header:Date:asDate", "header:X-Seen:asDate"])
    assert email["sentAt"] == email["header:Date:asDate"] == "0999-01-01T10:00:00+02:00"
    assert email["header:X-Seen:asDate"] == "0999-01-01T10:00:00Z"


def test_sent_at_given_on_create_comes_back_as_given(services, alice):
    """§4.10's draft: sentAt "2018-07-10T11:03:11+10:00" is written as that Date field and read back unchanged."""
    drafts = roles(services, alice.account_id)["drafts"]
    sent = "2018-07-10T11:03:11+10:00"
    created = alice.call("Email/set", {"create": {"k": {"mailboxIds": {drafts: True}, "sentAt": sent}}})["created"]
    email = one(alice, created["k"]["id"], ["sentAt", "header:Date:asDate", "blobId"])
    assert email["sentAt"] == email["header:Date:asDate"] == sent
    assert b"\r\nDate: Tue, 10 Jul 2018 11:03:11 +1000\r\n" in b"\r\n" + download(alice, email["blobId"])


def test_raw_and_text_forms(services, alice):
    """§4.1.2.1 Raw: from after the colon, folding kept, invalid UTF-8 as U+FFFD, NUL dropped.
    §4.1.2.2 Text: unfolded, leading SP removed, encoded words decoded only where placed correctly, NFC."""
    message = (
        b"From: x@example.com\r\nSubject: =?UTF-8?Q?caf=C3=A9?= and =?UTF-8?Q?caf=C3=A9?=x\r\n"
        b"X-Folded:  two\r\n  lines \r\nX-Bin: a\xffb\x00c\r\nX-Nfd: e\xcc\x81\r\n\r\nbody\r\n"
    )
    d = services.mailboxes.deliver(alice.email, message)
    props = ["subject", "header:Subject", "header:X-Folded", "header:X-Folded:asText", "header:X-Bin"]
    email = one(alice, d.message_id, [*props, "header:X-Nfd:asText"])
    assert email["subject"] == "café and =?UTF-8?Q?caf=C3=A9?=x"
    assert email["header:Subject"] == " =?UTF-8?Q?caf=C3=A9?= and =?UTF-8?Q?caf=C3=A9?=x"
    assert email["header:X-Folded"] == "  two\r\n  lines "
    assert email["header:X-Folded:asText"] == "two  lines "
    assert email["header:X-Bin"] == " a\ufffdbc"
    assert email["header:X-Nfd:asText"] == "\u00e9"


def test_header_properties_all_absent_and_capitalization(services, alice):
    """§4.1.3: :all lists every instance in order; absent is null (single) or [] (:all); the property comes
    back with the capitalization it was asked with; ``headers`` lists every field in order, Raw."""
    message = raw("From: x@example.com", "X-Twice: one", "Subject: s", "x-twice: two")
    d = services.mailboxes.deliver(alice.email, message)
    props = ["header:X-TWICE", "header:x-twice:all", "header:X-Twice:asText:all", "header:X-None", "header:X-None:all"]
    email = one(alice, d.message_id, [*props, "headers"])
    assert set(email) == {"id", "headers", *props}
    assert email["header:X-TWICE"] == " two" and email["header:x-twice:all"] == [" one", " two"]
    assert email["header:X-Twice:asText:all"] == ["one", "two"]
    assert email["header:X-None"] is None and email["header:X-None:all"] == []
    assert email["headers"] == [
        {"name": "From", "value": " x@example.com"},
        {"name": "X-Twice", "value": " one"},
        {"name": "Subject", "value": " s"},
        {"name": "x-twice", "value": " two"},
    ]


def test_forbidden_forms_are_invalid_arguments(services, alice):
    """§4.2/§4.9: fetching a form a field does not allow MUST be invalidArguments; unknown fields allow all."""
    d = services.mailboxes.deliver(alice.email, raw("From: x@example.com", "Subject: s"))
    for prop in (
        "header:From:asDate",
        "header:Subject:asAddresses",
        "header:Message-ID:asText",
        "header:Date:asURLs",
        "header:List-Post:asMessageIds",
        "header:Received:asText",
        "header:From:asNothing",
        "header:From:all:asAddresses",  # suffixes in the wrong order
    ):
        for method, args in (("Email/get", {"ids": [d.message_id]}), ("Email/parse", {"blobIds": [d.blob_id]})):
            assert alice.error(method, {**args, "properties": [prop]})["type"] == "invalidArguments", (method, prop)
        bad_part = {"ids": [d.message_id], "properties": ["textBody"], "bodyProperties": [prop]}
        assert alice.error("Email/get", bad_part)["type"] == "invalidArguments", prop
    allowed = ["header:X-Any:asDate", "header:X-Any:asAddresses", "header:List-Id:asText", "header:Subject:asRaw"]
    assert set(one(alice, d.message_id, allowed)) == {"id", *allowed}


# -- §4.1.4 body parts -----------------------------------------------------------------------------------------------


def test_body_part_attributes(services, alice):
    """partId and blobId are null iff multipart; charset us-ascii when implicit, null for non-text types;
    name from RFC 2231 filename, else the Content-Type name; size is the decoded size."""
    message = raw(
        "From: x@example.com",
        "Content-Type: multipart/mixed; boundary=b",
        body="--b\r\n\r\nimplicit text\r\n"
        "--b\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n"
        "--b\r\nContent-Type: application/pdf; name=ct-name.pdf\r\nContent-Transfer-Encoding: base64\r\n"
        "Content-Disposition: attachment; filename*=utf-8''r%C3%A9sum%C3%A9.pdf\r\n\r\nJVBERi0=\r\n"
        "--b\r\nContent-Type: image/png; name==?UTF-8?Q?caf=C3=A9.png?=\r\n"
        "Content-ID: <img@x> (the image)\r\n\r\nPNG\r\n"
        "--b--\r\n",
    )
    d = services.mailboxes.deliver(alice.email, message)
    root = one(alice, d.message_id, ["bodyStructure"])["bodyStructure"]
    assert (root["partId"], root["blobId"], root["type"], root["charset"]) == (None, None, "multipart/mixed", None)
    plain, html, pdf, png = root["subParts"]
    assert (plain["type"], plain["charset"], plain["partId"]) == ("text/plain", "us-ascii", "1")
    assert (html["type"], html["charset"]) == ("text/html", "us-ascii")
    assert (pdf["charset"], pdf["name"], pdf["disposition"], pdf["size"]) == (None, "résumé.pdf", "attachment", 5)
    assert download(alice, pdf["blobId"]) == b"%PDF-"
    assert (png["name"], png["cid"], png["subParts"]) == ("café.png", "img@x", None)
    assert all(p["blobId"].startswith(d.blob_id) for p in (plain, html, pdf, png))


# -- §4.2 Email/get --------------------------------------------------------------------------------------------------


def test_get_response_arguments_and_property_selection(services, alice):
    d = services.mailboxes.deliver(alice.email, raw("From: x@example.com", "Subject: s"))
    full = alice.call("Email/get", {"ids": [d.message_id, d.message_id, "Mnotthere"]})
    assert set(full) == GET_RESPONSE and full["notFound"] == ["Mnotthere"]  # a repeated id is listed once
    [email] = full["list"]
    assert list(email) == [
        "id", "blobId", "threadId", "mailboxIds", "keywords", "size", "receivedAt", "messageId", "inReplyTo",
        "references", "sender", "from", "to", "cc", "bcc", "replyTo", "subject", "sentAt", "hasAttachment",
        "preview", "bodyValues", "textBody", "htmlBody", "attachments",
    ]  # fmt: skip
    assert alice.call("Email/get", {"ids": [d.message_id], "properties": []})["list"] == [{"id": d.message_id}]
    assert alice.call("Email/get", {"ids": []}) == {**full, "list": [], "notFound": []}
    assert one(alice, d.message_id, ["size", "id"]) == {"id": d.message_id, "size": email["size"]}
    error = alice.error("Email/get", {"ids": [d.message_id], "properties": ["subject", "bogus"]})
    assert error["type"] == "invalidArguments"


# -- §4.3 Email/changes ----------------------------------------------------------------------------------------------


def test_changes_rules_and_paging(services, alice):
    """RFC 8620 §5.2: created+updated is created; created+destroyed is neither; updated+destroyed is destroyed;
    maxChanges pages through intermediate states to the current one; maxChanges 0 is invalidArguments."""
    drafts = roles(services, alice.account_id)["drafts"]
    kept = services.mailboxes.deliver(alice.email, raw("From: x@example.com", "Subject: kept")).message_id
    gone = services.mailboxes.deliver(alice.email, raw("From: x@example.com", "Subject: gone")).message_id
    since = state(alice)
    made = alice.call("Email/set", {"create": {f"k{n}": {"mailboxIds": {drafts: True}} for n in range(4)}})
    new = [made["created"][f"k{n}"]["id"] for n in range(4)]
    alice.call("Email/set", {"update": {new[0]: {"keywords/$seen": True}, kept: {"keywords/$seen": True}}})
    alice.call("Email/set", {"update": {gone: {"keywords/$seen": True}}, "destroy": [new[1]]})
    alice.call("Email/set", {"destroy": [gone]})
    changes = alice.call("Email/changes", {"sinceState": since})
    assert set(changes) == CHANGES_RESPONSE and changes["oldState"] == since
    assert sorted(changes["created"]) == sorted([new[0], new[2], new[3]])
    assert changes["updated"] == [kept] and changes["destroyed"] == [gone]
    assert changes["newState"] == state(alice) and changes["hasMoreChanges"] is False
    seen: dict[str, set] = {"created": set(), "updated": set(), "destroyed": set()}
    at, pages = since, 0
    while True:
        page = alice.call("Email/changes", {"sinceState": at, "maxChanges": 2})
        assert page["oldState"] == at and len(page["created"] + page["updated"] + page["destroyed"]) <= 2
        for key in seen:
            seen[key] |= set(page[key])
        at, pages = page["newState"], pages + 1
        if not page["hasMoreChanges"]:
            break
    assert at == state(alice) and pages >= 3 and set(changes["created"]) <= seen["created"]
    for bad in (0, -1, "2"):
        assert alice.error("Email/changes", {"sinceState": since, "maxChanges": bad})["type"] == "invalidArguments"
    assert alice.error("Email/changes", {})["type"] == "invalidArguments"
    assert alice.error("Email/changes", {"sinceState": "not-a-state"})["type"] == "cannotCalculateChanges"


# -- §4.6 Email/set --------------------------------------------------------------------------------------------------


def test_rfc_draft_examples(services, alice):
    """§4.10: the plain-text draft, then its HTML successor created while the first is destroyed."""
    drafts = roles(services, alice.account_id)["drafts"]
    sender = [{"name": "Joe Bloggs", "email": "joe@example.com"}]
    plan = "I have the most brilliant plan.  Let me tell you all about it.  What we do is, we"
    old = state(alice)
    first = alice.call(
        "Email/set",
        {
            "create": {
                "k192": {
                    "mailboxIds": {drafts: True},
                    "keywords": {"$seen": True, "$draft": True},
                    "from": sender,
                    "subject": "World domination",
                    "receivedAt": "2018-07-10T01:03:11Z",
                    "sentAt": "2018-07-10T11:03:11+10:00",
                    "bodyStructure": {"type": "text/plain", "partId": "bd48", "header:Content-Language": "en"},
                    "bodyValues": {"bd48": {"value": plan, "isTruncated": False}},
                }
            }
        },
    )
    assert set(first) == SET_RESPONSE and first["oldState"] == old and first["newState"] == state(alice)
    assert set(first["created"]["k192"]) == CREATED
    assert [first[k] for k in SET_RESPONSE - {"accountId", "oldState", "newState", "created"}] == [None] * 5
    k192 = first["created"]["k192"]["id"]
    html = "<html><body><div>I have the most <b>brilliant</b> plan.</div></body></html>"
    second = alice.call(
        "Email/set",
        {
            "create": {
                "k1546": {
                    "mailboxIds": {drafts: True},
                    "keywords": {"$seen": True, "$draft": True},
                    "from": sender,
                    "to": [{"name": "John", "email": "john@example.com"}],
                    "subject": "World domination",
                    "receivedAt": "2018-07-10T01:05:08Z",
                    "sentAt": "2018-07-10T11:05:08+10:00",
                    "bodyStructure": {
                        "type": "multipart/alternative",
                        "subParts": [
                            {"partId": "a49d", "type": "text/html", "header:Content-Language": "en"},
                            {"partId": "bd48", "type": "text/plain", "header:Content-Language": "en"},
                        ],
                    },
                    "bodyValues": {"bd48": {"value": plan, "isTruncated": False}, "a49d": {"value": html}},
                }
            },
            "destroy": [k192],
        },
    )
    assert second["destroyed"] == [k192] and second["oldState"] == first["newState"]
    k1546 = second["created"]["k1546"]["id"]
    assert alice.call("Email/get", {"ids": [k192]})["notFound"] == [k192]
    props = ["sentAt", "receivedAt", "keywords", "textBody", "htmlBody", "bodyValues"]
    body = {"fetchAllBodyValues": True, "bodyProperties": ["partId", "type", "language"]}
    email = one(alice, k1546, props, **body)
    assert email["sentAt"] == "2018-07-10T11:05:08+10:00" and email["receivedAt"] == "2018-07-10T01:05:08Z"
    assert email["keywords"] == {"$seen": True, "$draft": True}
    assert [p["type"] for p in email["textBody"]] == ["text/plain"]
    assert [(p["type"], p["language"]) for p in email["htmlBody"]] == [("text/html", ["en"])]
    values = {p["type"]: email["bodyValues"][p["partId"]]["value"] for p in email["textBody"] + email["htmlBody"]}
    assert values == {"text/plain": plan, "text/html": html}
    changes = alice.call("Email/changes", {"sinceState": old})
    assert changes["created"] == [k1546] and changes["destroyed"] == [] and changes["newState"] == state(alice)


def test_server_sets_message_id_and_date_when_none_is_given(services, alice):
    """§4.6: the server MUST generate Message-ID and Date when not included (an empty messageId is none)."""
    drafts = roles(services, alice.account_id)["drafts"]
    for extra in ({}, {"messageId": []}, {"messageId": None, "sentAt": None}):
        created = alice.call("Email/set", {"create": {"k": {"mailboxIds": {drafts: True}, **extra}}})["created"]
        email = one(alice, created["k"]["id"], ["messageId", "sentAt", "headers"])
        [message_id] = email["messageId"]
        assert re.fullmatch(r"[^<>@\s]+@[^<>@\s]+", message_id), email
        assert email["sentAt"] and [h["name"] for h in email["headers"]].count("Message-ID") == 1


def test_creation_rules_are_invalid_properties(services, alice):
    """§4.6's constraints on an Email to create: each violation is invalidProperties naming the property."""
    drafts = roles(services, alice.account_id)["drafts"]
    base = {"mailboxIds": {drafts: True}}
    values = {"1": {"value": "x"}}
    text = {"textBody": [{"partId": "1"}], "bodyValues": values}
    cases = [
        ({"headers": []}, ["headers"]),
        ({"from": [], "header:From:asAddresses": []}, ["from", "header:From:asAddresses"]),
        ({"header:From:asDate": "2020-01-01T00:00:00Z"}, ["header:From:asDate"]),
        ({"header:Content-Type": " text/plain"}, ["header:Content-Type"]),
        ({**text, "bodyStructure": {"partId": "1"}}, ["bodyStructure"]),
        ({"textBody": [{"partId": "1", "type": "text/html"}], "bodyValues": values}, ["textBody"]),
        ({"textBody": [{"partId": "1"}, {"partId": "1"}], "bodyValues": values}, ["textBody"]),
        ({"htmlBody": [{"partId": "1", "type": "text/plain"}], "bodyValues": values}, ["htmlBody"]),
        ({"textBody": [{"partId": "1", "blobId": "Gx"}], "bodyValues": values}, ["textBody"]),
        ({"textBody": [{"partId": "2"}], "bodyValues": values}, ["textBody"]),
        ({"textBody": [{"partId": "1", "charset": "utf-8"}], "bodyValues": values}, ["textBody"]),
        ({"textBody": [{"partId": "1", "size": 1}], "bodyValues": values}, ["textBody"]),
        (
            {"textBody": [{"partId": "1", "header:Content-Transfer-Encoding": " 7bit"}], "bodyValues": values},
            ["textBody"],
        ),
        ({**text, "bodyValues": {"1": {"value": "x", "isTruncated": True}}}, ["bodyValues"]),
        ({**text, "bodyValues": {"1": {"value": "x", "isEncodingProblem": True}}}, ["bodyValues"]),
        (
            {"bodyStructure": {"partId": "1", "header:Subject": " s"}, "subject": "s", "bodyValues": values},
            ["bodyStructure"],
        ),
        ({"id": "Mx"}, ["id"]),
        ({"mailboxIds": {}}, ["mailboxIds"]),
        ({"mailboxIds": {drafts: False}}, ["mailboxIds"]),
        ({"mailboxIds": {"Bnotthere": True}}, ["mailboxIds"]),
        ({"keywords": {"$seen": False}}, ["keywords"]),
        ({"keywords": {"no space": True}}, ["keywords"]),
        ({"receivedAt": "2020-01-01T00:00:00+01:00"}, ["receivedAt"]),
    ]
    for obj, properties in cases:
        error = set_error(alice, {**base, **obj})
        assert error["type"] == "invalidProperties" and error["properties"] == properties, (obj, error)
    missing = set_error(alice, {"attachments": [{"blobId": "Gnope1"}, {"blobId": "Gnope2", "type": "image/png"}]})
    assert missing["type"] == "invalidProperties"  # no mailboxIds
    missing = set_error(alice, {**base, "attachments": [{"blobId": "Gnope1"}, {"blobId": "Gnope2"}]})
    assert missing["type"] == "blobNotFound" and missing["notFound"] == ["Gnope1", "Gnope2"]


def test_update_rules(services, alice):
    """RFC 8620 §5.3 PatchObjects on an Email: keywords and mailboxIds as wholes or entries; server-set or
    immutable properties only with their current value; bad patches and unknown ids are SetErrors."""
    r = roles(services, alice.account_id)
    d = services.mailboxes.deliver(alice.email, raw("From: x@example.com", "Subject: patch me"))
    e = d.message_id
    ok = alice.call(
        "Email/set",
        {"update": {e: {"keywords/$flagged": True, "mailboxIds/" + r["archive"]: True, "subject": "patch me"}}},
    )
    assert ok["updated"] == {e: None} and ok["newState"] == state(alice)
    assert one(alice, e, ["keywords", "mailboxIds"]) == {
        "id": e,
        "keywords": {"$flagged": True},
        "mailboxIds": {r["inbox"]: True, r["archive"]: True},
    }
    refused = {
        "subject": ("invalidProperties", {"subject": "other"}),
        "size": ("invalidProperties", {"size": 1}),
        "false": ("invalidProperties", {"keywords/$seen": False}),
        "none": ("invalidProperties", {"mailboxIds": {}}),
        "overlap": ("invalidPatch", {"keywords": {}, "keywords/$seen": True}),
        "deep": ("invalidPatch", {"keywords/$seen/x": True}),
    }
    for name, (kind, patch) in refused.items():
        result = alice.call("Email/set", {"update": {e: patch}})
        assert result["updated"] is None and result["notUpdated"][e]["type"] == kind, (name, result)
    missing = alice.call("Email/set", {"update": {"Mnotthere": {"keywords/$seen": True}}, "destroy": ["Mnotthere"]})
    assert missing["notUpdated"]["Mnotthere"]["type"] == missing["notDestroyed"]["Mnotthere"]["type"] == "notFound"
    assert alice.error("Email/set", {"ifInState": "stale", "destroy": [e]})["type"] == "stateMismatch"
    whole = alice.call("Email/set", {"update": {e: {"keywords": None, "mailboxIds": {r["trash"]: True}}}})
    assert whole["updated"] == {e: None}
    assert one(alice, e, ["keywords", "mailboxIds"]) == {"id": e, "keywords": {}, "mailboxIds": {r["trash"]: True}}

"""Email/get (RFC 8621 §4.2) and the download of body part blobs, on both backends."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import replace

import pytest

from jmapmono.mailbox import parsed_cache
from jmapmono.mailbox.mime_tree import parse_mime
from jmapmono.runtime import Runtime
from jmapmono.web.app import create_app
from tests.support.corpus import message
from tests.support.emails import fetch_blob
from tests.support.jmap import JmapClient

UTC_DATE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
#: RFC 8621 §4.2: the properties returned when ``properties`` is null.
RFC_DEFAULT = (
    "id blobId threadId mailboxIds keywords size receivedAt messageId inReplyTo references sender from to cc bcc "
    "replyTo subject sentAt hasAttachment preview bodyValues textBody htmlBody attachments"
).split()
DEFAULT_BODY_PROPERTIES = "partId blobId size name type charset disposition cid language location".split()


def msg(*headers: str | bytes, body: bytes = b"Hello.\r\n") -> bytes:
    lines = [h.encode() if isinstance(h, str) else h for h in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


SIMPLE = msg(
    "From: Joe Bloggs <joe@example.com>",
    "To: Alice <alice@example.org>, bob@example.org",
    "Subject: Dinner on Thursday?",
    "Date: Sun, 13 Oct 2013 15:10:00 +0100",
    "Message-ID: <dinner@example.com>",
    body=b"Are you free?\r\n",
)
INNER = b"From: carol@example.com\r\nSubject: the original\r\nContent-Type: text/plain\r\n\r\nOriginal text.\r\n"
PNG = bytes(range(256)) * 3
ATTACHMENTS = msg(
    "From: joe@example.com",
    "Subject: attachments",
    "Message-ID: <att@example.com>",
    "Content-Type: multipart/mixed; boundary=b1",
    body=b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee attached.\r\n"
    b"--b1\r\nContent-Type: image/png; name=x.png\r\nContent-Disposition: attachment; filename=x.png\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(PNG).replace(b"\n", b"\r\n") + b"\r\n"
    b"--b1\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment\r\n\r\n" + INNER + b"\r\n--b1--\r\n",
)


@pytest.fixture
def deliver(services, alice):
    def run(raw: bytes, to: str = "alice@example.org"):
        return services.mailboxes.deliver(to, raw)

    return run


@pytest.fixture
def inbox(services, alice) -> str:
    return services.mailboxes.mailbox_by_role(alice.account_id, "inbox").id


def get_one(client: JmapClient, email_id: str, **args) -> dict:
    result = client.call("Email/get", {"ids": [email_id], **args})
    assert result["notFound"] == []
    [email] = result["list"]
    return email


# -- properties ------------------------------------------------------------------------------------------------------


def test_metadata_properties(services, alice, deliver, inbox):
    d = deliver(SIMPLE)
    props = ["blobId", "threadId", "mailboxIds", "keywords", "size", "receivedAt"]
    email = get_one(alice, d.message_id, properties=props)
    assert list(email) == ["id", *props]  # id always, nothing else
    assert email["id"] == d.message_id and email["blobId"] == d.blob_id and email["threadId"] == d.thread_id
    assert email["mailboxIds"] == {inbox: True} and email["keywords"] == {}
    assert email["size"] == len(SIMPLE)
    assert UTC_DATE.fullmatch(email["receivedAt"])
    services.mailboxes.set_keywords(alice.account_id, [d.message_id], add=["$seen", "$Flagged"])
    assert get_one(alice, d.message_id, properties=["keywords"])["keywords"] == {"$seen": True, "$flagged": True}


def test_received_at_of_an_imported_email(services, alice, inbox):
    ms = 1381673520000  # 2013-10-13T14:12:00Z, the RFC's example
    appended = services.mailboxes.append(alice.account_id, SIMPLE, [inbox], ["$draft"], received_at=ms + 250)
    email = get_one(alice, appended.id, properties=["receivedAt", "keywords"])
    assert email == {"id": appended.id, "receivedAt": "2013-10-13T14:12:00Z", "keywords": {"$draft": True}}


@pytest.mark.parametrize("args", [{}, {"properties": None}])
def test_default_properties(alice, deliver, args):
    d = deliver(SIMPLE)
    email = get_one(alice, d.message_id, **args)
    assert set(email) == set(RFC_DEFAULT)
    assert email["bodyValues"] == {}  # nothing fetched by default
    assert email["subject"] == "Dinner on Thursday?" and email["preview"] == "Are you free?"
    assert email["hasAttachment"] is False and email["attachments"] == []
    [part] = email["textBody"]
    assert list(part) == DEFAULT_BODY_PROPERTIES  # the RFC's default bodyProperties
    assert part["partId"] == "1" and part["blobId"] == f"{d.blob_id}_1" and part["type"] == "text/plain"
    assert email["htmlBody"] == email["textBody"]


def test_convenience_properties_equal_their_header_forms(alice, deliver):
    raw = msg(
        "From: =?UTF-8?Q?Andr=C3=A9?= <andre@example.com>",
        "To: undisclosed-recipients:;",
        "Reply-To: list@example.com (The List)",
        "Subject: =?UTF-8?B?R3LDvMOfZQ==?= from\r\n Köln".encode(),
        "Date: Thu, 13 Feb 1969 23:32:54 -0330",
        "Message-ID: <a@example.com>",
        "In-Reply-To: <p@example.com>",
        "References: <r1@example.com>\r\n  <p@example.com>",
    )
    d = deliver(raw)
    pairs = {
        "messageId": "header:Message-ID:asMessageIds",
        "inReplyTo": "header:In-Reply-To:asMessageIds",
        "references": "header:References:asMessageIds",
        "sender": "header:Sender:asAddresses",
        "from": "header:From:asAddresses",
        "to": "header:To:asAddresses",
        "cc": "header:Cc:asAddresses",
        "bcc": "header:Bcc:asAddresses",
        "replyTo": "header:Reply-To:asAddresses",
        "subject": "header:Subject:asText",
        "sentAt": "header:Date:asDate",
    }
    fast = get_one(alice, d.message_id, properties=list(pairs))  # from the stored summary
    parsed = get_one(alice, d.message_id, properties=list(pairs.values()))  # from the raw message
    assert fast == {
        "id": d.message_id,
        "messageId": ["a@example.com"],
        "inReplyTo": ["p@example.com"],
        "references": ["r1@example.com", "p@example.com"],
        "sender": None,
        "from": [{"name": "André", "email": "andre@example.com"}],
        "to": [],  # present but naming nobody: [] (absent would be null)
        "cc": None,
        "bcc": None,
        "replyTo": [{"name": "The List", "email": "list@example.com"}],
        "subject": "Grüße from Köln",
        "sentAt": "1969-02-13T23:32:54-03:30",  # the Date field's own zone
    }
    for prop, header in pairs.items():
        assert fast[prop] == parsed[header], prop


def test_header_properties_in_every_form(alice, deliver):
    address_list = (
        b'"  James Smythe" <james@example.com>, Friends:\r\n  jane@example.com, =?UTF-8?Q?John_Sm=C3=AEth?=\r\n'
        b"  <john@example.com>;"
    )
    raw = msg(
        b"To:" + address_list,
        b"Resent-To: one@example.com",
        b"Resent-To: two@example.com, three@example.com",
        b"Subject:  =?utf-8?q?caf=C3=A9?= ",
        b"List-Post: <mailto:partytime@lists.example.com> (post here)",
        b"X-Custom: <x@example.com>",
        b"X-Custom: second",
    )
    d = deliver(raw)
    props = [
        "header:to:asAddresses",
        "header:TO:asGroupedAddresses",
        "header:Resent-To:asAddresses:all",
        "header:Subject",
        "header:Subject:asText",
        "header:List-POST:asURLs",
        "header:X-Custom:all",
        "header:X-Custom:asMessageIds:all",
        "header:X-Missing",
        "header:X-Missing:all",
    ]
    email = get_one(alice, d.message_id, properties=props)
    james = {"name": "James Smythe", "email": "james@example.com"}
    jane = {"name": None, "email": "jane@example.com"}
    john = {"name": "John Smîth", "email": "john@example.com"}
    assert list(email) == ["id", *props]  # capitalisation kept exactly as requested
    assert email["header:to:asAddresses"] == [james, jane, john]
    assert email["header:TO:asGroupedAddresses"] == [
        {"name": None, "addresses": [james]},
        {"name": "Friends", "addresses": [jane, john]},
    ]
    assert email["header:Resent-To:asAddresses:all"] == [
        [{"name": None, "email": "one@example.com"}],
        [{"name": None, "email": "two@example.com"}, {"name": None, "email": "three@example.com"}],
    ]
    assert email["header:Subject"] == "  =?utf-8?q?caf=C3=A9?= "  # Raw: leading space kept
    assert email["header:Subject:asText"] == "café "
    assert email["header:List-POST:asURLs"] == ["mailto:partytime@lists.example.com"]
    assert email["header:X-Custom:all"] == [" <x@example.com>", " second"]
    assert email["header:X-Custom:asMessageIds:all"] == [["x@example.com"], None]
    assert email["header:X-Missing"] is None and email["header:X-Missing:all"] == []


def test_headers_property_lists_every_field_in_order(alice, deliver):
    d = deliver(SIMPLE)
    email = get_one(alice, d.message_id, properties=["headers"])
    assert email["headers"] == [
        {"name": "From", "value": " Joe Bloggs <joe@example.com>"},
        {"name": "To", "value": " Alice <alice@example.org>, bob@example.org"},
        {"name": "Subject", "value": " Dinner on Thursday?"},
        {"name": "Date", "value": " Sun, 13 Oct 2013 15:10:00 +0100"},
        {"name": "Message-ID", "value": " <dinner@example.com>"},
    ]


@pytest.mark.parametrize(
    "args",
    [
        {"properties": ["subject", "nonsense"]},
        {"properties": ["header:From:asDate"]},
        {"properties": ["header:Subject:asAddresses"]},
        {"properties": ["header:Message-ID:asText"]},
        {"properties": ["header:X-A:asNothing"]},
        {"properties": ["header:X-A:all:asRaw"]},  # suffixes in the wrong order
        {"properties": ["header:"]},
        {"properties": ["header:Bad Name"]},
        {"properties": "subject"},
        {"properties": [1]},
        {"bodyProperties": ["partId", "nonsense"]},
        {"bodyProperties": ["header:From:asDate"]},
        {"bodyProperties": "partId"},
        {"fetchTextBodyValues": "yes"},
        {"maxBodyValueBytes": -1},
        {"maxBodyValueBytes": "10"},
        {"ids": "M1"},
        {"ids": ["not an id!"]},
        {"unknownArgument": True},
    ],
)
def test_invalid_arguments(alice, deliver, args):
    d = deliver(SIMPLE)
    error = alice.error("Email/get", {"ids": [d.message_id], **args})
    assert error["type"] == "invalidArguments", error


def test_unknown_properties_are_named(alice):
    error = alice.error("Email/get", {"ids": [], "properties": ["subject", "zip", "zap"]})
    assert error["type"] == "invalidArguments" and error["properties"] == ["zip", "zap"]


def test_null_optional_arguments_take_their_defaults(alice, deliver):
    d = deliver(SIMPLE)
    args = {"bodyProperties": None, "fetchAllBodyValues": None, "maxBodyValueBytes": None}
    email = get_one(alice, d.message_id, properties=["textBody", "bodyValues"], **args)
    assert email["bodyValues"] == {} and list(email["textBody"][0]) == DEFAULT_BODY_PROPERTIES


# -- body ------------------------------------------------------------------------------------------------------------


def test_rfc8621_body_structure_example(alice, deliver):
    raw = message("rfc8621_example")
    d = deliver(raw)
    email = get_one(alice, d.message_id, properties=["bodyStructure", "textBody", "htmlBody", "attachments"])
    # RFC 8621 §4.1.4: textBody [A, B, C, D, K], htmlBody [A, E, K], attachments [C, F, G, H, J].
    assert [p["partId"] for p in email["textBody"]] == ["1", "2", "3", "4", "10"]
    assert [p["partId"] for p in email["htmlBody"]] == ["1", "5", "10"]
    assert [p["partId"] for p in email["attachments"]] == ["3", "6", "7", "8", "9"]
    assert [p["type"] for p in email["attachments"]] == [
        "image/jpeg",
        "image/jpeg",
        "image/jpeg",
        "application/x-excel",
        "message/rfc822",
    ]
    root = email["bodyStructure"]
    assert root["type"] == "multipart/mixed" and root["partId"] is None and root["blobId"] is None
    assert [p["type"] for p in root["subParts"]] == ["text/plain", "multipart/mixed", "text/plain"]
    assert all("subParts" not in p for p in email["attachments"])


def test_rfc8621_get_example(services, alice, inbox):
    footer = "-- Sent by your friendly mailing list ..."
    html = "<html><body><p>Hello " + "x" * 300 + "</p></body></html>"
    raw = msg(
        "From: Joe Bloggs <joe@example.com>",
        "Subject: Dinner on Thursday?",
        "List-Post: <mailto:partytime@lists.example.com>",
        "Content-Type: multipart/mixed; boundary=m",
        body=b"--m\r\nContent-Type: text/html\r\n\r\n" + html.encode() + b"\r\n"
        b"--m\r\nContent-Type: text/plain\r\n\r\n" + footer.encode() + b"\r\n--m--\r\n",
    )
    appended = services.mailboxes.append(alice.account_id, raw, [inbox], received_at=1381673520000)
    result = alice.call(
        "Email/get",
        {
            "ids": ["f123u456", appended.id],
            "properties": [
                "threadId",
                "mailboxIds",
                "from",
                "subject",
                "receivedAt",
                "header:List-POST:asURLs",
                "htmlBody",
                "bodyValues",
            ],
            "bodyProperties": ["partId", "blobId", "size", "type"],
            "fetchHTMLBodyValues": True,
            "maxBodyValueBytes": 256,
        },
    )
    assert result["notFound"] == ["f123u456"]
    [email] = result["list"]
    blob = appended.blob_id
    assert email == {
        "id": appended.id,
        "threadId": appended.thread_id,
        "mailboxIds": {inbox: True},
        "from": [{"name": "Joe Bloggs", "email": "joe@example.com"}],
        "subject": "Dinner on Thursday?",
        "receivedAt": "2013-10-13T14:12:00Z",
        "header:List-POST:asURLs": ["mailto:partytime@lists.example.com"],
        "htmlBody": [
            {"partId": "1", "blobId": f"{blob}_1", "size": len(html), "type": "text/html"},
            {"partId": "2", "blobId": f"{blob}_2", "size": len(footer), "type": "text/plain"},
        ],
        "bodyValues": {
            "1": {"value": html[:256], "isEncodingProblem": False, "isTruncated": True},
            "2": {
                "value": footer,
                "isEncodingProblem": False,
                "isTruncated": False,
            },
        },
    }


def test_body_values_selection(alice, deliver):
    d = deliver(message("nested_related"))  # alternative(plain 1, html 2) + related image 3
    ids = [d.message_id]

    def values(**flags) -> dict:
        return get_one(alice, ids[0], properties=["bodyValues"], **flags)["bodyValues"]

    assert values() == {}
    assert set(values(fetchTextBodyValues=True)) == {"1"}
    assert set(values(fetchHTMLBodyValues=True)) == {"2"}
    assert set(values(fetchTextBodyValues=True, fetchHTMLBodyValues=True)) == {"1", "2"}
    assert set(values(fetchAllBodyValues=True)) == {"1", "2"}  # text/* only: never the image
    assert values(fetchTextBodyValues=True)["1"] == {
        "value": "Plain café",
        "isEncodingProblem": False,
        "isTruncated": False,
    }


def test_body_values_truncation_and_encoding_problems(alice, deliver):
    raw = msg(
        "Subject: values",
        "Content-Type: multipart/mixed; boundary=v",
        body=b"--v\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + "ééé\r\nline".encode() + b"\r\n"
        b'--v\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>ab <a href="https://example.com">x</a></p>\r\n'
        b"--v\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nbroken \xff utf-8\r\n"
        b"--v\r\nContent-Type: text/plain; charset=x-no-such-charset\r\n\r\nunknown\r\n--v--\r\n",
    )
    d = deliver(raw)
    full = get_one(alice, d.message_id, properties=["bodyValues"], fetchAllBodyValues=True)["bodyValues"]
    assert full["1"] == {"value": "ééé\nline", "isEncodingProblem": False, "isTruncated": False}  # CRLF → LF
    assert full["3"]["isEncodingProblem"] is True and "\ufffd" in full["3"]["value"]
    assert full["4"] == {"value": "unknown", "isEncodingProblem": True, "isTruncated": False}
    cut = get_one(alice, d.message_id, properties=["bodyValues"], fetchAllBodyValues=True, maxBodyValueBytes=5)
    cut = cut["bodyValues"]
    assert cut["1"] == {"value": "éé", "isEncodingProblem": False, "isTruncated": True}  # never mid-character
    assert cut["2"] == {"value": "<p>ab", "isEncodingProblem": False, "isTruncated": True}
    in_tag = get_one(alice, d.message_id, properties=["bodyValues"], fetchAllBodyValues=True, maxBodyValueBytes=12)
    assert in_tag["bodyValues"]["2"]["value"] == "<p>ab "  # not inside <a href=…>


def test_body_properties_selection(alice, deliver):
    d = deliver(ATTACHMENTS)
    props = ["partId", "name", "headers", "header:Content-Type:asRaw", "subParts"]
    email = get_one(alice, d.message_id, properties=["attachments", "bodyStructure"], bodyProperties=props)
    png, rfc822 = email["attachments"]
    assert list(png) == props
    assert png["name"] == "x.png" and png["header:Content-Type:asRaw"] == " image/png; name=x.png"
    assert png["headers"][1] == {"name": "Content-Disposition", "value": " attachment; filename=x.png"}
    assert png["subParts"] is None and rfc822["subParts"] is None
    assert [p["partId"] for p in email["bodyStructure"]["subParts"]] == ["1", "2", "3"]


def test_has_attachment_and_preview(alice, deliver):
    with_files = deliver(ATTACHMENTS)
    plain = deliver(SIMPLE)
    found = alice.call(
        "Email/get", {"ids": [with_files.message_id, plain.message_id], "properties": ["hasAttachment", "preview"]}
    )["list"]
    assert [(e["hasAttachment"], e["preview"]) for e in found] == [(True, "See attached."), (False, "Are you free?")]


# -- ids, limits, states ----------------------------------------------------------------------------------------------


def test_ids_null_empty_and_not_found(alice, deliver):
    first, second = deliver(SIMPLE), deliver(ATTACHMENTS)
    every = alice.call("Email/get", {"ids": None, "properties": ["subject"]})
    assert sorted(e["id"] for e in every["list"]) == sorted([first.message_id, second.message_id])
    assert every["notFound"] == []
    assert alice.call("Email/get", {"ids": []})["list"] == []
    result = alice.call("Email/get", {"ids": ["Mnope", second.message_id, "Mnope"], "properties": ["subject"]})
    assert result["list"] == [{"id": second.message_id, "subject": "attachments"}]
    assert result["notFound"] == ["Mnope"]


def test_state_is_the_email_state(services, alice, deliver):
    before = alice.call("Email/get", {"ids": []})["state"]
    d = deliver(SIMPLE)
    after = alice.call("Email/get", {"ids": [d.message_id]})["state"]
    assert after != before and after == services.changes.state(alice.account_id, "Email")


def test_max_objects_in_get(services, alice, deliver):
    limits = replace(services.config.limits, max_objects_in_get=3)
    app = create_app(Runtime(services.config.with_overrides(limits=limits), services.db))
    client = JmapClient(app.test_client(), alice.email, alice.account_id)
    ids = [deliver(SIMPLE).message_id for _ in range(3)]
    assert len(client.call("Email/get", {"ids": None, "properties": ["size"]})["list"]) == 3
    assert client.error("Email/get", {"ids": [*ids, "Mextra"]})["type"] == "requestTooLarge"
    deliver(SIMPLE)
    assert client.error("Email/get", {"ids": None})["type"] == "requestTooLarge"
    assert len(client.call("Email/get", {"ids": ids})["list"]) == 3


def test_creation_id_reference_in_ids(alice, deliver):
    d = deliver(SIMPLE)
    responses = alice.responses(
        [
            ["Core/echo", {"x": d.message_id}, "e"],
            [
                "Email/get",
                {"accountId": alice.account_id, "#ids": {"resultOf": "e", "name": "Core/echo", "path": "/x"}},
                "g",
            ],
        ]
    )
    assert responses[1][0] == "error"  # a ResultReference must resolve to an Id[], not a string
    responses = alice.responses(
        [
            ["Email/get", {"accountId": alice.account_id, "ids": [d.message_id], "properties": ["threadId"]}, "a"],
            [
                "Email/get",
                {
                    "accountId": alice.account_id,
                    "#ids": {"resultOf": "a", "name": "Email/get", "path": "/list/*/id"},
                    "properties": ["subject"],
                },
                "b",
            ],
        ]
    )
    assert responses[1][1]["list"] == [{"id": d.message_id, "subject": "Dinner on Thursday?"}]


# -- parsing only when needed ------------------------------------------------------------------------------------------


def test_raw_message_parsed_only_when_needed_and_once(monkeypatch, services, alice, deliver):
    ids = [deliver(SIMPLE).message_id, deliver(ATTACHMENTS).message_id]
    calls: list[bytes] = []
    reads: list[list[str]] = []
    real_read = services.blobs.read_stored

    def counting_parse(raw: bytes):
        calls.append(raw)
        return parse_mime(raw)

    def counting_read(account_id, blob_ids):
        reads.append(sorted(blob_ids))
        return real_read(account_id, blob_ids)

    monkeypatch.setattr(parsed_cache, "parse_mime", counting_parse)
    monkeypatch.setattr(services.blobs, "read_stored", counting_read)
    fast = RFC_DEFAULT[1:20]  # every property RFC 8621 §4.2 expects to be fast, blobId … preview
    found = alice.call("Email/get", {"ids": ids, "properties": fast})["list"]
    assert len(found) == 2 and calls == [] and reads == []
    slow = ["headers", "header:Subject:asText", "bodyStructure", "textBody", "htmlBody", "attachments", "bodyValues"]
    found = alice.call("Email/get", {"ids": ids, "properties": slow, "fetchAllBodyValues": True})["list"]
    assert len(found) == 2 and len(calls) == 2  # once per email, however many properties
    assert len(reads) == 1 and len(reads[0]) == 2  # both raw messages in one read
    assert found[1]["header:Subject:asText"] == "attachments"
    again = alice.call("Email/get", {"ids": ids, "properties": slow, "fetchAllBodyValues": True})["list"]
    assert again == found and len(calls) == 2 and len(reads) == 1  # kept: neither read nor parsed again


def test_kept_parses_change_nothing_in_the_answer(config, db, alice, bob, deliver):
    """Every property of RFC 8621 §4.2 is the same whether the parse and the rendering were kept or made for
    the request, and a message with the same content in another account (one blob) is answered from its own
    email."""
    uncached = Runtime(replace(config, parsed_cache_mb=0, rendered_cache_mb=0), db)
    try:
        plain = JmapClient(create_app(uncached).test_client(), alice.email, alice.account_id)
        ids = [deliver(raw).message_id for raw in (SIMPLE, ATTACHMENTS)]
        args = {"ids": ids, "properties": RFC_DEFAULT + ["headers", "bodyStructure"], "fetchAllBodyValues": True}
        first = alice.call("Email/get", args)["list"]
        assert alice.call("Email/get", args)["list"] == first == plain.call("Email/get", args)["list"]
        [theirs] = bob.call("Email/get", {"ids": [deliver(SIMPLE, "bob@example.org").message_id]})["list"]
        assert theirs["blobId"] == first[0]["blobId"] and theirs["id"] != first[0]["id"]
        assert theirs["mailboxIds"] != first[0]["mailboxIds"]
    finally:
        uncached.stop()


def test_a_kept_rendering_takes_keywords_and_mailboxes_from_the_email_as_it_is_now(services, alice, deliver, inbox):
    email_id = deliver(SIMPLE).message_id
    archive = services.mailboxes.create_mailbox(alice.account_id, "Elsewhere").id
    args = {"ids": [email_id], "properties": RFC_DEFAULT + ["header:Subject:asText"], "fetchAllBodyValues": True}
    [first] = alice.call("Email/get", args)["list"]
    assert first["keywords"] == {} and first["mailboxIds"] == {inbox: True}
    alice.call("Email/set", {"update": {email_id: {"keywords/$seen": True, "mailboxIds": {archive: True}}}})
    hits = services.rendered_emails.hits
    [now] = alice.call("Email/get", args)["list"]
    assert services.rendered_emails.hits == hits + 1  # rendered once, kept
    assert now["keywords"] == {"$seen": True} and now["mailboxIds"] == {archive: True}
    assert list(now) == list(first) and {**now, "keywords": {}, "mailboxIds": {inbox: True}} == first
    [fewer] = alice.call("Email/get", {"ids": [email_id], "properties": ["subject", "keywords"]})["list"]
    assert fewer == {"id": email_id, "subject": "Dinner on Thursday?", "keywords": {"$seen": True}}  # asked apart


def test_statements_of_email_get_do_not_grow_with_the_emails(monkeypatch, services, alice, deliver):
    """The raw messages of a page of emails are read together, not two queries per email."""
    from tests.support.statements import count_statements

    monkeypatch.setattr(services.db, "hears_others", True)  # as in a serving process
    ids = [deliver(SIMPLE).message_id for _ in range(8)]
    alice.call("Email/get", {"ids": ids[:1]})  # credentials and accounts checked and remembered
    sent = count_statements(monkeypatch)
    assert len(alice.call("Email/get", {"ids": ids[:2]})["list"]) == 2
    for_two = len(sent)
    sent.clear()
    assert len(alice.call("Email/get", {"ids": ids})["list"]) == 8
    assert len(sent) == for_two


def test_a_page_of_emails_already_parsed_is_one_statement_outside_any_transaction(
    monkeypatch, services, alice, deliver
):
    from tests.support.statements import alone_only

    monkeypatch.setattr(services.db, "hears_others", True)  # as in a serving process: credentials kept
    ids = [deliver(raw).message_id for raw in (SIMPLE, ATTACHMENTS)]
    args = {"ids": ids, "properties": ["id", "subject", "bodyStructure", "preview"]}
    first = alice.call("Email/get", args)  # parsed now, and the credentials and Session remembered
    with alone_only(services.db, monkeypatch) as statements:
        again = alice.call("Email/get", args)
    assert again == first and len(statements) == 1


def test_an_email_destroyed_between_the_two_reads_is_read_again_in_one_transaction(
    monkeypatch, services, alice, deliver
):
    """Its raw message gone when the second statement runs: the emails, the state and the raw messages are read
    again in one transaction, which sees them all or none."""
    ids = [deliver(SIMPLE).message_id, deliver(ATTACHMENTS).message_id]
    real_read = services.blobs.read_stored
    reads: list[bool] = []

    def first_misses(account_id, blob_ids):
        found = real_read(account_id, blob_ids)
        reads.append(bool(found))
        return {} if len(reads) == 1 else found  # as if the emails were destroyed just before

    monkeypatch.setattr(services.blobs, "read_stored", first_misses)
    args = {"ids": ids, "properties": ["id", "subject", "bodyStructure"]}
    found = alice.call("Email/get", args)["list"]
    assert len(reads) == 2 and [e["id"] for e in found] == ids and all(e["bodyStructure"] for e in found)


def test_unparsable_summary_falls_back_to_the_raw_message(services, alice, deliver):
    d = deliver(SIMPLE)
    with services.db.transaction() as tx:  # as stored when parsing failed at delivery
        tx.execute(
            "UPDATE messages SET subject = NULL, from_json = '[]', problems_json = ? WHERE id = ?",
            (json.dumps(["unparsable: RecursionError"]), d.message_id),
        )
    email = get_one(alice, d.message_id, properties=["subject", "from", "preview"])
    assert email["subject"] == "Dinner on Thursday?" and email["from"][0]["email"] == "joe@example.com"
    assert email["preview"] == "Are you free?"


# -- isolation -------------------------------------------------------------------------------------------------------


def test_other_accounts_emails_are_not_found(alice, bob, deliver):
    d = deliver(SIMPLE)
    result = bob.call("Email/get", {"ids": [d.message_id], "properties": ["subject"]})
    assert result["list"] == [] and result["notFound"] == [d.message_id]
    assert bob.call("Email/get", {"ids": None})["list"] == []
    error = bob.error("Email/get", {"accountId": alice.account_id, "ids": [d.message_id]})
    assert error["type"] == "accountNotFound"


# -- part downloads --------------------------------------------------------------------------------------------------


def download(client: JmapClient, blob_id: str, name: str = "file", type: str | None = None, account=None):
    return fetch_blob(client, blob_id, name, type, account)


def test_part_blobs_download_decoded(alice, bob, deliver):
    d = deliver(ATTACHMENTS)
    email = get_one(alice, d.message_id, properties=["attachments", "textBody", "blobId"])
    png, rfc822 = email["attachments"]
    assert png["blobId"] == f"{d.blob_id}_2" and png["size"] == len(PNG)
    r = download(alice, png["blobId"], "x.png", "image/png")
    assert r.status_code == 200 and r.data == PNG and r.headers["Content-Type"] == "image/png"
    r = download(alice, rfc822["blobId"], "fwd.eml")
    assert r.status_code == 200 and r.data == INNER  # the attached message's exact bytes
    assert r.headers["Content-Type"] == "message/rfc822" and rfc822["size"] == len(INNER)
    r = download(alice, email["textBody"][0]["blobId"], "body.txt")
    assert r.data == b"See attached."
    assert download(alice, email["blobId"], "all.eml").data == ATTACHMENTS
    # A part of the attached message (nested part blob id).
    assert download(alice, f"{rfc822['blobId']}_1", "inner.txt").data == b"Original text.\r\n"
    # Unknown parts, and other users, get 404.
    for blob_id in (f"{d.blob_id}_9", f"{d.blob_id}_0", f"{d.blob_id}_2_1", f"Gnothing_{1}"):
        assert download(alice, blob_id).status_code == 404, blob_id
    assert download(bob, png["blobId"]).status_code == 404
    assert download(bob, png["blobId"], account=alice.account_id).status_code == 404


def test_deeply_nested_bogus_part_id_is_cheap(monkeypatch, services, alice, deliver):
    d = deliver(SIMPLE)
    reads: list[str] = []
    real_read = services.blobs.read
    monkeypatch.setattr(services.blobs, "read", lambda *a, **k: reads.append(a[1]) or real_read(*a, **k))
    bogus = d.blob_id + "_1" * 90
    assert len(bogus) <= 255
    assert download(alice, bogus).status_code == 404
    assert len(reads) <= 12  # a bounded number of lookups, not one per level (or worse)

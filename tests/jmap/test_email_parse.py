"""Email/parse (RFC 8621 §4.9) on uploads, stored messages and attached-message parts, on both backends."""

from __future__ import annotations

import pytest

from tests.jmap.test_email_get import ATTACHMENTS, INNER, SIMPLE, download, msg
from tests.support.jmap import JmapClient

RFC_PARSE_DEFAULT = [
    "messageId",
    "inReplyTo",
    "references",
    "sender",
    "from",
    "to",
    "cc",
    "bcc",
    "replyTo",
    "subject",
    "sentAt",
    "hasAttachment",
    "preview",
    "bodyValues",
    "textBody",
    "htmlBody",
    "attachments",
]


def upload(client: JmapClient, data: bytes, type: str = "message/rfc822", account: str | None = None) -> str:
    r = client.client.post(
        f"/jmap/upload/{account or client.account_id}/", data=data, headers=client.headers, content_type=type
    )
    assert r.status_code == 201, r.get_data(as_text=True)
    return r.get_json()["blobId"]


def parse(client: JmapClient, blob_ids: list[str], **args) -> dict:
    return client.call("Email/parse", {"blobIds": blob_ids, **args})


def test_parse_an_uploaded_message_with_default_properties(alice):
    blob_id = upload(alice, SIMPLE)
    result = parse(alice, [blob_id])
    assert result["accountId"] == alice.account_id
    assert result["notParsable"] is None and result["notFound"] is None
    email = result["parsed"][blob_id]
    assert list(email) == RFC_PARSE_DEFAULT  # no id: only what was asked for, by default the RFC's list
    assert email["subject"] == "Dinner on Thursday?"
    assert email["from"] == [{"name": "Joe Bloggs", "email": "joe@example.com"}]
    assert email["to"] == [{"name": "Alice", "email": "alice@example.org"}, {"name": None, "email": "bob@example.org"}]
    assert email["cc"] is None and email["sender"] is None and email["inReplyTo"] is None
    assert email["messageId"] == ["dinner@example.com"] and email["sentAt"] == "2013-10-13T15:10:00+01:00"
    assert email["preview"] == "Are you free?" and email["hasAttachment"] is False and email["bodyValues"] == {}
    [part] = email["textBody"]
    assert part["blobId"] == f"{blob_id}_1" and part["size"] == len(b"Are you free?\r\n")
    assert download(alice, part["blobId"]).data == b"Are you free?\r\n"


def test_store_only_properties_are_null(alice):
    blob_id = upload(alice, SIMPLE)
    props = ["id", "blobId", "threadId", "mailboxIds", "keywords", "size", "receivedAt", "subject"]
    email = parse(alice, [blob_id], properties=props)["parsed"][blob_id]
    assert email == {
        "id": None,
        "blobId": blob_id,
        "threadId": None,
        "mailboxIds": None,
        "keywords": None,
        "size": len(SIMPLE),
        "receivedAt": None,
        "subject": "Dinner on Thursday?",
    }


def test_parse_the_attached_message_of_a_stored_email(services, alice):
    d = services.mailboxes.deliver("alice@example.org", ATTACHMENTS)
    email = alice.call("Email/get", {"ids": [d.message_id], "properties": ["attachments"]})["list"][0]
    attached = next(p["blobId"] for p in email["attachments"] if p["type"] == "message/rfc822")
    props = ["subject", "from", "size", "blobId", "textBody", "bodyValues", "headers", "header:Subject:asText"]
    result = parse(alice, [attached], properties=props, fetchTextBodyValues=True)
    parsed = result["parsed"][attached]
    assert parsed["subject"] == parsed["header:Subject:asText"] == "the original"
    assert parsed["from"] == [{"name": None, "email": "carol@example.com"}]
    assert parsed["size"] == len(INNER) and parsed["blobId"] == attached
    assert [h["name"] for h in parsed["headers"]] == ["From", "Subject", "Content-Type"]
    [text] = parsed["textBody"]
    assert parsed["bodyValues"][text["partId"]]["value"] == "Original text.\n"
    # The attached message's parts are blobs too.
    assert download(alice, text["blobId"]).data == b"Original text.\r\n"
    # The whole stored message parses as well.
    whole = parse(alice, [d.blob_id], properties=["subject", "hasAttachment"])["parsed"][d.blob_id]
    assert whole == {"subject": "attachments", "hasAttachment": True}


def test_lf_only_message_is_parsed(alice):
    raw = SIMPLE.replace(b"\r\n", b"\n")
    blob_id = upload(alice, raw)
    email = parse(alice, [blob_id], properties=["subject", "bodyValues", "textBody"], fetchAllBodyValues=True)
    email = email["parsed"][blob_id]
    assert email["subject"] == "Dinner on Thursday?"
    assert email["bodyValues"]["1"]["value"] == "Are you free?\n"


def test_eai_utf8_headers(alice):
    raw = msg("From: Jörg Müller <jörg@bücher.example>".encode(), "Subject: Grüße ✓".encode(), body="Füße\r\n".encode())
    blob_id = upload(alice, raw)
    email = parse(alice, [blob_id], properties=["from", "subject", "preview", "header:Subject"])["parsed"][blob_id]
    assert email == {
        "from": [{"name": "Jörg Müller", "email": "jörg@bücher.example"}],
        "subject": "Grüße ✓",
        "preview": "Füße",
        "header:Subject": " Grüße ✓",
    }


def test_body_options_apply_as_in_get(alice):
    raw = msg(
        "Subject: opts",
        "Content-Type: multipart/alternative; boundary=a",
        body=b"--a\r\nContent-Type: text/plain\r\n\r\nplain text here\r\n"
        b"--a\r\nContent-Type: text/html\r\n\r\n<p>html text here</p>\r\n--a--\r\n",
    )
    blob_id = upload(alice, raw)
    email = parse(
        alice,
        [blob_id],
        properties=["htmlBody", "bodyValues", "bodyStructure"],
        bodyProperties=["partId", "type"],
        fetchHTMLBodyValues=True,
        maxBodyValueBytes=7,
    )["parsed"][blob_id]
    assert email["htmlBody"] == [{"partId": "2", "type": "text/html"}]
    assert email["bodyValues"] == {"2": {"value": "<p>html", "isEncodingProblem": False, "isTruncated": True}}
    assert email["bodyStructure"] == {"partId": None, "type": "multipart/alternative"}  # bodyProperties exactly


def test_not_found_and_not_parsable(alice, bob):
    good = upload(alice, SIMPLE)
    binary = upload(alice, b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "image/png")
    prose = upload(alice, b"This is not an email, just some text.\r\nSecond line.\r\n", "text/plain")
    bobs = upload(bob, SIMPLE + b"bob's copy\r\n")
    result = parse(alice, [good, binary, "Gnothing", prose, bobs, "not an id!", good], properties=["subject"])
    assert list(result["parsed"]) == [good]
    assert result["notParsable"] == [binary, prose]
    assert result["notFound"] == ["Gnothing", bobs, "not an id!"]


def test_empty_results_are_null(alice):
    result = parse(alice, [])
    assert result == {"accountId": alice.account_id, "parsed": None, "notParsable": None, "notFound": None}


def test_another_users_upload_is_not_found_even_with_access_to_the_account(services, alice, bob):
    services.accounts.delegate("alice@example.org", "bob@example.org")
    blob_id = upload(alice, SIMPLE)
    assert parse(bob, [blob_id], accountId=alice.account_id)["notFound"] == [blob_id]  # uploads are private
    d = services.mailboxes.deliver("alice@example.org", SIMPLE)
    assert list(parse(bob, [d.blob_id], accountId=alice.account_id)["parsed"]) == [d.blob_id]


@pytest.mark.parametrize(
    "args",
    [
        {},
        {"blobIds": None},
        {"blobIds": "G1"},
        {"blobIds": [1]},
        {"blobIds": [], "properties": ["header:From:asDate"]},
        {"blobIds": [], "properties": ["nonsense"]},
        {"blobIds": [], "bodyProperties": ["nonsense"]},
        {"blobIds": [], "fetchAllBodyValues": 1},
        {"blobIds": [], "maxBodyValueBytes": -5},
        {"blobIds": [], "ids": []},
    ],
)
def test_invalid_arguments(alice, args):
    assert alice.error("Email/parse", args)["type"] == "invalidArguments"


def test_other_account_is_refused(alice, bob):
    assert bob.error("Email/parse", {"accountId": alice.account_id, "blobIds": []})["type"] == "accountNotFound"

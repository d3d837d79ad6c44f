"""Email/set create (RFC 8621 §4.6): drafts built from JMAP objects, in every header form and body shape."""

from __future__ import annotations

import base64

from tests.support.emails import NOTES, PNG, create, download, get, message, refused, roles, upload
from tests.support.jmap import JmapClient

# --- the RFC's examples (RFC 8621 §4.6) ---------------------------------------------------------------------------


def test_rfc_plain_text_draft(alice, services):
    drafts = roles(services, alice.account_id)["drafts"]
    result = create(
        alice,
        {
            "mailboxIds": {drafts: True},
            "keywords": {"$seen": True, "$draft": True},
            "from": [{"name": "Joe Bloggs", "email": "joe@example.com"}],
            "subject": "World domination",
            "receivedAt": "2018-07-10T01:03:11Z",
            "sentAt": "2018-07-10T11:03:11+10:00",
            "bodyStructure": {"type": "text/plain", "partId": "bd48", "header:Content-Language": "en"},
            "bodyValues": {
                "bd48": {
                    "value": "I have the most brilliant plan.  Let me tell you all about it.  What we do is, we",
                    "isTruncated": False,
                }
            },
        },
    )
    created = result["created"]["k"]
    assert set(created) == {"id", "blobId", "threadId", "size"}
    raw = download(alice, created["blobId"])
    assert len(raw) == created["size"]
    assert b"Date: Tue, 10 Jul 2018 11:03:11 +1000\r\n" in raw
    assert b"From: Joe Bloggs <joe@example.com>\r\n" in raw
    assert b"Content-Language: en\r\n" in raw and b"MIME-Version: 1.0\r\n" in raw
    (email,) = get(
        alice,
        [created["id"]],
        [
            "mailboxIds",
            "keywords",
            "subject",
            "from",
            "sentAt",
            "receivedAt",
            "messageId",
            "bodyStructure",
            "bodyValues",
            "threadId",
            "size",
            "header:Content-Language:asText",
        ],
        fetchAllBodyValues=True,
    )
    assert email["mailboxIds"] == {drafts: True}
    assert email["keywords"] == {"$seen": True, "$draft": True}
    assert email["subject"] == "World domination"
    assert email["from"] == [{"name": "Joe Bloggs", "email": "joe@example.com"}]
    assert email["sentAt"] == "2018-07-10T11:03:11+10:00"  # as given: the Date field keeps its zone
    assert email["receivedAt"] == "2018-07-10T01:03:11Z"
    assert len(email["messageId"]) == 1 and "@example.com" in email["messageId"][0]
    assert email["threadId"] == created["threadId"] and email["size"] == created["size"]
    assert email["header:Content-Language:asText"] == "en"
    structure = email["bodyStructure"]
    assert structure["type"] == "text/plain" and structure["language"] == ["en"]
    assert email["bodyValues"][structure["partId"]]["value"].startswith("I have the most brilliant plan.")
    assert result["newState"] == alice.call("Email/get", {"ids": []})["state"] != result["oldState"]


def test_rfc_alternative_draft_replaces_the_previous_one(alice, services):
    drafts = roles(services, alice.account_id)["drafts"]
    first = create(alice, {"mailboxIds": {drafts: True}, "subject": "v1"})["created"]["k"]["id"]
    html = (
        '<!DOCTYPE html><html><head><title></title><style type="text/css">div{font-size:16px}</style></head>'
        "<body><div>I have the most <b>brilliant</b> plan.</div></body></html>"
    )
    result = alice.call(
        "Email/set",
        {
            "create": {
                "k1546": {
                    "mailboxIds": {drafts: True},
                    "keywords": {"$seen": True, "$draft": True},
                    "from": [{"name": "Joe Bloggs", "email": "joe@example.com"}],
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
                    "bodyValues": {
                        "bd48": {"value": "I have the most brilliant plan.", "isTruncated": False},
                        "a49d": {"value": html, "isTruncated": False},
                    },
                }
            },
            "destroy": [first],
        },
    )
    assert result["destroyed"] == [first]
    new_id = result["created"]["k1546"]["id"]
    (email,) = get(alice, [new_id], ["textBody", "htmlBody", "bodyValues", "to"], fetchAllBodyValues=True)
    assert [p["type"] for p in email["textBody"]] == ["text/plain"]
    assert [p["type"] for p in email["htmlBody"]] == ["text/html"]
    assert email["bodyValues"][email["htmlBody"][0]["partId"]]["value"] == html
    assert email["to"] == [{"name": "John", "email": "john@example.com"}]
    assert alice.call("Email/get", {"ids": [first]})["notFound"] == [first]


# --- drafts with bodies and attachments ------------------------------------------------------------------------------


def test_text_html_draft_with_uploaded_and_inline_attachments(alice, services):
    drafts = roles(services, alice.account_id)["drafts"]
    png = upload(alice, PNG, "image/png")
    notes = upload(alice, NOTES, "text/plain")
    text = "Hello Ünïcode world\nSee the picture." + " long line" * 120
    result = create(
        alice,
        {
            "mailboxIds": {drafts: True},
            "subject": "Café plans ☕",
            "from": [{"name": "Alice Ä. Example", "email": "alice@example.org"}],
            "to": [{"name": 'Bob "the builder"', "email": "bob@example.org"}, {"name": None, "email": "c@example.org"}],
            "textBody": [{"partId": "t"}],
            "htmlBody": [{"partId": "h"}],
            "bodyValues": {"t": {"value": text}, "h": {"value": '<p>Hello <img src="cid:logo@x"></p>'}},
            "attachments": [
                {"blobId": png, "type": "image/png", "cid": "logo@x", "disposition": "inline"},
                {"blobId": notes, "type": "text/plain", "name": "nötes.txt"},
                {"blobId": png, "name": "picture.png"},
            ],
        },
    )
    created = result["created"]["k"]
    raw = download(alice, created["blobId"])
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    (email,) = get(
        alice,
        [created["id"]],
        [
            "subject",
            "from",
            "to",
            "textBody",
            "htmlBody",
            "attachments",
            "bodyStructure",
            "bodyValues",
            "hasAttachment",
            "preview",
        ],
        fetchAllBodyValues=True,
    )
    assert email["subject"] == "Café plans ☕"
    assert email["from"] == [{"name": "Alice Ä. Example", "email": "alice@example.org"}]
    assert email["to"] == [
        {"name": 'Bob "the builder"', "email": "bob@example.org"},
        {"name": None, "email": "c@example.org"},
    ]
    structure = email["bodyStructure"]
    assert structure["type"] == "multipart/mixed"
    alternative = structure["subParts"][0]
    assert alternative["type"] == "multipart/alternative"
    assert [p["type"] for p in alternative["subParts"]] == ["text/plain", "multipart/related"]
    assert [p["type"] for p in alternative["subParts"][1]["subParts"]] == ["text/html", "image/png"]
    assert [p["type"] for p in email["textBody"]] == ["text/plain"]
    assert [p["type"] for p in email["htmlBody"]] == ["text/html"]
    assert email["bodyValues"][email["textBody"][0]["partId"]]["value"] == text
    assert email["textBody"][0]["charset"] == "utf-8"
    names = [(a["name"], a["type"], a["disposition"]) for a in email["attachments"]]
    assert names == [
        (None, "image/png", "inline"),
        ("nötes.txt", "text/plain", "attachment"),
        ("picture.png", "image/png", "attachment"),
    ]
    assert email["attachments"][0]["cid"] == "logo@x"
    assert email["hasAttachment"] is True
    assert email["preview"].startswith("Hello Ünïcode world")
    # Attachments download exactly as uploaded.
    assert download(alice, email["attachments"][0]["blobId"]) == PNG
    assert download(alice, email["attachments"][1]["blobId"]) == NOTES
    assert download(alice, email["attachments"][2]["blobId"]) == PNG
    assert email["attachments"][1]["size"] == len(NOTES)


def test_attachment_from_another_emails_part(alice, services):
    inbox = roles(services, alice.account_id)["inbox"]
    pdf = b"%PDF-1.4 fake \x00\x01\x02 pdf"

    original = (
        b"From: bob@example.org\r\nSubject: report\r\nMessage-ID: <r@x>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n'
        b'--b\r\nContent-Type: application/pdf; name="report.pdf"\r\nContent-Transfer-Encoding: base64\r\n'
        b'Content-Disposition: attachment; filename="report.pdf"\r\n\r\n' + base64.b64encode(pdf) + b"\r\n--b--\r\n"
    )
    source = services.mailboxes.deliver("alice@example.org", original).message_id
    (attachment,) = get(alice, [source], ["attachments"])[0]["attachments"]
    created = create(
        alice,
        {"mailboxIds": {inbox: True}, "subject": "Fwd: report", "attachments": [{"blobId": attachment["blobId"]}]},
    )["created"]["k"]
    (email,) = get(alice, [created["id"]], ["attachments", "textBody"])
    (forwarded,) = email["attachments"]
    assert (forwarded["name"], forwarded["type"], forwarded["disposition"]) == (
        "report.pdf",
        "application/pdf",
        "attachment",
    )
    assert download(alice, forwarded["blobId"]) == pdf
    assert email["textBody"] == []


def test_upload_with_an_rfc2231_charset_parameter(alice, services):
    """The upload's type says ``charset*=utf-8''utf-8`` (RFC 2231): the attachment gets charset utf-8."""
    drafts = roles(services, alice.account_id)["drafts"]
    blob = upload(alice, "héllo".encode(), "text/plain; charset*=utf-8''utf-8")
    created = create(alice, {"mailboxIds": {drafts: True}, "attachments": [{"blobId": blob, "name": "a.txt"}]})[
        "created"
    ]["k"]
    (attachment,) = get(alice, [created["id"]], ["attachments"])[0]["attachments"]
    assert (attachment["type"], attachment["charset"], attachment["name"]) == ("text/plain", "utf-8", "a.txt")
    assert download(alice, attachment["blobId"]) == "héllo".encode()


def test_forward_a_whole_email_as_an_attachment(alice, services):
    inbox = roles(services, alice.account_id)["inbox"]
    original = services.mailboxes.deliver("alice@example.org", message("to forward", "fw@x", "body\r\n"))
    created = create(
        alice,
        {
            "mailboxIds": {inbox: True},
            "from": [{"name": "Jöran", "email": "jöran@exämple.org"}],  # EAI address: written as UTF-8
            "textBody": [{"partId": "t"}],
            "bodyValues": {"t": {"value": "see attached"}},
            "attachments": [{"blobId": original.blob_id, "name": "forwarded.eml"}],
        },
    )["created"]["k"]
    (email,) = get(alice, [created["id"]], ["attachments", "from"])
    (attached,) = email["attachments"]
    assert (attached["type"], attached["name"]) == ("message/rfc822", "forwarded.eml")
    assert download(alice, attached["blobId"]) == download(alice, original.blob_id)
    assert email["from"] == [{"name": "Jöran", "email": "jöran@exämple.org"}]


def test_header_properties_in_every_form(alice, services):
    inbox = roles(services, alice.account_id)["inbox"]
    long_subject = "A subject that is long enough to need folding " * 5
    values = {
        "subject": long_subject.strip(),
        "header:X-Raw": " raw value\r\n folded",
        "header:X-Plain": "no leading space",
        "header:X-Text:asText": "Grüße aus Köln =?not-a-word?=",
        "header:Comments:asText": "ascii =?utf-8?q?lookalike?= text",
        "header:List-Post:asURLs": ["mailto:list@example.org", "https://example.org/post"],
        "header:X-Ids:asMessageIds": ["a@b", "c.d@e"],
        "header:References": " <r1@x>",
        "inReplyTo": ["r1@x"],
        "header:Resent-Date:asDate": "2020-02-29T23:59:58-05:00",
        "header:X-Seen:asDate:all": ["2021-01-01T00:00:00Z", "2021-01-02T00:00:00Z"],
        "header:To:asGroupedAddresses": [
            {"name": None, "addresses": [{"name": "Ann", "email": "ann@example.org"}]},
            {
                "name": "Friends: the best",
                "addresses": [{"name": None, "email": "f1@example.org"}, {"name": "Zoë", "email": "f2@example.org"}],
            },
            {"name": "Empty", "addresses": []},
        ],
        "header:Cc:asAddresses:all": [
            [{"name": "One", "email": "one@example.org"}],
            [{"name": None, "email": "two@x"}],
        ],
        "replyTo": [{"name": 'Quote \\ "me"', "email": "q@example.org"}],
        "messageId": ["given@example.org"],
    }
    created = create(alice, {"mailboxIds": {inbox: True}, **values})["created"]["k"]
    wanted = {
        "subject": long_subject.strip(),
        "header:X-Raw": " raw value\r\n folded",
        "header:X-Plain": " no leading space",
        "header:X-Text:asText": "Grüße aus Köln =?not-a-word?=",
        "header:Comments:asText": "ascii =?utf-8?q?lookalike?= text",
        "header:List-Post:asURLs": ["mailto:list@example.org", "https://example.org/post"],
        "header:X-Ids:asMessageIds": ["a@b", "c.d@e"],
        "references": ["r1@x"],
        "inReplyTo": ["r1@x"],
        "header:Resent-Date:asDate": "2020-02-29T23:59:58-05:00",
        "header:X-Seen:asDate:all": ["2021-01-01T00:00:00Z", "2021-01-02T00:00:00Z"],
        "header:To:asGroupedAddresses": values["header:To:asGroupedAddresses"],
        "header:Cc:asAddresses:all": values["header:Cc:asAddresses:all"],
        "replyTo": values["replyTo"],
        "messageId": ["given@example.org"],
    }
    (email,) = get(alice, [created["id"]], list(wanted))
    assert {k: email[k] for k in wanted} == wanted
    raw = download(alice, created["blobId"])
    assert raw.count(b"\r\nX-Seen:") == 2 and raw.count(b"\r\nCc:") == 2
    assert all(
        len(line) <= 78 for line in raw.split(b"\r\n\r\n")[0].split(b"\r\n") if not line.startswith(b"Message-ID")
    )


def test_empty_draft_gets_date_message_id_and_an_empty_body(alice, services):
    drafts = roles(services, alice.account_id)["drafts"]
    created = create(alice, {"mailboxIds": {drafts: True}})["created"]["k"]
    (email,) = get(
        alice,
        [created["id"]],
        ["sentAt", "messageId", "textBody", "bodyValues", "keywords", "receivedAt"],
        fetchTextBodyValues=True,
    )
    assert email["sentAt"] is not None and email["messageId"] and email["keywords"] == {}
    assert [p["type"] for p in email["textBody"]] == ["text/plain"]
    assert list(email["bodyValues"].values())[0]["value"] == ""


# --- create errors -------------------------------------------------------------------------------------------------

BAD_CREATES = [
    ({"headers": [{"name": "X", "value": "y"}]}, ["headers"]),
    ({"from": [{"email": "a@b"}], "header:From:asAddresses": [{"email": "c@d"}]}, ["from", "header:From:asAddresses"]),
    ({"header:subject": "x", "header:Subject:asText": "y"}, ["header:subject", "header:Subject:asText"]),
    ({"header:From:asDate": "2020-01-01T00:00:00Z"}, ["header:From:asDate"]),
    ({"header:Subject:asAddresses": []}, ["header:Subject:asAddresses"]),
    ({"header:Content-Type": "text/plain"}, ["header:Content-Type"]),
    ({"header:X-Bad": "line\r\nInjected: yes"}, ["header:X-Bad"]),
    ({"subject": 42}, ["subject"]),
    ({"from": [{"name": "x"}]}, ["from"]),
    ({"messageId": ["has space@x"]}, ["messageId"]),
    ({"sentAt": "yesterday"}, ["sentAt"]),
    ({"receivedAt": "2018-07-10T11:03:11+10:00"}, ["receivedAt"]),
    ({"keywords": {"a b": True}}, ["keywords"]),
    ({"keywords": {"$seen": False}}, ["keywords"]),
    ({"id": "Mabc"}, ["id"]),
    ({"size": 5, "preview": "x"}, ["size", "preview"]),
    ({"nonsense": 1}, ["nonsense"]),
    (
        {
            "bodyStructure": {"partId": "1", "type": "text/plain"},
            "textBody": [{"partId": "1"}],
            "bodyValues": {"1": {"value": "x"}},
        },
        ["bodyStructure"],
    ),
    (
        {"textBody": [{"partId": "1"}, {"partId": "2"}], "bodyValues": {"1": {"value": "x"}, "2": {"value": "y"}}},
        ["textBody"],
    ),
    ({"textBody": [{"partId": "1", "type": "text/html"}], "bodyValues": {"1": {"value": "x"}}}, ["textBody"]),
    ({"htmlBody": [{"partId": "1", "type": "text/plain"}], "bodyValues": {"1": {"value": "x"}}}, ["htmlBody"]),
    ({"textBody": [{"partId": "nope"}]}, ["textBody"]),
    ({"textBody": [{"partId": "1", "charset": "utf-8"}], "bodyValues": {"1": {"value": "x"}}}, ["textBody"]),
    ({"textBody": [{"partId": "1", "size": 1}], "bodyValues": {"1": {"value": "x"}}}, ["textBody"]),
    ({"textBody": [{"partId": "1", "blobId": "Gx"}], "bodyValues": {"1": {"value": "x"}}}, ["textBody"]),
    ({"textBody": [{"type": "text/plain"}]}, ["textBody"]),
    (
        {
            "textBody": [{"partId": "1", "header:Content-Transfer-Encoding": "base64"}],
            "bodyValues": {"1": {"value": "x"}},
        },
        ["textBody"],
    ),
    ({"textBody": [{"partId": "1", "headers": []}], "bodyValues": {"1": {"value": "x"}}}, ["textBody"]),
    ({"textBody": [{"partId": "1"}], "bodyValues": {"1": {"value": "x", "isTruncated": True}}}, ["bodyValues"]),
    ({"textBody": [{"partId": "1"}], "bodyValues": {"1": {"value": "x", "isEncodingProblem": True}}}, ["bodyValues"]),
    ({"bodyStructure": {"type": "multipart/mixed", "subParts": []}}, ["bodyStructure"]),
    (
        {
            "bodyStructure": {"type": "text/plain", "partId": "1", "subParts": [{"partId": "1"}]},
            "bodyValues": {"1": {"value": "x"}},
        },
        ["bodyStructure"],
    ),
    (
        {
            "bodyStructure": {"type": "multipart/mixed", "partId": "1", "subParts": [{"partId": "1"}]},
            "bodyValues": {"1": {"value": "x"}},
        },
        ["bodyStructure"],
    ),
    (
        {
            "bodyStructure": {"partId": "1", "disposition": "inline", "header:Content-Disposition": "inline"},
            "bodyValues": {"1": {"value": "x"}},
        },
        ["bodyStructure"],
    ),
    (
        {"subject": "a", "bodyStructure": {"partId": "1", "header:Subject": "b"}, "bodyValues": {"1": {"value": "x"}}},
        ["bodyStructure"],
    ),
    (
        {"bodyStructure": {"partId": "1", "type": "text/plain; charset=utf-8"}, "bodyValues": {"1": {"value": "x"}}},
        ["bodyStructure"],
    ),
]


def test_invalid_creates_are_invalid_properties(alice, services):
    """Each bad create is refused on its own (one call holds them all) and names exactly the properties at fault."""
    drafts = roles(services, alice.account_id)["drafts"]
    creates = {f"c{i}": {"mailboxIds": {drafts: True}, **obj} for i, (obj, _) in enumerate(BAD_CREATES)}
    result = alice.call("Email/set", {"create": creates})
    assert result["created"] is None and result["oldState"] == result["newState"]
    for i, (obj, properties) in enumerate(BAD_CREATES):
        error = result["notCreated"][f"c{i}"]
        assert (error["type"], error["properties"]) == ("invalidProperties", properties), (obj, error)
        assert error["description"]


def test_mailbox_ids_are_required_and_must_exist(alice, services):
    drafts = roles(services, alice.account_id)["drafts"]
    for obj in (
        {},
        {"mailboxIds": {}},
        {"mailboxIds": {drafts: False}},
        {"mailboxIds": {"Mnope": True}},
        {"mailboxIds": ["x"]},
        {"mailboxIds": {"#unknown": True}},
    ):
        error = refused(alice, {"subject": "x", **obj})
        assert (error["type"], error["properties"]) == ("invalidProperties", ["mailboxIds"]), (obj, error)
    assert services.mailboxes.get_mailboxes(alice.account_id)[0][0].counts.total_emails == 0


def test_unknown_blob_is_blob_not_found(alice, services):
    drafts = roles(services, alice.account_id)["drafts"]
    png = upload(alice, PNG, "image/png")
    error = refused(
        alice,
        {
            "mailboxIds": {drafts: True},
            "attachments": [{"blobId": "Gmissing1"}, {"blobId": png}, {"blobId": "Gmissing2"}],
        },
    )
    assert error["type"] == "blobNotFound" and error["notFound"] == ["Gmissing1", "Gmissing2"]


def test_another_users_upload_is_not_attachable(alice, bob, services):
    services.accounts.delegate("alice@example.org", "bob@example.org")
    drafts = roles(services, alice.account_id)["drafts"]
    private = upload(alice, PNG, "image/png")  # alice's upload: only alice may read it until something holds it
    bob_in_alice = JmapClient(bob.client, bob.email, alice.account_id)
    error = bob_in_alice.call(
        "Email/set", {"create": {"k": {"mailboxIds": {drafts: True}, "attachments": [{"blobId": private}]}}}
    )["notCreated"]["k"]
    assert error["type"] == "blobNotFound" and error["notFound"] == [private]

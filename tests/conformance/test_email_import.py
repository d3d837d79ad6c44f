"""RFC 8621 §4.7–§4.9 conformance: Email/copy, Email/import and Email/parse, black box through POST /jmap/api,
on SQLite and Postgres (the rest of §4 is in test_email.py)."""

from __future__ import annotations

from tests.conformance.test_email import CREATED, one, raw, state
from tests.support.emails import download, roles, upload

# -- §4.7 Email/copy -------------------------------------------------------------------------------------------------


def test_rfc_copy_example_with_the_implicit_destroy(services, alice, bob):
    """§4.10: copy to another account with onSuccessDestroyOriginal: two responses with one call id."""
    services.accounts.delegate(bob.email, alice.email)
    original = services.mailboxes.deliver(alice.email, raw("From: x@example.com", "Subject: move me"))
    bob_inbox = roles(services, bob.account_id)["inbox"]
    alice_old = state(alice)
    responses = alice.responses(
        [
            [
                "Email/copy",
                {
                    "fromAccountId": alice.account_id,
                    "accountId": bob.account_id,
                    "create": {"k45": {"id": original.message_id, "mailboxIds": {bob_inbox: True}}},
                    "onSuccessDestroyOriginal": True,
                },
                "0",
            ]
        ]
    )
    [(copy_name, copy, copy_id), (set_name, implicit, set_id)] = responses
    assert (copy_name, set_name, copy_id, set_id) == ("Email/copy", "Email/set", "0", "0")
    assert set(copy) == {"fromAccountId", "accountId", "oldState", "newState", "created", "notCreated"}
    assert copy["notCreated"] is None and set(copy["created"]["k45"]) == CREATED
    assert copy["created"]["k45"]["size"] == len(download(bob, copy["created"]["k45"]["blobId"]))
    assert implicit["accountId"] == alice.account_id and implicit["destroyed"] == [original.message_id]
    assert implicit["oldState"] == alice_old and implicit["newState"] == state(alice)
    assert (
        bob.call("Email/get", {"ids": [copy["created"]["k45"]["id"]], "properties": ["subject"]})["list"][0]["subject"]
        == "move me"
    )


def test_copy_errors(services, alice, bob):
    original = services.mailboxes.deliver(alice.email, raw("From: x@example.com", "Subject: s")).message_id
    inbox = roles(services, alice.account_id)["inbox"]
    same = {"fromAccountId": alice.account_id, "create": {"c": {"id": original, "mailboxIds": {inbox: True}}}}
    assert alice.error("Email/copy", same)["type"] == "invalidArguments"  # clarifications Q12
    other = {**same, "fromAccountId": bob.account_id}
    assert alice.error("Email/copy", other)["type"] == "fromAccountNotFound"
    services.accounts.delegate(bob.email, alice.email)
    result = alice.call("Email/copy", {**other, "create": {"c": {"id": "Mnotthere", "mailboxIds": {inbox: True}}}})
    assert result["created"] is None and result["notCreated"]["c"]["type"] == "notFound"
    subject = {**other, "create": {"c": {"id": "Mx", "mailboxIds": {inbox: True}, "subject": "x"}}}
    assert alice.call("Email/copy", subject)["notCreated"]["c"]["type"] == "invalidProperties"
    assert alice.error("Email/copy", {**other, "ifFromInState": "stale"})["type"] == "stateMismatch"


# -- §4.8 Email/import -----------------------------------------------------------------------------------------------


def test_import_response_defaults_and_errors(services, alice):
    inbox = roles(services, alice.account_id)["inbox"]
    message = raw(
        "Received: from b by c; Tue, 2 Jan 2024 10:00:00 +0100",
        "Received: from a by b; Tue, 2 Jan 2024 09:00:00 +0100",
        "From: Jörg <jörg@bücher.example>",
        "Subject: Grüße",
    )
    blob = upload(alice, message, "message/rfc822")
    old = state(alice)
    result = alice.call("Email/import", {"emails": {"i": {"blobId": blob, "mailboxIds": {inbox: True}}}})
    assert set(result) == {"accountId", "oldState", "newState", "created", "notCreated"}
    assert result["oldState"] == old and result["newState"] == state(alice) and result["notCreated"] is None
    created = result["created"]["i"]
    assert set(created) == CREATED and created["blobId"] == blob
    email = one(alice, created["id"], ["receivedAt", "from", "subject", "keywords"])
    assert email["receivedAt"] == "2024-01-02T09:00:00Z"  # the most recent Received header
    assert email["from"] == [{"name": "Jörg", "email": "jörg@bücher.example"}] and email["subject"] == "Grüße"
    assert email["keywords"] == {}
    bad = {
        "blob": ({"blobId": "Gnotthere", "mailboxIds": {inbox: True}}, "blobId"),
        "noMailboxIds": ({"blobId": blob}, "mailboxIds"),
        "emptyMailboxIds": ({"blobId": blob, "mailboxIds": {}}, "mailboxIds"),
        "unknownMailbox": ({"blobId": blob, "mailboxIds": {"Bnotthere": True}}, "mailboxIds"),
        "keywords": ({"blobId": blob, "mailboxIds": {inbox: True}, "keywords": {"$seen": False}}, "keywords"),
    }
    refused = alice.call("Email/import", {"emails": {name: obj for name, (obj, _) in bad.items()}})
    assert refused["created"] is None and refused["newState"] == refused["oldState"] == state(alice)
    for name, (_, prop) in bad.items():
        error = refused["notCreated"][name]
        assert error["type"] == "invalidProperties" and prop in error["properties"], (name, error)
    stale = {"ifInState": "stale", "emails": {"i": {"blobId": blob, "mailboxIds": {inbox: True}}}}
    assert alice.error("Email/import", stale)["type"] == "stateMismatch"
    assert alice.error("Email/import", {})["type"] == "invalidArguments"


# -- §4.9 Email/parse ------------------------------------------------------------------------------------------------


def test_parse_defaults_metadata_and_unparsable(services, alice):
    inner = raw("From: carol@example.com", "Subject: the original", "Date: Thu, 13 Feb 1997 09:00:00 +0100")
    message = raw(
        "From: x@example.com",
        "Subject: fwd",
        "Content-Type: multipart/mixed; boundary=b",
        body="--b\r\n\r\nsee attached\r\n--b\r\nContent-Type: message/rfc822\r\n\r\n"
        + inner.decode()
        + "\r\n--b--\r\n",
    )
    d = services.mailboxes.deliver(alice.email, message)
    attached = one(alice, d.message_id, ["attachments"])["attachments"][0]["blobId"]
    junk = upload(alice, bytes(range(256)), "application/octet-stream")
    result = alice.call("Email/parse", {"blobIds": [attached, junk, "Gnotthere"]})
    assert set(result) == {"accountId", "parsed", "notParsable", "notFound"}
    assert result["notParsable"] == [junk] and result["notFound"] == ["Gnotthere"]
    email = result["parsed"][attached]
    assert list(email) == [
        "messageId", "inReplyTo", "references", "sender", "from", "to", "cc", "bcc", "replyTo", "subject",
        "sentAt", "hasAttachment", "preview", "bodyValues", "textBody", "htmlBody", "attachments",
    ]  # fmt: skip
    assert email["subject"] == "the original" and email["sentAt"] == "1997-02-13T09:00:00+01:00"
    meta = ["id", "mailboxIds", "keywords", "receivedAt", "threadId", "blobId", "size"]
    parsed = alice.call("Email/parse", {"blobIds": [attached], "properties": meta})["parsed"][attached]
    assert parsed == {
        "id": None,
        "mailboxIds": None,
        "keywords": None,
        "receivedAt": None,
        "threadId": None,
        "blobId": attached,
        "size": len(inner),
    }
    nothing = alice.call("Email/parse", {"blobIds": []})
    assert nothing["parsed"] is None and nothing["notParsable"] is None and nothing["notFound"] is None

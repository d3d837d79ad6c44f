"""Read receipts (RFC 9007): MDN/send to local users and through a REAL SMTP relay, every SetError the RFC
names, the implicit Email/set of onSuccessUpdateEmail, MDN/parse of what was sent and of the RFC's sample;
over HTTP and over an RFC 8887 WebSocket; on SQLite and Postgres."""

from __future__ import annotations

import email
import email.policy

import pytest

from jmapmono.jmap.mdn import MDN
from tests.support.jmap import JmapClient
from tests.support.servers import start_app

DISPLAYED = {"actionMode": "manual-action", "sendingMode": "mdn-sent-manually", "type": "displayed"}


@pytest.fixture
def config(config, sink):
    sink.clear()
    return config.with_overrides(smtp_relay=sink.address)


_counter = [0]


def receive(services, to: str, asks: str | None = "bob@example.org", extra: str = "") -> str:
    """Deliver a message to ``to`` asking (or not) for an MDN; the Email's id."""
    _counter[0] += 1
    dnt = f"Disposition-Notification-To: {asks}\r\n" if asks else ""
    raw = (
        f"From: Bob <bob@example.org>\r\nTo: {to}\r\nSubject: Agenda {_counter[0]}\r\n"
        f"Message-ID: <agenda{_counter[0]}@example.org>\r\n{dnt}{extra}\r\nSee you.\r\n"
    ).encode()
    return services.mailboxes.deliver(to, raw).message_id


def identity(client: JmapClient) -> str:
    return client.call("Identity/get", ids=None)["list"][0]["id"]


def send(client: JmapClient, email_id: str, **props) -> dict:
    obj = {"forEmailId": email_id, "disposition": DISPLAYED, **props}
    return client.call("MDN/send", identityId=identity(client), send={"k": obj})


def not_sent(client: JmapClient, email_id: str, **props) -> dict:
    result = send(client, email_id, **props)
    assert result["sent"] is None, result
    return result["notSent"]["k"]


def inbox_raw(services, account_id: str) -> list[bytes]:
    found, _ = services.mailboxes.get_all_messages(account_id, 1000)
    assert found is not None
    messages = sorted(found.values(), key=lambda m: (m.received_at, m.id))
    return [services.blobs.get(account_id, m.blob_id) for m in messages]


def test_the_session_advertises_the_capability(client, alice):
    """RFC 9007 §2.1 (via §1.3's registration): ``urn:ietf:params:jmap:mdn``, an empty object."""
    session = client.get("/.well-known/jmap", headers=alice.headers).get_json()
    assert session["capabilities"][MDN] == {}
    assert session["accounts"][alice.account_id]["accountCapabilities"][MDN] == {}


def test_a_receipt_reaches_a_local_sender_and_marks_the_original(services, alice, bob):
    """RFC 9007 §3.1: the server generates originalMessageId and finalRecipient (from the Identity) and
    returns every property the client did not set; the original gets ``$mdnsent``; onSuccessUpdateEmail
    runs as an implicit Email/set; a second MDN for the same Email is ``mdnAlreadySent``."""
    email_id = receive(services, alice.email)
    before = len(inbox_raw(services, bob.account_id))
    names = alice.request(
        [
            [
                "MDN/send",
                {
                    "accountId": alice.account_id,
                    "identityId": identity(alice),
                    "send": {"k": {"forEmailId": email_id, "disposition": DISPLAYED, "textBody": "Seen it."}},
                    "onSuccessUpdateEmail": {"#k": {"keywords/$seen": True}},
                },
                "c0",
            ]
        ]
    )["methodResponses"]
    assert [n for n, _, _ in names] == ["MDN/send", "Email/set"]
    result, email_set = names[0][1], names[1][1]
    assert result["notSent"] is None
    sent = result["sent"]["k"]
    assert sent["finalRecipient"] == "alice@example.org"
    assert sent["originalMessageId"] == f"<agenda{_counter[0]}@example.org>"
    assert sent["includeOriginalMessage"] is False and sent["mdnGateway"] is None and sent["error"] is None
    assert "textBody" not in sent and "disposition" not in sent  # the client's own are not echoed
    assert email_set["updated"] == {email_id: None}
    keywords = alice.call("Email/get", ids=[email_id], properties=["keywords"])["list"][0]["keywords"]
    assert keywords == {"$mdnsent": True, "$seen": True}

    raws = inbox_raw(services, bob.account_id)
    assert len(raws) == before + 1
    mdn = email.message_from_bytes(raws[-1], policy=email.policy.compat32)
    assert mdn["Return-Path"] == "<>"  # RFC 8098 §3: the null envelope sender
    assert mdn.get_content_type() == "multipart/report"
    assert mdn.get_param("report-type") == "disposition-notification"
    text, notification = mdn.get_payload()[:2]
    assert text.get_payload(decode=True).decode() == "Seen it."
    fields = notification.get_payload()[0]
    assert fields["Final-Recipient"] == "rfc822;alice@example.org"
    assert fields["Disposition"] == "manual-action/MDN-sent-manually; displayed"
    assert fields["Original-Message-ID"] == sent["originalMessageId"]

    again = not_sent(alice, email_id)
    assert again["type"] == "mdnAlreadySent"


def test_a_receipt_to_a_remote_sender_goes_through_the_relay_with_the_null_sender(services, alice, sink):
    email_id = receive(services, alice.email, asks="Carol <carol@remote.example>")
    result = send(alice, email_id, includeOriginalMessage=True, reportingUA="webmail; jmapmono")
    assert result["notSent"] is None, result
    (got,) = sink.wait(1)
    assert got["mail_from"] == "<>" and got["rcpt_tos"] == ["carol@remote.example"]
    mdn = email.message_from_bytes(got["data"], policy=email.policy.compat32)
    assert mdn["To"] == "carol@remote.example"
    parts = mdn.get_payload()
    assert [p.get_content_type() for p in parts] == ["text/plain", "message/disposition-notification", "message/rfc822"]
    assert parts[1].get_payload()[0]["Reporting-UA"] == "webmail; jmapmono"


def test_refusals(config, services, alice, bob):
    """RFC 9007 §3.1: notFound (no such Email, or no Disposition-Notification-To), forbiddenFrom (a
    finalRecipient the identity may not use), invalidProperties (malformed, server-set, injected fields);
    invalidArguments for an unknown identity."""
    assert not_sent(alice, "Mnosuchemail")["type"] == "notFound"
    silent = receive(services, alice.email, asks=None)
    assert not_sent(alice, silent)["type"] == "notFound"
    bobs = receive(services, bob.email)
    assert not_sent(alice, bobs)["type"] == "notFound"  # another account's Email is not found
    email_id = receive(services, alice.email)
    assert not_sent(alice, email_id, finalRecipient="bob@example.org")["type"] == "forbiddenFrom"
    wrong = not_sent(alice, email_id, disposition={**DISPLAYED, "type": "read"})
    assert (wrong["type"], wrong["properties"]) == ("invalidProperties", ["disposition"])
    server_set = not_sent(alice, email_id, originalMessageId="<x@y>")
    assert (server_set["type"], server_set["properties"]) == ("invalidProperties", ["originalMessageId"])
    injected = not_sent(alice, email_id, extensionFields={"X-Note": "hi\r\nBcc: eve@example.org"})
    assert injected["type"] == "invalidProperties"
    reserved = not_sent(alice, email_id, extensionFields={"Disposition": "automatic-action"})
    assert reserved["type"] == "invalidProperties"
    error = alice.error("MDN/send", identityId="Inosuch", send={"k": {"forEmailId": email_id}})
    assert error["type"] == "invalidArguments"
    assert send(alice, email_id)["sent"] is not None  # none of the refusals marked it sent


def test_parse_reads_what_was_sent_and_finds_the_original(services, alice, bob):
    """RFC 9007 §3.2: parsed (with forEmailId when the account holds the original), notParsable, notFound."""
    original_id = receive(services, alice.email)
    original_msgid = f"<agenda{_counter[0]}@example.org>"
    # Bob keeps a copy of what he sent: the MDN he gets back names it.
    kept = services.mailboxes.deliver(
        bob.email, f"From: bob@example.org\r\nMessage-ID: {original_msgid}\r\nSubject: mine\r\n\r\nx\r\n".encode()
    ).message_id
    send(alice, original_id, extensionFields={"X-Spam-Score": "0"})
    newest = bob.call("Email/query", sort=[{"property": "receivedAt", "isAscending": False}], limit=1)["ids"][0]
    blob_id = bob.call("Email/get", ids=[newest], properties=["blobId"])["list"][0]["blobId"]
    plain_blob = bob.call("Email/get", ids=[kept], properties=["blobId"])["list"][0]["blobId"]
    result = bob.call("MDN/parse", blobIds=[blob_id, plain_blob, "Bnosuchblob"])
    assert result["notParsable"] == [plain_blob] and result["notFound"] == ["Bnosuchblob"]
    parsed = result["parsed"][blob_id]
    assert parsed["forEmailId"] == kept
    assert parsed["disposition"] == DISPLAYED
    assert parsed["finalRecipient"] == "alice@example.org"
    assert parsed["originalMessageId"] == original_msgid
    assert parsed["extensionFields"] == {"X-Spam-Score": "0"}
    assert parsed["includeOriginalMessage"] is False
    assert alice.call("MDN/parse", blobIds=[blob_id])["notFound"] == [blob_id]  # bob's blob, not alice's


SAMPLE = (
    "From: Joe Doe <joe@example.com>\r\n"
    "To: Jane Doe <jane@example.com>\r\n"
    "Date: Mon, 17 May 2021 13:14:00 +0200\r\n"
    "Message-Id: <199509192301.23456@example.org>\r\n"
    "Subject: Read: hello\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/report; report-type=disposition-notification;\r\n"
    '  boundary="RAA14128.773615765/example.com"\r\n'
    "\r\n"
    "--RAA14128.773615765/example.com\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "\r\n"
    "This is an MDN\r\n"
    "--RAA14128.773615765/example.com\r\n"
    "Content-Type: message/disposition-notification\r\n"
    "\r\n"
    "Reporting-UA: joes-pc.cs.example.com; Foomail 97.1\r\n"
    "Original-Recipient: rfc822;jane@example.com\r\n"
    "Final-Recipient: rfc822;jane@example.com\r\n"
    "Original-Message-ID: <199509192301.23456@example.org>\r\n"
    "Disposition: manual-action/MDN-sent-manually; displayed\r\n"
    "\r\n"
    "--RAA14128.773615765/example.com--\r\n"
)


def test_parse_the_rfc_sample_from_an_upload(client, alice):
    """RFC 9007 §3.3's example MDN, uploaded as a blob and parsed."""
    up = client.post(
        f"/jmap/upload/{alice.account_id}/", data=SAMPLE.encode(), headers=alice.headers, content_type="message/rfc822"
    )
    assert up.status_code == 201, up.get_data(as_text=True)
    blob_id = up.get_json()["blobId"]
    parsed = alice.call("MDN/parse", blobIds=[blob_id])["parsed"][blob_id]
    assert parsed == {
        "forEmailId": None,
        "subject": "Read: hello",
        "textBody": "This is an MDN",  # the line end before a boundary belongs to the boundary
        "includeOriginalMessage": False,
        "reportingUA": "joes-pc.cs.example.com; Foomail 97.1",
        "disposition": DISPLAYED,
        "mdnGateway": None,
        "originalRecipient": "jane@example.com",
        "finalRecipient": "jane@example.com",
        "originalMessageId": "<199509192301.23456@example.org>",
        "error": None,
        "extensionFields": None,
    }


def test_over_a_websocket(config, db, services, alice):
    """The same methods over RFC 8887: a real server, a real socket."""
    server = start_app(config, db, flow=False)
    try:
        email_id = receive(server.services, alice.email)
        ws = server.client(alice.email)
        try:
            [(name, ids, _)] = ws.call([["Identity/get", {"accountId": alice.account_id}, "i"]], "r0")
            mdn = {"forEmailId": email_id, "disposition": DISPLAYED}
            args = {"accountId": alice.account_id, "identityId": ids["list"][0]["id"], "send": {"k": mdn}}
            [(name, result, _)] = ws.call([["MDN/send", args, "m"]], "r1", using=[*ALL_WS])
            assert name == "MDN/send" and result["sent"]["k"]["finalRecipient"] == alice.email, result
        finally:
            ws.close()
    finally:
        server.stop()


ALL_WS = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail", MDN]

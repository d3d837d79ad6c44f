"""End to end: every message of the corpus delivered over real LMTP, then read back through JMAP.

One ``python -m jmapmono lmtp`` process per backend takes the whole corpus on one connection; then one
Email/get fetches every property of every message (body values included) and the raw message and every
body part are downloaded. Nothing may fail, the stored bytes are the trace headers plus exactly what
was sent, and the stored summary agrees with the header fields parsed from the raw message.
"""

from __future__ import annotations

import re

from jmapmono.jmap.email_headers import CONVENIENCE
from tests.support.corpus import corpus
from tests.support.emails import fetch_blob
from tests.support.jmap import JmapClient
from tests.support.lmtp_client import LMTPClient
from tests.support.servers import start_lmtp

SENDER = "sender@example.net"
TRACE = re.compile(
    rb"Return-Path: <sender@example\.net>\r\n"
    rb"Received: from client\.example \(\[127\.0\.0\.1\]\)\r\n"
    rb"\tby [^\r\n]+ \(jmapmono\) with LMTP;\r\n"
    rb"\t[^\r\n]+\r\n"
)
EVERY_PROPERTY = [
    "id",
    "blobId",
    "threadId",
    "mailboxIds",
    "keywords",
    "size",
    "receivedAt",
    *CONVENIENCE,
    "headers",
    "bodyStructure",
    "textBody",
    "htmlBody",
    "attachments",
    "bodyValues",
    "hasAttachment",
    "preview",
]
HEADER_PROPERTIES = [
    "header:Subject:asText:all",
    "header:From:asGroupedAddresses",
    "header:To:asAddresses:all",
    "header:Date:asDate:all",
    "header:References:asMessageIds",
    "header:List-Post:asURLs",
    "header:Received:all",
    "header:X-Long",
    "header:X-Nul:asText",
    "header:X-Bad-Charset:asText",
]
#: Each convenience property and the header form it is identical to (RFC 8621 §4.1.3).
EQUIVALENT = {prop: f"header:{field}:as{form}" for prop, (field, form) in CONVENIENCE.items()}
BODY_PROPERTIES = [
    "partId",
    "blobId",
    "size",
    "headers",
    "name",
    "type",
    "charset",
    "disposition",
    "cid",
    "language",
    "location",
    "subParts",
    "header:Content-Type:asRaw",
]


def send(client: LMTPClient, raw: bytes) -> tuple[int, str]:
    """One transaction for alice; (reply code after DATA, reply text)."""
    assert client.mail(SENDER, "BODY=8BITMIME").code == 250
    assert client.rcpt("alice@example.org").code == 250
    if not raw:  # an empty message: DATA then the final dot at once
        assert client.command("DATA").code == 354
        client.send(b".\r\n")
        reply = client.read_reply()
        return reply.code, reply.text
    [reply] = client.data(raw, 1)
    return reply.code, reply.text


def leaves(part: dict) -> list[dict]:
    if part["subParts"] is None:
        return [part]
    return [leaf for sub in part["subParts"] for leaf in leaves(sub)]


def test_every_corpus_message_round_trips(services, config, tmp_path, alice: JmapClient):
    server = start_lmtp(config.database_url, tmp_path, JMAPMONO_MAX_MESSAGE_SIZE="5000000")
    sent: dict[str, tuple[str, bytes]] = {}  # email id -> (case name, bytes the sender meant)
    try:
        with server.client() as client:
            for name, raw in corpus():
                wire = raw if not raw or raw.endswith(b"\r\n") else raw + b"\r\n"  # DATA ends on a line end
                code, text = send(client, wire)
                if not raw:
                    assert code == 554, (name, text)  # an empty message is refused, not stored
                    continue
                assert code == 250, (name, text)
                sent[text.rsplit(" ", 1)[1]] = (name, wire)
            client.quit()
    finally:
        server.stop()
    assert len(sent) == len(corpus()) - 1

    result = alice.call(
        "Email/get",
        {
            "ids": list(sent),
            "properties": [*EVERY_PROPERTY, *HEADER_PROPERTIES, *EQUIVALENT.values()],
            "bodyProperties": BODY_PROPERTIES,
            "fetchAllBodyValues": True,
        },
    )
    assert result["notFound"] == []
    assert {e["id"] for e in result["list"]} == set(sent)
    downloads = 0
    for email in result["list"]:
        name, wire = sent[email["id"]]
        raw = fetch_blob(alice, email["blobId"], "message.eml").data
        assert raw.endswith(wire) and TRACE.fullmatch(raw[: len(raw) - len(wire)]), name
        assert email["size"] == len(raw), name
        assert email["header:Received:all"] and email["headers"][0]["name"] == "Return-Path", name
        for prop, header in EQUIVALENT.items():  # the stored summary agrees with the raw message
            assert email[prop] == email[header], (name, prop)
        assert len(email["preview"]) <= 256, name
        for part in leaves(email["bodyStructure"]):
            r = fetch_blob(alice, part["blobId"], "part")
            downloads += 1
            assert r.status_code == 200 and len(r.data) == part["size"], (name, part["partId"])
        text_parts = {p["partId"] for p in leaves(email["bodyStructure"]) if p["type"].startswith("text/")}
        assert set(email["bodyValues"]) == text_parts, name
    assert downloads >= len(sent)

"""RFC 8621 §4.1.4: EmailBodyPart, textBody/htmlBody/attachments, bodyValues, part blobs."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jmapmono.jmap.email_body import (
    DEFAULT_BODY_PROPERTIES,
    EMAIL_BODY_PROPERTIES,
    email_body,
    parse_body_properties,
    part_blob_id,
    resolve_blob_id,
    resolve_part_blob,
    split_part_blob_id,
    truncate_utf8,
)
from jmapmono.jmap.errors import MethodError
from jmapmono.mailbox.mime import parse_message
from jmapmono.mailbox.mime_tree import parse_mime
from tests.support.corpus import corpus, message

BLOB = "G" + "ab" * 32
ALL = sorted(EMAIL_BODY_PROPERTIES)
CORPUS = corpus(randoms=20)


def _body(raw: bytes, properties=ALL, body_properties=None, **kw):
    props = parse_body_properties(body_properties)
    return email_body(parse_mime(raw), BLOB, properties, props, **kw)


def _letters(raw: bytes, parts: list[dict]) -> list[str]:
    """The one-letter content of each part of the RFC example (via its decoded blob)."""
    return [resolve_part_blob(raw, p["partId"])[0][:1].decode() for p in parts]


def test_rfc8621_example_decomposition() -> None:
    raw = message("rfc8621_example")
    body = _body(raw)
    assert _letters(raw, body["textBody"]) == ["A", "B", "C", "D", "K"]
    assert _letters(raw, body["htmlBody"]) == ["A", "<", "K"]  # E is "<p>E</p>"
    assert _letters(raw, body["attachments"]) == ["C", "F", "G", "H", "S"]  # J starts "Subject: J"
    assert [p["partId"] for p in body["textBody"]] == ["1", "2", "3", "4", "10"]
    assert [p["partId"] for p in body["htmlBody"]] == ["1", "5", "10"]
    assert [p["partId"] for p in body["attachments"]] == ["3", "6", "7", "8", "9"]
    assert body["hasAttachment"] is True and body["preview"] == "A"


def test_body_structure_tree() -> None:
    body = _body(message("rfc8621_example"), ["bodyStructure"])
    root = body["bodyStructure"]
    assert set(root) == {*DEFAULT_BODY_PROPERTIES, "subParts"}  # default bodyProperties + subParts
    assert root["partId"] is None and root["blobId"] is None and root["type"] == "multipart/mixed"
    assert root["charset"] is None
    assert [p["type"] for p in root["subParts"]] == ["text/plain", "multipart/mixed", "text/plain"]
    rfc822 = root["subParts"][1]["subParts"][3]
    assert rfc822["type"] == "message/rfc822" and rfc822["subParts"] is None  # not descended into
    assert rfc822["blobId"] == f"{BLOB}_9" and rfc822["partId"] == "9"
    leaf = root["subParts"][0]
    assert leaf == {
        "partId": "1",
        "blobId": f"{BLOB}_1",
        "size": 1,
        "name": None,
        "type": "text/plain",
        "charset": "us-ascii",
        "disposition": "inline",
        "cid": None,
        "language": None,
        "location": None,
        "subParts": None,
    }


def test_alternative_prefers_each_side() -> None:
    body = _body(message("nested_related"))
    assert [p["type"] for p in body["textBody"]] == ["text/plain"]
    assert [p["type"] for p in body["htmlBody"]] == ["text/html"]
    assert [(p["type"], p["cid"]) for p in body["attachments"]] == [("image/png", "logo@x")]
    assert body["hasAttachment"] is False  # an embedded related image
    lone_html = _body(message("html_only"))
    assert [p["type"] for p in lone_html["textBody"]] == ["text/html"]  # no plain alternative
    assert lone_html["textBody"] == lone_html["htmlBody"]


def test_rfc822_attachment_is_one_part() -> None:
    raw = message("rfc822_attachment")
    body = _body(raw)
    assert [p["type"] for p in body["textBody"]] == ["text/plain"]
    assert [p["type"] for p in body["htmlBody"]] == ["text/plain"]
    [attached] = body["attachments"]
    assert attached["type"] == "message/rfc822" and attached["disposition"] == "attachment"
    content, ctype, _ = resolve_part_blob(raw, attached["partId"])
    assert ctype == "message/rfc822"
    assert content.startswith(b"From: carol@example.com\r\nSubject: the original\r\n")
    assert content in raw  # the exact bytes: an Email/parse of this blob sees the original message
    assert attached["size"] == len(content)
    inner = parse_message(content)
    assert inner.subject == "the original" and inner.preview == "inner text"


def test_digest_parts_default_to_message_rfc822() -> None:
    body = _body(message("digest"), ["bodyStructure", "attachments"])
    assert [p["type"] for p in body["bodyStructure"]["subParts"]] == ["message/rfc822"] * 2
    assert len(body["attachments"]) == 2


def test_attachment_names_and_part_attributes() -> None:
    body = _body(message("attachment_names"), ["attachments"])
    names = [p["name"] for p in body["attachments"]]
    assert names == ["\u20ac rates.pdf", "r\u00e9sum\u00e9.doc", "long name.zip", "notes.txt"]
    notes = body["attachments"][3]
    assert notes["charset"] == "utf-8" and notes["language"] == ["en", "de"]
    assert notes["location"] == "http://example.com/notes.txt"
    assert [p["charset"] for p in body["attachments"][:3]] == [None, None, None]  # not text/*


def test_body_properties_selection_and_headers() -> None:
    body = _body(
        message("nested_related"),
        ["attachments", "textBody"],
        ["partId", "headers", "header:Content-ID", "header:Content-Type:asText"],
    )
    [image] = body["attachments"]
    assert set(image) == {"partId", "headers", "header:Content-ID", "header:Content-Type:asText"}
    assert image["header:Content-ID"] == " <logo@x>"
    assert image["header:Content-Type:asText"] == "image/png"
    assert image["headers"][0] == {"name": "Content-Type", "value": " image/png"}
    assert set(body) == {"attachments", "textBody"}  # only what was asked
    explicit = _body(message("rfc8621_example"), ["bodyStructure"], ["partId", "type"])
    assert set(explicit["bodyStructure"]) == {"partId", "type"}  # an explicit list is followed exactly


@pytest.mark.parametrize(
    "props",
    [["partId", "nope"], ["header:From:asDate"], ["header:"], "partId", [1]],
)
def test_invalid_body_properties(props) -> None:
    with pytest.raises(MethodError) as caught:
        parse_body_properties(props)
    assert caught.value.type == "invalidArguments"


def test_body_values_selection() -> None:
    raw = message("rfc8621_example")
    text = _body(raw, ["bodyValues"], fetch_text_body_values=True)["bodyValues"]
    assert sorted(text, key=int) == ["1", "2", "4", "10"]  # text/* parts of textBody (C is an image)
    html = _body(raw, ["bodyValues"], fetch_html_body_values=True)["bodyValues"]
    assert sorted(html, key=int) == ["1", "5", "10"]
    assert html["5"] == {"value": "<p>E</p>", "isEncodingProblem": False, "isTruncated": False}
    both = _body(raw, ["bodyValues"], fetch_text_body_values=True, fetch_html_body_values=True)["bodyValues"]
    assert sorted(both, key=int) == ["1", "2", "4", "5", "10"]
    everything = _body(raw, ["bodyValues"], fetch_all_body_values=True)["bodyValues"]
    assert sorted(everything, key=int) == ["1", "2", "4", "5", "10"]  # message/rfc822 is not text/*
    assert _body(raw, ["bodyValues"])["bodyValues"] == {}


def test_body_values_decoding_and_problems() -> None:
    values = _body(message("bad_charsets"), ["bodyValues"], fetch_all_body_values=True)["bodyValues"]
    assert values["1"] == {"value": "unknown charset caf\u00e9\n", "isEncodingProblem": True, "isTruncated": False}
    assert values["2"]["value"] == "broken utf-8 \ufffd\ufffd here\n" and values["2"]["isEncodingProblem"]
    assert values["3"] == {"value": "latin caf\u00e9 \u20acuro\n", "isEncodingProblem": False, "isTruncated": False}
    assert values["4"]["value"] == "sixteen" and not values["4"]["isEncodingProblem"]
    encoded = _body(message("transfer_encodings"), ["bodyValues"], fetch_all_body_values=True)["bodyValues"]
    assert encoded["1"]["value"].startswith("Gr\u00fc\u00dfe, \u65e5\u672c\u8a9e")
    assert encoded["2"]["value"].startswith("<p>Gr\u00fc\u00dfe") and "\r" not in encoded["2"]["value"]
    assert not encoded["1"]["isEncodingProblem"] and not encoded["2"]["isEncodingProblem"]
    broken = _body(message("bad_base64"), ["bodyValues"], fetch_all_body_values=True)["bodyValues"]
    assert broken["3"]["isEncodingProblem"]  # unknown transfer encoding: content kept as is
    bad_b64 = b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8*!d29ybGQ"
    value = _body(bad_b64, ["bodyValues"], fetch_all_body_values=True)["bodyValues"]["1"]
    assert value["isEncodingProblem"] and value["value"].startswith("hello")


def test_body_value_truncation() -> None:
    raw = "Content-Type: text/plain; charset=utf-8\r\n\r\nab\u00e9\u20ac\U0001f600\r\nz".encode()
    full = _body(raw, ["bodyValues"], fetch_all_body_values=True)["bodyValues"]["1"]
    assert full == {"value": "ab\u00e9\u20ac\U0001f600\nz", "isEncodingProblem": False, "isTruncated": False}
    cuts = {
        1: "a",
        3: "ab",
        4: "ab\u00e9",
        6: "ab\u00e9",
        7: "ab\u00e9\u20ac",
        10: "ab\u00e9\u20ac",
        11: "ab\u00e9\u20ac\U0001f600",
    }
    for limit, expected in cuts.items():
        value = _body(raw, ["bodyValues"], fetch_all_body_values=True, max_body_value_bytes=limit)["bodyValues"]["1"]
        assert value == {"value": expected, "isEncodingProblem": False, "isTruncated": True}, limit
        assert len(value["value"].encode()) <= limit
    exact = _body(raw, ["bodyValues"], fetch_all_body_values=True, max_body_value_bytes=13)["bodyValues"]["1"]
    assert exact["isTruncated"] is False
    html = b'Content-Type: text/html\r\n\r\n<p>Hello <a href="https://example.com">x</a></p>'
    cut = _body(html, ["bodyValues"], fetch_all_body_values=True, max_body_value_bytes=20)["bodyValues"]["1"]
    assert cut == {"value": "<p>Hello ", "isEncodingProblem": False, "isTruncated": True}  # not inside the tag
    assert truncate_utf8("x" * 10, 10) == ("x" * 10, False)


def test_part_blob_ids() -> None:
    assert part_blob_id(BLOB, "7") == f"{BLOB}_7"
    assert split_part_blob_id(f"{BLOB}_7") == (BLOB, "7")
    assert split_part_blob_id(f"{BLOB}_9_2") == (f"{BLOB}_9", "2")
    for bad in (BLOB, f"{BLOB}_", "_7", f"{BLOB}_x", f"{BLOB}_\u0663"):
        assert split_part_blob_id(bad) is None


def test_resolve_part_blob_returns_decoded_content() -> None:
    raw = message("nested_related")
    content, ctype, name = resolve_part_blob(raw, "3")
    assert (content, ctype, name) == (b"\x89PNG\r\n\x1a\nfake", "image/png", None)
    content, ctype, _ = resolve_part_blob(raw, "1")
    assert content == "Plain caf\u00e9".encode() and ctype == "text/plain"
    assert resolve_part_blob(raw, "4") is None and resolve_part_blob(raw, "0") is None
    names = message("attachment_names")
    assert resolve_part_blob(names, "2") == (b"pdf", "application/pdf", "\u20ac rates.pdf")
    sizes = _body(raw, ["attachments"])["attachments"]
    assert sizes[0]["size"] == len(b"\x89PNG\r\n\x1a\nfake")


def test_resolve_nested_blob_ids() -> None:
    inner = b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(b"deep")
    outer = b"Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\n\r\nhi\r\n--o\r\n"
    outer += b"Content-Type: message/rfc822\r\n\r\n" + inner + b"\r\n--o--\r\n"
    stored = {BLOB: outer}
    assert resolve_blob_id(f"{BLOB}_2", stored.get)[0] == inner
    assert resolve_blob_id(f"{BLOB}_2_1", stored.get) == (b"deep", "text/plain", None)
    assert resolve_blob_id(f"{BLOB}_2_7", stored.get) is None
    assert resolve_blob_id("Gunknown_1", stored.get) is None
    assert resolve_blob_id(BLOB, stored.get) is None


@pytest.mark.parametrize("name,raw", CORPUS, ids=[name for name, _ in CORPUS])
def test_every_corpus_message_renders(name: str, raw: bytes) -> None:
    body = _body(raw, ALL, ["partId", "blobId", "size", "type", "headers", "subParts"], fetch_all_body_values=True)
    json.dumps(body).encode("utf-8")
    parsed = parse_message(raw)
    assert body["hasAttachment"] == parsed.has_attachment  # same rules as storage
    assert body["preview"] == parsed.preview
    msg = parse_mime(raw)
    for part in [*body["textBody"], *body["htmlBody"], *body["attachments"]]:
        assert part["partId"] is not None and "subParts" in part and part["subParts"] is None
        content, ctype, _ = resolve_part_blob(raw, part["partId"])
        assert len(content) == part["size"] and ctype == part["type"]
    for part_id in body["bodyValues"]:
        assert msg.leaves[part_id].type.startswith("text/")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000), st.integers(0, 50))
def test_fuzz_random_bytes_never_raise(raw: bytes, limit: int) -> None:
    body = _body(raw, ALL, fetch_all_body_values=True, max_body_value_bytes=limit)
    json.dumps(body).encode("utf-8")
    for value in body["bodyValues"].values():
        assert limit == 0 or len(value["value"].encode()) <= limit

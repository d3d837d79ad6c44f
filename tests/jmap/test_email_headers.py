"""RFC 8621 §4.1.2–4.1.3: header properties, parsed forms, allowed forms, convenience properties."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jmapmono.jmap.email_headers import (
    CONVENIENCE,
    FORMS,
    HeaderProperty,
    InvalidHeaderProperty,
    convenience_value,
    form_allowed,
    header_value,
    headers_list,
    parse_header_property,
)
from jmapmono.jmap.errors import MethodError
from jmapmono.mailbox.mime_tree import parse_mime
from tests.support.corpus import corpus, message

RFC_ADDRESS_LIST = (
    b'"  James Smythe" <james@example.com>, Friends:\r\n  jane@example.com, =?UTF-8?Q?John_Sm=C3=AEth?=\r\n'
    b"  <john@example.com>;"
)


def _message(*fields: bytes, body: bytes = b"body\r\n") -> bytes:
    return b"\r\n".join(fields) + b"\r\n\r\n" + body


@pytest.mark.parametrize(
    "name,field,form,all_",
    [
        ("header:Subject", "Subject", "Raw", False),
        ("header:subject:asText", "subject", "Text", False),
        ("header:From:asAddresses:all", "From", "Addresses", True),
        ("header:Resent-To:asGroupedAddresses", "Resent-To", "GroupedAddresses", False),
        ("header:References:asMessageIds", "References", "MessageIds", False),
        ("header:Resent-Date:asDate:all", "Resent-Date", "Date", True),
        ("header:List-Post:asURLs", "List-Post", "URLs", False),
        ("header:List-Id:asText", "List-Id", "Text", False),
        ("header:X-Anything:asDate", "X-Anything", "Date", False),
        ("header:X-Anything:asAddresses", "X-Anything", "Addresses", False),
        ("header:Received:all", "Received", "Raw", True),
        ("header:From:asRaw", "From", "Raw", False),
    ],
)
def test_valid_header_properties(name: str, field: str, form: str, all_: bool) -> None:
    assert parse_header_property(name) == HeaderProperty(key=name, field=field, form=form, all=all_)


@pytest.mark.parametrize(
    "name",
    [
        "header:From:asDate",  # the RFC's own example of a forbidden form
        "header:Subject:asAddresses",
        "header:To:asText",
        "header:Date:asMessageIds",
        "header:Message-ID:asDate",
        "header:Return-Path:asText",
        "header:Received:asDate",
        "header:List-Post:asAddresses",
        "header:Subject:asURLs",
        "header:Comments:asDate",
        "header:In-Reply-To:asText",
    ],
)
def test_forbidden_forms_are_invalid_arguments(name: str) -> None:
    with pytest.raises(InvalidHeaderProperty) as caught:
        parse_header_property(name)
    assert isinstance(caught.value, MethodError)
    assert caught.value.to_json()["type"] == "invalidArguments"


@pytest.mark.parametrize(
    "name",
    [
        "header:",
        "header:Fr om",
        "header:From:all:asAddresses",  # suffixes in the wrong order
        "header:From:asaddresses",  # forms are case-sensitive
        "header:From:asFoo",
        "header:From:all:all",
        "headers:From",
        "Header:From",
        "header:Fröm",
        "header:From:",
    ],
)
def test_malformed_header_properties(name: str) -> None:
    with pytest.raises(InvalidHeaderProperty):
        parse_header_property(name)


def test_form_table() -> None:
    assert form_allowed("X-Custom", "URLs") and form_allowed("x-custom", "Date")
    assert form_allowed("List-Unsubscribe", "URLs") and not form_allowed("List-Unsubscribe", "Text")
    assert form_allowed("Keywords", "Text") and form_allowed("Comments", "Text")
    assert all(form_allowed("Received", "Raw") for _ in FORMS)
    assert not any(form_allowed("Received", f) for f in FORMS if f != "Raw")


def test_raw_form_keeps_leading_space_and_folding() -> None:
    raw = _message(b"Subject:  two spaces\r\n\tand a fold", b"X-Empty:", b"X-Tight:x")
    msg = parse_mime(raw)
    assert header_value(msg, "header:Subject") == "  two spaces\r\n\tand a fold"
    assert header_value(msg, "header:Subject:asText") == "two spaces\tand a fold"
    assert header_value(msg, "header:X-Empty") == ""
    assert header_value(msg, "header:X-Tight") == "x"


def test_raw_form_replaces_bad_utf8_and_drops_nul() -> None:
    msg = parse_mime(_message(b"X-Latin: caf\xe9", b"X-Nul: a\x00b", "X-Utf8: caf\u00e9".encode()))
    assert header_value(msg, "header:X-Latin") == " caf\ufffd"
    assert header_value(msg, "header:X-Nul") == " ab"
    assert header_value(msg, "header:X-Utf8") == " caf\u00e9"
    assert header_value(msg, "header:X-Latin:asText") == "caf\u00e9"  # Text form: legacy 8-bit recovered


def test_last_instance_and_all() -> None:
    raw = _message(b"X-Multi: one", b"x-multi: two", b"Subject: s", b"X-MULTI: three")
    msg = parse_mime(raw)
    assert header_value(msg, "header:X-Multi") == " three"
    assert header_value(msg, "header:x-multi:all") == [" one", " two", " three"]
    assert header_value(msg, "header:X-Multi:asText:all") == ["one", "two", "three"]
    assert header_value(msg, "header:X-Missing") is None
    assert header_value(msg, "header:X-Missing:all") == []
    assert header_value(msg, "header:X-Missing:asAddresses") is None


def test_text_form_encoded_words() -> None:
    msg = parse_mime(message("encoded_words"))
    assert header_value(msg, "header:Subject:asText") == (
        "\U0001f600 smile caf\u00e9 na\u00efve plain not=?utf-8?q?decoded?="
    )
    assert header_value(msg, "header:X-Bad-Charset:asText") == "Caf\u00e9 end"
    assert header_value(msg, "header:X-Split-Char:asText") == "\u2713\U0001f600"  # split across words
    cases = {
        b"=?utf-8?q?a=00b=0Ac?=": "abc",  # encoded NUL and controls dropped
        b"=?utf-8?q?a?=  =?utf-8?q?b?=": "ab",  # whitespace between encoded words dropped
        b"=?utf-8?q?a?= x =?utf-8?q?b?=": "a x b",
        b"(=?utf-8?q?a?=)": "(=?utf-8?q?a?=)",  # touching other characters: not decoded
        b"=?utf-8?b?!!!?=": "\ufffd",  # undecodable base64: replacement, no exception
        b"=?utf-8*en?q?lang?=": "lang",  # RFC 2231 language suffix
        "e\u0301".encode() + b" =?utf-8?q?e=CC=81?=": "\u00e9 \u00e9",  # NFC
    }
    for value, expected in cases.items():
        assert header_value(parse_mime(_message(b"X-T: " + value)), "header:X-T:asText") == expected


def test_rfc_address_examples() -> None:
    msg = parse_mime(_message(b"To: " + RFC_ADDRESS_LIST, b"X-List: " + RFC_ADDRESS_LIST))
    flat = [
        {"name": "James Smythe", "email": "james@example.com"},
        {"name": None, "email": "jane@example.com"},
        {"name": "John Sm\u00eeth", "email": "john@example.com"},
    ]
    grouped = [
        {"name": None, "addresses": [flat[0]]},
        {"name": "Friends", "addresses": flat[1:]},
    ]
    assert header_value(msg, "header:To:asAddresses") == flat
    assert header_value(msg, "header:To:asGroupedAddresses") == grouped
    assert header_value(msg, "header:X-List:asAddresses:all") == [flat]
    assert convenience_value(msg, "to") == flat


@pytest.mark.parametrize(
    "value,expected",
    [
        (b"bob@example.com (Bob Smith)", [{"name": "Bob Smith", "email": "bob@example.com"}]),
        (b"<bob@example.com> (Bob)", [{"name": "Bob", "email": "bob@example.com"}]),
        (b"Bob <bob@example.com> (comment)", [{"name": "Bob", "email": "bob@example.com"}]),
        (b'"Smith, Bob" <bob@example.com>', [{"name": "Smith, Bob", "email": "bob@example.com"}]),
        (b'"=?utf-8?q?J=C3=B6rg?=" <j@example.com>', [{"name": "J\u00f6rg", "email": "j@example.com"}]),
        (b"<@a.example,@b.example:bob@example.com>", [{"name": None, "email": "bob@example.com"}]),
        (b"bob", [{"name": None, "email": "bob"}]),
        (b"John Smith john@example.com", [{"name": "John Smith", "email": "john@example.com"}]),
        (b"john . smith @ example.com", [{"name": None, "email": "john.smith@example.com"}]),
        (
            b"a@example.com,, b@example.com",
            [{"name": None, "email": "a@example.com"}, {"name": None, "email": "b@example.com"}],
        ),
        (b"Undisclosed recipients:;", []),
        (b"", []),
        (b"Bob <bob@example.com", [{"name": "Bob", "email": "bob@example.com"}]),
        (b'"unterminated <x@example.com>', [{"name": None, "email": '"unterminated <x@example.com>"'}]),
        (b"Andr\xe9 <a@example.fr>", [{"name": "Andr\u00e9", "email": "a@example.fr"}]),
    ],
)
def test_addresses_best_effort(value: bytes, expected: list[dict]) -> None:
    assert header_value(parse_mime(_message(b"From: " + value)), "header:From:asAddresses") == expected


def test_message_ids_dates_urls() -> None:
    msg = parse_mime(
        _message(
            b"Message-ID: <a@example.com>",
            b"References: <r1@example.com>\r\n <r2@\r\n example.com> (comment <no@example.com>)",
            b"In-Reply-To: Your message of yesterday",
            b"Resent-Message-ID: bare@example.com",
            b"Date: Thu, 13 Feb 1969 23:32:54 -0330",
            b"Resent-Date: not a date",
            b"X-Date: 1 Jan 2024 00:00:00 GMT",
            b"List-Help: <mailto:help@example.com> (Help),\r\n <https://example.com/help>",
            b"List-Post: NO (posting not allowed)",
        )
    )
    assert convenience_value(msg, "messageId") == ["a@example.com"]
    assert convenience_value(msg, "references") == ["r1@example.com", "r2@example.com"]
    assert convenience_value(msg, "inReplyTo") is None  # parsing fails → null
    assert header_value(msg, "header:Resent-Message-ID:asMessageIds") == ["bare@example.com"]
    assert convenience_value(msg, "sentAt") == "1969-02-13T23:32:54-03:30"
    assert header_value(msg, "header:Resent-Date:asDate") is None
    assert header_value(msg, "header:X-Date:asDate") == "2024-01-01T00:00:00Z"
    assert header_value(msg, "header:List-Help:asURLs") == ["mailto:help@example.com", "https://example.com/help"]
    assert header_value(msg, "header:List-Post:asURLs") is None


def test_convenience_properties_absent_and_present() -> None:
    msg = parse_mime(message("missing_headers"))
    values = {name: convenience_value(msg, name) for name in CONVENIENCE}
    assert values["subject"] == "no date, no id, no from"
    assert values["to"] == [{"name": None, "email": "bob@example.org"}]
    for name in ("messageId", "inReplyTo", "references", "sender", "from", "cc", "bcc", "replyTo", "sentAt"):
        assert values[name] is None, name


def test_headers_list_in_order_with_capitalisation() -> None:
    msg = parse_mime(_message(b"X-B: 2", b"x-a: 1", b"Subject: s", b"X-B:  3\r\n\tfolded"))
    assert headers_list(msg) == [
        {"name": "X-B", "value": " 2"},
        {"name": "x-a", "value": " 1"},
        {"name": "Subject", "value": " s"},
        {"name": "X-B", "value": "  3\r\n\tfolded"},
    ]
    assert headers_list(b"") == []


def test_huge_address_list_is_parsed_whole() -> None:
    """5,000 recipients (~200 KB), comments and all (how fast, against the stdlib's parser: bench/parse_speed.py)."""
    value = ", ".join(f'"User {i}" <user{i}@example.com> (c{i})' for i in range(5000)).encode()
    msg = parse_mime(_message(b"To: " + value))
    result = header_value(msg, "header:To:asAddresses")
    assert len(result) == 5000 and result[-1] == {"name": "User 4999", "email": "user4999@example.com"}
    assert result[0] == {"name": "User 0", "email": "user0@example.com"}


@pytest.mark.parametrize("name,raw", corpus(randoms=10), ids=[n for n, _ in corpus(randoms=10)])
def test_every_form_on_every_corpus_header(name: str, raw: bytes) -> None:
    msg = parse_mime(raw)
    for field, _ in msg.headers[:50]:
        for form in FORMS:
            prop = HeaderProperty(key=f"header:{field}:as{form}:all", field=field, form=form, all=True)
            json.dumps(header_value(msg, prop))
    json.dumps({name: convenience_value(msg, name) for name in CONVENIENCE})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400), st.sampled_from(sorted(FORMS)))
def test_fuzz_forms_never_raise(value: bytes, form: str) -> None:
    msg = parse_mime(b"X-Fuzz:" + value.replace(b"\n", b"\n ") + b"\r\n\r\n")
    result = header_value(msg, HeaderProperty(key="k", field="X-Fuzz", form=form, all=False))
    json.dumps(result).encode("utf-8")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.sampled_from(list('ab @<>,:;"()\\=?.qQbB_-\u00e9')), max_size=80))
def test_fuzz_address_syntax_never_raises(text: str) -> None:
    msg = parse_mime(b"To: " + text.encode() + b"\r\n\r\n")
    for group in header_value(msg, "header:To:asGroupedAddresses"):
        for address in group["addresses"]:
            assert isinstance(address["email"], str)
            assert address["name"] is None or address["name"]

"""Writing messages (jmapmono.mailbox.compose): every value written must read back the same through our parser."""

from __future__ import annotations

from datetime import datetime

import pytest

from jmapmono.jmap.email_body import email_body
from jmapmono.jmap.email_headers import header_value
from jmapmono.mailbox import compose
from jmapmono.mailbox.compose import ComposeError, Part
from jmapmono.mailbox.mime_tree import parse_mime, part_content


def read_back(name: str, value: str, prop: str):
    """Write one header field in a message, parse the message, return ``prop`` of it."""
    raw = compose.build_message([(name, value)], Part("text/plain", text="x"))
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    return header_value(parse_mime(raw), prop), raw


@pytest.mark.parametrize(
    "text",
    [
        "Short subject",
        "A plain ASCII subject long enough that it has to be folded over several lines " * 3,
        "Ünïcödé subject that is long enough to be split into several encoded words, surely " * 2,
        "Looks like =?utf-8?q?an_encoded_word?= but is literal text",
        "x" * 1500,
        "日本語の件名",
        "",
    ],
)
def test_text_form_round_trip(text):
    value, raw = read_back("Subject", compose.text_value("Subject", text), "header:Subject:asText")
    assert value == text.lstrip(" ")  # Text form removes leading SP only
    head = raw.split(b"\r\n\r\n")[0].split(b"\r\n")
    assert all(len(line) <= 78 for line in head if line.startswith((b"Subject", b" ")))


def test_text_form_turns_line_breaks_into_spaces():
    value, _ = read_back("Subject", compose.text_value("Subject", "one\r\ntwo\nthree"), "header:Subject:asText")
    assert value == "one two three"


NAMES = [
    None,
    "Joe",
    "Joe Q. Public",
    'A "quoted" name',
    "back\\slash",
    "Zoë Ünïcode with a name long enough to need two encoded words in the phrase",
    "=?utf-8?q?lookalike?=",
    "Smith, John",
    "(not a comment)",
]


def test_addresses_round_trip():
    items = [{"name": n, "email": f"user{i}@example.org"} for i, n in enumerate(NAMES)]
    items += [{"name": f"Person {i}", "email": f"p{i}@example.com"} for i in range(30)]
    value, raw = read_back("To", compose.addresses_value("To", items), "header:To:asAddresses")
    assert value == items
    assert all(len(line) <= 78 for line in raw.split(b"\r\n\r\n")[0].split(b"\r\n"))


def test_grouped_addresses_round_trip():
    groups = [
        {"name": None, "addresses": [{"name": "Ann", "email": "ann@example.org"}]},
        {"name": "Team: Ünïcode", "addresses": [{"name": None, "email": "a@x"}, {"name": "B", "email": "b@x"}]},
        {"name": "Nobody", "addresses": []},
        {"name": None, "addresses": [{"name": None, "email": "last@x"}]},
    ]
    value, _ = read_back("Cc", compose.grouped_addresses_value("Cc", groups), "header:Cc:asGroupedAddresses")
    assert value == groups


def test_message_ids_and_urls():
    ids = [f"id{i}.{'x' * 20}@example.org" for i in range(8)]
    value, _ = read_back("References", compose.message_ids_value("References", ids), "header:References:asMessageIds")
    assert value == ids
    urls = ["mailto:list@example.org?subject=help", "https://example.org/a,b"]
    value, _ = read_back("List-Help", compose.urls_value("List-Help", urls), "header:List-Help:asURLs")
    assert value == urls
    for bad in (["two words@x"], ["<x@y>"], [""]):
        with pytest.raises(ComposeError):
            compose.message_ids_value("Message-ID", bad)
    with pytest.raises(ComposeError):
        compose.urls_value("List-Post", ["has space"])


def test_date_keeps_its_offset():
    when = datetime.fromisoformat("2018-07-10T11:03:11.250+10:00")
    assert compose.date_value(when) == " Tue, 10 Jul 2018 11:03:11 +1000"
    value, _ = read_back("Date", compose.date_value(when), "header:Date:asDate")
    assert value == "2018-07-10T11:03:11+10:00"


def test_raw_values():
    assert compose.raw_value("value") == " value"
    assert compose.raw_value("\tvalue") == "\tvalue"
    assert compose.raw_value(" a\n b") == " a\r\n b"
    assert compose.raw_value("") == ""
    value, _ = read_back("X-Raw", compose.raw_value(" a\n\tb"), "header:X-Raw")
    assert value == " a\r\n\tb"
    for bad in ("a\nInjected: 1", "a\r\n", "a\x00b", "x" * 1000):
        with pytest.raises(ComposeError):
            compose.raw_value(bad)


def test_new_message_ids_are_unique():
    ids = {compose.new_message_id("example.org") for _ in range(100)}
    assert len(ids) == 100 and all(i.endswith("@example.org") and "<" not in i for i in ids)


# --- bodies --------------------------------------------------------------------------------------------------------


def leaf(raw: bytes, part_id: str = "1"):
    message = parse_mime(raw)
    part = message.leaves[part_id]
    return part, part_content(message, part)[0]


@pytest.mark.parametrize(
    "part,cte,content",
    [
        (Part("text/plain", text="plain ascii\nsecond line"), "7bit", b"plain ascii\r\nsecond line"),
        (Part("text/plain", text="caf\u00e9 \u2615\n"), "quoted-printable", "caf\u00e9 \u2615\r\n".encode()),
        (Part("text/plain", text="y" * 2000), "quoted-printable", b"y" * 2000),
        (Part("text/plain", text="trailing space \nx"), "7bit", b"trailing space \r\nx"),
        (Part("image/png", data=bytes(range(256))), "base64", bytes(range(256))),
        (Part("text/plain", data=b"lf only\nlines\n"), "base64", b"lf only\nlines\n"),
        (Part("text/plain", data=b"crlf ascii\r\n"), "7bit", b"crlf ascii\r\n"),
        (Part("text/csv", data=b"a,b\r\n" + b"z" * 1200), "base64", b"a,b\r\n" + b"z" * 1200),
        (Part("message/rfc822", data=b"Subject: hi\n\nbody\n"), "7bit", b"Subject: hi\n\nbody\n"),
        (
            Part("message/rfc822", data="Subject: \u00e9\r\n\r\nb\r\n".encode()),
            "8bit",
            "Subject: \u00e9\r\n\r\nb\r\n".encode(),
        ),
    ],
)
def test_leaf_encodings_are_exact(part, cte, content):
    raw = compose.build_message(
        [("Subject", " t")], Part("multipart/mixed", subparts=[part, Part("text/plain", text="end")])
    )
    parsed, decoded = leaf(raw)
    assert parsed.cte == cte and decoded == content
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    if part.text is not None:
        assert parsed.charset == "utf-8"


def test_part_attributes_round_trip():
    parts = [
        Part("text/plain", text="body"),
        Part("application/pdf", data=b"%PDF", name="r\u00e9sum\u00e9 (final).pdf", disposition="attachment"),
        Part("image/gif", data=b"GIF89a", name="plain name.gif"),
        Part(
            "image/png",
            data=b"png",
            cid="logo@example.org",
            disposition="inline",
            location="https://x/l.png",
            language=["en", "de-CH"],
            fields=[("X-Part", " yes")],
        ),
    ]
    raw = compose.build_message([], Part("multipart/mixed", subparts=parts))
    structure = email_body(parse_mime(raw), "G", ["bodyStructure"])["bodyStructure"]
    sub = structure["subParts"]
    assert [(p["type"], p["name"], p["disposition"]) for p in sub] == [
        ("text/plain", None, None),
        ("application/pdf", "r\u00e9sum\u00e9 (final).pdf", "attachment"),
        ("image/gif", "plain name.gif", None),
        ("image/png", None, "inline"),
    ]
    assert (sub[3]["cid"], sub[3]["location"], sub[3]["language"]) == (
        "logo@example.org",
        "https://x/l.png",
        ["en", "de-CH"],
    )
    assert header_value(parse_mime(raw).leaves["4"], "header:X-Part") == " yes"


def test_boundaries_never_occur_in_the_content(monkeypatch):
    tokens = iter(["aaaa", "aaaa", "bbbb"])
    monkeypatch.setattr(compose.secrets, "token_hex", lambda n: next(tokens))
    text = Part("text/plain", data=b"a line with --=_aaaa inside\r\n")
    raw = compose.build_message([], Part("multipart/mixed", subparts=[text, Part("text/plain", text="2")]))
    assert b'boundary="=_bbbb"' in raw
    assert leaf(raw)[1] == b"a line with --=_aaaa inside\r\n" and leaf(raw, "2")[1] == b"2"


def test_mime_version_once():
    raw = compose.build_message([("Subject", " a")], Part("text/plain", text=""))
    assert raw.count(b"MIME-Version: 1.0\r\n") == 1
    given = compose.build_message([("Mime-Version", " 1.0 (given)")], Part("text/plain", text=""))
    assert b"MIME-Version" not in given and b"Mime-Version: 1.0 (given)" in given

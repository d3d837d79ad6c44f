"""parse_message: every corpus message, specific real-world breakage, base subjects, bounds, fuzzing."""

from __future__ import annotations

import base64
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jmapmono.mailbox.mime import PREVIEW_LENGTH, SEARCH_TEXT_LIMIT, ParsedMessage, base_subject, parse_message
from jmapmono.mailbox.mime_tree import body_lists, parse_mime
from tests.support.corpus import corpus, message

CORPUS = corpus()


def _strings(parsed: ParsedMessage) -> list[str]:
    out = [*parsed.message_ids, *parsed.in_reply_to, *parsed.references, parsed.preview, parsed.search_text]
    out += [parsed.subject or "", parsed.base_subject]
    for group in (parsed.from_, parsed.sender, parsed.to, parsed.cc, parsed.bcc, parsed.reply_to):
        for address in group:
            out += [address["email"], address["name"] or ""]
    return out


def _storable(parsed: ParsedMessage) -> None:
    """Everything must go into a Postgres TEXT column: no NUL, no lone surrogate."""
    for text in _strings(parsed):
        assert "\x00" not in text
        text.encode("utf-8")


@pytest.mark.parametrize("name,raw", CORPUS, ids=[name for name, _ in CORPUS])
def test_every_corpus_message_parses(name: str, raw: bytes) -> None:
    parsed = parse_message(raw)
    assert parsed.size == len(raw)
    assert len(parsed.preview) <= PREVIEW_LENGTH
    assert len(parsed.search_text) <= SEARCH_TEXT_LIMIT
    assert parsed.preview == " ".join(parsed.preview.split())
    _storable(parsed)
    for group in (parsed.from_, parsed.to, parsed.cc):
        assert all(set(address) == {"name", "email"} for address in group)


def test_corpus_is_deterministic() -> None:
    assert corpus() == CORPUS
    assert corpus(seed=1) != CORPUS


def test_rfc8621_example_body_lists() -> None:
    msg = parse_mime(message("rfc8621_example"))
    text, html, attachments = body_lists(msg)

    def letters(parts):
        return [msg.raw[p.body_start : p.body_end][:1].decode() for p in parts]

    assert letters(text) == ["A", "B", "C", "D", "K"]
    assert letters(html) == ["A", "<", "K"]  # E is "<p>E</p>"
    assert letters(attachments) == ["C", "F", "G", "H", "S"]  # J starts with "Subject: J"
    parsed = parse_message(message("rfc8621_example"))
    assert parsed.has_attachment  # G is an attachment
    assert parsed.preview == "A"


def test_encoded_words_are_decoded() -> None:
    parsed = parse_message(message("encoded_words"))
    assert parsed.subject == "\U0001f600 smile caf\u00e9 na\u00efve plain not=?utf-8?q?decoded?="
    assert parsed.from_ == [{"name": "J\u00f6rg M\u00fcller", "email": "jorg@example.de"}]
    assert parsed.to == [
        {"name": "Andr\u00e9", "email": "andre@example.fr"},
        {"name": "Caf\u00e9", "email": "cafe@example.com"},  # unknown charset: recovered, not dropped
    ]
    assert parsed.cc == [{"name": "ab", "email": "ab@example.com"}]


def test_eight_bit_headers() -> None:
    utf8 = parse_message(message("eight_bit_utf8"))
    assert utf8.subject == "Gr\u00fc\u00dfe aus K\u00f6ln \u2713"
    assert utf8.from_ == [{"name": "J\u00f6rg M\u00fcller", "email": "jorg@example.de"}]
    assert not any(p.startswith("8bit-header") for p in utf8.problems)  # RFC 6532 UTF-8 is fine
    latin = parse_message(message("eight_bit_latin1"))
    assert latin.subject == "Caf\u00e9 cr\u00e8me"
    assert latin.from_ == [{"name": "Andr\u00e9", "email": "andre@example.fr"}]
    assert "8bit-header:Subject" in latin.problems
    assert latin.preview == "Body with 8-bit \u00e9 and no charset"


def test_missing_date_message_id_and_from() -> None:
    parsed = parse_message(message("missing_headers"))
    assert parsed.sent_at is None
    assert parsed.message_ids == [] and parsed.from_ == []
    assert {"no-date", "no-message-id", "no-from"} <= set(parsed.problems)
    assert parsed.preview == "body"


def test_dates_and_ids() -> None:
    parsed = parse_message(message("addresses"))
    assert parsed.sent_at == -27_723_426_000  # 1969-02-14T03:02:54Z
    assert parsed.message_ids == ["addr@example.com"]
    std = parse_message(message("rfc8621_example"))
    assert std.sent_at == 1_728_977_400_000  # 2024-10-15T07:30:00Z
    bad = parse_message(b"Date: yesterday at noon\r\nSubject: x\r\n\r\nbody")
    assert bad.sent_at is None and "invalid-date" in bad.problems


def test_huge_references_parse_whole() -> None:
    """20,000 message ids in References (how fast: bench/parse_speed.py)."""
    raw = message("huge_references")
    assert len(raw) > 500_000
    parsed = parse_message(raw)
    assert len(parsed.references) == 20000
    assert parsed.references[0] == "0.ref@example.com" and parsed.references[-1] == "19999.ref@example.com"
    assert parsed.in_reply_to == ["19999.ref@example.com"]
    assert parsed.base_subject == "long thread"


def test_one_megabyte_message_is_summarised_within_bounds() -> None:
    """A 1 MB message with text, HTML and an attachment (how fast: bench/parse_speed.py)."""
    text = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 2 + "\r\n") * 5000
    attachment = base64.encodebytes(random.Random(1).randbytes(300_000)).replace(b"\n", b"\r\n")
    raw = (
        b"From: a@example.com\r\nSubject: big\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\n" + text.encode() + b"\r\n"
        b"--b\r\nContent-Type: text/html\r\n\r\n<div>" + text.encode() + b"</div>\r\n"
        b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + attachment
        + b"--b--\r\n"
    )
    assert len(raw) > 1_000_000
    parsed = parse_message(raw)
    assert parsed.has_attachment and parsed.preview.startswith("Lorem ipsum")
    assert SEARCH_TEXT_LIMIT * 0.9 < len(parsed.search_text) <= SEARCH_TEXT_LIMIT  # bounded


def test_line_endings_and_lone_dot() -> None:
    lf = parse_message(message("lf_endings"))
    assert lf.preview == "first" and lf.subject == "LF only" and lf.problems == ["date-offset:7200"]
    dots = parse_message(message("lone_dot"))
    assert dots.preview == "line one . ..two dots . end"


def test_transfer_encodings_are_decoded_for_search() -> None:
    parsed = parse_message(message("transfer_encodings"))
    assert parsed.preview.startswith("Gr\u00fc\u00dfe, \u65e5\u672c\u8a9e and a long line zzz")
    assert "\u65e5\u672c\u8a9e" in parsed.search_text


def test_nul_bytes_are_dropped_and_recorded() -> None:
    parsed = parse_message(message("nul_bytes"))
    assert parsed.subject == "nul inside"
    assert parsed.preview == "body with nul"
    assert "nul-bytes" in parsed.problems


def test_broken_structures() -> None:
    open_mp = parse_message(message("unterminated_multipart"))
    assert "multipart-not-terminated" in open_mp.problems
    assert open_mp.has_attachment and open_mp.preview == "first part"
    no_boundary = parse_message(message("multipart_without_boundary"))
    assert "multipart-without-boundary" in no_boundary.problems and "text" in no_boundary.preview
    not_found = parse_message(message("boundary_not_found"))
    assert "multipart-boundary-not-found" in not_found.problems and not_found.preview == "just text"
    deep = parse_message(message("deep_nesting"))
    assert "multipart-too-deep" in deep.problems
    for name in ("no_body", "empty_body"):
        parsed = parse_message(message(name))
        assert parsed.preview == "" and parsed.search_text == "" and parsed.subject
    empty = parse_message(b"")
    assert empty.subject is None and "empty-message" in empty.problems


def test_unparsable_content_fields_fall_back_to_plain_text(monkeypatch: pytest.MonkeyPatch) -> None:
    from jmapmono.mailbox import mime_tree

    def explode(*args, **kwargs):
        raise ValueError("parameter parser failure")

    monkeypatch.setattr(mime_tree, "_describe", explode)
    msg = parse_mime(message("rfc8621_example"))
    assert msg.root.type == "text/plain" and msg.root.subparts is None and msg.root.part_id == "1"
    assert "unparsable-content-fields" in msg.problems


def test_headers_without_blank_line_and_mbox_separator() -> None:
    parsed = parse_message(b"Subject: hi\r\nThis line is no header\r\nmore body")
    assert parsed.subject == "hi"
    assert parsed.preview == "This line is no header more body"
    assert "header-block-ends-without-blank-line" in parsed.problems
    mbox = parse_message(message("mbox_from_line"))
    assert mbox.subject == "mbox" and mbox.from_[0]["email"] == "alice@example.com"


def test_charset_problems_are_recorded_not_fatal() -> None:
    parsed = parse_message(message("bad_charsets"))
    assert "unknown charset caf\u00e9" in parsed.search_text
    assert "broken utf-8 \ufffd\ufffd here" in parsed.search_text
    assert "latin caf\u00e9 \u20acuro" in parsed.search_text  # ISO-8859-1 read as Windows-1252
    assert "sixteen" in parsed.search_text
    assert "encoding-problem:1" in parsed.problems and "encoding-problem:2" in parsed.problems
    assert "encoding-problem:3" not in parsed.problems


def test_has_attachment_rules() -> None:
    assert not parse_message(message("html_only")).has_attachment  # cid image inside multipart/related
    assert not parse_message(message("nested_related")).has_attachment
    assert parse_message(message("rfc822_attachment")).has_attachment
    assert parse_message(message("attachment_names")).has_attachment
    assert parse_message(message("digest")).has_attachment
    inline = b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\ntext\r\n--x\r\n"
    inline += b"Content-Type: image/png\r\nContent-Disposition: inline\r\n\r\nPNG\r\n--x--\r\n"
    assert not parse_message(inline).has_attachment


def test_html_only_preview_strips_markup() -> None:
    parsed = parse_message(message("html_only"))
    assert parsed.preview == "Hello World"
    assert "color" not in parsed.search_text and "T" not in parsed.search_text.split()


def test_rfc822_attachment_is_not_descended_into() -> None:
    parsed = parse_message(message("rfc822_attachment"))
    assert parsed.preview == "See the forwarded message."
    assert "inner text" not in parsed.search_text


def test_addresses_and_groups() -> None:
    parsed = parse_message(message("addresses"))
    assert parsed.from_ == [{"name": "James Smythe", "email": "james@example.com"}]
    assert parsed.to == [
        {"name": None, "email": "jane@example.com"},
        {"name": "John Sm\u00eeth", "email": "john@example.com"},
        {"name": None, "email": "solo@example.com"},
    ]
    assert parsed.cc == [
        {"name": "Bob Builder", "email": "bob@example.org"},
        {"name": None, "email": "route@example.org"},
    ]
    assert parsed.bcc == [{"name": None, "email": "not-an-address"}]
    assert parsed.reply_to == [{"name": 'Quote "d"', "email": "q@example.com"}]


@pytest.mark.parametrize(
    "subject,base",
    [
        ("Re: hello", "hello"),
        ("RE: Re: re:   hello  world ", "hello world"),
        ("Fwd: Re: hello", "hello"),
        ("Fw: hello (fwd)", "hello"),
        ("hello (fwd) (FWD)", "hello"),
        ("[list] Re: hello", "hello"),
        ("Re: [list] hello", "hello"),
        ("Re [list]: hello", "hello"),
        ("[PATCH]", "[patch]"),
        ("[fwd: Re: hello]", "hello"),
        ("Re: [fwd: [list] hello] (fwd)", "hello"),
        ("Re:", ""),
        ("", ""),
        (None, ""),
        ("Re:\thello\r\n there", "hello there"),
        ("Réponse: Café", "réponse: café"),
    ],
)
def test_base_subject_rfc5256(subject: str | None, base: str) -> None:
    assert base_subject(subject) == base


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000))
def test_fuzz_random_bytes_never_raise(raw: bytes) -> None:
    parsed = parse_message(raw)
    _storable(parsed)
    assert parsed.size == len(raw)


_SEEDS = [raw for name, raw in CORPUS if not name.startswith(("huge", "random"))]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_SEEDS), st.data())
def test_fuzz_mutated_corpus_never_raises(raw: bytes, data: st.DataObject) -> None:
    """Flip, cut and splice bytes of real structures (boundaries, headers, encodings)."""
    mutated = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 8))):
        if not mutated:
            break
        at = data.draw(st.integers(0, len(mutated) - 1))
        kind = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if kind == "flip":
            mutated[at] = data.draw(st.integers(0, 255))
        elif kind == "cut":
            del mutated[at : at + data.draw(st.integers(1, 64))]
        else:
            mutated[at:at] = data.draw(st.sampled_from([b"\r\n", b"--", b"=?", b"\x00", b"\xff", b":", b";", b'"']))
    _storable(parse_message(bytes(mutated)))

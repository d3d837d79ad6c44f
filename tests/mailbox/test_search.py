"""The search engine (jmapmono.mailbox.search) behind Email/query's text conditions (RFC 8621 §4.4.1): the
search input syntax, the required header search and the recommended body search as separate tests
(clarifications Q9), the full-text index kept in step with the mail, match spans for snippets. Both backends.

SearchSnippet/get, the method, is tested in tests/jmap/test_search_snippet.py; the RFC's own examples of
both in tests/conformance/test_email_search.py."""

from __future__ import annotations

import pytest

from jmapmono.mailbox import search
from jmapmono.mailbox.search import Term, parse_terms
from tests.support import corpus
from tests.support.emails import Box, mail


@pytest.fixture
def box(services, alice) -> Box:
    return Box(services, alice)


def html_mail(subject: str, html: str) -> bytes:
    head = f"From: x@example.org\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8"
    return (head + "\r\n\r\n" + html + "\r\n").encode()


# --- search input --------------------------------------------------------------------------------------------------


def test_search_input_syntax():
    assert parse_terms("  Hello \"big  World\" 'it\\'s' caf\u00e9 ") == [
        Term("hello", ("hello",), False),
        Term("big world", ("big", "world"), True),
        Term("it's", ("it", "s"), True),
        Term("cafe", ("cafe",), False),
    ]
    assert parse_terms('say "unclosed phrase') == [
        Term("say", ("say",), False),
        Term('"unclosed', ("unclosed",), False),
        Term("phrase", ("phrase",), False),
    ]
    assert parse_terms('"a \\" b"') == [Term('a " b', ("a", "b"), True)]
    assert parse_terms("  ") == [] and parse_terms('""') == []
    assert parse_terms("!!!") == [Term("!!!", (), False)]  # no word: header substring only
    assert search.like_pattern(Term("50%_off\\", (), False)) == "%50\\%\\_off\\\\%"
    terms = parse_terms('foo "bar baz"')
    assert search.fts5_query(terms) == '"foo" * AND "bar baz"'
    assert search.terms_query(terms) == '(words : "foo" * OR extras : ("hufo" OR "srfo")) AND (words : "bar baz")'
    assert search.tsquery(terms) == "(('foo':*) | '~hufo' | '~srfo') & ('bar' <-> 'baz')"
    assert search.fts5_query(parse_terms("!!!")) is None


def test_tsvector_is_bounded():
    """A huge body still makes a tsvector Postgres accepts (< 1 MB, positions ≤ 16383, ≤ 256 per word)."""
    text = " ".join(f"w{i} common" for i in range(60_000))
    literal = search.tsvector(text)
    assert len(literal.encode()) < 1_000_000
    common = next(p for p in literal.split(" ") if p.startswith("'common':"))
    positions = common.split(":")[1].split(",")
    assert len(positions) == 256 and positions[:2] == ["2", "4"]
    assert search.tsvector("Ünïcödé Wörds, ünicode") == "'unicode':1,3 'words':2"


# --- header search (required) --------------------------------------------------------------------------------------


def test_text_finds_from_to_cc_bcc_and_subject(box):
    """RFC 8621: ``text`` MUST look in From, To, Cc, Bcc and Subject; display names and addresses (Q10)."""
    e = {
        "from": box.add(frm='"Ünsal, Zeynep" <zeynep@kuzey.example>', subject="a", body="nothing here"),
        "to": box.add(to="Quentin Tarantula <qt@films.example>", subject="b", body="nothing here"),
        "cc": box.add(cc="=?iso-8859-1?q?J=F6rg?= <joerg@berlin.example>", subject="c", body="nothing here"),
        "bcc": box.add(bcc="hidden-watcher@secret.example", subject="d", body="nothing here"),
        "subject": box.add(subject="=?utf-8?b?w4ljb2xlIGQnw6l0w6k=?=", body="nothing here"),  # "École d'été"
    }
    cases = {
        "zeynep": {"from"},
        "ünsal": {"from"},
        "UNSAL ZEYNEP": {"from"},
        "kuzey.example": {"from"},
        "tarantula": {"to"},
        "qt@films.example": {"to"},
        "jörg": {"cc"},  # the encoded word is decoded
        "joerg@berlin": {"cc"},
        "hidden-watcher": {"bcc"},
        "ecole": {"subject"},
        "d'été": {"subject"},
        '"école d"': {"subject"},
        "zeynep tarantula": set(),  # every term must match
        "example": {"from", "to", "cc", "bcc", "subject"},  # every To/From has an example address
    }
    for text, expected in cases.items():
        got = {k for k, v in e.items() if v in box.ids({"text": text})}
        assert got == expected, text
    assert box.ids({"from": "%"}) == [] and box.ids({"from": "_"}) == []  # LIKE wildcards are literal
    assert box.ids({"to": "nothing"}) == [] and box.ids({"subject": "zeynep"}) == []  # one field each


# --- body search (recommended) -------------------------------------------------------------------------------------


def test_text_and_body_search_bodies(box):
    """RFC 8621: ``text`` SHOULD, ``body`` does, look in text bodies (HTML as its text, not its markup)."""
    plain = box.add(subject="plain", body="This year the Foosball competition will be held in the Stadium-Arena.")
    html = box.add(
        html_mail("html", '<p style="color:red">Caf&eacute; <b>meeting</b> at noon</p><script>secretcode()</script>')
    )
    cases = [  # (a whole word, a phrase in and out of order, attribute values: in the conformance suite)
        ("foo", {plain}),  # a token matches the start of a word (RFC 8621 §5.2's example)
        ("ball", set()),  # ... not its middle
        ('"foo competition"', set()),  # a phrase matches whole words
        ("stadium arena", {plain}),
        ("stadium-arena", {plain}),
        ("café meeting", {html}),
        ("cafe", {html}),
        ("secretcode", set()),  # scripts are not text
        ("noon year", set()),
    ]
    for text, expected in cases:
        assert set(box.ids({"body": text})) == expected, text
        assert set(box.ids({"text": text})) == expected, text
    assert set(box.ids({"text": "plain foosball"})) == {plain}  # one term in the subject, one in the body
    assert box.ids({"body": "x" * 5000}) == [] and box.ids({"body": "foo " + "y" * 3000}) == []  # never indexed
    assert box.ids({"subject": "foosball"}) == []


def test_the_index_follows_deletes(box, services):
    keep = box.add(subject="keep", body="zebra crossing")
    gone = box.add(subject="gone", body="zebra stripes")
    assert set(box.ids({"body": "zebra"})) == {keep, gone}
    services.mailboxes.destroy_messages(box.account, [gone])
    assert box.ids({"body": "zebra"}) == [keep] and box.ids({"body": "stripes"}) == []
    assert box.ids({"text": "gone"}) == []
    with services.db.read() as tx:
        assert tx.value("SELECT COUNT(*) AS n FROM message_headers WHERE message_id = ?", (gone,)) == 0
        if tx.dialect == "sqlite":
            assert tx.value("SELECT COUNT(*) AS n FROM message_search_rows") == 1
            hits = tx.query("SELECT rowid FROM message_search_terms WHERE message_search_terms MATCH 'zebra'")
            assert len(hits) == 1


def test_deleting_an_account_empties_its_index(box, services):
    box.add(subject="mine", body="unicorn")
    services.accounts.delete("alice@example.org")
    with services.db.read() as tx:
        assert tx.value("SELECT COUNT(*) AS n FROM message_headers") == 0
        assert tx.value("SELECT COUNT(*) AS n FROM message_search") == 0
        if tx.dialect == "sqlite":
            assert tx.query("SELECT rowid FROM message_search_terms WHERE message_search_terms MATCH 'unicorn'") == []


def test_search_is_per_account(box, bob, services):
    box.add(subject="alpha", body="shared words")
    bobs_inbox = services.mailboxes.mailbox_by_role(bob.account_id, "inbox").id
    services.mailboxes.append(bob.account_id, mail("alpha", body="shared words"), [bobs_inbox])
    assert len(box.ids({"body": "shared"})) == 1 and len(box.ids({"text": "alpha"})) == 1


# --- index bounds and match spans -------------------------------------------------------------------------------------


def test_pathological_headers_are_indexed_within_bounds(box):
    """Huge or countless header fields never stop delivery; what is indexed is bounded (search.py limits)."""
    many = "".join(f"X-Field-{i}: value {i}\r\n" for i in range(search.HEADER_NAMES_LIMIT + 300))
    crowded = box.add((many + "Subject: crowded\r\n\r\nbody\r\n").encode())
    refs = box.add(corpus.huge_references())
    line = box.add(corpus.huge_header_line())
    assert box.ids({"header": ["X-Field-0", "value 0"]}) == [crowded]
    assert box.ids({"header": [f"X-Field-{search.HEADER_NAMES_LIMIT + 299}"]}) == []  # past the bound
    assert refs in box.ids({"header": ["References"]}) and line in box.ids({})


def test_match_spans_map_back_to_the_original_text():
    text = "\u0130stanbul caf\u00e9, cafe\u0301 CAF\u00c9-society cafeteria"  # İ folds to two characters
    spans = search.word_spans(text, parse_terms("cafe"))
    assert [text[a:b] for a, b in spans] == ["caf\u00e9", "cafe\u0301", "CAF\u00c9", "cafe"]
    assert [text[a:b] for a, b in search.word_spans(text, parse_terms('"cafe"'))][-1] == "CAF\u00c9"
    subject = "Re:  \u00c9t\u00e9  at  caf\u00e9"
    assert [subject[a:b] for a, b in search.substring_spans(subject, parse_terms('"ete at"'))] == ["\u00c9t\u00e9  at"]
    assert search.word_spans("x " * 100_000, parse_terms("x"), limit=3) == [(0, 1), (2, 3), (4, 5)]

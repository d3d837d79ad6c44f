"""Search in the user's language (jmapmono.mailbox.search_tokens): words inside unsegmented CJK runs, stems of
the detected language, exact phrases and headers, the index rows of older releases and their reindexing.
Both backends; the same searches over HTTP are in tests/jmap/test_email_search_language.py."""

from __future__ import annotations

import pytest

from jmapmono.mailbox import search, search_reindex, search_tokens
from jmapmono.mailbox.search import parse_terms
from tests.support.emails import Box, index_the_old_way

JAPANESE = "東京で会議があります"
ENGLISH = "The quarterly report is ready. Please review the report before the meeting on Monday morning."
RUSSIAN = "Встреча в Москве перенесена на следующую неделю, пожалуйста подтвердите участие."


@pytest.fixture
def box(services, alice) -> Box:
    return Box(services, alice)


def test_cjk_runs_become_bigrams_and_stems_are_tagged_apart():
    tokens = search.index_tokens(f"{JAPANESE} 北 {ENGLISH}")
    assert tokens.words[:10] == ["東京", "京で", "で会", "会議", "議が", "があ", "あり", "りま", "ます", "北"]
    assert tokens.languages == ("en",) and "enreport" in tokens.extras and "す" in tokens.extras
    assert "report" in tokens.words and "enreport" not in tokens.words  # stems never in the words stream
    assert search.index_tokens("ok thanks").languages == ()  # too short to tell: no stems
    assert parse_terms('"東京で会議"')[0].tokens == ("東京", "京で", "で会", "会議")
    assert parse_terms('"reports"')[0].extras == ()  # a phrase is exact: no stems
    assert "enreport" in parse_terms("reports")[0].extras and "ruмоскв" in parse_terms("москва")[0].extras
    assert search_tokens.split_word("tokyo東京") == ["tokyo", "東京"]


def test_words_in_any_language_are_found(box):
    """RFC 8621 §4.4.1: "Tokens (not part of a phrase) MAY be matched on a whole-word basis using stemming (for
    example, a text search for "bus" would match "buses" but not "business")"; body: "Looks for the text in one
    of the body parts of the message"."""
    ja = box.add(subject="予定", body=JAPANESE)
    zh = box.add(subject="旅行", body="我们下个月去北京出差")
    ko = box.add(subject="일정", body="내일 서울에서 회의가 있습니다")
    en = box.add(subject="Numbers", body=ENGLISH)
    ru = box.add(subject="Встреча", body=RUSSIAN)
    de = box.add(subject="Reise", body="Wir fahren nach Köln")
    for text, expected in [
        ("東京", {ja}),
        ("会議", {ja}),
        ("あります", {ja}),
        ("北京", {zh}),
        ("회의", {ko}),
        ("reports", {en}),
        ("москва", {ru}),
        ("koln", {de}),
        ("Köln", {de}),
    ]:
        assert set(box.ids({"body": text})) == expected, text
        assert set(box.ids({"text": text})) == expected, text


def test_phrases_and_headers_stay_exact(box):
    """RFC 8621 §4.4.1: "Text contained in either (but matched) single (') or double (") quotes SHOULD be treated
    as a *phrase search*; that is, a match is required for that exact word or sequence of words"; subject:
    "Looks for the text in the Subject header field of the message"; header: "the text to look for in the header
    field value"."""
    ja = box.add(subject="Quarterly report", body=JAPANESE)
    en = box.add(subject="Budget", body=ENGLISH)
    assert box.ids({"body": '"東京で会議"'}) == [ja] and box.ids({"text": '"東京で会議"'}) == [ja]
    assert box.ids({"body": '"東京の会議"'}) == [] and box.ids({"body": '"会議で東京"'}) == []
    assert box.ids({"body": "reports"}) == [en] and box.ids({"body": '"reports"'}) == []
    assert box.ids({"body": '"quarterly report"'}) == [en] and box.ids({"body": '"quarterly reports"'}) == []
    assert box.ids({"subject": "report"}) == [ja] and box.ids({"subject": "reports"}) == []
    assert box.ids({"header": ["Subject", "reports"]}) == [] and box.ids({"header": ["Subject", "report"]}) == [ja]
    # Substrings, not words: inside a word, across words, short or punctuated, as before.
    assert box.ids({"subject": "uarterl"}) == [ja] and box.ids({"text": "rly rep"}) == [ja]
    assert set(box.ids({"from": "e@ex"})) == {ja, en} and set(box.ids({"text": "<alice@"})) == {ja, en}
    assert box.ids({"subject": "rt"}) == [ja] and box.ids({"text": "uarterlyx"}) == []


def test_what_is_not_there_is_not_found(box):
    """RFC 8621 §4.4.1: "white space SHOULD be treated as dividing separate tokens that may be searched for
    separately but MUST all be present for the Email to match the filter"; text: "The server MUST look up text in
    the From, To, Cc, Bcc, and Subject header fields of the message and SHOULD look inside any "text/*" or other
    body parts"."""
    ja = box.add(subject="会", body="議事録を送ります。京 都")
    assert box.ids({"body": "大阪"}) == [] and box.ids({"body": "会談"}) == []
    assert box.ids({"text": "会議"}) == []  # 会 ends the subject, 議 begins the body: no word across fields
    assert box.ids({"body": "京都"}) == []  # two words apart: no bigram across them
    assert box.ids({"text": "議事"}) == [ja] and box.ids({"text": "会"}) == [ja]
    assert box.ids({"body": "reports"}) == [] and box.ids({"body": "議事 大阪"}) == []


def test_a_single_character_finds_the_end_of_a_run(box):
    """RFC 8621 §4.4.1 body: "Looks for the text in one of the body parts of the message"."""
    ja = box.add(subject="x", body=JAPANESE)
    assert box.ids({"body": "す"}) == [ja] and box.ids({"body": "会"}) == [ja] and box.ids({"body": "阪"}) == []


def test_configured_languages_stem_without_detection_and_off_stems_nothing(box, services):
    """RFC 8621 §4.4.1: "Tokens (not part of a phrase) MAY be matched on a whole-word basis using stemming"; the
    operator may name the languages (every body stemmed in each, no detection) or turn stemming off."""
    from jmapmono.mailbox.manager import MailboxManager

    short = "Встреча в Москве"  # too short to detect: stemmed only when Russian is configured
    for languages, found in ((("de", "ru"), True), ((), False)):
        manager = MailboxManager(services.db, services.blobs, services.accounts, search_languages=languages)
        delivered = manager.deliver(box.client.email, f"Subject: s\r\n\r\n{short}\r\n".encode())
        assert (delivered.message_id in box.ids({"body": "москва"})) is found, languages
        assert delivered.message_id in box.ids({"body": "москве"})  # the word itself, always


def test_old_rows_are_found_as_before_until_reindexed(box, services):
    """RFC 8621 §4.4.1: "Tokens (not part of a phrase) MAY be matched on a whole-word basis using stemming";
    rows an older release indexed keep matching their whole words, and match word parts once reindexed."""
    ja = box.add(subject="予定表です", body=JAPANESE)
    en = box.add(subject="Quarterly numbers", body=ENGLISH)
    fresh = box.add(subject="z", body="北京の会議")
    for message_id in (ja, en):
        index_the_old_way(services.db, message_id)
    assert box.ids({"body": "東京"}) == [ja] and box.ids({"body": "会議"}) == [fresh]
    assert box.ids({"body": "report"}) == [en] and box.ids({"body": "reports"}) == []
    assert box.ids({"text": "numbers"}) == [en] and box.ids({"subject": "予定表"}) == [ja]  # headers as before
    assert search_reindex.pending(services.db) == 2

    seen = []
    done = search_reindex.reindex(services.db, box.account, seen.append, batch=1)
    assert done.done == 2 and [p.done for p in seen] == [1, 2] and seen[-1].total == 2
    assert set(box.ids({"body": "会議"})) == {ja, fresh} and box.ids({"body": "reports"}) == [en]
    assert box.ids({"text": "numbers"}) == [en] and box.ids({"subject": "予定表"}) == [ja]
    assert search_reindex.reindex(services.db).done == 0  # idempotent
    services.mailboxes.destroy_messages(box.account, [ja, en])  # reindexed rows leave the index with the message
    assert box.ids({"body": "会議"}) == [fresh] and box.ids({"body": "report"}) == []
    if services.db.dialect == "sqlite":
        with services.db.read() as tx:
            assert tx.value("SELECT COUNT(*) AS n FROM message_search_terms") == 1
            assert tx.query("SELECT rowid FROM message_search_fts WHERE message_search_fts MATCH 'report'") == []


def test_a_stopped_reindex_resumes_and_skips_deleted_mail(box, services):
    """A reindex stopped between batches does the rest when run again; a message deleted meanwhile is skipped."""
    ids = [box.add(subject=f"m{i}", body=f"{JAPANESE} {i}") for i in range(3)]
    for message_id in ids:
        index_the_old_way(services.db, message_id)

    def stop(progress: search_reindex.Progress) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        search_reindex.reindex(services.db, on_progress=stop, batch=1)
    assert search_reindex.pending(services.db) == 2
    services.mailboxes.destroy_messages(box.account, [ids[2]])
    assert search_reindex.reindex(services.db).done == 1
    assert set(box.ids({"body": "会議"})) == set(ids[:2]) and search_reindex.pending(services.db) == 0

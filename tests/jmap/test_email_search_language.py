"""Email/query text search in the user's language over HTTP, a real server on a real socket: mail delivered as
LMTP delivers it, then found by words inside CJK runs and by stems, with phrases and headers exact. Both
backends; the index itself is tested in tests/mailbox/test_search_language.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tests.support.emails import mail
from tests.support.jmap import basic_auth
from tests.support.servers import AppServer

USING = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"]


class Search:
    """Alice's Email/query over HTTP."""

    def __init__(self, server: AppServer, alice) -> None:
        self.url, self.alice = f"{server.url}/jmap/api", alice
        self.http = requests.Session()

    def ids(self, condition: dict) -> set[str]:
        call = ["Email/query", {"accountId": self.alice.account_id, "filter": condition}, "q"]
        r = self.http.post(self.url, json={"using": USING, "methodCalls": [call]}, headers=basic_auth(self.alice.email))
        assert r.status_code == 200, r.text
        [[name, result, _]] = r.json()["methodResponses"]
        assert name == "Email/query", result
        return set(result["ids"])


@pytest.fixture
def search(services, app, alice) -> Iterator[Search]:
    server = AppServer(services, app=app, flow=False, port=0)
    try:
        yield Search(server, alice)
    finally:
        server.stop(timeout=5)


def deliver(services, alice, subject: str, body: str) -> str:
    raw = mail(subject, to=alice.email, body=body).replace(
        b"Subject:", b"Content-Type: text/plain; charset=utf-8\r\nSubject:"
    )
    return services.mailboxes.deliver(alice.email, raw).message_id


def test_words_inside_cjk_runs_and_stems_are_found(services, alice, search):
    """RFC 8621 §4.4.1: text: "The server MUST look up text in the From, To, Cc, Bcc, and Subject header fields
    of the message and SHOULD look inside any "text/*" or other body parts"; "Tokens (not part of a phrase) MAY be
    matched on a whole-word basis using stemming (for example, a text search for "bus" would match "buses" but not
    "business")"."""
    ja = deliver(services, alice, "予定", "東京で会議があります")
    zh = deliver(services, alice, "出差", "我们下个月去北京出差")
    en = deliver(services, alice, "Numbers", "The quarterly report is ready; please review it before the meeting.")
    ru = deliver(services, alice, "Встреча", "Встреча в Москве перенесена на следующую неделю, подтвердите участие.")
    de = deliver(services, alice, "Reise", "Wir fahren nach Köln")
    assert search.ids({"body": "会議"}) == {ja} and search.ids({"text": "東京"}) == {ja}
    assert search.ids({"text": "北京"}) == {zh}
    assert search.ids({"text": "reports"}) == {en} and search.ids({"body": "москва"}) == {ru}
    assert search.ids({"text": "koln"}) == {de}
    assert search.ids({"text": "大阪"}) == set() and search.ids({"text": "会議 大阪"}) == set()


def test_phrases_and_header_conditions_are_exact(services, alice, search):
    """RFC 8621 §4.4.1: "Text contained in either (but matched) single (') or double (") quotes SHOULD be treated
    as a *phrase search*; that is, a match is required for that exact word or sequence of words"; header: "The
    first element is the name of the header field to match against. The second (optional) element is the text to
    look for in the header field value"."""
    ja = deliver(services, alice, "Quarterly report", "東京で会議があります")
    en = deliver(services, alice, "Budget", "The quarterly report is ready; please review it before the meeting.")
    assert search.ids({"text": '"東京で会議"'}) == {ja} and search.ids({"text": '"東京の会議"'}) == set()
    assert search.ids({"body": '"reports"'}) == set() and search.ids({"body": "reports"}) == {en}
    assert search.ids({"subject": "reports"}) == set() and search.ids({"subject": "report"}) == {ja}
    assert search.ids({"header": ["Subject", "reports"]}) == set()
    assert search.ids({"text": "会議", "subject": "quarterly"}) == {ja}


def test_snippets_mark_words_inside_runs_and_stems(services, alice, search):
    """RFC 8621 §5: preview: "If text from the filter matches the plaintext or HTML body, this is the relevant
    section of the body ... with the same transformations as the "subject" property" ("The matching words/phrases
    from the filter are wrapped in HTML "<mark></mark>" tags"); "If the body does not contain a match for the text
    from the filter, this property is null"."""
    ja = deliver(services, alice, "予定", "東京で会議があります")
    en = deliver(services, alice, "Numbers", "The quarterly report is ready; please review it before the meeting.")

    def preview(email_id: str, condition: dict) -> str | None:
        call = ["SearchSnippet/get", {"accountId": alice.account_id, "filter": condition, "emailIds": [email_id]}, "s"]
        r = search.http.post(search.url, json={"using": USING, "methodCalls": [call]}, headers=basic_auth(alice.email))
        [[name, result, _]] = r.json()["methodResponses"]
        assert name == "SearchSnippet/get", result
        return result["list"][0]["preview"]

    assert preview(ja, {"body": "会議"}) == "東京で<mark>会議</mark>があります"
    assert preview(ja, {"text": '"東京で会議"'}) == "<mark>東京で会議</mark>があります"
    assert preview(ja, {"body": "す"}) == "東京で会議がありま<mark>す</mark>"
    assert preview(en, {"body": "reports"}) == (
        "The quarterly <mark>report</mark> is ready; please review it before the meeting."
    )
    assert preview(ja, {"body": "大阪"}) is None

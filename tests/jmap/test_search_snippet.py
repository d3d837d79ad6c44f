"""SearchSnippet/get (RFC 8621 §5) as this server answers it: what is marked for which condition, escaping,
the preview's bounds, and its errors. The RFC's example and the arguments every server must take are in
tests/conformance/test_email_search.py; the matching itself in tests/mailbox/test_search.py. Both backends."""

from __future__ import annotations

import pytest

from tests.support.emails import Box


@pytest.fixture
def box(services, alice) -> Box:
    return Box(services, alice)


def snippets(box: Box, filter: dict | None, ids: list[str]) -> dict:
    return box.client.call("SearchSnippet/get", {"filter": filter, "emailIds": ids})


def test_snippet_escaping_fields_and_bounds(box):
    e = box.add(subject="Tom & Jerry <3 cheese", body="é" * 300 + " cheese & crackers <b> " + "ü" * 300)
    s = snippets(box, {"subject": "jerry"}, [e])["list"][0]
    assert s == {"emailId": e, "subject": "Tom &amp; <mark>Jerry</mark> &lt;3 cheese", "preview": None}
    s = snippets(box, {"body": "cheese"}, [e])["list"][0]
    assert s["subject"] is None  # body conditions do not mark the subject
    assert "<mark>cheese</mark> &amp; crackers &lt;b&gt;" in s["preview"]
    assert len(s["preview"].encode()) <= 255 and s["preview"].startswith("...") and s["preview"].endswith("...")
    s = snippets(box, {"operator": "NOT", "conditions": [{"text": "cheese"}]}, [e])["list"][0]
    assert s["subject"] is None and s["preview"] is None  # what must not match is not marked
    s = snippets(box, {"operator": "AND", "conditions": [{"text": "tom"}, {"body": "crackers"}]}, [e])["list"][0]
    assert s["subject"].startswith("<mark>Tom</mark>") and "<mark>crackers</mark>" in s["preview"]
    assert snippets(box, {"inMailbox": box.inbox}, [e])["list"][0]["preview"] is None


def test_snippet_errors(box):
    """(An unknown filter, no emailIds, too many: in the conformance suite.)"""
    e = box.add(subject="x")
    assert box.error("SearchSnippet/get", filter=None, emailIds=None) == "invalidArguments"  # null is none
    assert box.error("SearchSnippet/get", filter=None, emailIds=[e], sort=[]) == "invalidArguments"  # not /query

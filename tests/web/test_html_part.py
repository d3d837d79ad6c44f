"""``GET /jmap/html/<accountId>/<blobId>``: an HTML body part cleaned for the web inbox's reading frame.

Every message of the hostile corpus comes back with no script, no event handler, no ``javascript:`` or
``data:`` link, nothing that fetches (CSS included) and its remote images replaced, unless the reader
asked for them; another user's part is 404 whichever account id is named; a part over the size bound is
413, not processed."""

from __future__ import annotations

import re

import pytest

from jmapmono.web.html_clean import PLACEHOLDER
from tests.web import hostile

TRAP = "http://127.0.0.1:9"


def deliver(services, jmap, raw: bytes) -> dict:
    """Deliver ``raw`` to ``jmap``'s user; its HTML body part (blobId, charset…)."""
    delivered = services.mailboxes.deliver(jmap.email, raw)
    (email,) = jmap.call("Email/get", {"ids": [delivered.message_id], "properties": ["htmlBody"]})["list"]
    (part,) = [p for p in email["htmlBody"] if p["type"] == "text/html"]
    return part


def html_url(account: str, part: dict, **query: str) -> str:
    params = "&".join(f"{k}={v}" for k, v in {"charset": part.get("charset") or "", **query}.items())
    return f"/jmap/html/{account}/{part['blobId']}?{params}"


def assert_inert(html: str) -> None:
    lowered = html.lower()
    assert "<script" not in lowered and "<style" not in lowered and "<svg" not in lowered
    assert not re.search(r"<[^>]*\son[a-z]+\s*=", lowered), html
    assert "javascript:" not in lowered and "data:text" not in lowered and "data:image/svg" not in lowered
    for tag in ("<form", "<input", "<button", "<iframe", "<object", "<embed", "<meta", "<base", "<link", "<video"):
        assert tag not in lowered, (tag, html)
    assert "url(" not in lowered and "@import" not in lowered and "\\72" not in lowered, html
    assert not re.search(r"<img[^>]*\ssrc=\"(?!data:image/|cid:)", lowered), html  # no relative or remote src


@pytest.mark.parametrize("path", hostile.corpus(), ids=lambda p: p.stem)
def test_the_hostile_corpus_comes_back_inert(services, client, alice, path):
    part = deliver(services, alice, hostile.load(path, TRAP))
    response = client.get(html_url(alice.account_id, part), headers=alice.headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type == "text/html; charset=utf-8"
    html = response.get_data(as_text=True)
    assert_inert(html)
    tags = "".join(re.findall(r"<[^>]*>", html))  # text may name a URL (escaped); no tag or attribute may
    assert TRAP not in tags and "evil.example" not in tags, tags
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "sandbox" in csp and "script-src" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_remote_images_are_placeholders_until_allowed_and_only_images_then(services, client, alice):
    part = deliver(services, alice, hostile.load(hostile.CORPUS / "remote-images.eml", TRAP))
    blocked = client.get(html_url(alice.account_id, part), headers=alice.headers)
    assert blocked.headers["X-Blocked-Images"] == "2"  # http and https (protocol-relative: dropped as relative)
    assert blocked.get_data(as_text=True).count(PLACEHOLDER) == 2
    allowed = client.get(html_url(alice.account_id, part, images="1"), headers=alice.headers)
    html = allowed.get_data(as_text=True)
    assert allowed.headers["X-Blocked-Images"] == "0"
    assert f'<img src="{TRAP}/pixel.png"' in html and "https://tracker.evil.example/pixel.gif" in html
    assert "srcset" not in html and "<source" not in html and "<input" not in html
    assert "//tracker.evil.example/proto.png" not in html  # protocol-relative: never loaded
    assert "img-src data: https: http:" in allowed.headers["Content-Security-Policy"]


def test_links_open_in_a_new_tab_without_opener_or_referrer(services, client, alice):
    raw = (
        b"From: a@example.org\r\nTo: alice@example.org\r\nSubject: links\r\nContent-Type: text/html\r\n\r\n"
        b'<a href="https://example.org/x" target="_self" rel="opener">x</a><a href="mailto:a@example.org">m</a>'
        b'<a href="#top">t</a><a href="/jmap/api">relative</a>\r\n'
    )
    part = deliver(services, alice, raw)
    html = client.get(html_url(alice.account_id, part), headers=alice.headers).get_data(as_text=True)
    links = re.findall(r"<a [^>]*>", html)
    assert len(links) == 4
    assert all('target="_blank"' in a and 'rel="noopener noreferrer"' in a for a in links), links
    assert [re.search(r'href="([^"]*)"', a)[1] if "href" in a else None for a in links] == [
        "https://example.org/x",
        "mailto:a@example.org",
        None,  # a fragment is relative: it would open the frame's own document in a new tab
        None,
    ]


def test_charset_of_the_part_decodes_it_and_an_unknown_one_falls_back_to_utf8(services, client, alice):
    raw = (
        b"From: a@example.org\r\nTo: alice@example.org\r\nSubject: latin\r\n"
        b"Content-Type: text/html; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n<p>caf\xe9</p>\r\n"
    )
    part = deliver(services, alice, raw)
    assert part["charset"] == "iso-8859-1"
    html = client.get(html_url(alice.account_id, part), headers=alice.headers).get_data(as_text=True)
    assert "café" in html
    unknown = client.get(html_url(alice.account_id, part, charset="x-no-such"), headers=alice.headers)
    assert unknown.status_code == 200 and "caf\ufffd" in unknown.get_data(as_text=True)


def test_another_users_part_is_not_found_whichever_account_is_named(services, client, alice, bob):
    part = deliver(services, alice, hostile.load(hostile.CORPUS / "script.eml", TRAP))
    assert client.get(html_url(alice.account_id, part), headers=alice.headers).status_code == 200
    for account in (alice.account_id, bob.account_id):
        response = client.get(html_url(account, part), headers=bob.headers)
        assert response.status_code == 404 and response.content_type == "application/problem+json"
        assert "Script tags" not in response.get_data(as_text=True)
    assert client.get(html_url(alice.account_id, part)).status_code == 401  # no credentials
    bad = client.get(f"/jmap/html/{alice.account_id}/not..an..id", headers=alice.headers)
    assert bad.status_code == 404


def test_a_part_over_the_bound_is_refused_unprocessed(config, db, alice, services):
    from jmapmono.runtime import Runtime
    from jmapmono.web.app import create_app
    from tests.support.jmap import JmapClient

    small = Runtime(config.with_overrides(max_html_part_bytes=2048), db)
    client = create_app(small).test_client()
    big = b"<p>" + b"x" * 3000 + b"</p>"
    raw = b"From: a@example.org\r\nTo: alice@example.org\r\nSubject: big\r\nContent-Type: text/html\r\n\r\n" + big
    part = deliver(small, JmapClient(client, alice.email, alice.account_id), raw + b"\r\n")
    response = client.get(html_url(alice.account_id, part), headers=alice.headers)
    assert response.status_code == 413 and response.content_type == "application/problem+json"
    assert "at most 2048" in response.get_json()["detail"]

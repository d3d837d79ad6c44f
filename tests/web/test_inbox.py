"""The web inbox's files as the server serves them: ``/`` and ``/static/<file>`` with a Content-Security-Policy
that allows no inline or foreign script and no framing, ``nosniff``, ``no-referrer`` and ETag revalidation;
nothing outside the static folder; off with ``JMAPMONO_WEB_INBOX=off``. The page itself needs nothing its
policy forbids (no inline script, no style attribute) and every module it imports is served."""

from __future__ import annotations

import re

from jmapmono.web.inbox import STATIC


def directives(csp: str) -> dict[str, list[str]]:
    out = {}
    for item in csp.split(";"):
        name, *values = item.split()
        out[name] = values
    return out


def test_the_page_is_served_at_the_root_with_its_security_headers(client):
    response = client.get("/")
    assert response.status_code == 200 and response.content_type == "text/html; charset=utf-8"
    assert b'<script type="module" src="/static/main.js">' in response.data
    csp = directives(response.headers["Content-Security-Policy"])
    assert csp["script-src"] == ["'self'"] and csp["default-src"] == ["'self'"]
    assert csp["frame-ancestors"] == ["'none'"] and csp["object-src"] == ["'none'"] and csp["base-uri"] == ["'none'"]
    assert csp["connect-src"] == ["'self'"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "Set-Cookie" not in response.headers


def test_files_revalidate_by_etag(client):
    first = client.get("/static/main.js")
    assert first.status_code == 200 and first.content_type == "text/javascript; charset=utf-8"
    assert first.headers["Cache-Control"] == "no-cache" and first.headers["ETag"]
    again = client.get("/static/main.js", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""
    assert "Content-Security-Policy" in again.headers


def test_only_files_of_the_static_folder_are_served(client):
    for path in (
        "/static/nope.js",
        "/static/../config.py",
        "/static/..%2fconfig.py",
        "/static/.hidden.js",
        "/static/x.py",
    ):
        response = client.get(path)
        assert response.status_code == 404, path


def test_the_page_can_be_turned_off(config, db):
    from jmapmono.runtime import Runtime
    from jmapmono.web.app import create_app

    client = create_app(Runtime(config.with_overrides(web_inbox=False), db)).test_client()
    assert client.get("/").status_code == 404
    assert client.get("/static/main.js").status_code == 404


def test_the_page_needs_nothing_its_policy_forbids_and_every_module_is_served(client):
    index = (STATIC / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", index), "inline script"
    assert not re.search(r"\sstyle=", index) and "<style" not in index
    assert not re.search(r"\son[a-z]+=", index), "inline event handler"
    modules = {p.name for p in STATIC.glob("*.js")}
    for module in modules:
        source = (STATIC / module).read_text()
        assert "eval(" not in source and "new Function" not in source and "innerHTML" not in source, module
        for imported in re.findall(r'^import .* from "\./([^"]+)";$', source, re.M):
            assert imported in modules, (module, imported)
        assert client.get(f"/static/{module}").status_code == 200
    assert client.get("/static/inbox.css").content_type == "text/css; charset=utf-8"
    size = sum(p.stat().st_size for p in STATIC.iterdir() if p.suffix in (".js", ".css"))
    assert size < 64_000, f"the page's script and style weigh {size} bytes"

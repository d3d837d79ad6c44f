"""The web inbox: ``/`` and ``/static/<file>`` from the package's ``static`` folder.

Plain files, no build step. Every answer carries a Content-Security-Policy that allows script only
from this origin (no inline script, no eval) and forbids framing, plus ``nosniff`` and
``no-referrer``. Files revalidate by ETag (a hash of their bytes), so a new release is picked up at
once and an unchanged one costs a 304. ``JMAPMONO_WEB_INBOX=off`` leaves ``/`` a 404.

The reading frame (``srcdoc``) inherits this policy: mail HTML may keep inline ``style`` attributes
(the sanitiser has already dropped every property that can name a URL), and remote images load only
after the reader allows them (``img-src`` lists ``https:``; the frame's own policy forbids them until
then).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from flask import Blueprint, Response, abort, request

from jmapmono.web.context import current_services

bp = Blueprint("inbox", __name__)

STATIC = Path(__file__).parent / "static"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*\.(js|css|html|svg)$")
_TYPES = {
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "html": "text/html; charset=utf-8",
    "svg": "image/svg+xml",
}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob: https: http:; "
    "font-src 'self'; connect-src 'self'; frame-src 'self'; child-src 'self'; form-action 'self'; "
    "base-uri 'none'; object-src 'none'; frame-ancestors 'none'"
)


def secure_headers(response: Response) -> Response:
    """The headers every page file carries."""
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    return response


def _send(name: str) -> Response:
    if not current_services().config.web_inbox or not _NAME.match(name):
        abort(404)
    path = STATIC / name
    try:
        data = path.read_bytes()
    except OSError:
        abort(404)
    etag = hashlib.sha256(data).hexdigest()[:32]
    if request.if_none_match.contains(etag):
        response = Response(status=304)
    else:
        response = Response(data, content_type=_TYPES[name.rsplit(".", 1)[1]])
    response.set_etag(etag)
    response.headers["Cache-Control"] = "no-cache"
    return secure_headers(response)


@bp.get("/")
def index() -> Response:
    return _send("index.html")


@bp.get("/static/<name>")
def static_file(name: str) -> Response:
    return _send(name)

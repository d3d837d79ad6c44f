"""``GET /jmap/html/<accountId>/<blobId>``: one HTML body part, cleaned for display.

The web inbox shows HTML mail in a sandboxed frame; this is the first of its two defences (the frame
is the second): the part's bytes, decoded with ``?charset=`` (the body part's charset; UTF-8 when
absent or unknown), go through :func:`jmapmono.web.html_clean.clean_html`. Remote images stay blocked
unless ``?images=1``; ``X-Blocked-Images`` says how many were replaced. Access is the download's: a
blob the account cannot read, or an account the user cannot see, is 404. A part larger than
``JMAPMONO_MAX_HTML_PART_BYTES`` is 413 (the page then offers the download instead). The answer carries
its own CSP (no script, nothing loaded but inline images) and ``sandbox``, should it ever be opened
directly.
"""

from __future__ import annotations

import codecs
import logging
import time

from flask import Blueprint, Response, g, request

from jmapmono.jmap import sharing
from jmapmono.log import kv
from jmapmono.mailbox.blobs import is_valid_blob_id
from jmapmono.store import StoreError
from jmapmono.web.auth import problem_response, require_auth
from jmapmono.web.context import current_services
from jmapmono.web.html_clean import clean_html

log = logging.getLogger("jmapmono.html")

bp = Blueprint("html_part", __name__)

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:{remote}; sandbox; frame-ancestors 'self'"


def _codec(name: str | None) -> str:
    """A known codec for the part's charset; UTF-8 when none is given or it is unknown."""
    if name:
        try:
            return codecs.lookup(name.strip()).name
        except (LookupError, ValueError):
            pass
    return "utf-8"


@bp.get("/jmap/html/<account_id>/<blob_id>")
@require_auth
def html_part(account_id: str, blob_id: str) -> Response:
    """The part's HTML cleaned by the sanitiser, or a problem document."""
    started = time.monotonic()
    services = current_services()
    principal = g.principal
    not_found = problem_response(404, "Not Found", f"blob {blob_id!r} not found in account {account_id!r}")
    limit = services.config.max_html_part_bytes
    allow_remote = request.args.get("images") == "1"
    try:
        if (
            not is_valid_blob_id(blob_id)
            or services.accounts.access(principal.user_id, account_id) is None
            or not sharing.blob_readable(services, principal, account_id, blob_id)
        ):
            return not_found
        blob = services.blobs.open(account_id, blob_id, principal.user_id)
        if blob is None:
            return not_found
        if blob.size > limit:
            return problem_response(
                413, "Content Too Large", f"the part has {blob.size} octets; at most {limit} are shown as HTML"
            )
        raw = b"".join(blob.chunks())
    except StoreError:
        return problem_response(
            503, "Service Unavailable", "the database is unavailable; try again", {"Retry-After": "5"}
        )
    cleaned = clean_html(raw.decode(_codec(request.args.get("charset")), errors="replace"), allow_remote)
    response = Response(cleaned.html, content_type="text/html; charset=utf-8")
    response.headers["Content-Security-Policy"] = CSP.format(remote=" https: http:" if allow_remote else "")
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "private, no-cache"
    response.headers["X-Blocked-Images"] = str(cleaned.blocked_images)
    log.info(
        kv(
            event="html_part",
            user=principal.email,
            account=account_id,
            blob=blob_id,
            size=len(raw),
            blocked=cleaned.blocked_images,
            ms=f"{(time.monotonic() - started) * 1000:.1f}",
        )
    )
    return response

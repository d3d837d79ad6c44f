"""``Email/parse`` (RFC 8621 §4.9): Email objects from blobs, without importing them.

Any blob the caller may read can be parsed: an upload, a stored message, or a body part such as an
attached ``message/rfc822`` (``<message blob id>_<partId>``, the usual way to show a forwarded
message). Parsing is lenient (LF-only line endings, broken MIME: what can be read is returned); a blob
is ``notParsable`` only when it has no header field at all (binary data, plain text, empty). The
metadata properties a message only has in the mail store (id, mailboxIds, keywords, receivedAt and
threadId) are null.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from jmapmono.jmap import sharing
from jmapmono.jmap.email_props import DEFAULT_PARSE_PROPERTIES, FETCH_ARGUMENTS, parse_fetch, render
from jmapmono.jmap.errors import MethodError
from jmapmono.jmap.method_args import arg, invalid, is_id, reject_unknown_arguments
from jmapmono.jmap.registry import MAIL, Invocation, method
from jmapmono.log import kv
from jmapmono.mailbox.mime_tree import MimeMessage, parse_mime

log = logging.getLogger(__name__)

PARSE_ARGUMENTS = ("accountId", "blobIds", "properties", *FETCH_ARGUMENTS)


def is_parsable(message: MimeMessage) -> bool:
    """Whether the bytes look like a message at all: they start with at least one header field."""
    return bool(message.headers)


@method("Email/parse", MAIL)
def email_parse(inv: Invocation) -> dict[str, Any]:
    """Parse ``blobIds``: ``parsed`` (blob id → Email), ``notParsable``, ``notFound`` (each null when empty)."""
    started = time.monotonic()
    args = inv.args
    reject_unknown_arguments(args, PARSE_ARGUMENTS)
    blob_ids = arg(args, "blobIds")
    if not isinstance(blob_ids, list) or not all(isinstance(b, str) for b in blob_ids):
        raise invalid("'blobIds' must be an array of blob ids")
    limit = inv.services.config.limits.max_objects_in_get
    if len(blob_ids) > limit:
        raise MethodError("requestTooLarge", f"{len(blob_ids)} blobs to parse; maxObjectsInGet is {limit}")
    fetch = parse_fetch(args, DEFAULT_PARSE_PROPERTIES, with_id=False)
    parsed: dict[str, Any] = {}
    not_parsable: list[str] = []
    not_found: list[str] = []
    for blob_id in dict.fromkeys(blob_ids):
        content = None
        if is_id(blob_id):
            content = (
                inv.services.blobs.read(inv.account_id, blob_id, inv.principal.user_id)
                if sharing.blob_readable(inv.services, inv.principal, inv.account_id, blob_id)
                else None
            )
        if content is None:
            not_found.append(blob_id)
            continue
        message = parse_mime(content.data)
        if not is_parsable(message):
            not_parsable.append(blob_id)
            continue
        parsed[blob_id] = render(fetch, blob_id, message, size=len(content.data))
    log.info(
        kv(
            event="email_parse",
            user=inv.principal.email,
            account=inv.account_id,
            parsed=len(parsed),
            not_parsable=len(not_parsable),
            not_found=len(not_found),
            ms=round((time.monotonic() - started) * 1000, 1),
        )
    )
    return {
        "accountId": inv.account_id,
        "parsed": parsed or None,
        "notParsable": not_parsable or None,
        "notFound": not_found or None,
    }

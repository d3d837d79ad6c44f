"""``Email/get`` and ``Email/changes`` (RFC 8621 §4.2, §4.3).

Email/get answers the fast properties (RFC 8621 §4.2's list) from the database alone and reads and
parses a raw message only when a requested property needs it (headers, ``header:…``, the body
properties), once per email per call. The emails and their state are one statement (one snapshot); the
raw messages not parsed before are a second, and the rare email destroyed between the two sends the whole
read into one transaction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable
from dataclasses import dataclass, replace
from typing import Any

from jmapmono.jmap import sharing
from jmapmono.jmap.email_props import (
    DEFAULT_GET_PROPERTIES,
    FETCH_ARGUMENTS,
    EmailFetch,
    parse_fetch,
    render,
    with_mutable,
)
from jmapmono.jmap.errors import MethodError
from jmapmono.jmap.method_args import (
    GetArgs,
    arg_id_list,
    changes_response,
    check_max_objects_in_get,
    get_response,
    parse_changes,
    reject_unknown_arguments,
)
from jmapmono.jmap.registry import MAIL, Invocation, method
from jmapmono.log import kv
from jmapmono.mailbox.changes import CannotCalculateChanges
from jmapmono.mailbox.mime_tree import MimeMessage
from jmapmono.mailbox.model import Message

log = logging.getLogger(__name__)

GET_ARGUMENTS = ("accountId", "ids", "properties", *FETCH_ARGUMENTS)
CHANGES_ARGUMENTS = ("accountId", "sinceState", "maxChanges")


@method("Email/get", MAIL)
def email_get(inv: Invocation) -> dict[str, Any]:
    """RFC 8621 §4.2: the standard /get with bodyProperties and the bodyValues fetch arguments."""
    started = time.monotonic()
    args = inv.args
    reject_unknown_arguments(args, GET_ARGUMENTS)
    ids = arg_id_list(inv, "ids", None)
    if ids is not None:
        check_max_objects_in_get(inv, len(ids))
    fetch = parse_fetch(args, DEFAULT_GET_PROPERTIES, with_id=True)
    asked = fetch.key()
    read = None
    if ids is not None:  # the emails (with their state) in one statement, then the raw messages not kept
        read = _read(inv, ids, fetch, asked)
        if any(meta.blob_id not in read.raw for meta in read.to_parse):
            read = None  # the email was destroyed between the two statements: read both in one transaction
    if read is None:
        with inv.services.db.read():
            read = _read(inv, ids, fetch, asked)
    found, state, kept, to_parse, raw = read.found, read.state, read.kept, read.to_parse, read.raw
    cached = len(kept)
    for meta in to_parse:
        kept[meta.id] = _parse(inv, meta, raw)
    rendered = inv.services.rendered_emails
    records: dict[str, dict[str, Any]] = {}
    for message_id, meta in found.items():
        immutable = read.rendered.get(message_id)
        if immutable is None:
            email = render(fetch, meta.blob_id, kept.get(message_id), meta)
            rendered.keep(_rendered_key(meta, asked), email)
            records[message_id] = email
        else:
            records[message_id] = with_mutable(fetch, immutable, meta)
    parsed = len(to_parse)
    response = get_response(GetArgs(inv.account_id, ids, fetch.properties), state, records)
    log.info(
        kv(
            event="email_get",
            user=inv.principal.email,
            account=inv.account_id,
            found=len(records),
            not_found=len(response["notFound"]),
            parsed=parsed,
            cached=cached,
            rendered=len(read.rendered),
            ms=round((time.monotonic() - started) * 1000, 1),
        )
    )
    return response


@dataclass
class _Read:
    found: dict[str, Message]
    state: str
    #: The immutable properties rendered earlier with the same arguments, by email id: nothing else needed.
    rendered: dict[str, dict[str, Any]]
    #: Parses kept from earlier reads (a blob id names its content), by email id.
    kept: dict[str, MimeMessage]
    #: The emails whose raw message must be read and parsed, and those raw messages by blob id.
    to_parse: list[Message]
    raw: dict[str, bytes]


def _read(inv: Invocation, ids: list[str] | None, fetch: EmailFetch, asked: Hashable) -> _Read:
    """The emails, their state, what was rendered of them before, and the raw messages of those that need
    parsing and were neither rendered nor parsed before. Inside a transaction all of it is one snapshot;
    outside, the emails and their state are (one statement)."""
    mailboxes = inv.services.mailboxes
    if ids is None:
        limit = inv.services.config.limits.max_objects_in_get
        found, state = mailboxes.get_all_messages(inv.account_id, limit)
        if found is None:
            raise MethodError("requestTooLarge", f"the account has more than maxObjectsInGet ({limit}) emails")
    else:
        found, state = mailboxes.get_messages(inv.account_id, ids)
    shared = sharing.view(inv)
    if shared is not None:  # a sharee: only emails in a readable shared mailbox, only shared mailboxIds
        found = {
            i: replace(meta, mailbox_ids=shared.shown_mailboxes(meta.mailbox_ids))
            for i, meta in found.items()
            if shared.sees(meta)
        }
    cache, rendered_emails = inv.services.parsed_messages, inv.services.rendered_emails
    rendered: dict[str, dict[str, Any]] = {}
    kept: dict[str, MimeMessage] = {}
    to_parse: list[Message] = []
    for meta in found.values():
        earlier = rendered_emails.get(_rendered_key(meta, asked))
        if earlier is not None:
            rendered[meta.id] = earlier
        elif fetch.needs_message_for(meta):
            message = cache.get(meta.blob_id)
            if message is None:
                to_parse.append(meta)
            else:
                kept[meta.id] = message
    raw = inv.services.blobs.read_stored(inv.account_id, [meta.blob_id for meta in to_parse]) if to_parse else {}
    return _Read(found, state, rendered, kept, to_parse, raw)


def _rendered_key(meta: Message, asked: Hashable) -> Hashable:
    """An email's entry in the rendered-email cache: what it is (its id, its content, its thread) and what was
    asked of it."""
    return (meta.id, meta.blob_id, meta.thread_id, asked)


def _parse(inv: Invocation, meta: Message, raw: dict[str, bytes]) -> MimeMessage:
    """The email's raw message, parsed; serverFail if its bytes are gone (never expected: the email holds them)."""
    data = raw.get(meta.blob_id)
    if data is None:
        log.error(kv(event="email_blob_missing", account=inv.account_id, email=meta.id, blob=meta.blob_id))
        raise MethodError("serverFail", f"the message of email {meta.id} cannot be read")
    return inv.services.parsed_messages.parse(meta.blob_id, data)


@method("Email/changes", MAIL)
def email_changes(inv: Invocation) -> dict[str, Any]:
    """RFC 8621 §4.3: the standard /changes over the change log (created, updated, destroyed ids)."""
    reject_unknown_arguments(inv.args, CHANGES_ARGUMENTS)
    req = parse_changes(inv)
    try:
        changes = inv.services.changes.changes_since(inv.account_id, "Email", req.since_state, req.max_changes)
    except CannotCalculateChanges as e:
        raise MethodError("cannotCalculateChanges", str(e)) from None
    response = changes_response(
        inv.account_id,
        changes.old_state,
        changes.new_state,
        changes.has_more_changes,
        changes.created,
        changes.updated,
        changes.destroyed,
    )
    return sharing.changes_as_seen(inv, response, inv.services.mailboxes.visible_messages)

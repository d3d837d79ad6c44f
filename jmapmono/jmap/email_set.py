"""``Email/set`` (RFC 8621 §4.6): create drafts, change keywords and mailboxes, destroy.

Each kind of change is ONE MailboxManager operation (one transaction, one event, one state bump),
whatever the number of emails: all creations together, then all updates, then all destructions.
``ifInState`` is checked up front and again inside the first operation's transaction, under the
account lock, so nothing is written when the state moved in between.

Only ``keywords`` and ``mailboxIds`` are mutable, as whole objects or through patches of single
entries (``keywords/$seen``, ``mailboxIds/<id>``, with ``#creationId`` mailbox ids); any other
property in an update must equal the current value (RFC 8620 §5.3), else invalidProperties.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from jmapmono.jmap import email_rights, sharing
from jmapmono.jmap.email_create import (
    Bad,
    Draft,
    build_draft,
    invalid_properties,
    keyword,
    parse_keywords,
    parse_mailbox_ids,
    resolve_mailbox_id,
)
from jmapmono.jmap.email_headers import is_header_property, parse_header_property
from jmapmono.jmap.email_props import EMAIL_PROPERTIES
from jmapmono.jmap.errors import MethodError, SetError
from jmapmono.jmap.method_args import check_if_in_state, parse_set, reject_unknown_arguments, set_response
from jmapmono.jmap.registry import MAIL, Invocation, method
from jmapmono.log import kv
from jmapmono.mailbox.mailbox_plan import StateMismatch
from jmapmono.mailbox.model import MailboxError, MessageUpdate, NewMessage

log = logging.getLogger(__name__)

SET_ARGUMENTS = ("accountId", "ifInState", "create", "update", "destroy")
#: Properties an update may name only with their current value: all but keywords and mailboxIds.
_IMMUTABLE = EMAIL_PROPERTIES - {"keywords", "mailboxIds"}


def set_error(e: MailboxError) -> SetError:
    """The SetError a mailbox-layer refusal stands for."""
    extra = {"properties": e.properties} if e.properties else {}
    return SetError(e.set_error, e.description, **extra)


def created_record(appended: Any) -> dict[str, Any]:
    """What ``created`` reports of a new email (RFC 8621 §4.6): the server-set properties."""
    return {"id": appended.id, "blobId": appended.blob_id, "threadId": appended.thread_id, "size": appended.size}


class _Outcome:
    """Collects the results of the operations of one call."""

    def __init__(self, old_state: str, guard: str | None) -> None:
        self.old_state = old_state
        self.new_state = old_state
        #: ifInState, still to be checked by the next operation's transaction.
        self.guard = guard
        self.created: dict[str, Any] = {}
        self.updated: dict[str, Any] = {}
        self.destroyed: list[str] = []
        self.not_created: dict[str, SetError] = {}
        self.not_updated: dict[str, SetError] = {}
        self.not_destroyed: dict[str, SetError] = {}

    def run(self, operation: Any, *args: Any) -> Any:
        """Run one MailboxManager operation with the pending ifInState guard; track the new Email state."""
        guard, self.guard = self.guard, None
        try:
            result = operation(*args, if_in_state=guard)
        except StateMismatch as e:
            raise MethodError("stateMismatch", str(e)) from None
        self.new_state = result.states.get("Email", self.new_state)
        return result


@method("Email/set", MAIL, writes=True)
def email_set(inv: Invocation) -> dict[str, Any]:
    """RFC 8621 §4.6: the standard /set for emails."""
    started = time.monotonic()
    reject_unknown_arguments(inv.args, SET_ARGUMENTS)
    req = parse_set(inv, own_references=True)
    services = inv.services
    account = inv.account_id
    current = services.changes.state(account, "Email")
    check_if_in_state(req.if_in_state, current)
    out = _Outcome(req.if_in_state or current, req.if_in_state)
    mgr = services.mailboxes

    shared = sharing.view(inv)
    drafts: dict[str, Draft] = {}
    for cid, obj in req.create.items():
        try:
            drafts[cid] = build_draft(inv, obj)
            if shared is not None:
                email_rights.check_add(shared, drafts[cid].mailbox_ids)
        except SetError as e:
            drafts.pop(cid, None)
            out.not_created[cid] = e
    if drafts:
        items = [NewMessage(d.raw, tuple(d.mailbox_ids), tuple(d.keywords), d.received_at) for d in drafts.values()]
        result = out.run(mgr.append_many, account, items)
        for i, cid in enumerate(drafts):
            if i in result.created:
                out.created[cid] = created_record(result.created[i])
                inv.created_ids[cid] = result.created[i].id
            else:
                out.not_created[cid] = set_error(result.errors[i])

    if req.update:
        _update(inv, req.update, out)

    if req.destroy:
        ids = []
        for key in req.destroy:
            resolved = _own_reference(inv, key)
            if resolved is None:
                out.not_destroyed[key] = SetError("notFound", f"{key} names no email created in this request")
            else:
                ids.append(resolved)
        if ids and shared is not None:
            found, _ = mgr.get_messages(account, ids)
            for message_id in list(ids):
                try:
                    email_rights.check_destroy(shared, found.get(message_id))
                except SetError as e:
                    out.not_destroyed[message_id] = e
                    ids.remove(message_id)
        if ids:
            result = out.run(mgr.destroy_messages, account, ids)
            out.destroyed = result.destroyed
            for message_id in result.not_found:
                out.not_destroyed[message_id] = SetError("notFound", f"no email {message_id}")

    log.info(
        kv(
            event="email_set",
            user=inv.principal.email,
            account=account,
            created=len(out.created),
            updated=len(out.updated),
            destroyed=len(out.destroyed),
            refused=len(out.not_created) + len(out.not_updated) + len(out.not_destroyed),
            ms=round((time.monotonic() - started) * 1000, 1),
        )
    )
    return set_response(
        account,
        out.old_state,
        out.new_state,
        created=out.created,
        updated=out.updated,
        destroyed=out.destroyed,
        not_created=out.not_created,
        not_updated=out.not_updated,
        not_destroyed=out.not_destroyed,
    )


def _own_reference(inv: Invocation, key: str) -> str | None:
    """An id, or the email a ``#creationId`` of this call named (None when that creation failed)."""
    if key.startswith("#"):
        return inv.created_ids.get(key[1:])
    return key


# --- updates -------------------------------------------------------------------------------------------------------


def _update(inv: Invocation, patches: dict[str, dict[str, Any]], out: _Outcome) -> None:
    updates: dict[str, MessageUpdate] = {}
    unchanged: dict[str, dict[str, Any]] = {}
    for key, patch in patches.items():
        message_id = _own_reference(inv, key)
        if message_id is None:
            out.not_updated[key] = SetError("notFound", f"{key} names no email created in this request")
            continue
        try:
            updates[message_id], same = parse_patch(inv, patch)
        except SetError as e:
            out.not_updated[message_id] = e
            continue
        if same:
            unchanged[message_id] = same
    for message_id, error in _check_unchanged(inv, unchanged).items():
        out.not_updated[message_id] = error
        del updates[message_id]
    shared = sharing.view(inv)
    if shared is not None and updates:
        found, _ = inv.services.mailboxes.get_messages(inv.account_id, updates)
        for message_id, update in list(updates.items()):
            try:
                updates[message_id] = email_rights.check_update(shared, found.get(message_id), update)
            except SetError as e:
                out.not_updated[message_id] = e
                del updates[message_id]
    if not updates:
        return
    result = out.run(inv.services.mailboxes.update_messages, inv.account_id, updates)
    for message_id in result.updated:
        out.updated[message_id] = None
    for message_id, error in result.errors.items():
        out.not_updated[message_id] = set_error(error)


def _path(key: str) -> list[str]:
    return [t.replace("~1", "/").replace("~0", "~") for t in key.split("/")]


def parse_patch(inv: Invocation, patch: dict[str, Any]) -> tuple[MessageUpdate, dict[str, Any]]:
    """A PatchObject as a MessageUpdate, and the immutable properties it names (which must not change).

    invalidPatch for paths that overlap or go where nothing is; invalidProperties for bad values,
    unknown properties and changes to immutable ones.
    """
    paths = {key: _path(key) for key in patch}
    for key, tokens in paths.items():
        for n in range(1, len(tokens)):
            if "/".join(key.split("/")[:n]) in patch:
                raise SetError("invalidPatch", f"patch paths {'/'.join(key.split('/')[:n])!r} and {key!r} overlap")
    problems: list[Bad] = []
    fields: dict[str, Any] = {"add_keywords": [], "remove_keywords": [], "add_mailboxes": [], "remove_mailboxes": []}
    same: dict[str, Any] = {}
    for key, tokens in paths.items():
        value, head = patch[key], tokens[0]
        try:
            if head in ("keywords", "mailboxIds") and len(tokens) == 1:
                if head == "keywords":
                    fields["keywords"] = parse_keywords({} if value is None else value)
                else:
                    fields["mailbox_ids"] = parse_mailbox_ids(inv, {} if value is None else value)
            elif head in ("keywords", "mailboxIds") and len(tokens) == 2:
                if value is not None and value is not True:
                    raise Bad(head, f"{key} must be true or null")
                if head == "keywords":
                    name = keyword(tokens[1])
                    fields["add_keywords" if value else "remove_keywords"].append(name)
                else:
                    mailbox = resolve_mailbox_id(inv, tokens[1])
                    fields["add_mailboxes" if value else "remove_mailboxes"].append(mailbox)
            elif head in ("keywords", "mailboxIds"):
                raise SetError("invalidPatch", f"{key}: {head} entries are booleans, there is nothing below them")
            elif len(tokens) == 1 and (head in _IMMUTABLE or is_header_property(head)):
                if is_header_property(head):
                    try:
                        parse_header_property(head)
                    except MethodError as e:
                        raise Bad(head, e.description or f"invalid header property {head!r}") from None
                same[head] = value
            elif head in _IMMUTABLE or is_header_property(head):
                raise Bad(head, f"{head} is immutable")
            else:
                raise Bad(head, f"unknown Email property {head!r}")
        except Bad as e:
            problems.append(e)
    if problems:
        raise invalid_properties(problems)
    return MessageUpdate(**fields), same


def _check_unchanged(inv: Invocation, wanted: dict[str, dict[str, Any]]) -> dict[str, SetError]:
    """invalidProperties for updates naming an immutable property with another value than the current one."""
    if not wanted:
        return {}
    from jmapmono.jmap.email_props import parse_fetch, render
    from jmapmono.mailbox.mime_tree import parse_mime

    found, _ = inv.services.mailboxes.get_messages(inv.account_id, wanted)
    errors: dict[str, SetError] = {}
    for message_id, props in wanted.items():
        meta = found.get(message_id)
        if meta is None:
            errors[message_id] = SetError("notFound", f"no email {message_id}")
            continue
        fetch = parse_fetch({"properties": list(props)}, [], with_id=False)
        message = None
        if fetch.needs_message:
            content = inv.services.blobs.read(inv.account_id, meta.blob_id, resolve=False)
            message = parse_mime(content.data if content else b"")
        current = render(fetch, meta.blob_id, message, meta)
        changed = [p for p, v in props.items() if current.get(p) != v]
        if changed:
            errors[message_id] = SetError(
                "invalidProperties", f"immutable properties cannot change: {', '.join(changed)}", properties=changed
            )
    return errors

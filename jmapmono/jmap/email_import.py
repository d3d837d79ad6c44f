"""``Email/import`` (RFC 8621 §4.8) and ``Email/copy`` (§4.7): emails from uploaded messages, or from another
account.

An import keeps the uploaded octets exactly (its ``blobId`` is the upload's): LF-only line endings and other
defects a lenient parser copes with are accepted (clarifications Q15); only a blob with no header field at all
is ``invalidEmail``. A copy goes between two different accounts the user can access (the same account is
invalidArguments, clarifications Q12); with ``onSuccessDestroyOriginal`` the originals are destroyed by an
implicit ``Email/set`` whose response follows the copy's. Every import or copy call is one MailboxManager
operation (one transaction, one event). Imported and copied emails are new mail in the account: like mail
delivered over LMTP they move the EmailDelivery state (RFC 8621 §1.5), which drafts do not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from jmapmono.jmap import email_rights, sharing
from jmapmono.jmap.email_create import (
    Bad,
    invalid_properties,
    parse_keywords,
    parse_mailbox_ids,
    received_at_ms,
)
from jmapmono.jmap.email_set import created_record, email_set, set_error
from jmapmono.jmap.errors import MethodError, SetError
from jmapmono.jmap.method_args import (
    arg_bool,
    arg_id,
    arg_object,
    arg_str,
    check_if_in_state,
    check_max_objects_in_set,
    invalid,
    is_id,
    reject_unknown_arguments,
)
from jmapmono.jmap.registry import MAIL, Invocation, method
from jmapmono.log import kv
from jmapmono.mailbox.mailbox_plan import StateMismatch
from jmapmono.mailbox.mime_fields import parse_date
from jmapmono.mailbox.mime_tree import MimeMessage, parse_mime
from jmapmono.mailbox.model import Message, NewMessage

log = logging.getLogger(__name__)

IMPORT_ARGUMENTS = ("accountId", "ifInState", "emails")
COPY_ARGUMENTS = (
    "fromAccountId",
    "ifFromInState",
    "accountId",
    "ifInState",
    "create",
    "onSuccessDestroyOriginal",
    "destroyFromIfInState",
)
_IMPORT_PROPERTIES = ("blobId", "mailboxIds", "keywords", "receivedAt")
_COPY_PROPERTIES = ("id", "mailboxIds", "keywords", "receivedAt")
#: The SetError for an import whose blobId cannot be read: RFC 8621 §4.8 says invalidProperties ("id not found").
BLOB_NOT_FOUND = "invalidProperties"


def _creations(inv: Invocation, name: str) -> dict[str, dict[str, Any]]:
    """The ``Id[Object]`` argument ``name`` (required), within maxObjectsInSet."""
    value = arg_object(inv.args, name, nullable=False)
    assert value is not None
    for cid, obj in value.items():
        if not is_id(cid):
            raise invalid(f"creation id {cid!r} is not an Id")
        if not isinstance(obj, dict):
            raise invalid(f"{name}[{cid!r}] must be an object")
    check_max_objects_in_set(inv, len(value))
    return value


def _append(
    inv: Invocation,
    account: str,
    items: dict[str, NewMessage],
    if_in_state: str | None,
    not_created: dict[str, SetError],
) -> tuple[dict[str, Any], str | None]:
    """Append ``items`` in one operation; register their creation ids. Returns (created, new Email state)."""
    if not items:
        return {}, None
    shared = sharing.view_for(inv.services, inv.principal, account)
    if shared is not None:
        for cid, item in list(items.items()):
            try:
                email_rights.check_add(shared, item.mailbox_ids)
            except SetError as e:
                not_created[cid] = e
                del items[cid]
        if not items:
            return {}, None
    try:
        # New mail in the account: the EmailDelivery state moves (RFC 8621 §1.5), as for mail delivered over LMTP.
        result = inv.services.mailboxes.append_many(
            account, list(items.values()), delivery=True, if_in_state=if_in_state
        )
    except StateMismatch as e:
        raise MethodError("stateMismatch", str(e)) from None
    created: dict[str, Any] = {}
    for i, cid in enumerate(items):
        if i in result.created:
            created[cid] = created_record(result.created[i])
            inv.created_ids[cid] = result.created[i].id
        else:
            not_created[cid] = set_error(result.errors[i])
    return created, result.states.get("Email")


def _unknown(obj: dict[str, Any], known: tuple[str, ...], what: str) -> list[Bad]:
    return [Bad(p, f"{p!r} cannot be given to {what}") for p in obj if p not in known]


def _check(problems: list[Bad], fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Bad as e:
        problems.append(e)
        return None


# --- Email/import --------------------------------------------------------------------------------------------------


@method("Email/import", MAIL, writes=True)
def email_import(inv: Invocation) -> dict[str, Any]:
    """RFC 8621 §4.8: emails from uploaded messages, with their mailboxes, keywords and receivedAt."""
    started = time.monotonic()
    reject_unknown_arguments(inv.args, IMPORT_ARGUMENTS)
    if_in_state = arg_str(inv.args, "ifInState", None, nullable=True)
    emails = _creations(inv, "emails")
    account = inv.account_id
    old_state = inv.services.changes.state(account, "Email")
    check_if_in_state(if_in_state, old_state)
    items: dict[str, NewMessage] = {}
    not_created: dict[str, SetError] = {}
    for cid, obj in emails.items():
        try:
            items[cid] = _import_item(inv, obj)
        except SetError as e:
            not_created[cid] = e
    created, new_state = _append(inv, account, items, if_in_state, not_created)
    log.info(
        kv(
            event="email_import",
            user=inv.principal.email,
            account=account,
            created=len(created),
            refused=len(not_created),
            ms=round((time.monotonic() - started) * 1000, 1),
        )
    )
    return {
        "accountId": account,
        "oldState": if_in_state or old_state,
        "newState": new_state or old_state,
        "created": created or None,
        "notCreated": {k: e.to_json() for k, e in not_created.items()} or None,
    }


def _import_item(inv: Invocation, obj: dict[str, Any]) -> NewMessage:
    problems = _unknown(obj, _IMPORT_PROPERTIES, "Email/import")
    blob_id: Any = obj.get("blobId")  # any JSON value until the problems are raised
    if not is_id(blob_id):
        problems.append(Bad("blobId", "blobId is required: the id of an uploaded message"))
    if obj.get("mailboxIds") is None:
        problems.append(Bad("mailboxIds", "mailboxIds is required: an email is in at least one mailbox"))
    mailbox_ids = _check(problems, parse_mailbox_ids, inv, obj.get("mailboxIds") or {})
    if mailbox_ids == [] and obj.get("mailboxIds") is not None:
        problems.append(Bad("mailboxIds", "an email must be in at least one mailbox"))
    keywords = _check(problems, parse_keywords, obj.get("keywords") or {})
    received = obj.get("receivedAt")
    received_at = _check(problems, received_at_ms, received) if received is not None else None
    if problems:
        raise invalid_properties(problems)
    content = inv.services.blobs.read(inv.account_id, blob_id, inv.principal.user_id)
    if content is not None and not sharing.blob_readable(inv.services, inv.principal, inv.account_id, blob_id):
        content = None
    if content is None:
        raise SetError(BLOB_NOT_FOUND, f"blob {blob_id} not found", properties=["blobId"], notFound=[blob_id])
    raw = content.data
    limit = inv.services.config.max_message_size
    if len(raw) > limit:
        raise SetError("tooLarge", f"the message is {len(raw)} octets; the limit is {limit}")
    message = parse_mime(raw)
    if not message.headers:
        raise SetError("invalidEmail", f"blob {blob_id} is not a message: it has no header field")
    if received_at is None:
        received_at = _last_received(message)
    return NewMessage(raw, tuple(mailbox_ids), tuple(keywords), received_at)


def _last_received(message: MimeMessage) -> int | None:
    """RFC 8621 §4.8's default receivedAt: the date of the most recent (topmost) Received field, if any."""
    value = message.root.header_all("Received")
    if not value:
        return None
    when = parse_date(value[0].rpartition(b";")[2])
    return None if when is None else int(when.timestamp()) * 1000


# --- Email/copy ----------------------------------------------------------------------------------------------------


@method("Email/copy", MAIL, writes=True)
def email_copy(inv: Invocation) -> dict[str, Any]:
    """RFC 8621 §4.7 / RFC 8620 §5.4: copy emails from another account, overriding mailboxIds, keywords,
    receivedAt; optionally destroy the originals."""
    started = time.monotonic()
    args = inv.args
    reject_unknown_arguments(args, COPY_ARGUMENTS)
    from_account = arg_id(args, "fromAccountId")
    account = inv.account_id
    if from_account == account:
        raise invalid("fromAccountId and accountId must differ: Email/copy copies between accounts")
    if_from_in_state = arg_str(args, "ifFromInState", None, nullable=True)
    if_in_state = arg_str(args, "ifInState", None, nullable=True)
    destroy_if_in_state = arg_str(args, "destroyFromIfInState", None, nullable=True)
    destroy_original = arg_bool(args, "onSuccessDestroyOriginal", False)
    source = inv.services.accounts.access(inv.principal.user_id, from_account)
    if source is None:
        raise MethodError("fromAccountNotFound", f"no account {from_account!r} for this user")
    create = _creations(inv, "create")
    changes = inv.services.changes
    check_if_in_state(if_from_in_state, changes.state(from_account, "Email"))
    old_state = changes.state(account, "Email")
    check_if_in_state(if_in_state, old_state)

    wanted = {cid: obj.get("id") for cid, obj in create.items()}
    originals, _ = inv.services.mailboxes.get_messages(
        from_account, [inv.resolve_id(i) for i in wanted.values() if isinstance(i, str) and _resolvable(inv, i)]
    )
    source_view = sharing.view_for(inv.services, inv.principal, from_account)
    if source_view is not None:  # a sharee copies only what they can see
        originals = {i: m for i, m in originals.items() if source_view.sees(m)}
    items: dict[str, NewMessage] = {}
    sources: dict[str, str] = {}
    not_created: dict[str, SetError] = {}
    for cid, obj in create.items():
        try:
            items[cid], sources[cid] = _copy_item(inv, from_account, obj, originals)
        except SetError as e:
            not_created[cid] = e
    created, new_state = _append(inv, account, items, if_in_state, not_created)
    log.info(
        kv(
            event="email_copy",
            user=inv.principal.email,
            from_account=from_account,
            account=account,
            created=len(created),
            refused=len(not_created),
            ms=round((time.monotonic() - started) * 1000, 1),
        )
    )
    response = {
        "fromAccountId": from_account,
        "accountId": account,
        "oldState": if_in_state or old_state,
        "newState": new_state or old_state,
        "created": created or None,
        "notCreated": {k: e.to_json() for k, e in not_created.items()} or None,
    }
    if destroy_original and created:
        inv.extra_responses.append(
            _destroy_originals(
                inv, from_account, source.is_read_only, [sources[cid] for cid in created], destroy_if_in_state
            )
        )
    return response


def _resolvable(inv: Invocation, value: str) -> bool:
    return not value.startswith("#") or value[1:] in inv.created_ids


def _copy_item(
    inv: Invocation, from_account: str, obj: dict[str, Any], originals: dict[str, Message]
) -> tuple[NewMessage, str]:
    problems = _unknown(obj, _COPY_PROPERTIES, "Email/copy (only mailboxIds, keywords and receivedAt may be set)")
    original_id: Any = obj.get("id")  # any JSON value until the problems are raised
    if not isinstance(original_id, str) or not (is_id(original_id) or original_id.startswith("#")):
        problems.append(Bad("id", "id is required: the id of the email to copy"))
    mailbox_ids = _check(problems, parse_mailbox_ids, inv, obj["mailboxIds"]) if "mailboxIds" in obj else None
    if mailbox_ids == []:
        problems.append(Bad("mailboxIds", "an email must be in at least one mailbox"))
    keywords = _check(problems, parse_keywords, obj["keywords"] or {}) if "keywords" in obj else None
    received = obj.get("receivedAt")
    received_at = _check(problems, received_at_ms, received) if received is not None else None
    if problems:
        raise invalid_properties(problems)
    resolved = inv.created_ids.get(original_id[1:]) if original_id.startswith("#") else original_id
    meta = None if resolved is None else originals.get(resolved)
    if meta is None:
        raise SetError("notFound", f"no email {original_id} in account {from_account}")
    content = inv.services.blobs.read(from_account, meta.blob_id, resolve=False)
    if content is None:
        raise SetError("notFound", f"the message of email {original_id} is gone")
    return (
        NewMessage(
            content.data,
            tuple(mailbox_ids if mailbox_ids is not None else meta.mailbox_ids),
            tuple(keywords if keywords is not None else meta.keywords),
            received_at if received_at is not None else meta.received_at,
        ),
        meta.id,
    )


def _destroy_originals(
    inv: Invocation, from_account: str, read_only: bool, ids: list[str], if_in_state: str | None
) -> tuple[str, dict[str, Any], str]:
    """The implicit ``Email/set`` on the source account (RFC 8620 §5.4), as a response to add after the copy's."""
    if read_only:
        return (
            "error",
            {"type": "accountReadOnly", "description": f"account {from_account!r} is read-only"},
            inv.call_id,
        )
    args = {"accountId": from_account, "ifInState": if_in_state, "destroy": list(dict.fromkeys(ids))}
    implicit = Invocation("Email/set", args, inv.call_id, inv.services, inv.principal, inv.using, inv.created_ids)
    try:
        return "Email/set", email_set(implicit), inv.call_id
    except MethodError as e:
        return "error", e.to_json(), inv.call_id

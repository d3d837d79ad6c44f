"""Identity/get, Identity/changes, Identity/set (RFC 8621 §6).

Every account has a default identity for its login address (``mayDelete: false``), created on first
use; others may be added for the same address (different name, signatures, replyTo, bcc). An identity
for any other address is refused with ``forbiddenFrom``. Storage: :mod:`jmapmono.mailbox.identities`.
"""

from __future__ import annotations

from typing import Any

from jmapmono.jmap import method_args as std
from jmapmono.jmap.errors import MethodError, SetError
from jmapmono.jmap.registry import SUBMISSION, Invocation, method
from jmapmono.mailbox.changes import CannotCalculateChanges
from jmapmono.mailbox.identities import TYPE, Identity, IdentityFields, StateMismatch
from jmapmono.mailbox.model import MailboxError

PROPERTIES = ("id", "name", "email", "replyTo", "bcc", "textSignature", "htmlSignature", "mayDelete")
#: JMAP property -> IdentityFields field, for the properties a client sets.
FIELDS = {
    "name": "name",
    "email": "email",
    "replyTo": "reply_to",
    "bcc": "bcc",
    "textSignature": "text_signature",
    "htmlSignature": "html_signature",
}
DEFAULTS: dict[str, Any] = {"name": "", "replyTo": None, "bcc": None, "textSignature": "", "htmlSignature": ""}
_SET_ARGUMENTS = ("accountId", "ifInState", "create", "update", "destroy")


def to_json(identity: Identity) -> dict[str, Any]:
    return {
        "id": identity.id,
        "name": identity.name,
        "email": identity.email,
        "replyTo": identity.reply_to,
        "bcc": identity.bcc,
        "textSignature": identity.text_signature,
        "htmlSignature": identity.html_signature,
        "mayDelete": identity.may_delete,
    }


def set_error(e: MailboxError) -> SetError:
    """The SetError a mailbox-layer refusal stands for (``properties`` and any extra fields kept)."""
    extra: dict[str, Any] = dict(getattr(e, "extra", {}))
    if e.properties:
        extra["properties"] = e.properties
    return SetError(e.set_error, e.description, **extra)


def changes_call(inv: Invocation, type: str) -> dict[str, Any]:
    """A standard /changes over the change log (shared by the data types of this capability)."""
    c = std.parse_changes(inv)
    try:
        found = inv.services.changes.changes_since(c.account_id, type, c.since_state, c.max_changes)
    except CannotCalculateChanges as e:
        raise MethodError("cannotCalculateChanges", str(e)) from None
    return std.changes_response(
        c.account_id,
        found.old_state,
        found.new_state,
        found.has_more_changes,
        found.created,
        found.updated,
        found.destroyed,
    )


@method("Identity/get", SUBMISSION)
def identity_get(inv: Invocation) -> dict[str, Any]:
    """Standard /get; ``ids: null`` returns every identity (the default one first)."""
    std.reject_unknown_arguments(inv.args, ("accountId", "ids", "properties"))
    get = std.parse_get(inv, PROPERTIES)
    identities, state = inv.services.identities.get(get.account_id, get.ids)
    if get.ids is None:
        std.check_max_objects_in_get(inv, len(identities))
    return std.get_response(get, state, {i.id: to_json(i) for i in identities})


@method("Identity/changes", SUBMISSION)
def identity_changes(inv: Invocation) -> dict[str, Any]:
    std.reject_unknown_arguments(inv.args, ("accountId", "sinceState", "maxChanges"))
    inv.services.identities.ensure_default(inv.account_id)
    return changes_call(inv, TYPE)


def _create_fields(obj: dict[str, Any]) -> IdentityFields:
    unknown = sorted(k for k in obj if k not in PROPERTIES)
    if unknown:
        raise SetError("invalidProperties", f"unknown properties: {', '.join(unknown)}", properties=unknown)
    if "id" in obj:
        raise SetError("invalidProperties", "id is set by the server", properties=["id"])
    if obj.get("mayDelete", True) is not True:
        raise SetError("invalidProperties", "mayDelete is set by the server", properties=["mayDelete"])
    if "email" not in obj:
        raise SetError("invalidProperties", "email is required", properties=["email"])
    values = {**DEFAULTS, **{k: v for k, v in obj.items() if k in FIELDS}}
    return IdentityFields(**{FIELDS[k]: v for k, v in values.items()})


def _update_fields(current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    new = std.apply_patch(current, patch)
    for prop, default in DEFAULTS.items():
        new.setdefault(prop, default)  # a null patch value resets a property to its default
    unknown = sorted(k for k in new if k not in PROPERTIES)
    if unknown:
        raise SetError("invalidProperties", f"unknown properties: {', '.join(unknown)}", properties=unknown)
    fixed = sorted(p for p in ("id", "email", "mayDelete") if new.get(p) != current[p])
    if fixed:
        raise SetError("invalidProperties", f"cannot change {', '.join(fixed)}", properties=fixed)
    return {FIELDS[k]: new[k] for k in FIELDS if k != "email" and new[k] != current[k]}


def _server_changed(current: dict[str, Any], patch: dict[str, Any], stored: Identity) -> dict[str, Any] | None:
    """The properties the server stored otherwise than the patch set them (e.g. an address given without a
    name gains ``"name": null``); None when there are none (RFC 8620 §5.3 ``updated``)."""
    wanted = std.apply_patch(current, patch)
    for prop, default in DEFAULTS.items():
        wanted.setdefault(prop, default)
    got = to_json(stored)
    return {p: v for p, v in got.items() if p in wanted and wanted[p] != v} or None


@method("Identity/set", SUBMISSION, writes=True)
def identity_set(inv: Invocation) -> dict[str, Any]:
    """Standard /set; ``forbiddenFrom`` for an address the user may not send as, ``forbidden`` when
    destroying the default identity."""
    std.reject_unknown_arguments(inv.args, _SET_ARGUMENTS)
    s = std.parse_set(inv)
    store = inv.services.identities
    current, state = store.get(s.account_id)
    std.check_if_in_state(s.if_in_state, state)
    records = {i.id: to_json(i) for i in current}
    not_created: dict[str, SetError] = {}
    not_updated: dict[str, SetError] = {}
    create: dict[str, IdentityFields] = {}
    for cid, obj in s.create.items():
        try:
            create[cid] = _create_fields(obj)
        except SetError as e:
            not_created[cid] = e
    update: dict[str, dict[str, Any]] = {}
    for identity_id, patch in s.update.items():
        if identity_id not in records:
            not_updated[identity_id] = SetError("notFound", f"no identity {identity_id}")
            continue
        try:
            update[identity_id] = _update_fields(records[identity_id], patch)
        except SetError as e:
            not_updated[identity_id] = e
    try:
        out = store.apply(s.account_id, create, update, s.destroy, s.if_in_state)
    except StateMismatch as e:
        raise MethodError("stateMismatch", e.description) from None
    created = {}
    for cid, identity in out.created.items():
        inv.created_ids[cid] = identity.id
        sent = s.create[cid]
        full = to_json(identity)
        created[cid] = {k: v for k, v in full.items() if k not in sent or sent[k] != v}
    not_created.update({k: set_error(e) for k, e in out.not_created.items()})
    not_updated.update({k: set_error(e) for k, e in out.not_updated.items()})
    return std.set_response(
        s.account_id,
        out.old_state,
        out.new_state,
        created=created,
        updated={k: _server_changed(records[k], s.update[k], i) for k, i in out.updated.items()},
        destroyed=out.destroyed,
        not_created=not_created,
        not_updated=not_updated,
        not_destroyed={k: set_error(e) for k, e in out.not_destroyed.items()},
    )

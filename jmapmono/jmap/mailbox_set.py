"""Mailbox/set (RFC 8621 §2.5): one MailboxManager operation, so one transaction and one event per call.

This module turns the JMAP arguments into the batch of the mailbox layer (``jmapmono.mailbox.mailbox_plan``)
and its outcome back into a /set response. Property types are checked here (every bad property of a
record is named at once); the rules that need the mailbox tree (sibling names → alreadyExists, one
mailbox per role, parent loops and depth, mailboxHasChild, mailboxHasEmail) are decided in the batch.
Creations whose parentId names another creation of the same call run after it; ``#creationId``
targets of update and destroy are resolved once the creations are done.
"""

from __future__ import annotations

from typing import Any

from jmapmono.jmap import mailbox_share, sharing
from jmapmono.jmap.capabilities import MAX_MAILBOX_DEPTH
from jmapmono.jmap.errors import MethodError, SetError
from jmapmono.jmap.mailbox import PROPERTIES, SERVER_SET, mailbox_json, my_rights
from jmapmono.jmap.method_args import apply_patch, arg_bool, is_id, parse_set, reject_unknown_arguments, set_response
from jmapmono.jmap.registry import MAIL, Invocation, method
from jmapmono.mailbox.mailbox_plan import MailboxCreate, MailboxPatch, NewRef, StateMismatch, Target
from jmapmono.mailbox.mailboxes import UNCHANGED
from jmapmono.mailbox.model import Counts, Mailbox, MailboxError

SET_ARGS = frozenset({"accountId", "ifInState", "create", "update", "destroy", "onDestroyRemoveEmails"})
SETTABLE = ("name", "parentId", "role", "sortOrder", "isSubscribed")
#: What an omitted (or, in an update, null) settable property becomes; name and isSubscribed have no default.
DEFAULTS: dict[str, Any] = {"parentId": None, "role": None, "sortOrder": 0}
_MISSING: Any = object()


class _Invalid(Exception):
    def __init__(self, properties: list[str], description: str) -> None:
        super().__init__(description)
        self.properties = properties
        self.description = description


def _set_error(e: MailboxError) -> SetError:
    if e.set_error == "invalidProperties":
        return SetError("invalidProperties", e.description, properties=e.properties)
    existing_id = getattr(e, "existing_id", None)
    if existing_id is not None:  # alreadyExists names the sibling that holds the name (RFC 8620 §5.4)
        return SetError(e.set_error, e.description, existingId=existing_id)
    return SetError(e.set_error, e.description)


def _parent(inv: Invocation, value: Any, own_creates: dict[str, Any]) -> Target | None:
    """A parentId value: null, an Id, or ``#creationId`` (of this call, or of an earlier one)."""
    if value is None:
        return None
    if isinstance(value, str) and value.startswith("#"):
        if value[1:] in own_creates:
            return NewRef(value[1:])
        if value[1:] in inv.created_ids:
            return inv.created_ids[value[1:]]
        raise _Invalid(["parentId"], f"parentId {value!r} names no mailbox created in this request")
    if not is_id(value):
        raise _Invalid(["parentId"], "parentId must be a mailbox id or null")
    return value


def _check_types(values: dict[str, Any]) -> list[str]:
    """The settable properties in ``values`` whose JSON type is wrong (ranges and names are checked later)."""
    bad = []
    if "name" in values and not isinstance(values["name"], str):
        bad.append("name")
    if "role" in values and values["role"] is not None and not isinstance(values["role"], str):
        bad.append("role")
    order = values.get("sortOrder", 0)
    if not isinstance(order, int) or isinstance(order, bool):
        bad.append("sortOrder")
    if "isSubscribed" in values and not isinstance(values["isSubscribed"], bool):
        bad.append("isSubscribed")
    return bad


def _create_spec(inv: Invocation, key: str, obj: dict[str, Any], own_creates: dict[str, Any]) -> MailboxCreate:
    bad = sorted(p for p in obj if p not in SETTABLE)
    if "name" not in obj:
        bad.append("name")
    bad += _check_types(obj)
    parent: Target | None = None
    try:
        parent = _parent(inv, obj.get("parentId"), own_creates)
    except _Invalid as e:
        bad += e.properties
    if bad:
        server_set = [p for p in bad if p in SERVER_SET]
        detail = f"; {', '.join(server_set)} can only be set by the server" if server_set else ""
        raise _Invalid(sorted(set(bad)), f"invalid properties: {', '.join(sorted(set(bad)))}{detail}")
    return MailboxCreate(
        key,
        obj["name"],
        parent,
        obj.get("role"),
        obj.get("sortOrder", 0),
        obj.get("isSubscribed", True),
    )


def _parents_first(specs: list[MailboxCreate]) -> tuple[list[MailboxCreate], list[MailboxCreate]]:
    """Creations ordered so that each comes after the creation it names as parent; and those in a cycle."""
    pending = {s.key: s for s in specs}
    ordered: list[MailboxCreate] = []
    while pending:
        ready = [s for s in pending.values() if not (isinstance(s.parent, NewRef) and s.parent.key in pending)]
        if not ready:
            break
        for s in ready:
            ordered.append(pending.pop(s.key))
    return ordered, list(pending.values())


def _patch_spec(
    inv: Invocation, target: Target, patch: dict[str, Any], current: dict[str, Any], own_creates: dict[str, Any]
) -> MailboxPatch:
    """A MailboxPatch from a PatchObject; server-set properties may appear only with their current value."""
    patched = apply_patch(current, patch)  # SetError invalidPatch
    touched = {key.split("/")[0].replace("~1", "/").replace("~0", "~") for key in patch}
    bad = sorted(p for p in touched if p not in PROPERTIES)
    bad += sorted(p for p in touched if p in SERVER_SET and patched.get(p, _MISSING) != current.get(p))
    values: dict[str, Any] = {}
    for prop in (p for p in SETTABLE if p in touched):
        value = patched.get(prop, DEFAULTS.get(prop, _MISSING))
        if value is _MISSING:
            bad.append(prop)  # name and isSubscribed cannot be null
        else:
            values[prop] = value
    bad += [p for p in _check_types(values) if p not in bad]
    parent: Any = UNCHANGED
    if "parentId" in values and "parentId" not in bad:
        try:
            parent = _parent(inv, values["parentId"], own_creates)
        except _Invalid:
            bad.append("parentId")
    if bad:
        raise _Invalid(sorted(set(bad)), f"invalid properties: {', '.join(sorted(set(bad)))}")
    return MailboxPatch(
        target,
        name=values.get("name", UNCHANGED),
        parent=parent,
        role=values.get("role", UNCHANGED),
        sort_order=values.get("sortOrder", UNCHANGED),
        subscribed=values.get("isSubscribed", UNCHANGED),
    )


def _new_mailbox_json(spec: MailboxCreate | None) -> dict[str, Any]:
    """What a mailbox created in this call looks like before the call runs (for patches naming it)."""
    role = spec.role if spec is not None and isinstance(spec.role, str) else None
    mb = Mailbox("", "", "", None, role, 0, 0, Counts(), True)
    return {**mailbox_json(mb), "id": None, "myRights": my_rights(role)}


def _response_key(key: Any) -> str:
    return f"#{key.key}" if isinstance(key, NewRef) else key


@method("Mailbox/set", MAIL, writes=True)
def mailbox_set(inv: Invocation) -> dict[str, Any]:
    """Create, update and destroy mailboxes in one operation (see the module doc)."""
    reject_unknown_arguments(inv.args, SET_ARGS)
    args = parse_set(inv, own_references=True)
    remove_emails = arg_bool(inv.args, "onDestroyRemoveEmails", False)
    mgr, account_id, user_id = inv.services.mailboxes, args.account_id, inv.principal.user_id
    not_created: dict[str, SetError] = {}
    not_updated: dict[str, SetError] = {}

    shared = sharing.view(inv)
    child_rights: dict[str, frozenset[str]] = {}
    specs: list[MailboxCreate] = []
    for key, obj in args.create.items():
        try:
            spec = _create_spec(inv, key, obj, args.create)
            if shared is not None:
                child_rights[key] = mailbox_share.check_create(shared, spec.parent)
            specs.append(spec)
        except _Invalid as e:
            not_created[key] = SetError("invalidProperties", e.description, properties=e.properties)
        except SetError as e:
            not_created[key] = e
    specs, cyclic = _parents_first(specs)
    for s in cyclic:
        not_created[s.key] = SetError("invalidProperties", "parentId references form a loop", properties=["parentId"])

    existing = [k for k in args.update if not k.startswith("#")]
    current: dict[str, dict[str, Any]] = {}
    if existing:
        if shared is not None:
            existing = [k for k in existing if k in shared.rights]
        current = {mb.id: mailbox_json(mb) for mb in mgr.get_mailboxes(account_id, existing, user_id)[0]}
    by_key = {s.key: s for s in specs}
    patches: list[MailboxPatch] = []
    share_updates: dict[str, dict[str, Any]] = {}
    for key, full_patch in args.update.items():
        target: Target = NewRef(key[1:]) if key.startswith("#") else key
        if isinstance(target, str) and target not in current:
            not_updated[key] = SetError("notFound", f"no mailbox {key}")
            continue
        record = current[key] if isinstance(target, str) else _new_mailbox_json(by_key.get(key[1:]))
        try:
            share, patch = mailbox_share.split_patch(inv, full_patch)
            if share and not isinstance(target, str):
                raise SetError(
                    "invalidProperties", "shareWith can be set once the mailbox exists", properties=["shareWith"]
                )
            if share:
                share_updates[key] = share
                if not patch:
                    continue
            patch_spec = _patch_spec(inv, target, patch, record, args.create)
            if shared is not None and isinstance(target, str):
                mailbox_share.check_update(shared, target, patch, patch_spec.parent)
            patches.append(patch_spec)
        except SetError as e:
            not_updated[key] = e
        except _Invalid as e:
            not_updated[key] = SetError("invalidProperties", e.description, properties=e.properties)
    destroys: list[Target] = [NewRef(k[1:]) if k.startswith("#") else k for k in args.destroy]
    not_destroyed: dict[str, SetError] = {}
    if shared is not None:
        for target in list(destroys):
            try:
                if not isinstance(target, str):
                    raise SetError("forbidden", "a sharee destroys only mailboxes shared with them")
                mailbox_share.check_destroy(shared, target, remove_emails)
            except SetError as e:
                not_destroyed[_response_key(target)] = e
                destroys.remove(target)

    try:
        result = mgr.set_mailboxes(
            account_id,
            user_id,
            specs,
            patches,
            destroys,
            remove_emails=remove_emails,
            if_in_state=args.if_in_state,
            max_depth=MAX_MAILBOX_DEPTH,
        )
    except StateMismatch as e:
        raise MethodError("stateMismatch", str(e)) from None

    new_state = result.new_state
    for key, share in share_updates.items():
        if key in result.not_updated or key in not_updated:
            continue
        try:
            mailbox_share.apply_share_with(inv, key, share, shared)
            result.updated.setdefault(key, {})
        except SetError as e:
            not_updated[key] = e
            result.updated.pop(key, None)
    for key, rights in child_rights.items():
        made = result.created.get(key)
        if made is not None:
            mgr.share_mailbox(account_id, made.id, user_id, rights, user_id)
    if share_updates or child_rights:
        new_state = inv.services.changes.state(account_id, "Mailbox")

    created: dict[str, Any] = {}
    for s in specs:
        mb = result.created.get(s.key)
        if mb is None:
            continue
        inv.created_ids[s.key] = mb.id
        sent = args.create[s.key]
        full = mailbox_json(mb)
        created[s.key] = {
            p: v for p, v in full.items() if p not in sent or p in SERVER_SET or (p != "parentId" and sent[p] != v)
        }
        if isinstance(sent.get("parentId"), str) and sent["parentId"].startswith("#"):
            created[s.key]["parentId"] = mb.parent_id
    updated: dict[str, Any] = {}
    for mailbox_id, stored in result.updated.items():
        sent = args.update.get(mailbox_id) or args.update.get(f"#{_creation_key(result, mailbox_id)}", {})
        changed = {p: v for p, v in stored.items() if p in sent and sent[p] != v}
        updated[_response_key(mailbox_id)] = changed or None
    return set_response(
        account_id,
        result.old_state,
        new_state,
        created=created,
        updated=updated,
        destroyed=result.destroyed,
        not_created={**not_created, **{k: _set_error(e) for k, e in result.not_created.items()}},
        not_updated={**not_updated, **{_response_key(k): _set_error(e) for k, e in result.not_updated.items()}},
        not_destroyed={**not_destroyed, **{_response_key(k): _set_error(e) for k, e in result.not_destroyed.items()}},
    )


def _creation_key(result: Any, mailbox_id: Any) -> str:
    """The creation key a mailbox id was created under in this call ('' if none)."""
    return next((k for k, mb in result.created.items() if mb.id == mailbox_id), "")

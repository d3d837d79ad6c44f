"""SieveScript/get, /set, /query, /validate (RFC 9661 §2) and SieveScript/changes (RFC 8620 §5.2).

A script's content is a blob (uploaded first, RFC 9661 §2.2); /set compiles it once and keeps the compiled
form, refusing content that is not valid Sieve with ``invalidSieve`` (its description names the line).
At most one script is active: ``isActive`` is server-set and moves only through onSuccessActivateScript and
onSuccessDeactivateScript, processed in that order's reverse after every other change succeeded. A name
left null is given by the server (``script-<id>``). The active script may be destroyed in the same call that
deactivates it; otherwise its destruction is ``sieveIsActive``. /validate answers an unknown blob with the
SetError ``blobNotFound``. /query's state is the SieveScript state; there is no /queryChanges.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from jmapmono.jmap import method_args as std
from jmapmono.jmap.errors import MethodError, SetError
from jmapmono.jmap.filters import filter_matches
from jmapmono.jmap.registry import SIEVE, Invocation, method
from jmapmono.mailbox.changes import CannotCalculateChanges
from jmapmono.mailbox.mailbox_plan import StateMismatch
from jmapmono.mailbox.model import MailboxError
from jmapmono.mailbox.sieve.scripts import TYPE, Change, Content, InvalidSieve, Script

PROPERTIES = ("id", "name", "blobId", "isActive")
FILTER_CONDITIONS = frozenset({"name", "isActive"})
SORT_PROPERTIES = frozenset({"name", "isActive"})


def to_json(s: Script) -> dict[str, Any]:
    return {"id": s.id, "name": s.name, "blobId": s.blob_id, "isActive": s.is_active}


def _set_error(e: MailboxError) -> SetError:
    existing_id = getattr(e, "existing_id", None)
    if existing_id is not None:
        return SetError(e.set_error, e.description, existingId=existing_id)
    if e.set_error == "invalidProperties":
        return SetError(e.set_error, e.description, properties=list(e.properties))
    return SetError(e.set_error, e.description)


@method("SieveScript/get", SIEVE)
def sieve_get(inv: Invocation) -> dict[str, Any]:
    """Standard /get (RFC 9661 §2.3)."""
    std.reject_unknown_arguments(inv.args, ("accountId", "ids", "properties"))
    get = std.parse_get(inv, PROPERTIES)
    scripts, state = inv.services.mailboxes.sieve.get(get.account_id)
    return std.get_response(get, state, {s.id: to_json(s) for s in scripts})


@method("SieveScript/changes", SIEVE)
def sieve_changes(inv: Invocation) -> dict[str, Any]:
    """Standard /changes (RFC 8620 §5.2) over the SieveScript change log."""
    std.reject_unknown_arguments(inv.args, ("accountId", "sinceState", "maxChanges"))
    args = std.parse_changes(inv)
    try:
        c = inv.services.changes.changes_since(args.account_id, TYPE, args.since_state, args.max_changes)
    except CannotCalculateChanges as e:
        raise MethodError("cannotCalculateChanges", str(e)) from None
    return std.changes_response(
        args.account_id, c.old_state, c.new_state, c.has_more_changes, c.created, c.updated, c.destroyed
    )


# --- /set ---------------------------------------------------------------------------------------------------------


def _name(inv: Invocation, value: Any) -> str | None:
    if value is None:
        return None
    limit = inv.services.mailboxes.sieve.limits.max_name_size
    if (
        not isinstance(value, str)
        or not value.strip()
        or len(value.encode()) > limit
        or any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in value)
    ):
        raise SetError(
            "invalidProperties",
            f"name must be a non-empty string of at most {limit} octets, without control characters",
            properties=["name"],
        )
    return unicodedata.normalize("NFC", value)


def content_of(inv: Invocation, blob_id: Any) -> Content:
    """The checked content of ``blob_id``: read (the user's upload or a stored blob of the account; not a body
    part, which has no stored bytes to hold) and compiled."""
    if not std.is_id(blob_id):
        raise SetError("invalidProperties", "blobId must be an Id", properties=["blobId"])
    scripts = inv.services.mailboxes.sieve
    content = inv.services.blobs.read(inv.account_id, blob_id, inv.principal.user_id, resolve=False)
    if content is None:
        raise SetError("blobNotFound", f"no blob {blob_id!r}", notFound=[blob_id])
    if len(content.data) > scripts.limits.max_script_size:
        raise SetError("tooLarge", f"the script is larger than {scripts.limits.max_script_size} octets")
    try:
        compiled = scripts.compile(content.data)
    except InvalidSieve as e:
        raise SetError("invalidSieve", e.description) from None
    return Content(blob_id, compiled)


def _check_keys(obj: dict[str, Any], current: dict[str, Any] | None) -> None:
    bad = sorted(k for k in obj if k not in PROPERTIES)
    if "id" in obj and (current is None or obj["id"] != current["id"]):
        bad.append("id")
    if "isActive" in obj and obj["isActive"] != (current["isActive"] if current else False):
        bad.append("isActive")
    if bad:
        raise SetError("invalidProperties", f"invalid or server-set properties: {', '.join(bad)}", properties=bad)


@method("SieveScript/set", SIEVE, writes=True)
def sieve_set(inv: Invocation) -> dict[str, Any]:
    """Standard /set (RFC 9661 §2.4) with onSuccessActivateScript and onSuccessDeactivateScript."""
    std.reject_unknown_arguments(
        inv.args,
        (
            "accountId",
            "ifInState",
            "create",
            "update",
            "destroy",
            "onSuccessActivateScript",
            "onSuccessDeactivateScript",
        ),
    )
    s = std.parse_set(inv)
    activate = inv.args.get("onSuccessActivateScript")
    if activate is not None and not isinstance(activate, str):
        raise std.invalid("onSuccessActivateScript must be an Id or null")
    deactivate = std.arg_bool(inv.args, "onSuccessDeactivateScript", False)
    if activate is not None and not (activate.startswith("#") and activate[1:] in s.create):
        activate = inv.created_ids.get(activate[1:], activate) if activate.startswith("#") else activate
    store = inv.services.mailboxes.sieve
    current_list, _ = store.get(s.account_id)
    current = {c.id: to_json(c) for c in current_list}
    change = Change(destroy=list(s.destroy), activate=activate, deactivate=deactivate)
    not_created: dict[str, SetError] = {}
    not_updated: dict[str, SetError] = {}
    server_named: set[str] = set()
    for cid, obj in s.create.items():
        try:
            _check_keys(obj, None)
            if "blobId" not in obj:
                raise SetError("invalidProperties", "blobId is required", properties=["blobId"])
            name = _name(inv, obj.get("name"))
            if name is None:
                server_named.add(cid)
            change.create[cid] = (name, content_of(inv, obj["blobId"]))
        except SetError as e:
            not_created[cid] = e
    for script_id, patch in s.update.items():
        if script_id not in current:
            not_updated[script_id] = SetError("notFound", f"no script {script_id!r}")
            continue
        try:
            new = std.apply_patch(current[script_id], patch)
            _check_keys(new, current[script_id])
            name = _name(inv, new.get("name")) if new.get("name") != current[script_id]["name"] else None
            if "name" in new and new["name"] is None:
                raise SetError("invalidProperties", "name cannot be null once set", properties=["name"])
            content = None
            if new.get("blobId") != current[script_id]["blobId"]:
                content = content_of(inv, new.get("blobId"))
            change.update[script_id] = (name, content)
        except SetError as e:
            not_updated[script_id] = e
    if not_created or not_updated:  # activation happens only when every change succeeds
        change.activate, change.deactivate = None, False
    try:
        result = store.apply(s.account_id, change, s.if_in_state)
    except StateMismatch as e:
        raise MethodError("stateMismatch", str(e)) from None
    for cid, script in result.created.items():
        inv.created_ids[cid] = script.id
    created = {}
    for cid, script in result.created.items():
        created[cid] = {"id": script.id, "blobId": script.blob_id, "isActive": script.is_active}
        if cid in server_named:
            created[cid]["name"] = script.name
    updated: dict[str, Any] = {i: None for i in result.updated}
    for script_id in result.activation_changed:
        if script_id not in {c.id for c in result.created.values()}:
            updated[script_id] = {"isActive": script_id == result.active_id}
    return std.set_response(
        s.account_id,
        result.old_state,
        result.new_state,
        created=created,
        updated=updated,
        destroyed=result.destroyed,
        not_created={**not_created, **{k: _set_error(e) for k, e in result.errors.items() if k in s.create}},
        not_updated={**not_updated, **{k: _set_error(e) for k, e in result.errors.items() if k not in s.create}},
        not_destroyed={k: _set_error(e) for k, e in result.destroy_errors.items()},
    )


# --- /query and /validate -----------------------------------------------------------------------------------------


def _matches(script: dict[str, Any], condition: dict[str, Any]) -> bool:
    return filter_matches(condition, FILTER_CONDITIONS, "SieveScript/query", lambda c: _condition(script, c))


def _condition(script: dict[str, Any], condition: dict[str, Any]) -> bool:
    if "name" in condition:
        if not isinstance(condition["name"], str):
            raise std.invalid("the filter condition 'name' must be a string")
        if condition["name"].casefold() not in script["name"].casefold():
            return False
    if "isActive" in condition:
        if not isinstance(condition["isActive"], bool):
            raise std.invalid("the filter condition 'isActive' must be a boolean")
        if script["isActive"] != condition["isActive"]:
            return False
    return True


@method("SieveScript/query", SIEVE)
def sieve_query(inv: Invocation) -> dict[str, Any]:
    """Standard /query (RFC 9661 §2.5): filter on name (contains, case-insensitive) and isActive; sort by
    name and isActive."""
    std.reject_unknown_arguments(
        inv.args, ("accountId", "filter", "sort", "position", "anchor", "anchorOffset", "limit", "calculateTotal")
    )
    query = std.parse_query(inv)
    for c in query.sort:
        if c.property not in SORT_PROPERTIES:
            raise MethodError("unsupportedSort", f"SieveScript/query cannot sort by {c.property!r}")
    scripts, state = inv.services.mailboxes.sieve.get(query.account_id)
    records = [to_json(s) for s in scripts if query.filter is None or _matches(to_json(s), query.filter)]
    records.sort(key=lambda r: r["id"])
    for c in reversed(query.sort):
        if c.property == "name":
            records.sort(key=lambda r: r["name"].casefold(), reverse=not c.is_ascending)
        else:
            records.sort(key=lambda r: r["isActive"], reverse=not c.is_ascending)
    ids = [r["id"] for r in records]
    position, page, limit = std.query_window(query, ids)
    return std.query_response(query, state, position, page, len(ids), limit=limit)


@method("SieveScript/validate", SIEVE)
def sieve_validate(inv: Invocation) -> dict[str, Any]:
    """RFC 9661 §2.6: whether the blob's content is a script this server would accept; nothing is stored."""
    std.reject_unknown_arguments(inv.args, ("accountId", "blobId"))
    blob_id = std.arg_id(inv.args, "blobId")
    try:
        content_of(inv, blob_id)
        error = None
    except SetError as e:
        error = e.to_json()
    return {"accountId": inv.account_id, "error": error}

"""Shared argument handling for the standard methods (RFC 8620 §5): /get, /changes, /set, /query, /queryChanges.

Every data type validates its arguments through these helpers so the rules
live in one place: argument types (Id, Int, UnsignedInt, Boolean), the
maxObjectsInGet / maxObjectsInSet limits (``requestTooLarge``), ``properties``
(``id`` always returned; unknown property → ``invalidArguments``), ``ids: []``
→ empty list, ``ifInState`` → ``stateMismatch``, PatchObjects, and the
position/anchor window of /query. The data type supplies only the data.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard, overload

from jmapmono.jmap.errors import MethodError, SetError
from jmapmono.jmap.registry import Invocation

MAX_INT = 2**53 - 1
_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")
_MISSING: Any = object()


def is_id(value: Any) -> TypeGuard[str]:
    """An RFC 8620 §1.2 Id: 1–255 characters of the URL-safe base64 alphabet."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def invalid(description: str) -> MethodError:
    return MethodError("invalidArguments", description)


# --- argument types ------------------------------------------------------------------------------------------------


def arg(args: Mapping[str, Any], name: str, default: Any = _MISSING) -> Any:
    """The argument ``name``; invalidArguments when it is missing and has no default."""
    if name in args:
        return args[name]
    if default is _MISSING:
        raise invalid(f"{name!r} is required")
    return default


def _defaulted(args: Mapping[str, Any], name: str, default: Any, nullable: bool) -> Any:
    """Like :func:`arg`, but a null given for an argument that has a default and is not nullable takes the
    default, as omitting it does (clients send ``"position": null``; the server is lenient about it)."""
    value = arg(args, name, default)
    return default if value is None and not nullable and default is not _MISSING else value


# Each arg_* below returns None only when ``nullable`` (else it raises): the overloads say so.
@overload
def arg_int(
    args: Mapping[str, Any], name: str, default: Any = ..., *, minimum: int = ..., nullable: Literal[False] = ...
) -> int: ...
@overload
def arg_int(
    args: Mapping[str, Any], name: str, default: Any = ..., *, minimum: int = ..., nullable: bool
) -> int | None: ...
def arg_int(
    args: Mapping[str, Any], name: str, default: Any = _MISSING, *, minimum: int = -MAX_INT, nullable: bool = False
) -> int | None:
    """An Int (or, with ``minimum=0``, an UnsignedInt) within ±(2^53-1)."""
    value = _defaulted(args, name, default, nullable)
    if value is None and nullable:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= MAX_INT:
        kind = "an UnsignedInt" if minimum == 0 else "an Int" if minimum == -MAX_INT else f"an integer ≥ {minimum}"
        raise invalid(f"{name!r} must be {kind}{' or null' if nullable else ''}")
    return value


@overload
def arg_unsigned_int(
    args: Mapping[str, Any], name: str, default: Any = ..., *, nullable: Literal[False] = ...
) -> int: ...
@overload
def arg_unsigned_int(args: Mapping[str, Any], name: str, default: Any = ..., *, nullable: bool) -> int | None: ...
def arg_unsigned_int(
    args: Mapping[str, Any], name: str, default: Any = _MISSING, *, nullable: bool = False
) -> int | None:
    return arg_int(args, name, default, minimum=0, nullable=nullable)


def arg_bool(args: Mapping[str, Any], name: str, default: Any = _MISSING) -> bool:
    value = _defaulted(args, name, default, False)
    if not isinstance(value, bool):
        raise invalid(f"{name!r} must be true or false")
    return value


@overload
def arg_str(args: Mapping[str, Any], name: str, default: Any = ..., *, nullable: Literal[False] = ...) -> str: ...
@overload
def arg_str(args: Mapping[str, Any], name: str, default: Any = ..., *, nullable: bool) -> str | None: ...
def arg_str(args: Mapping[str, Any], name: str, default: Any = _MISSING, *, nullable: bool = False) -> str | None:
    value = _defaulted(args, name, default, nullable)
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        raise invalid(f"{name!r} must be a string{' or null' if nullable else ''}")
    return value


@overload
def arg_id(args: Mapping[str, Any], name: str, default: Any = ..., *, nullable: Literal[False] = ...) -> str: ...
@overload
def arg_id(args: Mapping[str, Any], name: str, default: Any = ..., *, nullable: bool) -> str | None: ...
def arg_id(args: Mapping[str, Any], name: str, default: Any = _MISSING, *, nullable: bool = False) -> str | None:
    value = _defaulted(args, name, default, nullable)
    if value is None and nullable:
        return None
    if not is_id(value):
        raise invalid(f"{name!r} must be an Id (1-255 characters of A-Z a-z 0-9 _ -)")
    return value


def arg_object(args: Mapping[str, Any], name: str, default: Any = _MISSING, *, nullable: bool = True) -> dict | None:
    value = arg(args, name, default)
    if value is None and nullable:
        return None
    if not isinstance(value, dict):
        raise invalid(f"{name!r} must be an object{' or null' if nullable else ''}")
    return value


def resolve_id(inv: Invocation, value: Any, name: str) -> str:
    """An Id, or ``#creationId`` of a record created earlier in the request (§5.3)."""
    if isinstance(value, str) and value.startswith("#"):
        return inv.resolve_id(value)
    if not is_id(value):
        raise invalid(f"{name!r} contains {value!r}, which is not an Id")
    return value


def arg_id_list(
    inv: Invocation, name: str, default: Any = _MISSING, *, nullable: bool = True, unique: bool = True
) -> list[str] | None:
    """An Id[] (``#creationId`` references resolved), de-duplicated in order; None when null."""
    value = arg(inv.args, name, default)
    if value is None and nullable:
        return None
    if not isinstance(value, list):
        raise invalid(f"{name!r} must be an array of Ids{' or null' if nullable else ''}")
    ids = [resolve_id(inv, v, name) for v in value]
    return list(dict.fromkeys(ids)) if unique else ids


def reject_unknown_arguments(args: Mapping[str, Any], known: Collection[str]) -> None:
    """invalidArguments naming every argument the method does not define."""
    unknown = sorted(k for k in args if k not in known)
    if unknown:
        raise MethodError("invalidArguments", f"unknown arguments: {', '.join(unknown)}", arguments=unknown)


# --- limits and states ---------------------------------------------------------------------------------------------


def check_max_objects_in_get(inv: Invocation, count: int) -> None:
    limit = inv.services.config.limits.max_objects_in_get
    if count > limit:
        raise MethodError("requestTooLarge", f"{count} objects requested; maxObjectsInGet is {limit}")


def check_max_objects_in_set(inv: Invocation, count: int) -> None:
    limit = inv.services.config.limits.max_objects_in_set
    if count > limit:
        raise MethodError("requestTooLarge", f"{count} objects to change; maxObjectsInSet is {limit}")


def check_if_in_state(if_in_state: str | None, current_state: str) -> None:
    """stateMismatch unless ``ifInState`` is null or equals the current state (never ignored)."""
    if if_in_state is not None and if_in_state != current_state:
        raise MethodError("stateMismatch", f"ifInState {if_in_state!r} is not the current state {current_state!r}")


# --- /get ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GetArgs:
    account_id: str
    #: None = every record (the handler checks the count with check_max_objects_in_get).
    ids: list[str] | None
    #: Always starts with "id".
    properties: list[str]


def parse_properties(
    args: Mapping[str, Any], known: Sequence[str], default: Sequence[str] | None = None, name: str = "properties"
) -> list[str]:
    """``properties``: null → ``default`` (else every known one); unknown → invalidArguments; ``id`` always."""
    value = args.get(name)
    if value is None:
        chosen = list(default if default is not None else known)
    else:
        if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
            raise invalid(f"{name!r} must be an array of property names or null")
        unknown = [p for p in value if p not in known]
        if unknown:
            raise MethodError("invalidArguments", f"unknown properties: {', '.join(unknown)}", properties=unknown)
        chosen = list(dict.fromkeys(value))
    return ["id", *[p for p in chosen if p != "id"]]


def parse_get(inv: Invocation, properties: Sequence[str], default_properties: Sequence[str] | None = None) -> GetArgs:
    """Validate a /get call: ``ids`` (Id[]|null, ``[]`` → nothing), ``properties``, maxObjectsInGet."""
    ids = arg_id_list(inv, "ids", None)
    if ids is not None:
        check_max_objects_in_get(inv, len(ids))
    return GetArgs(inv.account_id, ids, parse_properties(inv.args, properties, default_properties))


def project(record: Mapping[str, Any], properties: Iterable[str]) -> dict[str, Any]:
    """Only the requested properties of ``record`` (which must hold every one of them)."""
    return {p: record[p] for p in properties}


def get_response(get: GetArgs, state: str, records: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The /get response from the records found (id → full record): ``list`` in ``ids`` order, ``notFound``."""
    if get.ids is None:
        found, not_found = list(records.values()), []
    else:
        found = [records[i] for i in get.ids if i in records]
        not_found = [i for i in get.ids if i not in records]
    return {
        "accountId": get.account_id,
        "state": state,
        "list": [project(r, get.properties) for r in found],
        "notFound": not_found,
    }


# --- /changes ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChangesArgs:
    account_id: str
    since_state: str
    max_changes: int | None


def parse_changes(inv: Invocation, state_name: str = "sinceState") -> ChangesArgs:
    """Validate a /changes (or /queryChanges) call: ``sinceState`` string, ``maxChanges`` positive or null."""
    since = arg_str(inv.args, state_name)
    max_changes = arg_int(inv.args, "maxChanges", None, minimum=1, nullable=True)
    return ChangesArgs(inv.account_id, since, max_changes)


def changes_response(
    account_id: str,
    old_state: str,
    new_state: str,
    has_more_changes: bool,
    created: Sequence[str],
    updated: Sequence[str],
    destroyed: Sequence[str],
) -> dict[str, Any]:
    return {
        "accountId": account_id,
        "oldState": old_state,
        "newState": new_state,
        "hasMoreChanges": has_more_changes,
        "created": list(created),
        "updated": list(updated),
        "destroyed": list(destroyed),
    }


# --- /set ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SetArgs:
    account_id: str
    if_in_state: str | None
    #: creation id → object
    create: dict[str, dict[str, Any]]
    #: id (``#creationId`` resolved) → PatchObject
    update: dict[str, dict[str, Any]]
    destroy: list[str]


def parse_set(inv: Invocation, *, own_references: bool = False) -> SetArgs:
    """Validate a /set call's types and maxObjectsInSet. The handler calls :func:`check_if_in_state` itself,
    inside the transaction that reads the current state.

    ``own_references``: ``#creationId`` keys of ``update`` and items of ``destroy`` naming a record this same
    call creates stay unresolved (``"#x"``) for the handler, which resolves them after its creations (§5.3).
    """
    if_in_state = arg_str(inv.args, "ifInState", None, nullable=True)
    create = arg_object(inv.args, "create", None) or {}
    for cid, obj in create.items():
        if not is_id(cid):
            raise invalid(f"creation id {cid!r} is not an Id")
        if not isinstance(obj, dict):
            raise invalid(f"create[{cid!r}] must be an object")

    def ref(value: Any, name: str) -> str:
        if own_references and isinstance(value, str) and value.startswith("#") and value[1:] in create:
            return value
        return resolve_id(inv, value, name)

    update: dict[str, dict[str, Any]] = {}
    for key, patch in (arg_object(inv.args, "update", None) or {}).items():
        if not isinstance(patch, dict):
            raise invalid(f"update[{key!r}] must be a PatchObject")
        update[ref(key, "update")] = patch
    destroy_arg = arg(inv.args, "destroy", None)
    if destroy_arg is not None and not isinstance(destroy_arg, list):
        raise invalid("'destroy' must be an array of Ids or null")
    destroy = list(dict.fromkeys(ref(v, "destroy") for v in destroy_arg or []))
    check_max_objects_in_set(inv, len(create) + len(update) + len(destroy))
    return SetArgs(inv.account_id, if_in_state, create, update, destroy)


def set_response(
    account_id: str,
    old_state: str | None,
    new_state: str,
    *,
    created: Mapping[str, Any] | None = None,
    updated: Mapping[str, Any] | None = None,
    destroyed: Sequence[str] | None = None,
    not_created: Mapping[str, SetError] | None = None,
    not_updated: Mapping[str, SetError] | None = None,
    not_destroyed: Mapping[str, SetError] | None = None,
) -> dict[str, Any]:
    """The /set response: empty maps and lists become null, SetErrors become their JSON form."""

    def errors(m: Mapping[str, SetError] | None) -> dict[str, Any] | None:
        return {k: e.to_json() for k, e in m.items()} if m else None

    return {
        "accountId": account_id,
        "oldState": old_state,
        "newState": new_state,
        "created": dict(created) if created else None,
        "updated": dict(updated) if updated else None,
        "destroyed": list(destroyed) if destroyed else None,
        "notCreated": errors(not_created),
        "notUpdated": errors(not_updated),
        "notDestroyed": errors(not_destroyed),
    }


def apply_patch(record: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """Apply a PatchObject (§5.3) to a copy of ``record``; SetError ``invalidPatch`` when a path breaks the rules.

    Paths are JSON Pointers without the leading "/"; they may not reach into arrays, every parent must exist,
    and no path may be a prefix of another. A null value removes the property (the caller applies defaults).
    """
    for key in patch:
        parts = key.split("/")
        for n in range(1, len(parts)):
            if "/".join(parts[:n]) in patch:
                raise SetError("invalidPatch", f"patch paths {'/'.join(parts[:n])!r} and {key!r} overlap")
    paths = {key: [t.replace("~1", "/").replace("~0", "~") for t in key.split("/")] for key in patch}
    out = _copy_objects(record)
    for key, tokens in paths.items():
        if not key or any(t == "" for t in tokens):
            raise SetError("invalidPatch", f"invalid patch path {key!r}")
        target = out
        for token in tokens[:-1]:
            child = target.get(token) if isinstance(target, dict) else None
            if not isinstance(child, dict):
                raise SetError("invalidPatch", f"patch path {key!r} does not lead to an object")
            target = child
        value = patch[key]
        if value is None:
            target.pop(tokens[-1], None)
        else:
            target[tokens[-1]] = value
    return out


def _copy_objects(value: Any) -> Any:
    """Copy nested objects (arrays are replaced whole by patches, so they can be shared)."""
    return {k: _copy_objects(v) for k, v in value.items()} if isinstance(value, Mapping) else value


# --- /query --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparator:
    property: str
    is_ascending: bool
    collation: str | None
    #: The whole Comparator object, for type-specific extra properties (e.g. Email's "keyword").
    raw: dict[str, Any]


@dataclass(frozen=True)
class QueryArgs:
    account_id: str
    filter: dict[str, Any] | None
    sort: list[Comparator]
    position: int
    anchor: str | None
    anchor_offset: int
    limit: int | None
    calculate_total: bool


def _check_filter(value: Any, depth: int = 0) -> None:
    if depth > 64:
        raise invalid("'filter' is nested too deeply")
    if not isinstance(value, dict):
        raise invalid("'filter' must be a FilterOperator or FilterCondition object")
    if "operator" in value:
        if value["operator"] not in ("AND", "OR", "NOT"):
            raise invalid(f"filter operator must be AND, OR or NOT, not {value['operator']!r}")
        conditions = value.get("conditions")
        if not isinstance(conditions, list):
            raise invalid("a FilterOperator needs a 'conditions' array")
        for condition in conditions:
            _check_filter(condition, depth + 1)


def parse_query(inv: Invocation) -> QueryArgs:
    """Validate a /query call's generic arguments; collations must be advertised in the Session."""
    args = inv.args
    filter_ = args.get("filter")
    if filter_ is not None:
        _check_filter(filter_)
    sort_arg = args.get("sort")
    if sort_arg is not None and not isinstance(sort_arg, list):
        raise invalid("'sort' must be an array of Comparators or null")
    sort = []
    collations = inv.services.config.limits.collation_algorithms
    for c in sort_arg or []:
        if not isinstance(c, dict) or not isinstance(c.get("property"), str):
            raise invalid("each Comparator needs a 'property' string")
        collation = arg_str(c, "collation", None, nullable=True)
        if collation is not None and collation not in collations:
            raise MethodError("unsupportedSort", f"collation {collation!r} is not supported")
        sort.append(Comparator(c["property"], arg_bool(c, "isAscending", True), collation, c))
    return QueryArgs(
        account_id=inv.account_id,
        filter=filter_,
        sort=sort,
        position=arg_int(args, "position", 0),
        anchor=arg_id(args, "anchor", None, nullable=True),
        anchor_offset=arg_int(args, "anchorOffset", 0),
        limit=arg_unsigned_int(args, "limit", None, nullable=True),
        calculate_total=arg_bool(args, "calculateTotal", False),
    )


def query_window(
    query: QueryArgs, ids: Sequence[str], max_limit: int | None = None
) -> tuple[int, list[str], int | None]:
    """Apply position/anchor/limit (§5.5) to the full sorted result: (position, page, limit to report or None).

    anchorNotFound when the anchor is not in the results; ``max_limit`` clamps the limit (then reported).
    """
    total = len(ids)
    if query.anchor is not None:
        try:
            index = list(ids).index(query.anchor)
        except ValueError:
            raise MethodError("anchorNotFound", f"anchor {query.anchor!r} is not in the results") from None
        position = max(0, index + query.anchor_offset)
    else:
        position = query.position if query.position >= 0 else max(0, total + query.position)
    limit, reported = query.limit, None
    if max_limit is not None and (limit is None or limit > max_limit):
        limit = reported = max_limit
    end = total if limit is None else position + limit
    return position, list(ids[position:end]), reported


def query_response(
    query: QueryArgs,
    query_state: str,
    position: int,
    ids: Sequence[str],
    total: int,
    *,
    can_calculate_changes: bool = False,
    limit: int | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "accountId": query.account_id,
        "queryState": query_state,
        "canCalculateChanges": can_calculate_changes,
        "position": position,
        "ids": list(ids),
    }
    if query.calculate_total:
        out["total"] = total
    if limit is not None:
        out["limit"] = limit
    return out

"""Principal/get, Principal/changes and Principal/query (RFC 9670 §3): the users one may share with.

Principals are individuals only: one per user, its id the user's account id (opaque and stable). A user sees
the users of their own email domain (a household or a team is one domain; other domains on the same server
are not listed), at most ``maxObjectsInGet`` of them. The Principal state is a digest of that list:
Principal/changes answers cannotCalculateChanges whenever it moved, and the client fetches the list again.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from jmapmono.jmap.errors import MethodError
from jmapmono.jmap.filters import filter_matches
from jmapmono.jmap.method_args import (
    changes_response,
    get_response,
    parse_changes,
    parse_get,
    parse_query,
    query_response,
    query_window,
    reject_unknown_arguments,
)
from jmapmono.jmap.registry import MAIL, PRINCIPALS, PRINCIPALS_OWNER, Invocation, capability, method

if TYPE_CHECKING:
    from jmapmono.accounts.principal import Principal
    from jmapmono.accounts.users import AccountAccess, User
    from jmapmono.jmap.context import JmapServices

PROPERTIES = ["id", "type", "name", "description", "email", "timeZone", "capabilities", "accounts"]
FILTERS = frozenset({"accountIds", "email", "name", "text", "type", "timeZone"})


def _domain(email: str) -> str:
    return email.rpartition("@")[2]


def visible_users(inv: Invocation) -> list[User]:
    """The users of the caller's domain, by email; requestTooLarge beyond maxObjectsInGet."""
    domain = _domain(inv.principal.email)
    users = [u for u in inv.services.accounts.list() if _domain(u.email) == domain]
    limit = inv.services.config.limits.max_objects_in_get
    if len(users) > limit:
        raise MethodError("requestTooLarge", f"more than maxObjectsInGet ({limit}) principals")
    return users


def _state(users: list[User]) -> str:
    digest = hashlib.sha256("\n".join(f"{u.account_id}\t{u.email}" for u in users).encode()).hexdigest()
    return digest[:16]


def _record(inv: Invocation, user: User) -> dict[str, Any]:
    own = user.id == inv.principal.user_id
    return {
        "id": user.account_id,
        "type": "individual",
        "name": user.email,
        "description": None,
        "email": user.email,
        "timeZone": None,
        "capabilities": {},
        # RFC 9670 §2: the accounts the principal owns, shown to the user only for accounts they can see.
        "accounts": {user.account_id: {MAIL: {}}} if own else None,
    }


@method("Principal/get", PRINCIPALS)
def principal_get(inv: Invocation) -> dict[str, Any]:
    reject_unknown_arguments(inv.args, {"accountId", "ids", "properties"})
    get = parse_get(inv, PROPERTIES)
    users = visible_users(inv)
    return get_response(get, _state(users), {u.account_id: _record(inv, u) for u in users})


@method("Principal/changes", PRINCIPALS)
def principal_changes(inv: Invocation) -> dict[str, Any]:
    reject_unknown_arguments(inv.args, {"accountId", "sinceState", "maxChanges"})
    args = parse_changes(inv)
    state = _state(visible_users(inv))
    if args.since_state != state:
        raise MethodError("cannotCalculateChanges", "the principals changed: fetch them again")
    return changes_response(args.account_id, state, state, False, [], [], [])


def _matches(record: dict[str, Any], f: dict[str, Any]) -> bool:
    return filter_matches(f, FILTERS, "Principal/query", lambda c: _condition(record, c))


def _condition(record: dict[str, Any], f: dict[str, Any]) -> bool:
    for name, value in f.items():
        if name == "accountIds":
            if not isinstance(value, list) or not set(value) & set(record["accounts"] or {}):
                return False
            continue
        if not isinstance(value, str):
            raise MethodError("invalidArguments", f"filter {name!r} must be a string")
        if name == "type" and record["type"] != value:
            return False
        if name == "timeZone" and record["timeZone"] != value:
            return False
        if name in ("email", "name") and value.casefold() not in (record[name] or "").casefold():
            return False
        if name == "text" and value.casefold() not in f"{record['name']} {record['email']}".casefold():
            return False
    return True


@method("Principal/query", PRINCIPALS)
def principal_query(inv: Invocation) -> dict[str, Any]:
    reject_unknown_arguments(
        inv.args, {"accountId", "filter", "sort", "position", "anchor", "anchorOffset", "limit", "calculateTotal"}
    )
    query = parse_query(inv)
    for c in query.sort:
        if c.property not in ("name", "email"):
            raise MethodError("unsupportedSort", f"Principals cannot be sorted by {c.property!r}")
    users = visible_users(inv)
    records = [_record(inv, u) for u in users]
    if query.filter is not None:
        records = [r for r in records if _matches(r, query.filter)]
    for c in reversed(query.sort):
        prop = c.property

        def key(record: dict[str, Any], prop: str = prop) -> str:
            return str(record[prop]).casefold()

        records.sort(key=key, reverse=not c.is_ascending)
    ids = [r["id"] for r in records]
    position, page, _ = query_window(query, ids)
    return query_response(query, _state(users), min(position, len(ids)), page, len(ids))


def _principals_account(services: JmapServices, account_id: str) -> dict[str, Any]:
    return {"currentUserPrincipalId": None}


def _principals_for(services: JmapServices, account_id: str, principal: Principal, access: AccountAccess) -> dict:
    return {"currentUserPrincipalId": principal.account_id}


def _owner_account(services: JmapServices, account_id: str) -> dict[str, Any]:
    return {"accountIdForPrincipal": account_id, "principalId": account_id}


def _empty(services: JmapServices) -> dict[str, Any]:
    return {}


capability(PRINCIPALS, _empty, _principals_account, user_account_value=_principals_for)
capability(PRINCIPALS_OWNER, _empty, _owner_account, primary=False)

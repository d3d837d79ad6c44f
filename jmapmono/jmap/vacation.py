"""VacationResponse/get and VacationResponse/set (RFC 8621 §8).

There is exactly one VacationResponse per account, id "singleton": it cannot be created or destroyed
(SetError ``singleton``), only updated. The replies it sends: :mod:`jmapmono.sending.vacation`.
"""

from __future__ import annotations

from typing import Any

from jmapmono.jmap import method_args as std
from jmapmono.jmap.errors import MethodError, SetError
from jmapmono.jmap.registry import VACATION, Invocation, method
from jmapmono.jmap.submission import parse_utc_date, utc_date
from jmapmono.mailbox.identities import StateMismatch
from jmapmono.sending.vacation import SINGLETON, VacationSettings

PROPERTIES = ("id", "isEnabled", "fromDate", "toDate", "subject", "textBody", "htmlBody")
#: JMAP property -> VacationSettings field.
FIELDS = {
    "isEnabled": "is_enabled",
    "fromDate": "from_date",
    "toDate": "to_date",
    "subject": "subject",
    "textBody": "text_body",
    "htmlBody": "html_body",
}
#: Longest subject / body kept (characters).
MAX_TEXT = 1_000_000


def to_json(v: VacationSettings) -> dict[str, Any]:
    return {
        "id": SINGLETON,
        "isEnabled": v.is_enabled,
        "fromDate": None if v.from_date is None else utc_date(v.from_date),
        "toDate": None if v.to_date is None else utc_date(v.to_date),
        "subject": v.subject,
        "textBody": v.text_body,
        "htmlBody": v.html_body,
    }


@method("VacationResponse/get", VACATION)
def vacation_get(inv: Invocation) -> dict[str, Any]:
    """Standard /get: the singleton (``ids: null`` or ``["singleton"]``); any other id is notFound."""
    std.reject_unknown_arguments(inv.args, ("accountId", "ids", "properties"))
    get = std.parse_get(inv, PROPERTIES)
    settings, state = inv.services.vacation.get(get.account_id)
    return std.get_response(get, state, {SINGLETON: to_json(settings)})


def _values(current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """The changed settings after ``patch``; SetError invalidProperties naming every bad property."""
    new = std.apply_patch(current, patch)
    bad = sorted(k for k in new if k not in PROPERTIES)
    if new.get("id", SINGLETON) != SINGLETON:
        bad.append("id")
    values: dict[str, Any] = {}
    for prop, name in FIELDS.items():
        value = new.get(prop)
        if prop == "isEnabled":
            if not isinstance(value, bool):
                bad.append(prop)
                continue
        elif prop in ("fromDate", "toDate"):
            if value is not None:
                value = parse_utc_date(value)
                if value is None:
                    bad.append(prop)
                    continue
        elif value is not None and (not isinstance(value, str) or len(value) > MAX_TEXT):
            bad.append(prop)
            continue
        values[name] = value
    if bad:
        raise SetError("invalidProperties", f"invalid properties: {', '.join(bad)}", properties=bad)
    return values


@method("VacationResponse/set", VACATION, writes=True)
def vacation_set(inv: Invocation) -> dict[str, Any]:
    """Standard /set on the singleton: create and destroy are refused with ``singleton``."""
    std.reject_unknown_arguments(inv.args, ("accountId", "ifInState", "create", "update", "destroy"))
    s = std.parse_set(inv)
    store = inv.services.vacation
    settings, state = store.get(s.account_id)
    std.check_if_in_state(s.if_in_state, state)
    not_created = {
        cid: SetError("singleton", 'there is exactly one VacationResponse, id "singleton": update it')
        for cid in s.create
    }
    not_destroyed = {i: SetError("singleton", "the VacationResponse cannot be destroyed") for i in s.destroy}
    not_updated: dict[str, SetError] = {}
    values = None
    changed_by_server = None
    for key, patch in s.update.items():
        if key != SINGLETON:
            not_updated[key] = SetError("notFound", f"the only VacationResponse is {SINGLETON!r}")
            continue
        try:
            values = _values(to_json(settings), patch)
        except SetError as e:
            not_updated[key] = e
            continue
        # RFC 8620 §5.3: what is stored otherwise than the patch set it (e.g. a date's zero fraction dropped)
        wanted, stored = std.apply_patch(to_json(settings), patch), to_json(VacationSettings(**values))
        changed_by_server = {p: v for p, v in stored.items() if wanted.get(p) != v} or None
    old, new = state, state
    if values is not None:
        try:
            old, new = store.update(s.account_id, values, s.if_in_state)
        except StateMismatch as e:
            raise MethodError("stateMismatch", e.description) from None
    return std.set_response(
        s.account_id,
        old,
        new,
        updated={SINGLETON: changed_by_server} if values is not None else None,
        not_created=not_created,
        not_updated=not_updated,
        not_destroyed=not_destroyed,
    )

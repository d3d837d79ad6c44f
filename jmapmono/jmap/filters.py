"""Filters evaluated in memory, for the types whose objects are few (Quota, SieveScript, Principal,
ShareNotification): a FilterOperator tree of FilterConditions (RFC 8620 §5.5), already checked for shape by
:func:`jmapmono.jmap.method_args.parse_query`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jmapmono.jmap.errors import MethodError


def filter_matches(
    f: dict[str, Any], conditions: frozenset[str], what: str, condition_holds: Callable[[dict[str, Any]], bool]
) -> bool:
    """Whether ``f`` holds, ``condition_holds`` deciding each FilterCondition; a condition naming a property
    outside ``conditions`` is ``unsupportedFilter`` (every branch is checked, whatever the others gave)."""
    if "operator" in f:
        results = [filter_matches(c, conditions, what, condition_holds) for c in f.get("conditions") or []]
        if f["operator"] == "AND":
            return all(results)
        if f["operator"] == "OR":
            return any(results)
        return not any(results)
    unknown = sorted(set(f) - conditions)
    if unknown:
        raise MethodError("unsupportedFilter", f"{what} cannot filter on {', '.join(unknown)}")
    return condition_holds(f)

"""In-memory filters (RFC 8620 §5.5): "A FilterOperator object ... operator: AND / OR / NOT ... conditions"."""

from __future__ import annotations

import pytest

from jmapmono.jmap.errors import MethodError
from jmapmono.jmap.filters import filter_matches

KNOWN = frozenset({"name"})


def holds(f: dict, name: str = "alice") -> bool:
    return filter_matches(f, KNOWN, "Thing/query", lambda c: c["name"] == name)


def test_operators_combine_conditions():
    yes, no = {"name": "alice"}, {"name": "bob"}
    assert holds(yes) and not holds(no)
    assert not holds({"operator": "AND", "conditions": [yes, no]})
    assert holds({"operator": "OR", "conditions": [no, yes]})
    assert holds({"operator": "NOT", "conditions": [no]}) and not holds({"operator": "NOT", "conditions": [no, yes]})
    assert holds({"operator": "AND", "conditions": []}) and not holds({"operator": "OR", "conditions": []})


def test_an_unknown_condition_is_unsupported_in_any_branch():
    """RFC 8620 §5.5: "unsupportedFilter: The filter is syntactically valid, but the server cannot process
    it" — even behind a branch that already decided the answer."""
    with pytest.raises(MethodError) as e:
        holds({"operator": "OR", "conditions": [{"name": "alice"}, {"colour": "red"}]})
    assert e.value.type == "unsupportedFilter" and "Thing/query cannot filter on colour" in str(e.value)

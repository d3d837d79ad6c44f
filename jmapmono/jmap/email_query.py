"""Email/query and Email/queryChanges (RFC 8621 §4.4, §4.5).

The JMAP filter and sort become mailbox-layer search conditions (jmapmono/mailbox/search_sql.py),
which the database evaluates with its indexes; see search_query.py for the two query paths and
search.py for how text matches. The query state is the Email state. Email/queryChanges is exact
for the indexed views (inMailbox or no filter, sorted by receivedAt only, collapsed or not) and
answers cannotCalculateChanges for other queries unless nothing changed at all.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from jmapmono.jmap import sharing
from jmapmono.jmap.errors import MethodError
from jmapmono.jmap.method_args import (
    QueryArgs,
    arg_bool,
    arg_id,
    arg_str,
    arg_unsigned_int,
    invalid,
    is_id,
    parse_query,
    query_response,
    reject_unknown_arguments,
)
from jmapmono.jmap.registry import MAIL, Invocation, method
from jmapmono.log import kv
from jmapmono.mailbox.changes import CannotCalculateChanges
from jmapmono.mailbox.search import parse_terms
from jmapmono.mailbox.search_query import (
    COLLATIONS,
    AnchorNotFound,
    TooManyChanges,
    Window,
    query_changes,
    run_query,
)
from jmapmono.mailbox.search_sql import (
    TEXT_FIELDS,
    AllOf,
    AnyOf,
    Cond,
    EmailQuery,
    HasAttachment,
    HasKeyword,
    Header,
    InMailbox,
    InMailboxOtherThan,
    NoneOf,
    ReceivedBefore,
    ReceivedSince,
    SizeAtLeast,
    SizeBelow,
    Sort,
    Text,
    ThreadKeyword,
)

log = logging.getLogger(__name__)

#: Conditions, search terms and mailbox ids one filter may hold (bounds the SQL it becomes).
MAX_FILTER_SIZE = 1000
_COMMON_ARGS = {"accountId", "filter", "sort", "collapseThreads", "calculateTotal"}
QUERY_ARGS = frozenset(_COMMON_ARGS | {"position", "anchor", "anchorOffset", "limit"})
QUERY_CHANGES_ARGS = frozenset(_COMMON_ARGS | {"sinceQueryState", "maxChanges", "upToId"})
#: Arguments with a default (RFC 8620 §5.5, RFC 8621 §4.4) that a client may also send as null.
_DEFAULTED = ("position", "anchorOffset", "calculateTotal", "collapseThreads")

FILTER_CONDITIONS = (
    "inMailbox",
    "inMailboxOtherThan",
    "before",
    "after",
    "minSize",
    "maxSize",
    "allInThreadHaveKeyword",
    "someInThreadHaveKeyword",
    "noneInThreadHaveKeyword",
    "hasKeyword",
    "notKeyword",
    "hasAttachment",
    "text",
    "from",
    "to",
    "cc",
    "bcc",
    "subject",
    "body",
    "header",
)
#: JMAP sort property → mailbox-layer sort key.
SORT_PROPERTIES = {
    "receivedAt": "received",
    "sentAt": "sent",
    "size": "size",
    "from": "from",
    "to": "to",
    "subject": "subject",
    "hasKeyword": "keyword",
    "allInThreadHaveKeyword": "thread_all_keyword",
    "someInThreadHaveKeyword": "thread_some_keyword",
}
_THREAD_MODES = {"allInThreadHaveKeyword": "all", "someInThreadHaveKeyword": "some", "noneInThreadHaveKeyword": "none"}
_UTC_DATE = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FIELD_NAME = re.compile(r"[!-9;-~]+")


# --- the filter ----------------------------------------------------------------------------------------------------


def utc_date_filter(name: str, value: Any) -> int:
    """A UTCDate (RFC 3339 date-time; any offset accepted) in milliseconds since the epoch."""
    if not isinstance(value, str) or not _UTC_DATE.fullmatch(value):
        raise invalid(f"filter {name!r} must be a UTCDate such as 2024-01-31T09:30:00Z")
    text = value.upper().replace("Z", "+00:00")
    head, _, rest = text.partition(".")
    if rest:  # at most microseconds for fromisoformat
        fraction = re.match(r"\d+", rest)
        assert fraction is not None  # _UTC_DATE has digits after the point
        digits = fraction.group()
        text = f"{head}.{digits[:6].ljust(6, '0')}{rest[len(digits) :]}"
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise invalid(f"filter {name!r}: {value!r} is not a valid date-time") from None
    return (when - _EPOCH) // timedelta(milliseconds=1)


def _string(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise invalid(f"filter {name!r} must be a string")
    return value


def _mailbox_id(inv: Invocation, name: str, value: Any) -> str:
    if isinstance(value, str) and value.startswith("#"):
        return inv.resolve_id(value)
    if not is_id(value):
        raise invalid(f"filter {name!r} must be a Mailbox id")
    return value


def _condition(inv: Invocation, name: str, value: Any) -> Cond:
    if name == "inMailbox":
        return InMailbox(_mailbox_id(inv, name, value))
    if name == "inMailboxOtherThan":
        if not isinstance(value, list):
            raise invalid("filter 'inMailboxOtherThan' must be an array of Mailbox ids")
        return InMailboxOtherThan(tuple(dict.fromkeys(_mailbox_id(inv, name, v) for v in value)))
    if name in ("before", "after"):
        ms = utc_date_filter(name, value)
        return ReceivedBefore(ms) if name == "before" else ReceivedSince(ms)
    if name in ("minSize", "maxSize"):
        size = arg_unsigned_int({name: value}, name)
        return SizeAtLeast(size) if name == "minSize" else SizeBelow(size)
    if name in _THREAD_MODES:
        return ThreadKeyword(_string(name, value).lower(), _THREAD_MODES[name])
    if name in ("hasKeyword", "notKeyword"):
        return HasKeyword(_string(name, value).lower(), present=name == "hasKeyword")
    if name == "hasAttachment":
        if not isinstance(value, bool):
            raise invalid("filter 'hasAttachment' must be true or false")
        return HasAttachment(value)
    if name == "text":
        return Text(tuple(parse_terms(_string(name, value))), TEXT_FIELDS, body=True)
    if name in TEXT_FIELDS:
        return Text(tuple(parse_terms(_string(name, value))), (name,))
    if name == "body":
        return Text(tuple(parse_terms(_string(name, value))), (), body=True)
    # header: [name] or [name, text]
    if not isinstance(value, list) or not 1 <= len(value) <= 2 or not all(isinstance(v, str) for v in value):
        raise invalid("filter 'header' must be an array of one or two strings: [name] or [name, text]")
    if not _FIELD_NAME.fullmatch(value[0]):
        raise invalid(f"filter 'header': {value[0]!r} is not a header field name")
    return Header(value[0].lower(), tuple(parse_terms(value[1])) if len(value) == 2 else ())


def _size(f: Any) -> int:
    """Conditions, terms and listed ids in a filter: what its SQL grows with."""
    if isinstance(f, dict) and isinstance(f.get("conditions"), list):
        return 1 + sum(_size(c) for c in f["conditions"])
    if isinstance(f, dict):
        return sum(
            1 + (len(v) if isinstance(v, list) else len(v.split()) if isinstance(v, str) else 0) for v in f.values()
        )
    return 1


def parse_filter(inv: Invocation, f: dict[str, Any] | None) -> Cond | None:
    """The search condition of a FilterOperator/FilterCondition (structure checked by parse_query).

    An unknown condition property is unsupportedFilter, and so is a filter of more than MAX_FILTER_SIZE
    conditions, terms and ids; a value of the wrong type is invalidArguments.
    """
    if f is None:
        return None
    if _size(f) > MAX_FILTER_SIZE:
        raise MethodError("unsupportedFilter", f"the filter is too complex (at most {MAX_FILTER_SIZE} conditions)")
    return _parse(inv, f)


def _parse(inv: Invocation, f: dict[str, Any]) -> Cond:
    if "operator" in f:
        items = tuple(_parse(inv, c) for c in f["conditions"])
        return {"AND": AllOf, "OR": AnyOf, "NOT": NoneOf}[f["operator"]](items)
    unknown = sorted(set(f) - set(FILTER_CONDITIONS))
    if unknown:
        raise MethodError("unsupportedFilter", f"Email filters have no condition {', '.join(unknown)}")
    parts = [_condition(inv, name, f[name]) for name in FILTER_CONDITIONS if name in f]
    return parts[0] if len(parts) == 1 else AllOf(tuple(parts))


# --- sort and arguments --------------------------------------------------------------------------------------------


def parse_sort(query: QueryArgs) -> tuple[Sort, ...]:
    """Comparators → sort keys: unknown property or collation → unsupportedSort; keyword sorts need ``keyword``."""
    out = []
    for c in query.sort:
        key = SORT_PROPERTIES.get(c.property)
        if key is None:
            raise MethodError("unsupportedSort", f"Emails cannot be sorted by {c.property!r}")
        if c.collation is not None and c.collation not in COLLATIONS:
            raise MethodError("unsupportedSort", f"collation {c.collation!r} is not supported")
        keyword = None
        if key in ("keyword", "thread_all_keyword", "thread_some_keyword"):
            keyword = c.raw.get("keyword")
            if not isinstance(keyword, str) or not keyword:
                raise invalid(f"a {c.property!r} Comparator needs a 'keyword' string")
            keyword = keyword.lower()
        out.append(Sort(key, c.is_ascending, c.collation, keyword))
    return tuple(out)


def _prepare(inv: Invocation, known: frozenset[str]) -> tuple[QueryArgs, EmailQuery]:
    reject_unknown_arguments(inv.args, known)
    if any(inv.args.get(name, 0) is None for name in _DEFAULTED):  # null takes the default, as omitted does
        inv = replace(inv, args={k: v for k, v in inv.args.items() if v is not None or k not in _DEFAULTED})
    query = parse_query(inv)
    condition = parse_filter(inv, query.filter)
    shared = sharing.view(inv)
    if shared is not None:  # a sharee finds only emails in the mailboxes they may read
        visible: Cond = AnyOf(tuple(InMailbox(m) for m in sorted(shared.readable)))
        condition = visible if condition is None else AllOf((visible, condition))
    email_query = EmailQuery(condition, parse_sort(query), arg_bool(inv.args, "collapseThreads", False))
    return query, email_query


@method("Email/query", MAIL)
def email_query(inv: Invocation) -> dict[str, Any]:
    """The standard /query with collapseThreads; ``limit`` is capped (and reported when that cut the page)."""
    started = time.monotonic()
    query, email = _prepare(inv, QUERY_ARGS)
    window = Window(query.position, query.anchor, query.anchor_offset, query.limit, query.calculate_total)
    try:
        page = run_query(inv.services.db, query.account_id, email, window)
    except AnchorNotFound:
        raise MethodError("anchorNotFound", f"anchor {query.anchor!r} is not in the results") from None
    log.info(
        kv(
            event="email_query",
            user=inv.principal.email,
            account=query.account_id,
            indexed=page.indexed,
            ids=len(page.ids),
            ms=round((time.monotonic() - started) * 1000, 1),
        )
    )
    return query_response(
        query,
        page.state,
        page.position,
        page.ids,
        page.total or 0,
        can_calculate_changes=page.indexed,
        limit=page.limit,
    )


@method("Email/queryChanges", MAIL)
def email_query_changes(inv: Invocation) -> dict[str, Any]:
    """Removed and added (with indexes) since ``sinceQueryState`` for the indexed views (see the module doc)."""
    started = time.monotonic()
    query, email = _prepare(inv, QUERY_CHANGES_ARGS)
    since = arg_str(inv.args, "sinceQueryState")
    max_changes = arg_unsigned_int(inv.args, "maxChanges", None, nullable=True)
    up_to_id = arg_id(inv.args, "upToId", None, nullable=True)
    try:
        result = query_changes(
            inv.services.db,
            inv.services.changes,
            query.account_id,
            email,
            since,
            max_changes,
            up_to_id,
            query.calculate_total,
        )
    except CannotCalculateChanges as e:
        raise MethodError("cannotCalculateChanges", str(e)) from None
    except TooManyChanges as e:
        raise MethodError("tooManyChanges", str(e)) from None
    log.info(
        kv(
            event="email_query_changes",
            user=inv.principal.email,
            account=query.account_id,
            removed=len(result.removed),
            added=len(result.added),
            ms=round((time.monotonic() - started) * 1000, 1),
        )
    )
    out: dict[str, Any] = {
        "accountId": query.account_id,
        "oldQueryState": result.old_state,
        "newQueryState": result.new_state,
        "removed": result.removed,
        "added": [{"id": i, "index": n} for i, n in result.added],
    }
    if query.calculate_total:
        out["total"] = result.total or 0
    return out

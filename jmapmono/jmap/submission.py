"""EmailSubmission/get, /changes, /query, /queryChanges and /set (RFC 8621 §7).

Creating an EmailSubmission sends the email during the call (users of this server get it at once,
others through the SMTP relay); there is no delayed send, so undoStatus is always "final" and an
update to "canceled" is refused with ``cannotUnsend``. ``onSuccessUpdateEmail`` and
``onSuccessDestroyEmail`` run as ONE implicit ``Email/set`` whose response follows this call's in the
same methodResponses. Checking and sending: :mod:`jmapmono.sending.submissions`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from jmapmono.jmap import method_args as std
from jmapmono.jmap import registry
from jmapmono.jmap.errors import MethodError, SetError
from jmapmono.jmap.identity import changes_call, set_error
from jmapmono.jmap.registry import SUBMISSION, Invocation, method
from jmapmono.log import kv
from jmapmono.mailbox.identities import StateMismatch
from jmapmono.mailbox.model import MailboxError
from jmapmono.sending.submissions import TYPE, Address, Envelope, Submission
from jmapmono.store import StoreError

log = logging.getLogger(__name__)

PROPERTIES = (
    "id",
    "identityId",
    "emailId",
    "threadId",
    "envelope",
    "sendAt",
    "undoStatus",
    "deliveryStatus",
    "dsnBlobIds",
    "mdnBlobIds",
)
#: Server-set properties: a create may only repeat the value the server would give.
_SERVER_SET = ("id", "threadId", "sendAt", "deliveryStatus", "dsnBlobIds", "mdnBlobIds")
SET_ARGUMENTS = (
    "accountId",
    "ifInState",
    "create",
    "update",
    "destroy",
    "onSuccessUpdateEmail",
    "onSuccessDestroyEmail",
)
FILTERS = ("identityIds", "emailIds", "threadIds", "undoStatus", "before", "after")
#: Sort property -> key of a Submission ("sentAt" is the RFC's name for sorting by sendAt).
SORTS = {
    "emailId": lambda s: s.email_id,
    "threadId": lambda s: s.thread_id,
    # sendAt has whole seconds: ties are broken by id (time-ordered), so descending is the exact reverse
    "sentAt": lambda s: (s.send_at, s.id),
    "sendAt": lambda s: (s.send_at, s.id),
}
_UTC_DATE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z")


# --- UTCDate (RFC 8620 §1.4) --------------------------------------------------------------------------------------


def utc_date(ms: int) -> str:
    """Milliseconds since the epoch as a UTCDate (fraction only when not zero)."""
    when = datetime.fromtimestamp(ms / 1000, UTC)
    text = when.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{ms % 1000:03d}Z" if ms % 1000 else f"{text}Z"


def parse_utc_date(value: object) -> int | None:
    """A UTCDate string as milliseconds since the epoch; None when it is not one."""
    if not isinstance(value, str) or _UTC_DATE.fullmatch(value) is None:
        return None
    seconds, _, fraction = value[:-1].partition(".")
    try:
        when = datetime.strptime(seconds, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    return int(when.timestamp()) * 1000 + int((fraction + "000")[:3])


# --- /get, /changes -----------------------------------------------------------------------------------------------


def to_json(s: Submission) -> dict[str, Any]:
    return {
        "id": s.id,
        "identityId": s.identity_id,
        "emailId": s.email_id,
        "threadId": s.thread_id,
        "envelope": s.envelope.to_json(),
        "sendAt": utc_date(s.send_at),
        "undoStatus": s.undo_status,
        "deliveryStatus": s.delivery_status,
        "dsnBlobIds": [],
        "mdnBlobIds": [],
    }


@method("EmailSubmission/get", SUBMISSION)
def submission_get(inv: Invocation) -> dict[str, Any]:
    std.reject_unknown_arguments(inv.args, ("accountId", "ids", "properties"))
    get = std.parse_get(inv, PROPERTIES)
    found, state = inv.services.submissions.get(get.account_id, get.ids)
    if get.ids is None:
        std.check_max_objects_in_get(inv, len(found))
    return std.get_response(get, state, {s.id: to_json(s) for s in found})


@method("EmailSubmission/changes", SUBMISSION)
def submission_changes(inv: Invocation) -> dict[str, Any]:
    std.reject_unknown_arguments(inv.args, ("accountId", "sinceState", "maxChanges"))
    return changes_call(inv, TYPE)


# --- /query, /queryChanges ----------------------------------------------------------------------------------------


def _condition(c: dict[str, Any]) -> Any:
    """A predicate for one FilterCondition (unsupportedFilter for unknown properties, invalidArguments for types)."""
    unknown = sorted(k for k in c if k not in FILTERS)
    if unknown:
        raise MethodError("unsupportedFilter", f"unknown filter properties: {', '.join(unknown)}")
    tests: list[Callable[..., bool]] = []  # each called with one submission (the rest are bound defaults)
    for name, attr in (("identityIds", "identity_id"), ("emailIds", "email_id"), ("threadIds", "thread_id")):
        if name in c:
            ids = c[name]
            if not isinstance(ids, list) or not all(std.is_id(i) for i in ids):
                raise std.invalid(f"filter {name!r} must be an array of Ids")
            wanted = set(ids)
            tests.append(lambda s, a=attr, w=wanted: getattr(s, a) in w)
    if "undoStatus" in c:
        if not isinstance(c["undoStatus"], str):
            raise std.invalid("filter 'undoStatus' must be a string")
        tests.append(lambda s, u=c["undoStatus"]: s.undo_status == u)
    for name in ("before", "after"):
        if name in c:
            when = parse_utc_date(c[name])
            if when is None:
                raise std.invalid(f"filter {name!r} must be a UTCDate like 2024-05-01T12:00:00Z")
            if name == "before":
                tests.append(lambda s, w=when: s.send_at < w)
            else:
                tests.append(lambda s, w=when: s.send_at >= w)
    return lambda s: all(t(s) for t in tests)


def _predicate(f: dict[str, Any]) -> Any:
    if "operator" in f:
        parts = [_predicate(c) for c in f["conditions"]]
        if f["operator"] == "AND":
            return lambda s: all(p(s) for p in parts)
        if f["operator"] == "OR":
            return lambda s: any(p(s) for p in parts)
        return lambda s: not any(p(s) for p in parts)
    return _condition(f)


@method("EmailSubmission/query", SUBMISSION)
def submission_query(inv: Invocation) -> dict[str, Any]:
    """Standard /query: filters identityIds, emailIds, threadIds, undoStatus, before, after; sorts emailId,
    threadId, sentAt (then by creation, so the order is total)."""
    std.reject_unknown_arguments(
        inv.args, ("accountId", "filter", "sort", "position", "anchor", "anchorOffset", "limit", "calculateTotal")
    )
    q = std.parse_query(inv)
    match = _predicate(q.filter) if q.filter else (lambda s: True)
    for c in q.sort:
        if c.property not in SORTS:
            raise MethodError("unsupportedSort", f"cannot sort EmailSubmissions by {c.property!r}")
    found, state = inv.services.submissions.get(q.account_id)  # oldest first
    rows = [s for s in found if match(s)]
    for c in reversed(q.sort):  # stable sorts, last key first
        rows.sort(key=SORTS[c.property], reverse=not c.is_ascending)
    ids = [s.id for s in rows]
    position, page, limit = std.query_window(q, ids)
    return std.query_response(q, state, position, page, len(ids), limit=limit)


@method("EmailSubmission/queryChanges", SUBMISSION)
def submission_query_changes(inv: Invocation) -> dict[str, Any]:
    """Query results are not kept, so the changes of a query cannot be calculated (RFC 8620 §5.6 allows it)."""
    std.reject_unknown_arguments(
        inv.args, ("accountId", "filter", "sort", "sinceQueryState", "maxChanges", "upToId", "calculateTotal")
    )
    std.parse_changes(inv, "sinceQueryState")
    raise MethodError("cannotCalculateChanges", "EmailSubmission query changes are not tracked: query again")


# --- /set ---------------------------------------------------------------------------------------------------------


def _reference(inv: Invocation, value: Any, prop: str) -> str:
    """An Id or ``#creationId`` of something created earlier in the request; invalidProperties otherwise."""
    if isinstance(value, str) and value.startswith("#"):
        if value[1:] not in inv.created_ids:
            raise SetError("invalidProperties", f"{prop}: nothing was created as {value!r}", properties=[prop])
        return inv.created_ids[value[1:]]
    if not std.is_id(value):
        raise SetError("invalidProperties", f"{prop} must be an Id", properties=[prop])
    return value


def _address(value: Any, what: str) -> Address:
    if not isinstance(value, dict) or not isinstance(value.get("email"), str) or set(value) - {"email", "parameters"}:
        raise SetError("invalidProperties", f"{what} must be an Address {{email, parameters}}", properties=["envelope"])
    parameters = value.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise SetError("invalidProperties", f"{what}.parameters must be an object or null", properties=["envelope"])
    if parameters:
        raise SetError(
            "invalidProperties",
            f"{what}: SMTP parameters are not supported (submissionExtensions is empty)",
            properties=["envelope"],
        )
    return Address(value["email"], parameters)


def _envelope(value: Any) -> Envelope | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"mailFrom", "rcptTo"} or not isinstance(value["rcptTo"], list):
        raise SetError("invalidProperties", "envelope must be {mailFrom, rcptTo} or null", properties=["envelope"])
    return Envelope(
        _address(value["mailFrom"], "envelope.mailFrom"),
        tuple(_address(a, "envelope.rcptTo[]") for a in value["rcptTo"]),
    )


def _parse_create(inv: Invocation, obj: dict[str, Any]) -> tuple[str, str, Envelope | None]:
    unknown = sorted(k for k in obj if k not in PROPERTIES)
    if unknown:
        raise SetError("invalidProperties", f"unknown properties: {', '.join(unknown)}", properties=unknown)
    server_set = sorted(k for k in obj if k in _SERVER_SET)
    if obj.get("undoStatus", "final") != "final":
        server_set.append("undoStatus")  # no delayed send: only "final" can be asked for
    if server_set:
        raise SetError("invalidProperties", f"set by the server: {', '.join(server_set)}", properties=server_set)
    missing = [p for p in ("identityId", "emailId") if p not in obj]
    if missing:
        raise SetError("invalidProperties", f"required: {', '.join(missing)}", properties=missing)
    return (
        _reference(inv, obj["identityId"], "identityId"),
        _reference(inv, obj["emailId"], "emailId"),
        _envelope(obj.get("envelope")),
    )


def _created_record(obj: dict[str, Any], s: Submission) -> dict[str, Any]:
    """What the client did not send, or sent differently (a ``#reference``, a derived envelope)."""
    full = to_json(s)
    return {k: v for k, v in full.items() if k not in obj or obj[k] != v}


def _check_update(current: dict[str, Any], patch: dict[str, Any]) -> None:
    new = std.apply_patch(current, patch)
    changed = sorted(k for k in set(new) | set(current) if new.get(k) != current.get(k))
    if changed == ["undoStatus"] and new["undoStatus"] == "canceled":
        raise SetError("cannotUnsend", "the email was sent at once and cannot be recalled")
    if changed:
        raise SetError("invalidProperties", f"cannot change {', '.join(changed)}", properties=changed)


def _on_success_arguments(inv: Invocation) -> tuple[dict[str, dict[str, Any]], list[str]]:
    update = std.arg_object(inv.args, "onSuccessUpdateEmail", None) or {}
    for key, patch in update.items():
        if not isinstance(patch, dict):
            raise std.invalid(f"onSuccessUpdateEmail[{key!r}] must be a PatchObject")
    destroy = std.arg(inv.args, "onSuccessDestroyEmail", None) or []
    if not isinstance(destroy, list) or not all(isinstance(i, str) for i in destroy):
        raise std.invalid("'onSuccessDestroyEmail' must be an array of EmailSubmission ids or null")
    return update, destroy


@method("EmailSubmission/set", SUBMISSION, writes=True)
def submission_set(inv: Invocation) -> dict[str, Any]:
    """Standard /set: a create sends the email (RFC 8621 §7.5); then the implicit Email/set, if asked for."""
    std.reject_unknown_arguments(inv.args, SET_ARGUMENTS)
    s = std.parse_set(inv, own_references=True)
    on_update, on_destroy = _on_success_arguments(inv)
    store = inv.services.submissions
    try:
        store.check_state(s.account_id, s.if_in_state)
    except StateMismatch as e:
        raise MethodError("stateMismatch", e.description) from None
    inv.services.identities.ensure_default(s.account_id)

    sent: dict[str, Submission] = {}
    not_created: dict[str, SetError] = {}
    for cid, obj in s.create.items():
        try:
            identity_id, email_id, envelope = _parse_create(inv, obj)
            sent[cid] = store.send(store.prepare(s.account_id, identity_id, email_id, envelope))
        except SetError as e:
            not_created[cid] = e
        except MailboxError as e:
            not_created[cid] = set_error(e)
        except Exception as e:  # earlier creations of this call were sent: they must still be recorded below
            unavailable = isinstance(e, StoreError)
            if not unavailable:
                log.exception(kv(event="submission_failed", account=s.account_id, creation=cid))
            what = "the server is temporarily unavailable" if unavailable else "unexpected server error"
            not_created[cid] = SetError("forbiddenToSend", f"{what}; this email was not sent, try again later")

    def own(key: str) -> str | None:
        """An id, or "#cid" of this call's creations resolved (None when that creation failed)."""
        if key.startswith("#"):
            return sent[key[1:]].id if key[1:] in sent else None
        return key

    wanted = [i for i in (own(k) for k in [*s.update, *s.destroy]) if i is not None]
    existing = {x.id: x for x in store.get(s.account_id, wanted)[0]}
    existing.update({x.id: x for x in sent.values()})
    updated: dict[str, Any] = {}
    not_updated: dict[str, SetError] = {}
    for key, patch in s.update.items():
        sid = own(key)
        if sid is None or sid not in existing:
            not_updated[key] = SetError("notFound", f"no EmailSubmission {key}")
            continue
        try:
            _check_update(to_json(existing[sid]), patch)
        except SetError as e:
            not_updated[key] = e
            continue
        updated[sid] = None
    not_destroyed: dict[str, SetError] = {}
    destroy = []
    for key in s.destroy:
        sid = own(key)
        if sid is None:
            not_destroyed[key] = SetError("notFound", f"no EmailSubmission {key}")
        else:
            destroy.append(sid)
    old, new, destroyed, missing = store.record(s.account_id, list(sent.values()), destroy)
    not_destroyed.update({i: SetError("notFound", f"no EmailSubmission {i}") for i in missing})
    for cid, submission in sent.items():
        inv.created_ids[cid] = submission.id
    response = std.set_response(
        s.account_id,
        old,
        new,
        created={cid: _created_record(s.create[cid], x) for cid, x in sent.items()},
        updated=updated,
        destroyed=destroyed,
        not_created=not_created,
        not_updated=not_updated,
        not_destroyed=not_destroyed,
    )
    # Every submission this call created, updated or destroyed is in ``existing`` (loaded before the destroy).
    succeeded = {sid: existing[sid] for sid in [*(x.id for x in sent.values()), *updated, *destroyed]}
    _implicit_email_set(inv, s.account_id, on_update, on_destroy, succeeded, own)
    return response


def _implicit_email_set(
    inv: Invocation,
    account_id: str,
    on_update: dict[str, dict[str, Any]],
    on_destroy: list[str],
    succeeded: dict[str, Submission],
    own: Any,
) -> None:
    """The ONE implicit Email/set for onSuccessUpdateEmail/onSuccessDestroyEmail (RFC 8621 §7.5), its response
    added right after this call's."""
    if not on_update and not on_destroy:
        return
    update: dict[str, dict[str, Any]] = {}
    destroy: list[str] = []
    for key, patch in on_update.items():
        sid = own(key)
        if sid in succeeded:
            update[succeeded[sid].email_id] = patch
    for key in on_destroy:
        sid = own(key)
        if sid in succeeded:
            destroy.append(succeeded[sid].email_id)
    implicit_email_set(inv, account_id, update, destroy)


def implicit_email_set(inv: Invocation, account_id: str, update: dict[str, dict[str, Any]], destroy: list[str]) -> None:
    """Run Email/set for what a method did on success (``onSuccessUpdateEmail`` of RFC 8621 §7.5 and RFC 9007
    §3.1); its response, or its error, goes right after the calling method's."""
    if not update and not destroy:
        return
    args: dict[str, Any] = {"accountId": account_id}
    if update:
        args["update"] = update
    if destroy:
        args["destroy"] = list(dict.fromkeys(destroy))
    spec = registry.METHODS.get("Email/set")
    if spec is None:
        error = {"type": "serverFail", "description": "Email/set is not available on this server"}
        inv.extra_responses.append(("error", error, inv.call_id))
        return
    implicit = Invocation("Email/set", args, inv.call_id, inv.services, inv.principal, inv.using, inv.created_ids)
    try:
        inv.extra_responses.append(("Email/set", spec.handler(implicit), inv.call_id))
    except MethodError as e:
        inv.extra_responses.append(("error", e.to_json(), inv.call_id))
    except StoreError as e:  # what the method did is done: only the implicit call fails
        log.warning(kv(event="implicit_email_set_unavailable", account=account_id, error=str(e)))
        error = {"type": "serverUnavailable", "description": "a server resource is temporarily unavailable"}
        inv.extra_responses.append(("error", error, inv.call_id))
    except Exception:
        log.exception(kv(event="implicit_email_set_failed", account=account_id))
        inv.extra_responses.append(("error", {"type": "serverFail", "description": "Email/set failed"}, inv.call_id))

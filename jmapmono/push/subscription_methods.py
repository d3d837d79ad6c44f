"""PushSubscription/get and PushSubscription/set (RFC 8620 §7.2).

Subscriptions are not per account: neither method takes ``accountId`` (nor /set ``ifInState``), and
they return no state. Each call sees only the subscriptions made with the same credentials as the
request (§7.2.1 MUST): the same user AND the same app password (or the same account password: not one
set since); see jmapmono/push/subscriptions_store.py. A creation whose credential is revoked while the
call runs is refused (``forbidden``). ``url`` and ``keys`` are never returned, and asking for them is
``forbidden``. ``verificationCode`` reads null until the client has set the right one.

On create the URL is checked (https://, and every address its host resolves to must be global unless
``JMAPMONO_PUSH_ALLOW_PRIVATE_TARGETS``), the expiry is capped at :data:`MAX_EXPIRY_DAYS` from now
(the capped value is returned), and once committed the PushVerification is POSTed in the background
(jmapmono/push/webpush.py). Nothing else goes to the URL until the client sets the code it received.
Only ``verificationCode``, ``expires`` and ``types`` may be updated.

Resolving hosts waits on DNS inside the request, so it is bounded: at most :data:`MAX_CREATE_PER_CALL`
creations per call (``rateLimit`` past that) and no more than the user's quota allows (``overQuota``
before any look-up), looked up :data:`RESOLVE_CONCURRENCY` at a time on the web push resolver's own
threads, all within :data:`RESOLVE_DEADLINE_SECONDS`. A refused host gets one generic description,
whatever DNS said (see jmapmono/push/webpush_http.py); the reason is logged.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from dataclasses import replace
from functools import partial
from typing import Any

from jmapmono.clock import now_ms
from jmapmono.jmap import method_args as std
from jmapmono.jmap.errors import MethodError, SetError
from jmapmono.jmap.registry import CORE, Invocation, method
from jmapmono.jmap.submission import parse_utc_date, utc_date
from jmapmono.log import kv
from jmapmono.push import subscriptions_store, vapid, webpush, webpush_http
from jmapmono.push.context import push_services
from jmapmono.push.subscriptions_store import (
    CredentialRevoked,
    OverQuota,
    PushSubscriptions,
    Subscription,
    credential_of,
    new_id,
)
from jmapmono.push.webpush_http import Target, TargetRefused

log = logging.getLogger(__name__)

#: The longest lifetime a subscription gets (RFC 8620 §7.2: at least 48 hours, SHOULD be at least 7 days).
MAX_EXPIRY_DAYS = 7
#: Subscriptions one /set call may create (a device makes one); the rest get ``rateLimit``.
MAX_CREATE_PER_CALL = 10
#: Seconds all the hosts of one call's new subscriptions may take to resolve, together.
RESOLVE_DEADLINE_SECONDS = 8.0
#: Host look-ups of one call at once.
RESOLVE_CONCURRENCY = 4

PROPERTIES = ("id", "deviceClientId", "verificationCode", "expires", "types")
#: Never returned (§7.2.1); asking for them is ``forbidden``.
PRIVATE = ("url", "keys")
ALL = (*PROPERTIES, *PRIVATE)
MUTABLE = ("verificationCode", "expires", "types")
MAX_TYPE_LENGTH = 255


def to_json(sub: Subscription, *, private: bool = False) -> dict[str, Any]:
    """The PushSubscription object; ``private`` adds url and keys (for patching, never for output)."""
    out: dict[str, Any] = {
        "id": sub.id,
        "deviceClientId": sub.device_client_id,
        "verificationCode": sub.verification_code if sub.verified else None,
        "expires": utc_date(sub.expires_at),
        "types": None if sub.types is None else list(sub.types),
    }
    if private:
        keys = None if sub.p256dh is None else {"p256dh": sub.p256dh, "auth": sub.auth}
        out.update(url=sub.url, keys=keys)
    return out


def _store(inv: Invocation) -> PushSubscriptions:
    return PushSubscriptions(inv.services.db)


@method("PushSubscription/get", CORE, needs_account=False)
def push_subscription_get(inv: Invocation) -> dict[str, Any]:
    """Standard /get without accountId or state; ``ids: null`` = every subscription of these credentials."""
    std.reject_unknown_arguments(inv.args, ("ids", "properties"))
    requested = inv.args.get("properties")
    if isinstance(requested, list):
        private = [p for p in PRIVATE if p in requested]
        if private:
            raise MethodError("forbidden", f"{' and '.join(private)} are never returned (RFC 8620 §7.2.1)")
    properties = std.parse_properties(inv.args, PROPERTIES)
    ids = std.arg_id_list(inv, "ids", None)
    if ids is not None:
        std.check_max_objects_in_get(inv, len(ids))
    found = {s.id: to_json(s) for s in _store(inv).list(inv.principal)}
    if ids is None:
        std.check_max_objects_in_get(inv, len(found))
        records, not_found = list(found.values()), []
    else:
        records = [found[i] for i in ids if i in found]
        not_found = [i for i in ids if i not in found]
    return {"list": [std.project(r, properties) for r in records], "notFound": not_found}


# --- validation ----------------------------------------------------------------------------------------------------


def _invalid(prop: str, description: str) -> SetError:
    return SetError("invalidProperties", description, properties=[prop])


def _expires(value: Any) -> tuple[int, bool]:
    """(expiry in ms, whether it differs from what the client asked): null = the longest we give."""
    cap = (now_ms() // 1000 + MAX_EXPIRY_DAYS * 86400) * 1000
    if value is None:
        return cap, True
    when = parse_utc_date(value)
    if when is None:
        raise _invalid("expires", "expires must be a UTCDate like 2026-01-31T12:00:00Z, or null")
    if when <= now_ms():
        raise _invalid("expires", "expires is in the past")
    return (cap, True) if when > cap else (when, False)


def _types(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(t, str) and 0 < len(t) <= MAX_TYPE_LENGTH and t.isprintable() for t in value
    ):
        raise _invalid("types", "types must be null (every type) or an array of type names")
    return tuple(dict.fromkeys(value))


def _check_known(obj: dict[str, Any]) -> None:
    unknown = sorted(k for k in obj if k not in ALL)
    if unknown:
        raise SetError("invalidProperties", f"unknown properties: {', '.join(unknown)}", properties=unknown)


def _new(inv: Invocation, obj: dict[str, Any]) -> tuple[Subscription, dict[str, Any], Target]:
    """A subscription from a create object, what ``created`` returns, and the URL's target (not yet resolved)."""
    _check_known(obj)
    if "id" in obj:
        raise _invalid("id", "id is set by the server")
    device = obj.get("deviceClientId")
    if not isinstance(device, str) or not 0 < len(device) <= 255 or not device.isprintable():
        raise _invalid("deviceClientId", "deviceClientId is required: a string of 1 to 255 printable characters")
    if obj.get("verificationCode") is not None:
        raise _invalid("verificationCode", "verificationCode must be null when the subscription is created")
    allow_private = inv.services.config.push_allow_private_targets
    url: Any = obj.get("url")  # any JSON value until parse_url has checked it (a string)
    try:
        target = webpush_http.parse_url(url, allow_private)
    except TargetRefused as e:
        raise _invalid("url", str(e)) from None
    p256dh = auth = None
    if obj.get("keys") is not None:
        try:
            p256dh, auth = webpush.check_keys(obj["keys"])
        except ValueError as e:
            raise _invalid("keys", str(e)) from None
    expires, changed = _expires(obj.get("expires"))
    types = _types(obj.get("types"))
    sub = Subscription(
        id=new_id(),
        user_id=inv.principal.user_id,
        device_client_id=device,
        url=url,
        p256dh=p256dh,
        auth=auth,
        verification_code=secrets.token_hex(16),
        verified=False,
        expires_at=expires,
        types=types,
        created_at=now_ms(),
        vapid_generation=push_services(inv.services).vapid.current().generation,
        **credential_of(inv.principal),
    )
    created: dict[str, Any] = {"id": sub.id}
    if changed or "expires" not in obj:
        created["expires"] = utc_date(expires)
    for prop in ("keys", "types"):
        if prop not in obj:
            created[prop] = None
    return sub, created, target


def _checked(
    inv: Invocation, create: dict[str, dict], not_created: dict[str, SetError]
) -> list[tuple[str, Subscription, dict[str, Any]]]:
    """The creations that pass every check, their hosts resolved (bounded: see the module's docstring)."""
    candidates: list[tuple[str, Subscription, dict[str, Any], Target]] = []
    for n, (cid, obj) in enumerate(create.items()):
        if n >= MAX_CREATE_PER_CALL:
            not_created[cid] = SetError("rateLimit", f"at most {MAX_CREATE_PER_CALL} push subscriptions per call")
            continue
        try:
            candidates.append((cid, *_new(inv, obj)))
        except SetError as e:
            not_created[cid] = e
    room = _store(inv).room(inv.principal.user_id) if candidates else 0
    for cid, *_ in candidates[room:]:
        not_created[cid] = SetError(
            "overQuota", f"at most {subscriptions_store.MAX_PER_USER} push subscriptions per user"
        )
    candidates = candidates[:room]
    if not candidates:
        return []
    allow_private = inv.services.config.push_allow_private_targets
    resolver = push_services(inv.services).webpush.resolver
    deadline = time.monotonic() + RESOLVE_DEADLINE_SECONDS
    answers = resolver.resolve_all([c[3] for c in candidates], allow_private, deadline, RESOLVE_CONCURRENCY)
    out = []
    for (cid, sub, echo, target), answer in zip(candidates, answers, strict=True):
        if isinstance(answer, TargetRefused):
            log.info(
                kv(event="push_subscription_refused", user=inv.principal.email, host=target.host, reason=answer.detail)
            )
            not_created[cid] = _invalid("url", str(answer))
        else:
            out.append((cid, sub, echo))
    return out


def _patched(sub: Subscription, patch: dict[str, Any]) -> tuple[Subscription, dict[str, Any] | None]:
    """``sub`` with a PatchObject applied, and what ``updated`` returns for it (None: nothing unasked)."""
    current = to_json(sub, private=True)
    new = std.apply_patch(current, patch)
    for prop in ALL:
        new.setdefault(prop, None)  # a null patch value removed it
    _check_known(new)
    fixed = sorted(p for p in ALL if p not in MUTABLE and new[p] != current[p])
    if fixed:
        raise SetError("invalidProperties", f"{', '.join(fixed)} cannot be changed", properties=fixed)
    out, echo = sub, {}
    code = new["verificationCode"]
    if code != current["verificationCode"]:
        if not isinstance(code, str) or not hmac.compare_digest(code.encode(), sub.verification_code.encode()):
            raise _invalid("verificationCode", "verificationCode does not match the code sent to the URL")
        out = replace(out, verified=True)
    if new["expires"] != current["expires"]:
        expires, changed = _expires(new["expires"])
        out = replace(out, expires_at=expires)
        if changed:
            echo["expires"] = utc_date(expires)
    if new["types"] != current["types"]:
        out = replace(out, types=_types(new["types"]))
    return out, echo or None


# --- /set ----------------------------------------------------------------------------------------------------------


def _set_args(inv: Invocation) -> tuple[dict[str, dict], dict[str, Any], list[Any]]:
    std.reject_unknown_arguments(inv.args, ("create", "update", "destroy"))
    create = std.arg_object(inv.args, "create", None) or {}
    for cid, obj in create.items():
        if not std.is_id(cid):
            raise std.invalid(f"creation id {cid!r} is not an Id")
        if not isinstance(obj, dict):
            raise std.invalid(f"create[{cid!r}] must be an object")
    update = std.arg_object(inv.args, "update", None) or {}
    for key, patch in update.items():
        if not isinstance(patch, dict):
            raise std.invalid(f"update[{key!r}] must be a PatchObject")
    destroy = std.arg(inv.args, "destroy", None) or []
    if not isinstance(destroy, list):
        raise std.invalid("'destroy' must be an array of Ids or null")
    std.check_max_objects_in_set(inv, len(create) + len(update) + len(destroy))
    return create, update, destroy


@method("PushSubscription/set", CORE, needs_account=False)
def push_subscription_set(inv: Invocation) -> dict[str, Any]:
    """Standard /set without accountId, ifInState or states: create (then verify), update, destroy."""
    create, update, destroy = _set_args(inv)
    principal = inv.principal
    store, db = _store(inv), inv.services.db
    not_created: dict[str, SetError] = {}
    not_updated: dict[str, SetError] = {}
    not_destroyed: dict[str, SetError] = {}
    created: dict[str, Any] = {}
    new = _checked(inv, create, not_created) if create else []  # resolves the URLs' hosts: outside any transaction
    if new:
        sender = push_services(inv.services).webpush
        with db.transaction() as tx:
            for cid, sub, echo in new:
                try:
                    store.create(tx, sub)
                except OverQuota as e:
                    not_created[cid] = SetError("overQuota", str(e))
                    continue
                except CredentialRevoked as e:
                    not_created[cid] = SetError("forbidden", str(e))
                    continue
                created[cid] = echo
                inv.created_ids[cid] = sub.id
                tx.after_commit(partial(sender.send_verification, sub))

    updated: dict[str, Any] = {}
    if update:
        current = {s.id: s for s in store.list(principal)}
        changes: list[tuple[str, Subscription, dict[str, Any] | None]] = []
        for key, patch in update.items():
            sub_id = _resolve(inv, key, not_updated)
            if sub_id is None:
                continue
            if sub_id not in current:
                not_updated[sub_id] = SetError("notFound", f"no push subscription {sub_id}")
                continue
            try:
                changes.append((sub_id, *_patched(current[sub_id], patch)))
            except SetError as e:
                not_updated[sub_id] = e
        if changes:
            with db.transaction() as tx:
                for sub_id, sub, returned in changes:
                    if store.update(tx, sub):
                        updated[sub_id] = returned
                    else:
                        not_updated[sub_id] = SetError("notFound", f"no push subscription {sub_id}")

    destroyed: list[str] = []
    if destroy:
        with db.transaction() as tx:
            for value in destroy:
                sub_id = _resolve(inv, value, not_destroyed)
                if sub_id is None:
                    continue
                if store.destroy(tx, principal, sub_id):
                    destroyed.append(sub_id)
                else:
                    not_destroyed[sub_id] = SetError("notFound", f"no push subscription {sub_id}")

    def errors(found: dict[str, SetError]) -> dict[str, Any] | None:
        return {k: e.to_json() for k, e in found.items()} or None

    return {
        "created": created or None,
        "updated": updated or None,
        "destroyed": destroyed or None,
        "notCreated": errors(not_created),
        "notUpdated": errors(not_updated),
        "notDestroyed": errors(not_destroyed),
    }


def _resolve(inv: Invocation, value: Any, errors: dict[str, SetError]) -> str | None:
    """An Id, or ``#creationId`` of a subscription created earlier (this call included); else a notFound."""
    if isinstance(value, str) and value.startswith("#"):
        found = inv.created_ids.get(value[1:])
        if found is None:
            errors[value] = SetError("notFound", f"unknown creation id reference {value!r}")
        return found
    if not std.is_id(value):
        raise std.invalid(f"{value!r} is not an Id")
    return value


def register() -> None:
    """Advertise the VAPID key next to these methods (the ``@method`` declarations above registered them on
    import). Named so that the front end that serves them says so where it is built (``web/app.py``)."""
    vapid.register_capability()

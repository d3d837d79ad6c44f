"""JMAP request processing (RFC 8620 §3), independent of the transport.

The HTTP front end (``jmapmono.web.api``) and the WebSocket front end share it:

    request = parse_request(body)                   # RequestError: notJSON / notRequest
    with services.request_guard.slot(user_id):      # RequestError: limit maxConcurrentRequests
        response = execute(services, principal, request)   # RequestError: unknownCapability / limit

``execute`` runs the calls in order; a failing call becomes an ``error``
response and the next call runs (§3.6.2). Nothing a client sends makes it
raise anything but :class:`RequestError` (a database outage raises
:class:`~jmapmono.store.StoreError` only while building the Session).
"""

from __future__ import annotations

import copy
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

from werkzeug.http import parse_options_header

from jmapmono import metrics
from jmapmono.jmap import registry
from jmapmono.jmap.errors import MethodError, RequestError
from jmapmono.jmap.registry import Invocation, MethodSpec
from jmapmono.jmap.session import Session
from jmapmono.log import kv
from jmapmono.store import StoreError

if TYPE_CHECKING:
    from jmapmono.accounts.principal import Principal
    from jmapmono.jmap.context import JmapServices

log = logging.getLogger("jmapmono.api")

#: An extra check run before every handler, after the account checks (``services.call_policies``). It may
#: raise a MethodError (typically ``forbidden``: the call is valid but a policy refuses it).
CallPolicy = Callable[[Invocation, MethodSpec], None]

_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


# --- parsing -------------------------------------------------------------------------------------------------------


def check_content_type(value: str | None) -> None:
    """Refuse anything but ``application/json`` (UTF-8) with notJSON / 415."""
    mimetype, options = parse_options_header(value or "")
    if mimetype.lower() != "application/json":
        raise RequestError(
            "notJSON", f"the request content type must be application/json, not {value or 'missing'!r}", status=415
        )
    charset = options.get("charset")
    if charset is not None and charset.lower().replace("-", "") != "utf8":
        raise RequestError("notJSON", f"the request must be UTF-8, not {charset!r}", status=415)


def read_body(stream: IO[bytes], limit: int, content_length: int | None = None) -> bytes:
    """Read a request body, refusing one over ``limit`` bytes without buffering more than that."""
    if content_length is not None and content_length > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = stream.read(min(65536, limit + 1 - total))
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > limit:
            raise _too_large(limit)
        chunks.append(chunk)


def _too_large(limit: int) -> RequestError:
    return RequestError(
        "limit", f"the request is larger than the server's limit of {limit} bytes", limit="maxSizeRequest"
    )


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate member name {key!r}")
            seen.add(key)
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def parse_json(body: bytes | str) -> Any:
    """Parse I-JSON (RFC 7493): UTF-8, no duplicate names, no lone surrogates, no NaN. RequestError otherwise."""
    try:
        text = body.decode("utf-8") if isinstance(body, bytes | bytearray) else body
    except UnicodeDecodeError as e:
        raise RequestError("notJSON", f"the request is not valid UTF-8 (byte {e.start})") from None
    try:
        value = json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
    except RecursionError:
        raise RequestError("notJSON", "the request is nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, duplicates, constants, over-long integers
        raise RequestError("notJSON", f"the request did not parse as I-JSON: {e}") from None
    if (_ESCAPED_SURROGATE.search(text) or _SURROGATE.search(text)) and _has_lone_surrogate(value):
        raise RequestError("notJSON", "the request contains an unpaired surrogate")
    return value


def _not_request(detail: str) -> RequestError:
    return RequestError("notRequest", detail)


def parse_request(body: bytes | str) -> dict[str, Any]:
    """Parse and type-check a Request object (§3.3); unknown properties are kept and ignored."""
    return validate_request(parse_json(body))


def validate_request(request: Any) -> dict[str, Any]:
    """Type-check an already parsed Request object (the WebSocket parses each message once)."""
    if not isinstance(request, dict):
        raise _not_request("the request must be a JSON object")
    using = request.get("using")
    if not isinstance(using, list) or not all(isinstance(u, str) for u in using):
        raise _not_request("'using' must be an array of capability strings")
    calls = request.get("methodCalls")
    if not isinstance(calls, list):
        raise _not_request("'methodCalls' must be an array")
    for i, call in enumerate(calls):
        if (
            not isinstance(call, list)
            or len(call) != 3
            or not isinstance(call[0], str)
            or not isinstance(call[1], dict)
            or not isinstance(call[2], str)
        ):
            raise _not_request(f"methodCalls[{i}] must be [name: String, arguments: Object, callId: String]")
    if "createdIds" in request:
        created = request["createdIds"]
        if not isinstance(created, dict) or not all(isinstance(v, str) for v in created.values()):
            raise _not_request("'createdIds' must be an object mapping creation ids to ids")
    return request


# --- concurrency ---------------------------------------------------------------------------------------------------


class ConcurrencyGuard:
    """Counts requests in progress per key (a user) in this process; refuses those over the limit."""

    def __init__(self, limit: int, limit_name: str = "maxConcurrentRequests") -> None:
        self.limit = limit
        self.limit_name = limit_name
        self._counts: dict[Any, int] = {}
        self._lock = threading.Lock()

    def in_progress(self, key: Any) -> int:
        return self._counts.get(key, 0)

    @contextmanager
    def slot(self, key: Any) -> Iterator[None]:
        """Hold one of ``key``'s slots for the block; RequestError ``limit`` when none is free."""
        with self._lock:
            count = self._counts.get(key, 0)
            if count >= self.limit:
                raise RequestError(
                    "limit",
                    f"too many concurrent requests (at most {self.limit} per user)",
                    limit=self.limit_name,
                )
            self._counts[key] = count + 1
        try:
            yield
        finally:
            with self._lock:
                count = self._counts[key] - 1
                if count:
                    self._counts[key] = count
                else:
                    del self._counts[key]


# --- result references (§3.7) --------------------------------------------------------------------------------------


class _PointerError(Exception):
    pass


def evaluate_pointer(value: Any, path: str) -> Any:
    """RFC 6901 JSON Pointer plus JMAP's ``*``: map over an array, flattening arrays of results."""
    if path == "":
        return value
    if not path.startswith("/"):
        raise _PointerError(f"path {path!r} does not start with '/'")
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]
    return _walk(value, tokens, path)


def _walk(value: Any, tokens: list[str], path: str) -> Any:
    for i, token in enumerate(tokens):
        if isinstance(value, list):
            if token == "*":
                out: list[Any] = []
                for item in value:
                    result = _walk(item, tokens[i + 1 :], path)
                    if isinstance(result, list):
                        out.extend(result)
                    else:
                        out.append(result)
                return out
            if not token.isdigit() or (len(token) > 1 and token[0] == "0") or int(token) >= len(value):
                raise _PointerError(f"path {path!r}: no array item {token!r}")
            value = value[int(token)]
        elif isinstance(value, dict):
            if token not in value:
                raise _PointerError(f"path {path!r}: no property {token!r}")
            value = value[token]
        else:
            raise _PointerError(f"path {path!r}: cannot descend into a {type(value).__name__}")
    return value


def resolve_references(args: dict[str, Any], responses: list[list[Any]]) -> dict[str, Any]:
    """Replace every ``#name`` argument by the value its ResultReference points at.

    The source is the first earlier response with both the call id AND the name given: a call's implicit
    responses (e.g. the ``Email/set`` after ``EmailSubmission/set``) share its call id and stay reachable.
    """
    refs = [k for k in args if k.startswith("#")]
    if not refs:
        return args
    for key in refs:
        if key[1:] in args:
            raise MethodError("invalidArguments", f"both {key[1:]!r} and {key!r} are given")
    resolved = {k: v for k, v in args.items() if not k.startswith("#")}
    for key in refs:
        ref = args[key]
        if not isinstance(ref, dict) or not all(isinstance(ref.get(p), str) for p in ("resultOf", "name", "path")):
            raise MethodError("invalidResultReference", f"{key!r} must be a ResultReference {{resultOf, name, path}}")
        source = next((r for r in responses if r[2] == ref["resultOf"] and r[0] == ref["name"]), None)
        if source is None:
            raise MethodError(
                "invalidResultReference", f"no earlier {ref['name']!r} response with call id {ref['resultOf']!r}"
            )
        try:
            resolved[key[1:]] = copy.deepcopy(evaluate_pointer(source[1], ref["path"]))
        except _PointerError as e:
            raise MethodError("invalidResultReference", str(e)) from None
    return resolved


# --- execution -----------------------------------------------------------------------------------------------------


def _check_account(session: Session, spec: MethodSpec, args: dict[str, Any]) -> None:
    if "accountId" not in args:
        raise MethodError("invalidArguments", "'accountId' is required")
    account_id = args["accountId"]
    if not isinstance(account_id, str):
        raise MethodError("invalidArguments", "'accountId' must be a string")
    access = session.accounts.get(account_id)
    if access is None:
        raise MethodError("accountNotFound", f"no account {account_id!r} for this user")
    cap = registry.CAPABILITIES.get(spec.capability)
    if (
        cap is not None
        and cap.account_value is not None
        and spec.capability not in session.account_capabilities(account_id)
    ):
        raise MethodError("accountNotSupportedByMethod", f"account {account_id!r} does not support {spec.name}")
    if spec.writes and access.is_read_only:
        raise MethodError("accountReadOnly", f"account {account_id!r} is read-only")


class _Run:
    """The state of one request while its calls execute."""

    def __init__(self, services: JmapServices, principal: Principal, request: dict[str, Any], session: Session) -> None:
        self.services = services
        self.principal = principal
        self.session = session
        self.using = frozenset(request["using"])
        self.created_ids: dict[str, str] = dict(request.get("createdIds") or {})
        self.responses: list[list[Any]] = []
        self.errors = 0

    def call(self, name: str, args: dict[str, Any], call_id: str) -> None:
        started = time.monotonic()
        try:
            self.responses.extend(self._call(name, args, call_id))
            return
        except MethodError as e:
            error = e.to_json()
        except StoreError as e:
            log.warning(kv(event="method_unavailable", user=self.principal.email, method=name, error=str(e)))
            error = {"type": "serverUnavailable", "description": "a server resource is temporarily unavailable"}
        except Exception:
            ref = uuid.uuid4().hex[:12]
            log.exception(kv(event="method_failed", user=self.principal.email, method=name, call=call_id, ref=ref))
            error = {"type": "serverFail", "description": f"unexpected server error (reference {ref})"}
        finally:  # names are bounded: a registered method's, else "unknown"
            metrics.API_METHOD_DURATION.labels(name if name in registry.METHODS else "unknown").observe(
                time.monotonic() - started
            )
        self.errors += 1
        self.responses.append(["error", error, call_id])

    def _call(self, name: str, args: dict[str, Any], call_id: str) -> list[list[Any]]:
        spec = registry.METHODS.get(name)
        if spec is None or spec.capability not in self.using:
            raise MethodError("unknownMethod", f"unknown method {name!r} for the capabilities in 'using'")
        args = resolve_references(args, self.responses)
        if spec.needs_account:
            _check_account(self.session, spec, args)
        inv = Invocation(name, args, call_id, self.services, self.principal, self.using, self.created_ids)
        for policy in self.services.call_policies:
            policy(inv, spec)
        result = spec.handler(inv)
        if not isinstance(result, dict):
            raise TypeError(f"{name} returned {type(result).__name__}, not a dict")
        return [[name, result, call_id], *([n, a, c] for n, a, c in inv.extra_responses)]


def execute(
    services: JmapServices, principal: Principal, request: dict[str, Any], session: Session | None = None
) -> dict[str, Any]:
    """Run a parsed Request for ``principal``; return the Response object (§3.4). ``session``: the Session to
    run it in (already fresh), else it is built now."""
    started = time.monotonic()
    unknown = [u for u in request["using"] if u not in registry.CAPABILITIES]
    if unknown:
        raise RequestError("unknownCapability", f"the server does not support the capability {unknown[0]!r}")
    calls = request["methodCalls"]
    limit = services.config.limits.max_calls_in_request
    if len(calls) > limit:
        raise RequestError("limit", f"{len(calls)} method calls exceed the limit of {limit}", limit="maxCallsInRequest")
    run = _Run(services, principal, request, session or services.sessions.get(principal))
    for name, args, call_id in calls:
        run.call(name, args, call_id)
    response: dict[str, Any] = {"methodResponses": run.responses, "sessionState": run.session.state}
    if "createdIds" in request:
        response["createdIds"] = run.created_ids
    log.info(
        kv(
            event="api",
            user=principal.email,
            calls=len(calls),
            methods=",".join(name[:64] for name, _, _ in calls) or None,
            errors=run.errors,
            ms=f"{(time.monotonic() - started) * 1000:.1f}",
        )
    )
    return response


def _encode(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def dump_response(response: dict[str, Any]) -> bytes:
    """Serialize a Response; a call whose result cannot be serialized becomes serverFail, never an HTTP 500."""
    try:
        return _encode(response)
    except (TypeError, ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        pass
    fixed = []
    for item in response["methodResponses"]:
        try:
            _encode(item)
            fixed.append(item)
        except (TypeError, ValueError, RecursionError):
            log.error(kv(event="response_not_serializable", method=item[0], call=item[2]))
            fixed.append(["error", {"type": "serverFail", "description": "the result could not be encoded"}, item[2]])
    return _encode({**response, "methodResponses": fixed})

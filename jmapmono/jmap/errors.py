"""JMAP errors in the protocol's own terms (RFC 8620 §3.6)."""

from __future__ import annotations

from typing import Any

REQUEST_ERROR_PREFIX = "urn:ietf:params:jmap:error:"


class RequestError(Exception):
    """A request-level error, answered as an RFC 7807 problem details document."""

    def __init__(self, kind: str, detail: str, status: int = 400, **extra: Any) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.status = status
        self.extra = extra

    def to_json(self) -> dict[str, Any]:
        return {"type": REQUEST_ERROR_PREFIX + self.kind, "status": self.status, "detail": self.detail, **self.extra}


class _TypedError(Exception):
    """An error object ``{"type": …, "description": …, …}`` as JMAP puts it in a response."""

    def __init__(self, type: str, description: str | None = None, **extra: Any) -> None:
        super().__init__(description or type)
        self.type = type
        self.description = description
        self.extra = extra

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, **self.extra}
        if self.description:
            out["description"] = self.description
        return out


class MethodError(_TypedError):
    """A method-level error: the call's response becomes ``["error", {...}, callId]``."""


class SetError(_TypedError):
    """A per-object error inside ``/set`` (``notCreated``, ``notUpdated``, ``notDestroyed``)."""


def invalid_arguments(description: str) -> MethodError:
    return MethodError("invalidArguments", description)

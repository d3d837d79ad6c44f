"""The authenticated user behind a request or a connection."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    user_id: int
    email: str
    #: The user's own account id (opaque, stable).
    account_id: str

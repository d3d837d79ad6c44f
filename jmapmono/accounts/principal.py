"""The authenticated user behind a request or a connection."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    user_id: int
    email: str
    #: The user's own account id (opaque, stable).
    account_id: str
    #: The app password the request was made with; None when the account password was used.
    app_password_id: str | None = None
    #: Which account password authenticated (``users.password_epoch``, counted up by every password change,
    #: kept by a rehash): a connection or push subscription made with it knows when it was replaced. Not a
    #: function of the hash, so it reveals nothing. Meaningless with an app password.
    password_epoch: int = 0

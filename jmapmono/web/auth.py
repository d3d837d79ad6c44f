"""HTTP authentication: who is making this request.

Minimal form: HTTP Basic with the user's password. ``require_auth`` sets
``flask.g.principal`` or answers 401 with a problem document.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from functools import wraps
from typing import TypeVar

from flask import current_app, g, request
from werkzeug.exceptions import Unauthorized

from jmapmono.accounts.passwords import verify_password
from jmapmono.accounts.principal import Principal

F = TypeVar("F", bound=Callable)


def _basic_credentials() -> tuple[str, str] | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def authenticate() -> Principal | None:
    """The principal behind the current request's credentials, or None."""
    services = current_app.config["SERVICES"]
    creds = _basic_credentials()
    if creds is None:
        return None
    email, password = creds
    with services.db.read() as tx:
        row = tx.one("SELECT id, email, account_id, password_hash FROM users WHERE email = ?", (email.lower(),))
    if row is None or not verify_password(row["password_hash"], password):
        return None
    return Principal(row["id"], row["email"], row["account_id"])


def require_auth(view: F) -> F:
    @wraps(view)
    def wrapper(*args, **kwargs):
        principal = authenticate()
        if principal is None:
            raise Unauthorized("valid credentials are required")
        g.principal = principal
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]

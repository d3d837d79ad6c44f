"""A JMAP test client over the Flask test client, and the users most tests need."""

from __future__ import annotations

import base64
import json
from typing import Any

CORE = "urn:ietf:params:jmap:core"
MAIL = "urn:ietf:params:jmap:mail"
SUBMISSION = "urn:ietf:params:jmap:submission"
VACATION = "urn:ietf:params:jmap:vacationresponse"
MDN = "urn:ietf:params:jmap:mdn"
QUOTA = "urn:ietf:params:jmap:quota"
SIEVE = "urn:ietf:params:jmap:sieve"
ALL = [CORE, MAIL, SUBMISSION, VACATION, MDN, QUOTA, SIEVE]
PASSWORD = "correct horse battery"


def basic_auth(email: str, password: str = PASSWORD) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{email}:{password}".encode()).decode()}


class MethodFailed(AssertionError):
    """A call answered ``error`` where the test expected success."""


class JmapClient:
    """Posts method calls as one user; ``call`` returns one method's arguments."""

    def __init__(self, client: Any, email: str, account_id: str, password: str = PASSWORD) -> None:
        self.client = client
        self.email = email
        self.account_id = account_id
        self.headers = basic_auth(email, password)

    def request(self, calls: list, using: list[str] | None = None, **extra: Any) -> dict:
        """POST a whole request; return the Response object (asserts HTTP 200)."""
        from jmapmono.jmap.registry import CAPABILITIES

        using = using or [c for c in ALL if c in CAPABILITIES]
        body = json.dumps({"using": using, "methodCalls": calls, **extra})
        r = self.client.post("/jmap/api", data=body, headers=self.headers, content_type="application/json")
        assert r.status_code == 200, r.get_data(as_text=True)
        return r.get_json()

    def responses(self, calls: list, using: list[str] | None = None) -> list:
        return self.request(calls, using)["methodResponses"]

    def call(self, method: str, args: dict | None = None, account: bool = True, **kwargs: Any) -> dict:
        """One call; ``accountId`` defaults to the user's own. Raises MethodFailed on ``error``."""
        args = dict(args or {}, **kwargs)
        if account:
            args.setdefault("accountId", self.account_id)
        name, result, _ = self.responses([[method, args, "c0"]])[0]
        if name == "error":
            raise MethodFailed(f"{method} failed: {result}")
        return result

    def error(self, method: str, args: dict | None = None, account: bool = True, **kwargs: Any) -> dict:
        """One call expected to fail; returns the error object."""
        args = dict(args or {}, **kwargs)
        if account:
            args.setdefault("accountId", self.account_id)
        name, result, _ = self.responses([[method, args, "c0"]])[0]
        assert name == "error", f"{method} unexpectedly succeeded: {result}"
        return result


def cheap_password_hashing(monkeypatch: Any) -> None:
    """Fast Argon2 parameters: the KDF's cost is not what these tests measure."""
    from argon2 import PasswordHasher

    from jmapmono.accounts import passwords

    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    monkeypatch.setattr(passwords, "_dummy_hash", None)  # re-derived with these parameters, restored after

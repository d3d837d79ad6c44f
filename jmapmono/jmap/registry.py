"""The method and capability registry.

Each data-type module under ``jmapmono/jmap/`` declares its methods with
``@method("Foo/get", MAIL)`` and its capability with :func:`capability`; the
request processor and the Session only look here. Adding a data type means
adding one module, nothing else (modules are discovered by :func:`load_all`).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jmapmono.accounts.principal import Principal
    from jmapmono.accounts.users import AccountAccess
    from jmapmono.jmap.context import JmapServices

CORE = "urn:ietf:params:jmap:core"
MAIL = "urn:ietf:params:jmap:mail"
SUBMISSION = "urn:ietf:params:jmap:submission"
VACATION = "urn:ietf:params:jmap:vacationresponse"
QUOTA = "urn:ietf:params:jmap:quota"
SIEVE = "urn:ietf:params:jmap:sieve"
WEBSOCKET = "urn:ietf:params:jmap:websocket"
#: Mailbox ``shareWith`` and the ``mayShare`` right (draft-ietf-jmap-mail-sharing).
MAIL_SHARE = "urn:ietf:params:jmap:mail:share"
#: Principals and share notifications (RFC 9670).
PRINCIPALS = "urn:ietf:params:jmap:principals"
PRINCIPALS_OWNER = "urn:ietf:params:jmap:principals:owner"


@dataclass
class Invocation:
    """What a method handler gets: the arguments and the request it belongs to."""

    name: str
    args: dict[str, Any]
    call_id: str
    services: JmapServices
    principal: Principal
    using: frozenset[str]
    #: creation id → server id, shared by every call of the request (RFC 8620 §5.3).
    created_ids: dict[str, str]
    #: extra responses a method adds after its own (e.g. the implicit Email/set of EmailSubmission/set).
    extra_responses: list[tuple[str, dict[str, Any], str]] = field(default_factory=list)

    @property
    def account_id(self) -> str:
        """The validated ``accountId`` argument (checked before the handler runs)."""
        return self.args["accountId"]

    def resolve_id(self, value: str) -> str:
        """Resolve ``#creationId`` references to the id created earlier in the request."""
        if isinstance(value, str) and value.startswith("#"):
            from jmapmono.jmap.errors import MethodError

            if value[1:] not in self.created_ids:
                raise MethodError("invalidArguments", f"unknown creation id reference {value!r}")
            return self.created_ids[value[1:]]
        return value


Handler = Callable[[Invocation], dict[str, Any]]


@dataclass(frozen=True)
class MethodSpec:
    name: str
    capability: str
    handler: Handler
    #: The call names an account in ``accountId`` that must be accessible (else accountNotFound).
    needs_account: bool = True
    #: The call may change data: refused with accountReadOnly on read-only accounts.
    writes: bool = False


@dataclass(frozen=True)
class CapabilitySpec:
    uri: str
    #: The value under ``capabilities`` in the Session.
    session_value: Callable[[JmapServices], dict[str, Any]]
    #: The value under each account's ``accountCapabilities``; None = not an account capability.
    account_value: Callable[[JmapServices, str], dict[str, Any]] | None = None
    #: Names a primaryAccounts entry.
    primary: bool = True
    #: The account value as one user sees it (their access to the account), where it differs per user.
    user_account_value: Callable[[JmapServices, str, Principal, AccountAccess], dict[str, Any]] | None = None


METHODS: dict[str, MethodSpec] = {}
CAPABILITIES: dict[str, CapabilitySpec] = {}


def method(
    name: str, capability: str = CORE, *, needs_account: bool = True, writes: bool = False
) -> Callable[[Handler], Handler]:
    """Register a method handler under its JMAP name."""

    def register(fn: Handler) -> Handler:
        METHODS[name] = MethodSpec(name, capability, fn, needs_account, writes)
        return fn

    return register


def capability(
    uri: str,
    session_value: Callable[[JmapServices], dict[str, Any]],
    account_value: Callable[[JmapServices, str], dict[str, Any]] | None = None,
    primary: bool = True,
    user_account_value: Callable[[JmapServices, str, Principal, AccountAccess], dict[str, Any]] | None = None,
) -> None:
    """Declare a capability for the Session."""
    CAPABILITIES[uri] = CapabilitySpec(uri, session_value, account_value, primary, user_account_value)


def load_all() -> None:
    """Import every module of ``jmapmono.jmap`` so their registrations run."""
    import jmapmono.jmap as package

    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"jmapmono.jmap.{info.name}")

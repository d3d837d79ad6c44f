"""The JMAP Session object (RFC 8620 §2), built per user from the registry.

The same object answers ``GET /.well-known/jmap`` and gives every API request
its ``sessionState`` and the account checks (which accounts the user can see,
which capabilities each supports, which are read-only). It is rebuilt on each
request, so a delegation granted by another process shows up at once (the
accounts a user sees are kept in memory until a commit anywhere, see
:meth:`Accounts.accessible_accounts`, and so is a principal's whole Session,
:class:`SessionCache`); every
capability's ``session_value`` / ``account_value`` is therefore expected to be
cheap (no database round trip per account where avoidable).

An ``account_value`` that returns ``None`` for an account means that account
does not support the capability: it is left out of ``accountCapabilities`` and
its methods answer ``accountNotSupportedByMethod`` there.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jmapmono.jmap import registry

if TYPE_CHECKING:
    from jmapmono.accounts.principal import Principal
    from jmapmono.accounts.users import AccountAccess
    from jmapmono.jmap.context import JmapServices

API_PATH = "/jmap/api"
DOWNLOAD_PATH = "/jmap/download/{accountId}/{blobId}/{name}?type={type}"
UPLOAD_PATH = "/jmap/upload/{accountId}/"
EVENT_SOURCE_PATH = "/jmap/eventsource?types={types}&closeafter={closeafter}&ping={ping}"


@dataclass(frozen=True)
class Session:
    """The Session document plus what request processing needs from it."""

    document: dict[str, Any]
    accounts: dict[str, AccountAccess]

    @property
    def state(self) -> str:
        return self.document["state"]

    @classmethod
    def of_state(cls, state: str) -> Session:
        """A Session for calls on no account (``Core/echo``): its state and nothing else."""
        return cls({"state": state}, {})

    def account_capabilities(self, account_id: str) -> dict[str, Any]:
        return self.document["accounts"][account_id]["accountCapabilities"]


def session_state(document: dict[str, Any]) -> str:
    """A short hash of every other Session property: changes whenever any of them does."""
    rest = {k: v for k, v in document.items() if k != "state"}
    canonical = json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


#: The account capabilities a user with only some mailboxes of an account shared with them has in it: mail,
#: not sending as the owner, nor the owner's vacation response, Sieve scripts or receipts. Methods of the
#: others answer ``accountNotSupportedByMethod`` there (RFC 8620 §3.6.2), as in any account without them.
SHAREE_CAPABILITIES = frozenset(
    {registry.MAIL, registry.MAIL_SHARE, registry.QUOTA, registry.PRINCIPALS, registry.PRINCIPALS_OWNER}
)


def build_session(services: JmapServices, principal: Principal) -> Session:
    """The Session as ``principal`` sees it now (one database read)."""
    base = services.config.public_base_url
    specs = sorted(registry.CAPABILITIES.values(), key=lambda s: s.uri)
    access = services.accounts.accessible_accounts(principal.user_id)
    accounts: dict[str, Any] = {}
    for account_id, acc in access.items():
        caps: dict[str, Any] = {}
        for spec in specs:
            if spec.account_value is None or (acc.shares is not None and spec.uri not in SHAREE_CAPABILITIES):
                continue
            if spec.user_account_value is not None:
                value = spec.user_account_value(services, account_id, principal, acc)
            else:
                value = spec.account_value(services, account_id)
            if value is not None:
                caps[spec.uri] = value
        accounts[account_id] = {
            "name": acc.name,
            "isPersonal": acc.is_personal,
            "isReadOnly": acc.is_read_only,
            "accountCapabilities": caps,
        }
    own = accounts.get(principal.account_id)
    primary = {
        spec.uri: principal.account_id
        for spec in specs
        if spec.primary and spec.account_value is not None and own and spec.uri in own["accountCapabilities"]
    }
    document: dict[str, Any] = {
        "capabilities": {spec.uri: spec.session_value(services) for spec in specs},
        "accounts": accounts,
        "primaryAccounts": primary,
        "username": principal.email,
        "apiUrl": base + API_PATH,
        "downloadUrl": base + DOWNLOAD_PATH,
        "uploadUrl": base + UPLOAD_PATH,
        "eventSourceUrl": base + EVENT_SOURCE_PATH,
    }
    document["state"] = session_state(document)
    return Session(document, access)


class SessionCache:
    """The Session of each recent principal, kept until a commit anywhere (the store's change stamp): every
    input of a Session is either configuration or something a commit changes, so an HTTP request whose
    principal's Session did not change uses it as it is (building it was a tenth of a ``Core/echo``).
    A kept Session is shared by the requests of one principal and never changed by them."""

    def __init__(self, services: JmapServices, max_entries: int = 1024) -> None:
        self.services = services
        self.max_entries = max_entries
        self._kept: OrderedDict[Principal, tuple[object, Session]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, principal: Principal) -> Session:
        stamp = self.services.db.change_stamp()  # before building: what is built is current as of it
        with self._lock:
            kept = self._kept.get(principal)
            if kept is not None and kept[0] == stamp:
                self._kept.move_to_end(principal)
                return kept[1]
        session = build_session(self.services, principal)
        with self._lock:
            self._kept[principal] = (stamp, session)
            self._kept.move_to_end(principal)
            while len(self._kept) > self.max_entries:
                self._kept.popitem(last=False)
        return session

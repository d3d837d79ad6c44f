"""The events of the JMAP bus, typed once: the MailboxChangeListener and the runtime's resync produce
them; WebSocket and EventSource channels and web push consume them (push/change_listener.py describes
when each is sent).

On the bus they are plain :class:`~jmapmono.events.event.Event` objects (JSON across nodes); these
classes are how both sides build and read them, so a field renamed on one side is renamed on the other.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from jmapmono.accounts.principal import Principal
from jmapmono.accounts.users import APP_PASSWORD, PASSWORD, USER_DELETED, Revocation
from jmapmono.events.event import Event

STATE_CHANGE = "StateChange"
ACCESS_CHANGED = "AccessChanged"
CREDENTIALS_REVOKED = "CredentialsRevoked"
#: The key every serving process listens to for revocations, whoever they concern (credential caches).
REVOCATIONS_KEY = "credentials:revoked"


def user_key(user_id: int | str) -> str:
    """The registration key of everything addressed to one user (not to one account)."""
    return f"user:{user_id}"


@dataclass(frozen=True)
class StateChange:
    """New states of the data types that changed in one account. Registration key: the account id."""

    account_id: str
    #: data type name → its new state (a change-log sequence number in base 36).
    changed: dict[str, str]

    def to_event(self, event_id: str | None = None) -> Event:
        payload: dict[str, Any] = {"accountId": self.account_id, "changed": dict(self.changed)}
        return Event(event_id, STATE_CHANGE, payload) if event_id else Event.new(STATE_CHANGE, payload)

    @property
    def key(self) -> str:
        return self.account_id

    @classmethod
    def from_event(cls, event: Event) -> StateChange | None:
        """The StateChange an event carries; None for another type or a malformed payload."""
        if event.type != STATE_CHANGE:
            return None
        account, changed = event.payload.get("accountId"), event.payload.get("changed")
        if not isinstance(account, str) or not account or not isinstance(changed, dict):
            return None
        states = {t: s for t, s in changed.items() if isinstance(t, str) and isinstance(s, str)}
        return cls(account, states)


@dataclass(frozen=True)
class AccessChanged:
    """A user gained or lost access to an account (delegation). Registration key: ``user:<user id>``.

    All but ``user_id`` None: "re-read every account you can see" (sent after a broker reconnect)."""

    user_id: int | str
    account_id: str | None = None
    owner_user_id: int | None = None
    granted: bool | None = None

    def to_event(self, event_id: str | None = None) -> Event:
        payload: dict[str, Any] = {
            "userId": self.user_id,
            "accountId": self.account_id,
            "ownerUserId": self.owner_user_id,
            "granted": self.granted,
        }
        return Event(event_id, ACCESS_CHANGED, payload) if event_id else Event.new(ACCESS_CHANGED, payload)

    @property
    def key(self) -> str:
        return user_key(self.user_id)

    @classmethod
    def from_event(cls, event: Event) -> AccessChanged | None:
        if event.type != ACCESS_CHANGED:
            return None
        p = event.payload
        user_id = p.get("userId")
        if not isinstance(user_id, int | str):
            return None
        granted = p.get("granted")
        return cls(user_id, p.get("accountId"), p.get("ownerUserId"), None if granted is None else bool(granted))


@dataclass(frozen=True)
class CredentialsRevoked:
    """Credentials of a user stopped being valid. Registration keys: ``user:<user id>`` (that user's push
    connections) and :data:`REVOCATIONS_KEY` (every process's credential cache).

    ``what``: ``password`` (the account password changed: the connections opened with it end; those opened
    with an app password stay, as the app password still logs in), ``appPassword`` (the connections opened
    with ``app_password_id`` end) or ``userDeleted`` (every connection of the user ends). The outbox row
    carries the same fields, so one class reads both buses."""

    user_id: int
    what: str
    app_password_id: str | None = None

    @classmethod
    def of(cls, revocation: Revocation) -> CredentialsRevoked:
        return cls(revocation.user_id, revocation.what, revocation.app_password_id)

    def _payload(self) -> dict[str, Any]:
        return {"userId": self.user_id, "what": self.what, "appPasswordId": self.app_password_id}

    def to_json(self) -> dict[str, Any]:
        """The outbox row (the mailbox bus event the MailboxChangeListener turns into :meth:`to_event`)."""
        return {"type": CREDENTIALS_REVOKED, "event_id": uuid.uuid4().hex, **self._payload()}

    def to_event(self, event_id: str | None = None) -> Event:
        payload = self._payload()
        return Event(event_id, CREDENTIALS_REVOKED, payload) if event_id else Event.new(CREDENTIALS_REVOKED, payload)

    @property
    def keys(self) -> list[str]:
        return [user_key(self.user_id), REVOCATIONS_KEY]

    def ends(self, principal: Principal) -> bool:
        """Does this revocation end a connection authenticated as ``principal``?"""
        if principal.user_id != self.user_id:
            return False
        if self.what == USER_DELETED:
            return True
        if self.what == PASSWORD:
            return principal.app_password_id is None
        return self.what == APP_PASSWORD and principal.app_password_id == self.app_password_id

    @classmethod
    def from_event(cls, event: Event) -> CredentialsRevoked | None:
        """The revocation an event (of either bus) carries; None for another type or a malformed payload."""
        if event.type != CREDENTIALS_REVOKED:
            return None
        p = event.payload
        user_id, what, app_password_id = p.get("userId"), p.get("what"), p.get("appPasswordId")
        if not isinstance(user_id, int) or what not in (PASSWORD, APP_PASSWORD, USER_DELETED):
            return None
        if what == APP_PASSWORD and not isinstance(app_password_id, str):
            return None
        return cls(user_id, what, app_password_id if isinstance(app_password_id, str) else None)

"""WebSocket tickets: how a browser authenticates the upgrade it cannot add an Authorization header to.

An authenticated ``POST /jmap/ws/ticket`` makes a ticket (256 random bits); the page then opens
``/jmap/ws?ticket=…`` within ``JMAPMONO_WS_TICKET_SECONDS``. A ticket is single use and lives in the
database, hashed (SHA-256: it is high-entropy, no KDF needed), so any worker or node redeems what
another issued, and a database leak reveals no usable ticket. Redeeming is one ``DELETE … RETURNING``:
two upgrades racing with the same ticket cannot both win, on SQLite or Postgres. A ticket issued
with an app password carries its id and dies with it (foreign key, cascade); one issued with the account
password dies when the password changes (:func:`revoke`, in the same transaction) and records which
password it was (its epoch), so that the socket it opens is tied to that password, not to a newer one.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from typing import TYPE_CHECKING

from jmapmono.accounts.principal import Principal
from jmapmono.accounts.users import APP_PASSWORD, PASSWORD, Revocation
from jmapmono.clock import now_ms
from jmapmono.log import kv
from jmapmono.store import Database, Transaction

if TYPE_CHECKING:
    from jmapmono.push.context import PushServices

log = logging.getLogger("jmapmono.push.websocket")

PREFIX = "wst_"
#: Longest ticket looked at; anything longer is refused unread.
MAX_LENGTH = 100


def _hash(ticket: str) -> str:
    return hashlib.sha256(ticket.encode("utf-8", "surrogatepass")).hexdigest()


def prune_expired(db: Database) -> int:
    """Delete the tickets that expired unused; how many."""
    with db.transaction() as tx:
        return tx.execute("DELETE FROM ws_tickets WHERE expires_at <= ?", (now_ms(),))


def revoke(tx: Transaction, revocation: Revocation) -> int:
    """Inside the revoking transaction, delete the unused tickets issued with the revoked credential."""
    if revocation.what == PASSWORD:
        return tx.execute("DELETE FROM ws_tickets WHERE user_id = ? AND app_password_id IS NULL", (revocation.user_id,))
    if revocation.what == APP_PASSWORD:
        return tx.execute(
            "DELETE FROM ws_tickets WHERE user_id = ? AND app_password_id = ?",
            (revocation.user_id, revocation.app_password_id),
        )
    return tx.execute("DELETE FROM ws_tickets WHERE user_id = ?", (revocation.user_id,))


def issue(services: PushServices, principal: Principal) -> tuple[str, int]:
    """A new ticket for ``principal`` and its lifetime in seconds (expired ones go at housekeeping)."""
    ticket = PREFIX + secrets.token_urlsafe(32)
    lifetime = services.config.ws_ticket_seconds
    now = now_ms()
    with services.db.transaction() as tx:
        tx.execute(
            "INSERT INTO ws_tickets (ticket_hash, user_id, app_password_id, password_epoch, expires_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (
                _hash(ticket),
                principal.user_id,
                principal.app_password_id,
                None if principal.app_password_id else principal.password_epoch,
                now + lifetime * 1000,
            ),
        )
    log.info(kv(event="ws_ticket_issued", user=principal.email, seconds=lifetime))
    return ticket, lifetime


def redeem(services: PushServices, ticket: str) -> Principal | None:
    """The principal a valid, unused, unexpired ticket was issued to; the ticket is spent either way."""
    if not isinstance(ticket, str) or not ticket.startswith(PREFIX) or len(ticket) > MAX_LENGTH:
        return None
    with services.db.transaction() as tx:
        row = tx.one(
            "DELETE FROM ws_tickets WHERE ticket_hash = ? "
            "RETURNING user_id, app_password_id, password_epoch, expires_at",
            (_hash(ticket),),
        )
    if row is None or int(row["expires_at"]) <= now_ms():
        return None
    user = services.accounts.by_id(int(row["user_id"]))
    if user is None:
        return None
    return Principal(user.id, user.email, user.account_id, row["app_password_id"], int(row["password_epoch"] or 0))

"""How many push connections (WebSockets and EventSource streams together) each user holds open in this
process, bounded by ``JMAPMONO_MAX_PUSH_CONNECTIONS_PER_USER``.

Each open connection costs a file descriptor, buffers and bus registrations; without a bound one user
(or one leaked credential) could take them all. A slot is taken after authentication and before the
upgrade or the stream starts, so a refusal is a plain HTTP 429, and given back however the connection
ends. The count is per process: behind several workers or nodes a user may hold up to the limit on each.
"""

from __future__ import annotations

import logging
from collections import Counter

from jmapmono.accounts.principal import Principal
from jmapmono.log import kv

log = logging.getLogger("jmapmono.push")

#: What a refused client is told to wait before it tries again (seconds).
RETRY_AFTER = 30


class PushSlots:
    """Open push connections per user in one process. Taking a slot does not yield: no two greenlets can
    both take the last one."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: Counter[int] = Counter()

    def open(self, user_id: int) -> int:
        """How many push connections ``user_id`` holds open in this process."""
        return self._open[user_id]

    def take(self, principal: Principal, kind: str) -> bool:
        """Take a slot for a new connection of ``kind`` (websocket, eventsource); False (and a log line)
        when the user already holds the limit."""
        current = self._open[principal.user_id]
        if current >= self.limit:
            log.warning(
                kv(event="push_connection_refused", user=principal.email, kind=kind, open=current, limit=self.limit)
            )
            return False
        self._open[principal.user_id] = current + 1
        return True

    def give_back(self, user_id: int) -> None:
        """Free the slot of a connection that ended (or never started)."""
        left = self._open[user_id] - 1
        if left > 0:
            self._open[user_id] = left
        else:
            del self._open[user_id]

    def refusal_detail(self) -> str:
        return (
            f"too many open push connections (WebSockets and EventSource streams) for this user: the limit is "
            f"{self.limit}; close one or try again in {RETRY_AFTER} seconds"
        )

"""Failed-login throttling that stops the attacker, not the victim.

Two counters, both kept in the store (table ``login_failures``: one row per failure, with the client
address key and the user name tried) so that every worker and node sees the same ones:

- **Per source address** (an IPv4 address, an IPv6 /64: :func:`address_key`). ``limit`` failures
  within :data:`ADDRESS_WINDOW_MS` and the address is refused (HTTP 429 with Retry-After) for every
  password login, whatever the user, until the oldest of them leaves the window. A refused attempt is
  not verified and not counted.
- **Per user**: failures never refuse anyone. Past ``limit`` failures within :data:`USER_WINDOW_MS`,
  an attempt for that user from an address that is not *known-good* for them waits first
  (:func:`user_delay`: 0.25 s, doubling with each further failure, at most :data:`MAX_DELAY` s).

*Known-good*: an address (key) from which the user logged in with their password while they had
recent failures, within :data:`KNOWN_GOOD_MS` (table ``login_sources``). It is learnt only when it
matters, so a successful login writes nothing unless the user is being guessed at.

Reading costs nothing extra: :meth:`LoginThrottle.login_state` reads the user's login record and
both counters in one query, the one a login needs anyway (credential-cache hits included). A
success writes nothing (but a known-good address, learnt once); a failure inserts one row. Between
that read and the failure's write, the attempts of one address in this process are counted in
memory (:class:`InFlight`), so a burst of concurrent guesses cannot all pass the read before the
first failure is written.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from jmapmono.accounts.users import AccountError, User, normalize_email
from jmapmono.clock import now_ms
from jmapmono.store import Database

#: Failures of one address are counted over this window (``limit`` of them: refused).
ADDRESS_WINDOW_MS = 60_000
#: Failures for one user are counted over this window (past ``limit``: unknown addresses wait).
USER_WINDOW_MS = 15 * 60_000
#: An address stays known-good for a user this long after it was learnt.
KNOWN_GOOD_MS = 30 * 86_400_000
#: The first delay, doubled with each failure past the limit, capped at MAX_DELAY (seconds).
FIRST_DELAY = 0.25
MAX_DELAY = 4.0
#: Longest user name or address kept in a counter row.
MAX_KEY_LENGTH = 320
#: How long an attempt waits for the attempts of its address in flight in this process (seconds).
IN_FLIGHT_WAIT = 30.0


def address_key(address: str | None) -> str:
    """What is counted for a client address: an IPv4 address (/32) or an IPv6 /64 (``2001:db8::/64``).

    One host gets a whole /64 from its provider, so counting per /128 would let it change address at
    every guess. An IPv4-mapped IPv6 address counts as its IPv4 address. Anything else (no address, a
    Unix socket) is counted as given."""
    text = (address or "-").strip()
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return text[:MAX_KEY_LENGTH]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def user_key(name: str) -> str:
    """What is counted for a user name as sent (known user or not: the same counting for both)."""
    return name.strip().lower()[:MAX_KEY_LENGTH]


#: Failures past the limit after which the delay stops growing (what is worth counting).
_DELAY_STEPS = math.ceil(math.log2(MAX_DELAY / FIRST_DELAY)) + 1


def user_delay(failures: int, limit: int) -> float:
    """Seconds an attempt from an address that is not known-good waits, after ``failures`` for the user."""
    if failures < limit:
        return 0.0
    return min(MAX_DELAY, FIRST_DELAY * 2 ** min(failures - limit, _DELAY_STEPS))


@dataclass(frozen=True)
class LoginState:
    """What one password login needs to know, read in one query."""

    address: str
    user: User | None
    password_hash: str | None
    #: Which password ``password_hash`` is (users.password_epoch), read with it.
    password_epoch: int
    #: Failures of the address in its window (at most ``limit``), and seconds until it may try again.
    address_failures: int
    retry_after: int
    #: Failures for the user name in its window (counted up to where the delay stops growing).
    user_failures: int
    known_good: bool


_LOGIN_STATE = """
SELECT u.id, u.email, u.account_id, u.created_at, u.password_hash, u.password_epoch,
       a.failures AS address_failures, a.oldest AS address_oldest, f.failures AS user_failures,
       s.seen_at AS known_at
FROM (SELECT COUNT(*) AS failures, MIN(at) AS oldest
      FROM (SELECT at FROM login_failures WHERE address = ? AND at > ? ORDER BY at DESC LIMIT ?) AS by_address) AS a
CROSS JOIN (SELECT COUNT(*) AS failures
      FROM (SELECT 1 AS one FROM login_failures WHERE username = ? AND at > ? LIMIT ?) AS by_user) AS f
LEFT JOIN users u ON u.email = ?
LEFT JOIN login_sources s ON s.user_id = u.id AND s.address = ? AND s.seen_at > ?
"""

_ADDRESS_STATE = """
SELECT COUNT(*) AS failures, MIN(at) AS oldest
FROM (SELECT at FROM login_failures WHERE address = ? AND at > ? ORDER BY at DESC LIMIT ?) AS by_address
"""


class LoginThrottle:
    """The failure counters of one database, seen from this process."""

    def __init__(self, db: Database, limit: int, clock: Callable[[], int] = now_ms) -> None:
        self.db = db
        self.limit = max(1, limit)
        self.clock = clock
        self.in_flight = InFlight()

    def _retry_after(self, failures: int, oldest: int | None, now: int) -> int:
        if failures < self.limit or oldest is None:
            return 0
        return max(1, math.ceil((oldest + ADDRESS_WINDOW_MS - now) / 1000))

    def login_state(self, name: str, address: str) -> LoginState:
        """The user behind ``name`` (None: unknown), their stored hash, and both counters: one query."""
        try:
            email: str | None = normalize_email(name)
        except AccountError:
            email = None
        key, now = address_key(address), self.clock()
        params = (
            key, now - ADDRESS_WINDOW_MS, self.limit,
            user_key(name), now - USER_WINDOW_MS, self.limit + _DELAY_STEPS,
            email, key, now - KNOWN_GOOD_MS,
        )  # fmt: skip
        with self.db.read() as tx:
            row = tx.one(_LOGIN_STATE, params)
        assert row is not None  # the counters' row is always there
        user = None
        if row["id"] is not None:
            user = User(row["id"], row["email"], row["account_id"], row["created_at"])
        failures = int(row["address_failures"])
        return LoginState(
            address=key,
            user=user,
            password_hash=row["password_hash"],
            password_epoch=int(row["password_epoch"] or 0),
            address_failures=failures,
            retry_after=self._retry_after(failures, row["address_oldest"], now),
            user_failures=int(row["user_failures"]),
            known_good=row["known_at"] is not None,
        )

    def address_retry_after(self, address: str) -> int:
        """Seconds until ``address`` may try again (0: it may now)."""
        now = self.clock()
        with self.db.read() as tx:
            row = tx.one(_ADDRESS_STATE, (address_key(address), now - ADDRESS_WINDOW_MS, self.limit))
        assert row is not None
        return self._retry_after(int(row["failures"]), row["oldest"], now)

    def record_failure(self, address: str, name: str | None) -> None:
        """Count one failure for the address and, for a password login, the user name tried."""
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO login_failures (address, username, at) VALUES (?, ?, ?)",
                (address_key(address), None if name is None else user_key(name), self.clock()),
            )
            tx.announce_change()  # every process's remembered logins from this address are checked again

    def record_failure_unless_limited(self, address: str) -> bool:
        """Count one failure for the address unless it is over its limit already; True if counted."""
        key, now = address_key(address), self.clock()
        with self.db.transaction() as tx:
            counted = bool(
                tx.execute(
                    "INSERT INTO login_failures (address, username, at) SELECT ?, NULL, ? "
                    "WHERE (SELECT COUNT(*) FROM (SELECT 1 AS one FROM login_failures "
                    "WHERE address = ? AND at > ? LIMIT ?) AS by_address) < ?",
                    (key, now, key, now - ADDRESS_WINDOW_MS, self.limit, self.limit),
                )
            )
            if counted:
                tx.announce_change()
            return counted

    def record_known_good(self, user_id: int, address: str) -> None:
        """Remember that ``user_id`` logged in from ``address`` (its key) now."""
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO login_sources (user_id, address, seen_at) VALUES (?, ?, ?) "
                "ON CONFLICT (user_id, address) DO UPDATE SET seen_at = excluded.seen_at",
                (user_id, address_key(address), self.clock()),
            )


def prune_expired(db: Database, now: int | None = None) -> int:
    """Delete failures older than every window and known-good addresses past their time; how many."""
    now = now_ms() if now is None else now
    with db.transaction() as tx:
        removed = tx.execute(
            "DELETE FROM login_failures WHERE at <= ?", (now - max(ADDRESS_WINDOW_MS, USER_WINDOW_MS),)
        )
        removed += tx.execute("DELETE FROM login_sources WHERE seen_at <= ?", (now - KNOWN_GOOD_MS,))
    return removed


class TooManyInFlight(Exception):
    """An address's attempts in flight in this process did not end within the wait."""


class InFlight:
    """Attempts per address key between the counters' read and the failure's write, in this process.

    An attempt enters only while its address's recorded failures plus its attempts in flight stay
    under the limit; otherwise it waits for one of them to end (and then reads the counters again),
    so an address with no failures is slowed by a burst of its own attempts, never refused."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._counts: dict[str, int] = {}
        self._changed = threading.Condition()

    def count(self, key: str) -> int:
        return self._counts.get(key, 0)

    @contextmanager
    def slot(self, key: str, failures: int, limit: int, timeout: float = IN_FLIGHT_WAIT) -> Iterator[bool]:
        """Hold one slot of ``key`` for the body; yields True if it had to wait (read the counters again)."""
        deadline = self.clock() + timeout
        waited = False
        with self._changed:
            while self._counts.get(key, 0) and failures + self._counts[key] >= limit:
                waited = True
                remaining = deadline - self.clock()
                if remaining <= 0 or not self._changed.wait(remaining):
                    raise TooManyInFlight(key)
            self._counts[key] = self._counts.get(key, 0) + 1
        try:
            yield waited
        finally:
            with self._changed:
                left = self._counts[key] - 1
                if left:
                    self._counts[key] = left
                else:
                    del self._counts[key]
                self._changed.notify_all()

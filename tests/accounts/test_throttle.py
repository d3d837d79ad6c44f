"""The login throttle's parts: the address key (IPv4 /32, IPv6 /64), the delay curve, the counters in the
store (both backends, a clock of our own), their pruning, and the attempts in flight of one process."""

from __future__ import annotations

import gevent
import pytest
from gevent.event import Event

from jmapmono.accounts import throttle
from jmapmono.accounts.throttle import InFlight, LoginThrottle, TooManyInFlight, address_key, user_delay

T0 = 1_000_000_000  # ms


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("fe80::1%eth0", "fe80::/64"),
        (None, "-"),
        ("not an address", "not an address"),
    ],
)
def test_ipv4_is_counted_per_address_and_ipv6_per_64(address, key):
    assert address_key(address) == key


def test_the_delay_doubles_past_the_limit_up_to_its_cap():
    assert [user_delay(n, 10) for n in range(8, 17)] == [0, 0, 0.25, 0.5, 1, 2, 4, 4, 4]
    assert user_delay(1, 1) == 0.25 and user_delay(10**6, 1) == throttle.MAX_DELAY


@pytest.fixture
def now() -> list[int]:
    return [T0]


@pytest.fixture
def node_a(db, now) -> LoginThrottle:
    return LoginThrottle(db, 3, clock=lambda: now[0])


@pytest.fixture
def node_b(db, now) -> LoginThrottle:
    """Another process on the same database."""
    return LoginThrottle(db, 3, clock=lambda: now[0])


def test_address_failures_slide_over_a_minute_and_are_seen_by_every_process(node_a, node_b, now):
    for step in range(3):
        (node_a if step % 2 else node_b).record_failure("192.0.2.1", "alice@example.org")
        now[0] += 10_000
    state = node_b.login_state("alice@example.org", "192.0.2.1")
    assert (state.address_failures, state.retry_after) == (3, 30)  # the first leaves the window at T0 + 60 s
    assert node_a.address_retry_after("192.0.2.1") == 30
    assert node_a.login_state("alice@example.org", "192.0.2.2").retry_after == 0
    now[0] = T0 + 60_000
    assert node_a.login_state("alice@example.org", "192.0.2.1").retry_after == 0


def test_user_failures_count_over_15_minutes_whatever_the_address(services, node_a, now):
    alice, _ = services.accounts.create_user("alice@example.org", "pw")
    for i in range(5):
        node_a.record_failure(f"198.51.100.{i}", "Alice@Example.org")
    state = node_a.login_state("ALICE@example.org", "203.0.113.1")
    assert state.user == alice and state.password_hash and state.user_failures == 5
    assert state.address_failures == 0 and not state.known_good
    now[0] += throttle.USER_WINDOW_MS
    assert node_a.login_state("alice@example.org", "203.0.113.1").user_failures == 0
    unknown = node_a.login_state("nobody@example.org", "203.0.113.1")
    assert unknown.user is None and unknown.password_hash is None


def test_known_good_addresses_are_per_user_and_per_64_and_expire(services, node_a, now):
    alice, _ = services.accounts.create_user("alice@example.org", "pw")
    services.accounts.create_user("bob@example.org", "pw")
    node_a.record_known_good(alice.id, "2001:db8:1:2::1")
    assert node_a.login_state("alice@example.org", "2001:db8:1:2::99").known_good
    assert not node_a.login_state("alice@example.org", "2001:db8:1:3::1").known_good
    assert not node_a.login_state("bob@example.org", "2001:db8:1:2::1").known_good
    now[0] += throttle.KNOWN_GOOD_MS
    assert not node_a.login_state("alice@example.org", "2001:db8:1:2::1").known_good


def test_a_bad_token_is_counted_only_under_the_limit(node_a):
    assert [node_a.record_failure_unless_limited("192.0.2.9") for _ in range(4)] == [True, True, True, False]
    assert node_a.address_retry_after("192.0.2.9") == 60


def test_pruning_keeps_what_a_window_still_needs(services, db, node_a, now):
    alice, _ = services.accounts.create_user("alice@example.org", "pw")
    node_a.record_failure("192.0.2.1", "alice@example.org")
    node_a.record_known_good(alice.id, "192.0.2.1")
    now[0] += throttle.USER_WINDOW_MS - 1
    node_a.record_failure("192.0.2.2", "alice@example.org")
    assert throttle.prune_expired(db, now[0]) == 0
    assert throttle.prune_expired(db, now[0] + 1) == 1  # the first failure left every window
    assert throttle.prune_expired(db, T0 + throttle.KNOWN_GOOD_MS) == 2  # the second, and the known-good address
    with db.read() as tx:
        assert tx.value("SELECT COUNT(*) FROM login_failures") == tx.value("SELECT COUNT(*) FROM login_sources") == 0


def test_attempts_in_flight_wait_for_a_slot_and_never_exceed_the_limit():
    in_flight = InFlight()
    entered: list[bool] = []
    release = Event()

    def attempt(failures: int) -> None:
        with in_flight.slot("192.0.2.1", failures, 3) as waited:
            entered.append(waited)
            release.wait()

    first = [gevent.spawn(attempt, 1) for _ in range(2)]  # one failure recorded: two more may be in flight
    gevent.idle()
    assert entered == [False, False] and in_flight.count("192.0.2.1") == 2
    third = gevent.spawn(attempt, 1)
    gevent.idle()
    assert entered == [False, False]  # waits
    with pytest.raises(TooManyInFlight):
        with in_flight.slot("192.0.2.1", 1, 3, timeout=0):
            pass
    with in_flight.slot("192.0.2.2", 0, 3) as waited:  # another address is not held up
        assert waited is False
    release.set()
    gevent.joinall([*first, third], raise_error=True)
    assert entered == [False, False, True] and in_flight.count("192.0.2.1") == 0

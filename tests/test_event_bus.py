"""The event bus on memory://: key and group listeners, retries, dead letters, duplicates, stop.

Storage (processed ids, dead letters) runs on SQLite and Postgres through the ``db`` fixture.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import gevent
import gevent.event
import pytest

from jmapmono.clock import now_ms
from jmapmono.events.bus import Event, EventBus
from jmapmono.events.deadletters import Claim, DeadLetterStore, ProcessedIds
from jmapmono.store import Database, StoreError

MEMORY = "memory://localhost/"
FAST = {"retry_backoff": 0.001, "redelivery_interval": 0.05}


def wait_for(predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until it is true or the deadline passes (a condition wait, not a sleep)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        gevent.sleep(interval)
    return True


class Recorder:
    """A listener/handler that records events; ``fail`` raises for event types in it."""

    def __init__(self, fail: Callable[[Event], bool] | None = None) -> None:
        self.events: list[Event] = []
        self.calls = 0
        self.fail = fail
        self._changed = gevent.event.Event()

    def __call__(self, event: Event) -> None:
        self.calls += 1
        self._changed.set()
        if self.fail is not None and self.fail(event):
            raise RuntimeError(f"cannot handle {event.type}")
        self.events.append(event)
        self._changed.set()

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.events]

    def wait_count(self, n: int, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while len(self.events) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            if len(self.events) < n:
                self._changed.wait(remaining)
        return True


@pytest.fixture
def make_bus(db: Database) -> Iterator[Callable[..., EventBus]]:
    """Buses on the test database with fast retries; stopped at the end of the test."""
    buses: list[EventBus] = []

    def make(url: str = MEMORY, name: str = "mailbox", database: Database | None = None, **options) -> EventBus:
        bus = EventBus(name, url, database or db, **{**FAST, **options})
        buses.append(bus)
        return bus

    yield make
    for bus in buses:
        bus.stop()


def parked(db: Database, bus: str = "mailbox") -> list:
    return DeadLetterStore(db).list(bus=bus)


# -- key listeners ---------------------------------------------------------------------------------


def test_key_listeners_get_only_their_keys_once(make_bus):
    bus = make_bus()
    a1, a2, b = Recorder(), Recorder(), Recorder()
    bus.register_key("acc1", a1)
    bus.register_key("acc1", a2)
    bus.register_key("acc2", b)
    bus.start()
    first = Event.new("StateChange", {"n": 1})
    bus.dispatch(first, ["acc1", "acc1", "acc3"])
    sentinel = Event.new("StateChange", {"n": 2})
    bus.dispatch(sentinel, ["acc2"])
    assert a1.wait_count(1) and a2.wait_count(1) and b.wait_count(1)
    assert a1.ids == a2.ids == [first.id]
    assert b.ids == [sentinel.id]
    assert a1.events[0].payload == {"n": 1}


def test_unregister_is_reference_counted_and_idempotent(make_bus):
    bus = make_bus()
    bus.start()
    first, second, other = Recorder(), Recorder(), Recorder()
    r1 = bus.register_key("acc1", first)
    r2 = bus.register_key("acc1", second)
    bus.register_key("acc2", other)
    r1.unregister()
    r1.unregister()
    assert bus.listener_count("acc1") == 1 and "acc1" in bus.keys()
    bus.dispatch(Event.new("x"), ["acc1"])
    assert second.wait_count(1)
    r2.unregister()
    assert bus.listener_count("acc1") == 0 and "acc1" not in bus.keys()
    bus.dispatch(Event.new("x"), ["acc1"])
    bus.dispatch(Event.new("sentinel"), ["acc2"])
    assert other.wait_count(1)
    assert first.calls == 0 and second.calls == 1


def test_a_listener_that_raises_or_blocks_holds_up_no_other(make_bus):
    bus = make_bus()
    never = gevent.event.Event()
    bus.register_key("acc1", lambda e: never.wait())
    bus.register_key("acc1", Recorder(fail=lambda e: True))
    good = Recorder()
    bus.register_key("acc1", good)
    stuck_group = Recorder()
    bus.register_group("stuck", lambda e: (stuck_group(e), never.wait()), concurrency=1)
    working = Recorder()
    bus.register_group("working", working)
    bus.start()
    events = [Event.new("x", {"i": i}) for i in range(3)]
    for event in events:
        bus.dispatch(event, ["acc1"])
    assert good.wait_count(3) and working.wait_count(3)
    assert good.ids == [e.id for e in events]  # in dispatch order
    assert wait_for(lambda: stuck_group.calls == 1)
    assert not wait_for(lambda: stuck_group.calls > 1, timeout=0.1)  # its pool of one stays busy
    assert bus.stats["key_failed"] == 3


def test_dispatch_refuses_what_cannot_travel(make_bus):
    bus = make_bus()
    with pytest.raises(ValueError, match="JSON"):
        bus.dispatch(Event.new("x", {"when": object()}))
    with pytest.raises(ValueError, match="registration key"):
        bus.dispatch(Event.new("x"), ["has space"])
    with pytest.raises(ValueError):
        bus.register_key("", Recorder())
    with pytest.raises(ValueError, match="already registered"):
        bus.register_group("g", Recorder())
        bus.register_group("g", Recorder())
    with pytest.raises(ValueError, match="broker URL"):
        EventBus("mailbox", "redis://localhost/", bus.db)


def test_event_json_round_trip_and_rejects_garbage():
    event = Event.new("Added", {"accountId": "a1", "ids": [1, 2], "delivery": True})
    assert Event.from_json(event.to_json()) == event
    for garbage in ('{"id": "x"}', "[]", '{"id": "", "type": "t", "payload": {}}', "not json"):
        with pytest.raises(ValueError):
            Event.from_json(garbage)


# -- group listeners -------------------------------------------------------------------------------


def test_every_group_handles_each_event_once(make_bus, db):
    bus = make_bus()
    g1, g2 = Recorder(), Recorder()
    bus.register_group("g1", g1)
    bus.register_group("g2", g2)
    events = [Event.new("Added", {"i": i}) for i in range(20)]
    for event in events[:5]:
        bus.dispatch(event)  # before start: queued
    bus.start()
    for event in events[5:]:
        bus.dispatch(event)
    assert g1.wait_count(20) and g2.wait_count(20)
    assert sorted(g1.ids) == sorted(g2.ids) == sorted(e.id for e in events)
    assert not wait_for(lambda: g1.calls > 20, timeout=0.1)
    with db.read() as tx:
        assert tx.value("SELECT COUNT(*) FROM event_processed WHERE bus = 'mailbox' AND done = 1") == 40


def test_group_registered_after_start_gets_later_events(make_bus):
    bus = make_bus()
    bus.start()
    late = Recorder()
    bus.register_group("late", late)
    event = Event.new("x")
    bus.dispatch(event)
    assert late.wait_count(1) and late.ids == [event.id]


def test_failing_handler_is_retried_with_backoff_then_succeeds(make_bus, db):
    bus = make_bus()
    failures = {"left": 2}

    def flaky(event: Event) -> bool:
        failures["left"] -= 1
        return failures["left"] >= 0

    handler = Recorder(fail=flaky)
    bus.register_group("g", handler, retries=3, backoff=0.01)
    bus.start()
    started = time.monotonic()
    bus.dispatch(Event.new("x"))
    assert handler.wait_count(1)
    elapsed = time.monotonic() - started
    assert handler.calls == 3 and bus.stats["group_retries"] == 2
    assert elapsed >= 0.01 * 0.8 + 0.02 * 0.8  # two backoff delays, doubling
    assert parked(db) == []


def test_exhausted_retries_park_one_dead_letter(make_bus, db, caplog):
    bus = make_bus()
    handler = Recorder(fail=lambda e: e.type == "Poison")
    bus.register_group("changes", handler, retries=2)
    bus.start()
    poison = Event.new("Poison", {"accountId": "a1"})
    with caplog.at_level("INFO", logger="jmapmono.events"):
        bus.dispatch(poison)
        assert wait_for(lambda: bus.stats["dead_lettered"] == 1)
    assert handler.calls == 3
    [letter] = parked(db)
    assert (letter.bus, letter.group, letter.attempts) == ("mailbox", "changes", 3)
    assert letter.event == poison
    assert letter.error == "RuntimeError: cannot handle Poison"
    assert letter.failed_at >= letter.created_at > 0 and letter.redeliver_requested_at is None
    lines = [r.getMessage() for r in caplog.records if "event=bus_dead_letter" in r.getMessage()]
    assert len(lines) == 1 and f"event_id={poison.id}" in lines[0] and "attempts=3" in lines[0]
    with db.read() as tx:  # the claim was released, so a redelivery can take it
        assert tx.value("SELECT COUNT(*) FROM event_processed WHERE event_id = ?", (poison.id,)) == 0


def test_duplicate_event_ids_are_processed_once(make_bus):
    bus = make_bus()
    release = gevent.event.Event()
    handler = Recorder()

    def slow(event: Event) -> None:
        handler(event)
        release.wait(5)

    bus.register_group("g", slow, concurrency=8)
    bus.start()
    event = Event.new("x")
    for _ in range(3):  # three copies in flight at once
        bus.dispatch(event)
    assert handler.wait_count(1)
    release.set()
    bus.dispatch(event)  # and a late copy, after it was handled
    assert wait_for(lambda: bus.stats["group_duplicates"] == 3)
    assert handler.calls == 1 and bus.stats["group_handled"] == 1


def test_duplicate_on_two_nodes_waits_for_the_first(make_bus):
    """Two buses sharing the database: the second copy waits on the first node's live claim."""
    node_a, node_b = make_bus(), make_bus()
    release = gevent.event.Event()
    calls: list[str] = []

    def on(node: str) -> Callable[[Event], None]:
        def handle(event: Event) -> None:
            calls.append(node)
            release.wait(5)

        return handle

    node_a.register_group("g", on("a"))
    node_b.register_group("g", on("b"))
    node_a.start()
    event = Event.new("x")
    node_a.dispatch(event)
    assert wait_for(lambda: calls == ["a"])
    node_b.start()
    node_b.dispatch(event)
    assert not wait_for(lambda: node_b.stats["group_duplicates"] > 0, timeout=0.3)  # waiting, not skipping
    release.set()
    assert wait_for(lambda: node_b.stats["group_duplicates"] == 1)
    assert calls == ["a"]


def test_processed_ids_claim_states_and_pruning(db):
    ids = ProcessedIds(db)
    assert ids.claim("mailbox", "g", "e1", lease_ms=60_000) is Claim.CLAIMED
    assert ids.claim("mailbox", "g", "e1", lease_ms=60_000) is Claim.BUSY
    assert ids.claim("jmap", "g", "e1", lease_ms=60_000) is Claim.CLAIMED  # per bus
    assert ids.claim("mailbox", "other", "e1", lease_ms=60_000) is Claim.CLAIMED  # per group
    ids.mark_done("mailbox", "g", "e1")
    assert ids.claim("mailbox", "g", "e1", lease_ms=60_000) is Claim.DONE
    assert ids.claim("mailbox", "g", "e2", lease_ms=-1) is Claim.CLAIMED  # a claim whose holder died …
    assert ids.claim("mailbox", "g", "e2", lease_ms=60_000) is Claim.CLAIMED  # … is taken over
    assert ids.claim("mailbox", "g", "e3", lease_ms=-1) is Claim.CLAIMED
    ids.extend("mailbox", "g", "e3", lease_ms=60_000)  # a retrying holder renews its lease
    assert ids.claim("mailbox", "g", "e3", lease_ms=60_000) is Claim.BUSY
    assert ids.prune(now_ms() - 60_000) == 0
    assert ids.prune(now_ms() + 1) == 5
    assert ids.claim("mailbox", "g", "e1", lease_ms=60_000) is Claim.CLAIMED


# -- redelivery ------------------------------------------------------------------------------------


def test_redelivery_goes_to_the_group_only_and_removes_the_dead_letter(make_bus, db, caplog):
    bus = make_bus()
    broken = {"on": True}
    handler = Recorder(fail=lambda e: broken["on"])
    other_group = Recorder()
    bus.register_group("g", handler, retries=0)
    bus.register_group("other", other_group)
    listener = Recorder()
    bus.register_key("acc1", listener)
    bus.start()
    event = Event.new("Added", {"accountId": "acc1"})
    bus.dispatch(event, ["acc1"])
    assert wait_for(lambda: len(parked(db)) == 1) and other_group.wait_count(1) and listener.wait_count(1)
    [letter] = parked(db)

    # Fails again: attempts add up, the request is consumed, the row stays.
    assert DeadLetterStore(db).request_redelivery([letter.id, 999_999]) == [letter.id]
    assert wait_for(lambda: parked(db)[0].redeliver_requested_at is None and parked(db)[0].attempts == 2)

    broken["on"] = False
    with caplog.at_level("INFO", logger="jmapmono.events"):
        DeadLetterStore(db).request_redelivery([letter.id])
        assert handler.wait_count(1)
        assert wait_for(lambda: parked(db) == [])
    assert handler.events == [event]
    assert other_group.calls == 1 and listener.calls == 1  # neither the other group nor key listeners
    outcomes = [r.getMessage() for r in caplog.records if "event=bus_redelivered" in r.getMessage()]
    assert len(outcomes) == 1 and "outcome=handled" in outcomes[0] and f"dead_letter={letter.id}" in outcomes[0]


def test_redelivery_is_left_to_a_bus_that_has_the_group(make_bus, db):
    store = DeadLetterStore(db)
    letter_id = store.park("mailbox", "absent", Event.new("x"), "RuntimeError: boom", 4)
    assert store.park("mailbox", "absent", store.get(letter_id).event, "RuntimeError: again", 4) == letter_id
    assert store.get(letter_id).attempts == 8 and store.get(letter_id).error == "RuntimeError: again"
    bus = make_bus()
    bus.register_group("present", Recorder())
    bus.start()
    store.request_redelivery([letter_id])
    assert not wait_for(lambda: store.get(letter_id).redeliver_requested_at is None, timeout=0.3)
    assert store.claim_requested("mailbox", ["absent"], lease_ms=60_000)[0].id == letter_id
    assert store.claim_requested("mailbox", ["absent"], lease_ms=60_000) == []  # claimed once


# -- lifecycle -------------------------------------------------------------------------------------


def test_stop_is_prompt_and_idempotent_with_stuck_listeners(make_bus):
    bus = make_bus()
    never = gevent.event.Event()
    entered = Recorder()
    bus.register_group("g", lambda e: (entered(e), never.wait()))
    bus.register_key("acc1", lambda e: (entered(e), never.wait()))
    bus.start()
    bus.dispatch(Event.new("x"), ["acc1"])
    assert entered.wait_count(2)
    started = time.monotonic()
    bus.stop()
    assert time.monotonic() - started < 0.5
    bus.stop()
    with pytest.raises(RuntimeError):
        bus.start()


def test_stop_holds_when_a_kill_surfaces_as_a_store_error(make_bus, db):
    """A query interrupted by the kill can fail as StoreError: no loop may take that for a failure."""
    bus = make_bus()
    never = gevent.event.Event()
    entered = Recorder()
    polls = []

    def interrupted_as_store_error(*args) -> None:
        entered(Event.new("entered"))
        try:
            never.wait()
        except BaseException as e:
            raise StoreError("postgres: another command is already in progress") from e

    def poll(*args) -> int:
        polls.append(1)
        interrupted_as_store_error()
        return 0

    bus.register_group("g", interrupted_as_store_error, retries=0)
    bus.runner.redeliver_requested = poll
    bus.start()
    event = Event.new("x")
    bus.dispatch(event)
    assert entered.wait_count(2)  # the handler and the redelivery poll are both inside
    bus.stop()
    assert not wait_for(lambda: len(polls) > 1 or parked(db), timeout=0.3)
    with db.read() as tx:  # the interrupted claim was released for another node
        assert tx.value("SELECT COUNT(*) FROM event_processed WHERE event_id = ?", (event.id,)) == 0


def test_services_build_both_buses_and_close_stops_them(config, db):
    from jmapmono.runtime import Runtime

    services = Runtime(config, db)
    mailbox, jmap = services.mailbox_bus, services.jmap_bus
    assert (mailbox.name, jmap.name) == ("mailbox", "jmap")
    assert mailbox.broker_url == jmap.broker_url == config.broker_url
    assert services.mailbox_bus is mailbox
    mailbox.start()
    services.close()
    assert mailbox._stopped and jmap._stopped

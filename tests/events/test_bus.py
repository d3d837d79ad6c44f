"""The event bus on memory://: key and group listeners, retries, dead letters, duplicates, stop.

Storage (processed ids, dead letters) runs on SQLite and Postgres through the ``db`` fixture.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import gevent
import gevent.event
import pytest

from jmapmono.clock import now_ms
from jmapmono.events.bus import Event, EventBus
from jmapmono.events.deadletters import Claim, DeadLetterStore, ProcessedIds
from jmapmono.store import Database, StoreError
from tests.support.events import FAST, Recorder
from tests.support.waiting import wait_until

MEMORY = "memory://localhost/"


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
    never, release = gevent.event.Event(), gevent.event.Event()
    bus.register_key("acc1", lambda e: never.wait())
    bus.register_key("acc1", Recorder(fail=lambda e: True))
    good = Recorder()
    bus.register_key("acc1", good)
    stuck_group = Recorder()
    inside = {"now": 0, "most": 0}

    def stuck(event: Event) -> None:
        inside["now"] += 1
        inside["most"] = max(inside["most"], inside["now"])
        stuck_group(event)
        release.wait()
        inside["now"] -= 1

    bus.register_group("stuck", stuck, concurrency=1)
    working = Recorder()
    bus.register_group("working", working)
    bus.start()
    events = [Event.new("x", {"i": i}) for i in range(3)]
    for event in events:
        bus.dispatch(event, ["acc1"])
    marker = Event.new("marker")
    bus.dispatch(marker, ["acc1"])  # after the three: once the others have it, they had every chance
    assert good.wait_count(4) and working.wait_count(4)
    assert good.ids == [e.id for e in [*events, marker]]  # in dispatch order
    assert wait_until(lambda: stuck_group.calls == 1)
    assert stuck_group.calls == 1  # its pool of one stays busy: the others handled all four meanwhile
    release.set()
    assert stuck_group.wait_count(4)
    assert inside["most"] == 1 and stuck_group.ids == good.ids  # one at a time, in order
    assert bus.stats["key_failed"] == 4 and bus.stats["key_blocked"] == 4


def test_key_listeners_are_called_inline_past_one_that_raises_or_waits(make_bus, caplog):
    """Key listeners run in the dispatching greenlet: once dispatch returns, each one was called; one that
    waits (against the contract) is interrupted there, and the ones after it are called all the same."""
    bus = make_bus()
    never = gevent.event.Event()
    waits: list[str] = []
    interrupted: list[str] = []

    def waiting(event: Event) -> None:
        waits.append(event.id)
        try:
            never.wait()
        except BaseException as e:
            interrupted.append(type(e).__name__)
            raise

    before, after = Recorder(), Recorder()
    bus.register_key("acc1", before)
    bus.register_key("acc1", waiting)
    bus.register_key("acc1", Recorder(fail=lambda e: True))
    bus.register_key("acc1", after)
    bus.start()
    events = [Event.new("x", {"i": i}) for i in range(3)]
    with caplog.at_level("WARNING", logger="jmapmono.events"):
        for event in events:
            bus.dispatch(event, ["acc1"])
            assert after.ids[-1:] == [event.id]  # already called: no greenlet, no waiting on the one before
    ids = [e.id for e in events]
    assert before.ids == after.ids == waits == ids
    assert interrupted == ["ListenerBlocked"] * 3
    assert bus.stats["key_delivered"] == 6 and bus.stats["key_blocked"] == 3 and bus.stats["key_failed"] == 3
    assert caplog.text.count("event=bus_listener_blocked") == 3 and "listener=test_key_listeners" in caplog.text
    assert caplog.text.count("event=bus_listener_failed") == 3


def test_every_key_listener_is_told_however_many_there_are(make_bus):
    bus = make_bus()
    bus.start()
    listeners = [Recorder() for _ in range(2500)]
    for listener in listeners:
        bus.register_key("acc1", listener)
    event = Event.new("StateChange")
    bus.dispatch(event, ["acc1"])
    assert [listener.ids for listener in listeners] == [[event.id]] * 2500
    assert bus.stats["key_delivered"] == 2500
    bus.dispatch(event, ["acc1"])  # a second copy of the same event: suppressed for every listener
    assert bus.stats["key_duplicates"] == 1 and bus.stats["key_delivered"] == 2500


def test_a_listener_unregistered_by_an_earlier_one_is_not_called(make_bus):
    bus = make_bus()
    later = Recorder()
    registrations = []
    bus.register_key("acc1", lambda e: registrations[0].unregister())
    registrations.append(bus.register_key("acc1", later))
    bus.start()
    bus.dispatch(Event.new("x"), ["acc1"])
    assert later.calls == 0 and bus.listener_count("acc1") == 1


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
    marker = Event.new("marker")
    bus.dispatch(marker)  # after all of them: a second handling of any would come before it is done
    wait_until(lambda: bus.stats["group_handled"] == 42, message="both groups to finish with the marker")
    assert g1.calls == g2.calls == 21
    assert sorted(g1.ids) == sorted(g2.ids) == sorted(e.id for e in [*events, marker])
    with db.read() as tx:
        assert tx.value("SELECT COUNT(*) FROM event_processed WHERE bus = 'mailbox' AND done = 1") == 42


def test_events_a_group_declines_are_neither_handled_nor_recorded(make_bus, db):
    bus = make_bus()
    handled = Recorder()
    bus.register_group("picky", handled, wants=lambda event: event.payload["n"] % 2 == 0)
    bus.start()
    events = [Event.new("Added", {"n": n}) for n in range(6)]
    for event in events:
        bus.dispatch(event)
    assert handled.wait_count(3)
    wait_until(lambda: bus.stats["group_handled"] + bus.stats["group_declined"] == 6, message="every copy")
    assert sorted(handled.ids) == sorted(e.id for e in events[::2]) and bus.stats["group_declined"] == 3
    with db.read() as tx:  # no claim and no mark for a declined event
        assert sorted(r["event_id"] for r in tx.query("SELECT event_id FROM event_processed")) == sorted(handled.ids)


def test_a_failing_wants_check_leaves_the_event_to_the_handler(make_bus):
    bus = make_bus()
    handled = Recorder()

    def broken(event: Event) -> bool:
        raise ValueError("the check itself is broken")

    bus.register_group("g", handled, wants=broken)
    bus.start()
    event = Event.new("Added", {})
    bus.dispatch(event)
    assert handled.wait_count(1) and handled.ids == [event.id]


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
    spec = bus.groups["g"]
    delays: list[tuple[int, float]] = []
    delay = spec.delay
    spec.delay = lambda attempt: delays.append((attempt, delay(attempt))) or delays[-1][1]
    bus.start()
    bus.dispatch(Event.new("x"))
    assert handler.wait_count(1)
    assert handler.calls == 3 and bus.stats["group_retries"] == 2
    # Two waits before the two retries, doubling (each ±20 % of jitter).
    assert [attempt for attempt, _ in delays] == [1, 2]
    assert 0.01 * 0.8 <= delays[0][1] <= 0.01 * 1.2 and 0.02 * 0.8 <= delays[1][1] <= 0.02 * 1.2
    assert parked(db) == []


def test_exhausted_retries_park_one_dead_letter(make_bus, db, caplog):
    bus = make_bus()
    handler = Recorder(fail=lambda e: e.type == "Poison")
    bus.register_group("changes", handler, retries=2)
    bus.start()
    poison = Event.new("Poison", {"accountId": "a1"})
    with caplog.at_level("INFO", logger="jmapmono.events"):
        bus.dispatch(poison)
        assert wait_until(lambda: bus.stats["dead_lettered"] == 1)
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
    assert wait_until(lambda: bus.stats["group_duplicates"] == 3)
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
    claims: list[Claim] = []
    claim = node_b.runner.processed.claim
    node_b.runner.processed.claim = lambda *args, **kw: claims.append(claim(*args, **kw)) or claims[-1]
    node_a.start()
    event = Event.new("x")
    node_a.dispatch(event)
    assert wait_until(lambda: calls == ["a"])
    node_b.start()
    node_b.dispatch(event)
    wait_until(lambda: claims.count(Claim.BUSY) >= 2, message="node B to find the claim busy, twice")
    assert node_b.stats["group_duplicates"] == 0 and calls == ["a"]  # waiting, neither skipping nor running
    release.set()
    assert wait_until(lambda: node_b.stats["group_duplicates"] == 1)
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
    assert wait_until(lambda: len(parked(db)) == 1) and other_group.wait_count(1) and listener.wait_count(1)
    [letter] = parked(db)

    # Fails again: attempts add up, the request is consumed, the row stays.
    assert DeadLetterStore(db).request_redelivery([letter.id, 999_999]) == [letter.id]
    assert wait_until(lambda: parked(db)[0].redeliver_requested_at is None and parked(db)[0].attempts == 2)

    broken["on"] = False
    with caplog.at_level("INFO", logger="jmapmono.events"):
        DeadLetterStore(db).request_redelivery([letter.id])
        assert handler.wait_count(1)
        assert wait_until(lambda: parked(db) == [])
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
    present = Recorder()
    bus.register_group("present", present)
    bus.start()
    store.request_redelivery([letter_id])
    marker = Event.new("marker")  # requested after the absent group's letter: polled with it or later
    store.request_redelivery([store.park("mailbox", "present", marker, "RuntimeError: boom", 1)])
    assert present.wait_count(1) and present.ids == [marker.id]
    wait_until(lambda: [d.group for d in parked(db)] == ["absent"], message="the marker's letter to go")
    assert store.get(letter_id).redeliver_requested_at is not None  # still waiting for a bus with its group
    assert store.claim_requested("mailbox", ["absent"], lease_ms=60_000)[0].id == letter_id
    assert store.claim_requested("mailbox", ["absent"], lease_ms=60_000) == []  # claimed once


# -- lifecycle -------------------------------------------------------------------------------------


def test_stop_interrupts_stuck_handlers_and_is_idempotent(make_bus):
    """stop() ends stuck group handlers rather than waiting for them (how long it takes: bench/stop_time.py)."""
    bus = make_bus()
    never = gevent.event.Event()
    entered = Recorder()
    interrupted: list[str] = []

    def stuck(kind: str) -> Callable[[Event], None]:
        def listener(event: Event) -> None:
            entered(event)
            try:
                never.wait()
            except gevent.GreenletExit:
                interrupted.append(kind)
                raise

        return listener

    bus.register_group("g", stuck("group"))
    bus.start()
    bus.dispatch(Event.new("x"))
    assert entered.wait_count(1)
    bus.stop()
    assert interrupted == ["group"]  # ended by the time stop() returned
    wait_until(lambda: not bus.groups["g"].pool and not bus._background)
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
    # Every greenlet of the bus has ended: nothing is left that could poll again or park the event.
    wait_until(lambda: not bus.groups["g"].pool and not bus._background, message="the bus's greenlets to end")
    assert len(polls) == 1 and parked(db) == []
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

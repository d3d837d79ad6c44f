"""The event bus against faults with a real RabbitMQ: a hung broker (SIGSTOP: its sockets stay open, nothing
answers) holds neither a publish nor a binding for longer than one heartbeat interval, and the bus works again
once the broker does; a node killed while its group handler runs leaves the event to another node, which
handles it once. The broker is this module's own, since pausing it would stall every other test."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import gevent
import pytest

from jmapmono.events.bus import BusUnavailable, Event, EventBus
from jmapmono.store import Database, open_database
from jmapmono.store.migrations import migrate
from tests.support.events import FAST, Recorder
from tests.support.servers import ROOT, RabbitMQServer
from tests.support.waiting import wait_until


@pytest.fixture(scope="module")
def hung_broker() -> Iterator[RabbitMQServer]:
    server = RabbitMQServer()
    yield server
    server.close()


@pytest.fixture
def plain_db(tmp_path: Path) -> Iterator[Database]:
    db = open_database(f"sqlite:///{tmp_path / 'bus.sqlite3'}")
    migrate(db)
    yield db
    db.close()


def test_a_hung_broker_holds_neither_a_publish_nor_a_binding(hung_broker, plain_db):
    name = f"t{uuid.uuid4().hex[:10]}"
    sender = EventBus(name, hung_broker.url, plain_db, heartbeat=1, **FAST)
    receiver = EventBus(name, hung_broker.url, plain_db, heartbeat=1, **FAST)
    listener = Recorder()
    try:
        for bus in (sender, receiver):
            bus.start()
            assert bus.wait_ready(30)
        sender.dispatch(Event.new("before"))  # the publisher connection is open

        hung_broker.pause()
        try:
            publishing = gevent.spawn(sender.dispatch, Event.new("while-hung"), ["acc1"])
            binding = gevent.spawn(receiver.register_key, "acc1", listener)
            gevent.joinall([publishing, binding], timeout=30)
            assert publishing.ready() and binding.ready(), "still waiting for the hung broker"
        finally:
            hung_broker.resume()
        assert isinstance(publishing.exception, BusUnavailable), publishing.exception
        assert binding.successful()  # the consumer binds it once the broker answers again

        after = Event.new("after")

        def dispatched() -> bool:
            try:
                sender.dispatch(after, ["acc1"])  # the outbox would retry just like this
                return True
            except BusUnavailable:
                return False

        wait_until(dispatched, 60, interval=0.2, message="a publish to succeed again")
        assert listener.wait_count(1, timeout=30) and listener.ids == [after.id]
    finally:
        sender.stop()
        receiver.stop()


#: A node whose group handler never returns: it says "handling <event id>" and waits to be killed.
STUCK_NODE = """
from gevent import monkey; monkey.patch_all()
import sys, gevent
from jmapmono.events.bus import EventBus
from jmapmono.store import open_database
name, broker, database = sys.argv[1:4]
bus = EventBus(name, broker, open_database(database), lease_seconds=1)
bus.register_group("changes", lambda event: (print("handling", event.id, flush=True), gevent.sleep(3600)))
bus.start()
assert bus.wait_ready(30)
print("ready", flush=True)
gevent.sleep(3600)
"""


def read_line(proc: subprocess.Popen) -> str:
    with gevent.Timeout(60, AssertionError("the node process said nothing for a minute")):
        line = proc.stdout.readline()  # type: ignore[union-attr]
    assert line, f"the node process ended with {proc.poll()}"
    return line.strip()


def test_a_node_killed_mid_event_leaves_it_to_another_node_which_handles_it_once(hung_broker, plain_db, tmp_path):
    name = f"t{uuid.uuid4().hex[:10]}"
    argv = [sys.executable, "-c", STUCK_NODE, name, hung_broker.url, f"sqlite:///{tmp_path / 'bus.sqlite3'}"]
    stuck = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    sender = EventBus(name, hung_broker.url, plain_db, **FAST)
    survivor = EventBus(name, hung_broker.url, plain_db, lease_seconds=1, **FAST)
    handled = Recorder()
    try:
        assert read_line(stuck) == "ready"
        sender.start()
        assert sender.wait_ready(30)
        event = Event.new("Added")
        sender.dispatch(event)
        assert read_line(stuck) == f"handling {event.id}"
        survivor.register_group("changes", handled)
        survivor.start()
        assert survivor.wait_ready(30)

        stuck.kill()  # mid-event: no acknowledgement, its claim on the event left to lapse
        assert stuck.wait(timeout=30) == -signal.SIGKILL
        assert handled.wait_count(1, timeout=60) and handled.ids == [event.id]
        marker = Event.new("Added")  # handled after any second copy would have been
        sender.dispatch(marker)
        assert handled.wait_count(2, timeout=30) and handled.ids == [event.id, marker.id]
    finally:
        if stuck.poll() is None:
            stuck.kill()
            stuck.wait()
        sender.stop()
        survivor.stop()

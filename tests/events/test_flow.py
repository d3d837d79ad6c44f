"""The event flow in one serving process, and the wake-up of its relay by other processes.

Mutation → outbox → relay → mailbox bus → MailboxChangeListener → JMAP bus → a key listener (the
account id), on SQLite and Postgres with memory://. Deliveries by ``python -m jmapmono deliver``, a
real LMTP process and a writer script reach the test process's key listener through the doorbell
(the relay's safety poll is set to 60 s there, so only a ring can explain a prompt arrival).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from jmapmono.events.bus import Event, EventBus
from jmapmono.events.doorbell import doorbell_dir, ring
from jmapmono.mailbox.model import NewMessage
from jmapmono.push.change_listener import to_jmap
from jmapmono.push.jmap_bus_events import user_key
from jmapmono.runtime.event_flow import EventFlow
from tests.support.events import Recorder, settle
from tests.support.servers import ROOT, jmapmono_env, start_gunicorn, start_lmtp, start_serve
from tests.support.waiting import wait_until

SLOW_POLL = 60.0  # a relay that must be woken by a ring to be prompt


def message(n: int = 0, to: str = "alice@example.org") -> bytes:
    headers = f"From: bob@example.org\r\nTo: {to}\r\nSubject: test {n}\r\nMessage-ID: <{n}.{time.time()}@t>\r\n"
    return (headers + "\r\nHi.\r\n").encode()


@pytest.fixture
def start_flow(services) -> Iterator[Callable[..., EventFlow]]:
    started: list[EventFlow] = []

    def start(**options) -> EventFlow:
        running = services.start(**options).flow
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def users(services, monkeypatch):
    from tests.support.jmap import PASSWORD, cheap_password_hashing

    cheap_password_hashing(monkeypatch)
    alice, _ = services.accounts.create_user("alice@example.org", PASSWORD)
    bob, _ = services.accounts.create_user("bob@example.org", PASSWORD)
    return alice, bob


def listen(bus: EventBus, key: str) -> Recorder:
    pushes = Recorder()
    bus.register_key(key, pushes)
    return pushes


# -- in one process ------------------------------------------------------------------------------


def test_delivery_gives_one_state_change_with_the_new_states(services, users, start_flow):
    alice, _ = users
    flow = start_flow()
    pushes = listen(flow.jmap_bus, alice.account_id)
    settle(flow)  # the provisioning of alice's mailboxes
    pushes.clear()

    services.mailboxes.deliver(alice.email, message())
    [event] = pushes.wait_count(1)
    settle(flow)
    assert len(pushes.events) == 1
    assert event.type == "StateChange"
    assert event.payload["accountId"] == alice.account_id
    changed = event.payload["changed"]
    assert set(changed) == {"Email", "Mailbox", "Thread", "EmailDelivery"}
    assert changed == {t: services.changes.state(alice.account_id, t) for t in changed}


def test_flag_change_and_move_carry_no_email_delivery(services, users, start_flow):
    alice, _ = users
    flow = start_flow()
    pushes = listen(flow.jmap_bus, alice.account_id)
    delivered = services.mailboxes.deliver(alice.email, message())
    settle(flow)
    pushes.clear()
    before = services.changes.state(alice.account_id, "EmailDelivery")

    services.mailboxes.set_keywords(alice.account_id, [delivered.message_id], add=["$flagged"])
    [flagged] = pushes.wait_count(1)
    archive = services.mailboxes.mailbox_by_role(alice.account_id, "archive")
    services.mailboxes.move_messages(
        alice.account_id, [delivered.message_id], add=[archive.id], remove=[delivered.mailbox_id]
    )
    moved = pushes.wait_count(2)[1]
    settle(flow)

    assert len(pushes.events) == 2
    assert "Email" in flagged.payload["changed"] and "EmailDelivery" not in flagged.payload["changed"]
    assert {"Email", "Mailbox"} <= set(moved.payload["changed"]) and "EmailDelivery" not in moved.payload["changed"]
    assert services.changes.state(alice.account_id, "EmailDelivery") == before


def test_bulk_update_of_50_is_one_state_change(services, users, start_flow):
    alice, _ = users
    flow = start_flow()
    inbox = services.mailboxes.mailbox_by_role(alice.account_id, "inbox")
    result = services.mailboxes.append_many(
        alice.account_id, [NewMessage(message(n), (inbox.id,), ()) for n in range(50)], delivery=True
    )
    ids = [a.id for a in result.created.values()]
    assert len(ids) == 50
    pushes = listen(flow.jmap_bus, alice.account_id)
    settle(flow)
    pushes.clear()

    services.mailboxes.set_keywords(alice.account_id, ids, add=["$seen"])
    [event] = pushes.wait_count(1)
    settle(flow)
    assert len(pushes.events) == 1
    assert set(event.payload["changed"]) == {"Email", "Mailbox"}  # unread counts moved; threads did not
    assert flow.listener.stats["dispatched"] == flow.relay.stats["published"]


def test_delegation_granted_and_revoked_reach_the_delegate(services, users, start_flow):
    alice, bob = users
    flow = start_flow()
    pushes = listen(flow.jmap_bus, user_key(bob.id))

    assert services.accounts.delegate(alice.email, bob.email)
    granted = pushes.wait_count(1)[0]
    assert granted.type == "AccessChanged"
    assert granted.payload == {
        "userId": bob.id,
        "accountId": alice.account_id,
        "ownerUserId": alice.id,
        "granted": True,
    }
    assert not services.accounts.delegate(alice.email, bob.email)  # no change, no event

    assert services.accounts.undelegate(alice.email, bob.email)
    assert pushes.wait_count(2)[1].payload["granted"] is False

    # Each change is awaited before the next: two changes committed back to back are handled by the
    # listener group concurrently, and may reach the key listener in either order.
    services.accounts.delegate(alice.email, bob.email)
    assert pushes.wait_count(3)[2].payload["granted"] is True
    services.accounts.delete(alice.email)  # the delegation goes with the owner
    events = pushes.wait_count(4)
    settle(flow)
    assert [e.payload["granted"] for e in events] == [True, False, True, False]
    assert all(e.payload["accountId"] == alice.account_id for e in events)


def test_events_committed_before_the_start_are_published_at_start(services, users, start_flow):
    alice, _ = users
    for n in range(3):
        services.mailboxes.deliver(alice.email, message(n))
    with services.db.read() as tx:
        pending = tx.value("SELECT COUNT(*) FROM event_outbox WHERE dispatched_at IS NULL")
    assert pending == 2 + 3  # the provisioning of both users, the deliveries
    pushes = Recorder()
    services.jmap_bus.register_key(alice.account_id, pushes)
    flow = start_flow(poll_interval=SLOW_POLL)
    pushes.wait_count(1 + 3, timeout=5)
    settle(flow)
    assert len(pushes.events) == 4
    assert sum("EmailDelivery" in e.payload["changed"] for e in pushes.events) == 3


def test_to_jmap_is_generic_on_states():
    """A type some other part adds (here Identity) is pushed; EmailDelivery only with ``delivery``."""
    payload = {"type": "StatesChanged", "account_id": "a1", "states": {"Identity": "5", "EmailDelivery": "6"}}
    jmap, keys = to_jmap(Event("e1", "StatesChanged", payload))
    assert keys == ["a1"] and jmap.id == "e1"
    assert jmap.payload == {"accountId": "a1", "changed": {"Identity": "5"}}
    assert to_jmap(Event("e2", "FlagsUpdated", {"type": "FlagsUpdated", "account_id": "a1", "states": {}})) is None


# -- other processes -----------------------------------------------------------------------------


def deliver_cli(config, to: str, raw: bytes) -> subprocess.CompletedProcess:
    env = jmapmono_env(config.database_url, config.data_dir)
    argv = [sys.executable, "-m", "jmapmono", "deliver", "--to", to]
    return subprocess.run(argv, cwd=ROOT, env=env, input=raw, capture_output=True, timeout=60)


def test_deliver_and_lmtp_processes_wake_the_relay(services, config, users, start_flow, tmp_path):
    alice, _ = users
    flow = start_flow(poll_interval=SLOW_POLL)
    pushes = listen(flow.jmap_bus, alice.account_id)
    settle(flow)
    pushes.clear()
    started = flow.relay.stats["wakeups"]

    result = deliver_cli(config, alice.email, message(1))
    assert result.returncode == 0, result.stderr.decode()
    [event] = pushes.wait_count(1)  # the relay polls every 60 s: only the ring can bring it now
    assert "EmailDelivery" in event.payload["changed"]

    lmtp = start_lmtp(config.database_url, tmp_path)
    try:
        client = lmtp.client()
        assert client.mail("bob@example.org").code == 250
        assert client.rcpt(alice.email).code == 250
        replies = client.data(message(2), 1)
        assert [r.code for r in replies] == [250]
        pushes.wait_count(2)
        client.quit()
    finally:
        assert lmtp.stop() == 0
    assert "EmailDelivery" in pushes.events[1].payload["changed"]
    assert flow.relay.stats["wakeups"] > started


def test_a_long_lived_writer_process_wakes_the_relay_on_every_commit(services, config, users, start_flow):
    """One writer process (as a long-running LMTP server is) delivering one message at a time: each commit
    there wakes the relay here (its safety poll is 60 s), not only the first. Latency: bench/wakeup_latency.py."""
    alice, _ = users
    flow = start_flow(poll_interval=SLOW_POLL)
    pushes = listen(flow.jmap_bus, alice.account_id)
    settle(flow)
    pushes.clear()
    env = jmapmono_env(config.database_url, config.data_dir)
    writer = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "support" / "outbox_writer.py"), "serve"],
        cwd=ROOT,
        env=dict(env, PYTHONPATH=str(ROOT)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    delivered = []
    try:
        for i in range(5):
            writer.stdin.write(f"{alice.email}\n".encode())
            writer.stdin.flush()
            line = writer.stdout.readline()
            assert line, "the writer process died"
            delivered.append(json.loads(line))
            pushes.wait_count(i + 1, timeout=10)
    finally:
        writer.stdin.close()
        writer.wait(timeout=30)
    assert writer.returncode == 0
    assert {d["account_id"] for d in delivered} == {alice.account_id}
    assert all("EmailDelivery" in e.payload["changed"] for e in pushes.events)
    settle(flow)
    assert len(pushes.events) == 5
    assert pushes.events[-1].payload["changed"]["Email"] == services.changes.state(alice.account_id, "Email")


def test_doorbell_ring_is_harmless_without_listeners_and_removes_dead_ones(tmp_path):
    import socket

    db_file = tmp_path / "x.sqlite3"
    assert ring(db_file) == 0  # no directory yet
    directory = doorbell_dir(db_file)
    directory.mkdir()
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(str(directory / "999999.abcdef"))
    dead.close()  # bound, then gone: what a crashed relay leaves behind
    live = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    live.bind(str(directory / "999998.abcdef"))
    try:
        assert ring(db_file) == 1
        assert live.recv(8) == b"!"
        assert sorted(os.listdir(directory)) == ["999998.abcdef"]
    finally:
        live.close()
    long_name = tmp_path / ("d" * 120) / "x.sqlite3"
    assert len(str(doorbell_dir(long_name))) + 16 <= 107  # falls back to a short path


# -- the runtime wiring --------------------------------------------------------------------------


@pytest.mark.parametrize("runtime", ["serve", "gunicorn"])
def test_serve_and_gunicorn_workers_run_the_flow_and_stop_it(services, config, users, tmp_path, runtime):
    alice, _ = users
    if runtime == "serve":
        server = start_serve(config.database_url, tmp_path, lmtp=False)
        log = server.stderr
    else:
        server = start_gunicorn(config.database_url, config.data_dir, tmp_path)
        log = server.log
    try:
        wait_until(lambda: "relay_started" in log(), 15, message="the relay to start")
        assert deliver_cli(config, alice.email, message()).returncode == 0

        def pending() -> int:
            with services.db.read() as tx:
                return tx.value("SELECT COUNT(*) FROM event_outbox WHERE dispatched_at IS NULL")

        wait_until(lambda: pending() == 0, 10, message="the server's relay to publish the delivery")
    finally:
        server.stop(signal.SIGTERM, timeout=30)
    text = log()
    assert "event=flow_started" in text and "event=flow_stopped" in text, text
    assert "Traceback" not in text, text

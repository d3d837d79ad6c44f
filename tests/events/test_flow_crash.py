"""Nothing is lost when a writer dies right after its commit, and nothing is pushed twice in effect.

A writer process (tests/support/outbox_writer.py) commits deliveries and a bulk flag change, then
SIGKILLs itself in the after-commit hook of its last transaction, before anything of it was published
(with ``--flow`` it even runs its own relay, and dies before that relay could publish). A relay in the
test process then publishes every pending event: the change log is complete and every StateChange
arrives, once. Publishing them all again (a relay that died after publishing, before marking) changes
nothing a client can see.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import gevent.event
import pytest

from jmapmono.mailbox import changes
from tests.support.events import Recorder, settle
from tests.support.servers import ROOT, jmapmono_env
from tests.support.waiting import wait_until

WRITER = ROOT / "tests" / "support" / "outbox_writer.py"
DELIVERIES = 5


def run_writer(config, *args: str) -> subprocess.CompletedProcess:
    env = dict(jmapmono_env(config.database_url, config.data_dir), PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(WRITER), *args], cwd=ROOT, env=env, capture_output=True, timeout=60)


def outbox_rows(services) -> list[dict]:
    with services.db.read() as tx:
        return tx.query("SELECT id, event, dispatched_at FROM event_outbox ORDER BY id")


@pytest.fixture
def alice(services, monkeypatch):
    from tests.support.jmap import PASSWORD, cheap_password_hashing

    cheap_password_hashing(monkeypatch)
    user, _ = services.accounts.create_user("alice@example.org", PASSWORD)
    with services.db.transaction() as tx:  # the provisioning event is not what this test is about
        tx.execute("UPDATE event_outbox SET dispatched_at = 1 WHERE dispatched_at IS NULL")
    return user


@pytest.mark.parametrize("with_flow", [False, True], ids=["writer", "writer-with-relay"])
def test_sigkill_after_commit_loses_nothing_and_duplicates_nothing(services, config, alice, with_flow):
    email_state = changes.parse_token(services.changes.state(alice.account_id, "Email"))
    result = run_writer(config, "crash", alice.email, str(DELIVERIES), *(["--flow"] if with_flow else []))
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()[-3000:]
    assert json.loads(result.stdout.splitlines()[-1])["killing"] >= 1

    # What the dead process committed: its events, all pending; its changes, all in the log.
    written = [r for r in outbox_rows(services) if r["dispatched_at"] is None]
    expected = 1 if with_flow else DELIVERIES + 1
    assert len(written) == expected
    events = [json.loads(r["event"]) for r in written]
    assert [e["type"] for e in events] == ["Added"] * min(expected, DELIVERIES) + ["FlagsUpdated"] * (expected > 1)
    log = services.changes.changes_since(alice.account_id, "Email", changes.token(email_state))
    assert len(log.created) == min(expected, DELIVERIES)
    assert log.new_state == services.changes.state(alice.account_id, "Email")

    # A relay here publishes every one of them, once.
    pushes = Recorder()
    services.jmap_bus.register_key(alice.account_id, pushes)
    flow = services.start(poll_interval=0.05).flow
    try:
        pushes.wait_count(expected)
        settle(flow)
        # Group workers run concurrently, so the order may differ; each event arrives exactly once.
        assert len(pushes.events) == expected
        assert {e.id: e.payload["changed"] for e in pushes.events} == {
            e["event_id"]: {t: s for t, s in e["states"].items() if e.get("delivery") or t != "EmailDelivery"}
            for e in events
        }
        assert sum("EmailDelivery" in e.payload["changed"] for e in pushes.events) == min(expected, DELIVERIES)
        assert flow.listener.stats["handled"] == expected

        # Published again (a relay killed after publishing, before marking): absorbed by event id.
        duplicates = flow.mailbox_bus.stats["group_duplicates"]
        with services.db.transaction() as tx:
            tx.execute("UPDATE event_outbox SET dispatched_at = NULL, claimed_until = NULL WHERE dispatched_at > 1")
        flow.relay.wake()
        wait_until(
            lambda: flow.mailbox_bus.stats["group_duplicates"] >= duplicates + expected, 10, message="the copies"
        )
        settle(flow)
        assert flow.relay.stats["published"] == 2 * expected
        assert flow.listener.stats["handled"] == expected
        assert len(pushes.events) == expected
    finally:
        flow.stop()


def test_a_relay_that_died_holding_a_claim_is_taken_over_after_its_lease(services, alice):
    """Rows leased by a relay that died are published by another once the lease lapses."""
    services.mailboxes.deliver(alice.email, b"Subject: x\r\n\r\nbody\r\n")
    with services.db.transaction() as tx:  # as a dead relay would leave them: leased, never marked
        tx.execute("UPDATE event_outbox SET claimed_until = ? WHERE dispatched_at IS NULL", (2**62,))
    pushes = Recorder()
    services.jmap_bus.register_key(alice.account_id, pushes)
    flow = services.start(poll_interval=0.05).flow
    try:
        assert flow.relay.drain() == 0  # still leased: not this relay's to publish
        with services.db.transaction() as tx:  # the lease runs out
            tx.execute("UPDATE event_outbox SET claimed_until = 1 WHERE dispatched_at IS NULL")
        flow.relay.wake()
        [event] = pushes.wait_count(1)
        assert "EmailDelivery" in event.payload["changed"]
        wait_until(lambda: flow.relay.pending() == 0, 5, message="the row to be marked")
    finally:
        flow.stop()


def test_dispatched_rows_are_pruned_after_the_retention(services, alice):
    services.mailboxes.deliver(alice.email, b"Subject: x\r\n\r\nbody\r\n")
    flow = services.start(poll_interval=0.05, retention_seconds=3600).flow
    try:
        wait_until(lambda: flow.relay.pending() == 0, 5, message="the delivery to be published")
        assert flow.relay.prune() == 1  # the provisioning event, marked long ago by the fixture
        assert len(outbox_rows(services)) == 1
        with services.db.transaction() as tx:
            tx.execute("UPDATE event_outbox SET dispatched_at = 2")
        assert flow.relay.prune() == 1
        assert outbox_rows(services) == []
    finally:
        flow.stop()


def test_stop_during_a_database_call_ends_the_relay(services, backend):
    """A kill inside a Postgres call surfaces as a StoreError; the relay must still end, not retry."""
    if backend != "postgres":
        pytest.skip("a SQLite call blocks the process: no kill can interrupt it")
    flow = services.start(poll_interval=0.05).flow
    entered = gevent.event.Event()
    claim = flow.relay._claim

    def slow_claim():
        entered.set()
        with services.db.transaction() as tx:
            tx.value("SELECT pg_sleep(2)")
        return claim()

    flow.relay._claim = slow_claim
    flow.relay.wake()
    assert entered.wait(5)
    flow.stop()
    assert flow.relay._greenlet.dead
    assert flow.relay.stats["store_failures"] == 0

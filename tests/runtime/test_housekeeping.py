"""Housekeeping: every periodic job runs, removes what it must, once per cluster per interval, in every
deployment form (``serve`` and the gunicorn worker of the Procfile)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from jmapmono.clock import now_ms
from jmapmono.events.event import Event
from jmapmono.runtime.housekeeping import Housekeeping, Job, jobs_of
from jmapmono.store import leases
from tests.support.servers import start_gunicorn, start_serve
from tests.support.waiting import wait_until

JOBS = ["blob_gc", "changes_retention", "push_subscriptions_expired", "ws_tickets_expired"]
JOBS += ["event_processed_ids", "dead_letters", "login_failures"]
LONG_AGO = 1_000  # ms since the epoch: older than any retention


@pytest.fixture
def alice(services):
    return services.accounts.create_user("alice@example.org", "pw")[0]


def count(services, sql: str, params: tuple = ()) -> int:
    with services.db.read() as tx:
        return int(tx.value(sql, params))


# -- what each job removes: (make something stale and something fresh, count what is stale) ------------------


def _blobs(services, alice) -> Callable[[], int]:
    stale = services.blobs.upload(alice.account_id, alice.id, b"stale upload", "text/plain")
    services.blobs.upload(alice.account_id, alice.id, b"fresh upload", "text/plain")
    with services.db.transaction() as tx:
        tx.execute("UPDATE blob_refs SET expires_at = ? WHERE blob_id = ?", (LONG_AGO, stale.blob_id))
    return lambda: count(services, "SELECT COUNT(*) FROM blobs WHERE id = ?", (stale.blob_id,))


def _changes(services, alice) -> Callable[[], int]:
    services.mailboxes.deliver(alice.email, b"Subject: x\r\n\r\nbody\r\n")
    with services.db.transaction() as tx:
        tx.execute("UPDATE change_log SET created_at = ? WHERE account_id = ? AND type = 'Mailbox'", (LONG_AGO,
                   alice.account_id))  # fmt: skip
    return lambda: count(services, "SELECT COUNT(*) FROM change_log WHERE created_at = ?", (LONG_AGO,))


def _subscriptions(services, alice) -> Callable[[], int]:
    with services.db.transaction() as tx:
        for sub_id, expires in (("stale", LONG_AGO), ("fresh", now_ms() + 86_400_000)):
            tx.execute(
                "INSERT INTO push_subscriptions (id, user_id, device_client_id, url, verification_code, expires_at, "
                "created_at) VALUES (?, ?, 'd', 'https://push.example/x', 'v', ?, ?)",
                (sub_id, alice.id, expires, LONG_AGO),
            )
    return lambda: count(services, "SELECT COUNT(*) FROM push_subscriptions WHERE id = 'stale'")


def _tickets(services, alice) -> Callable[[], int]:
    with services.db.transaction() as tx:
        for ticket, expires in (("stale", LONG_AGO), ("fresh", now_ms() + 60_000)):
            tx.execute(
                "INSERT INTO ws_tickets (ticket_hash, user_id, expires_at) VALUES (?, ?, ?)",
                (ticket, alice.id, expires),
            )
    return lambda: count(services, "SELECT COUNT(*) FROM ws_tickets WHERE ticket_hash = 'stale'")


def _processed(services, alice) -> Callable[[], int]:
    with services.db.transaction() as tx:
        for event_id, at in (("stale", LONG_AGO), ("fresh", now_ms())):
            tx.execute(
                "INSERT INTO event_processed (bus, group_name, event_id, done, lease_until, updated_at) "
                "VALUES ('mailbox', 'g', ?, 1, 0, ?)",
                (event_id, at),
            )
    return lambda: count(services, "SELECT COUNT(*) FROM event_processed WHERE event_id = 'stale'")


def _dead_letters(services, alice) -> Callable[[], int]:
    event = Event.new("Added", {"accountId": alice.account_id})
    with services.db.transaction() as tx:
        for event_id, at in (("stale", LONG_AGO), ("fresh", now_ms())):
            tx.execute(
                "INSERT INTO event_dead_letters (bus, group_name, event_id, event_type, event, error, attempts, "
                "created_at, failed_at) VALUES ('mailbox', 'g', ?, 'Added', ?, 'boom', 3, ?, ?)",
                (event_id, event.to_json(), at, at),
            )
    return lambda: count(services, "SELECT COUNT(*) FROM event_dead_letters WHERE event_id = 'stale'")


def _login_failures(services, alice) -> Callable[[], int]:
    with services.db.transaction() as tx:
        for address, at in (("192.0.2.1", LONG_AGO), ("192.0.2.2", now_ms())):
            tx.execute("INSERT INTO login_failures (address, username, at) VALUES (?, 'x', ?)", (address, at))
            tx.execute(
                "INSERT INTO login_sources (user_id, address, seen_at) VALUES (?, ?, ?)", (alice.id, address, at)
            )
    sql = "SELECT (SELECT COUNT(*) FROM login_failures WHERE at = ?) "
    sql += "+ (SELECT COUNT(*) FROM login_sources WHERE seen_at = ?)"
    return lambda: count(services, sql, (LONG_AGO, LONG_AGO))


STALE = {
    "blob_gc": _blobs,
    "changes_retention": _changes,
    "push_subscriptions_expired": _subscriptions,
    "ws_tickets_expired": _tickets,
    "event_processed_ids": _processed,
    "dead_letters": _dead_letters,
    "login_failures": _login_failures,
}


def test_every_job_is_known_to_these_tests(services):
    assert sorted(job.name for job in jobs_of(services)) == sorted(JOBS) == sorted(STALE)


@pytest.mark.parametrize("name", JOBS)
def test_each_job_removes_what_is_stale_and_keeps_what_is_not(services, alice, name, caplog):
    caplog.set_level(logging.INFO, logger="jmapmono.housekeeping")
    stale = STALE[name](services, alice)
    stale_rows = stale()
    assert stale_rows > 0
    job = next(j for j in jobs_of(services) if j.name == name)
    rows_before = _rows(services)
    assert Housekeeping(services.db, [job]).run_once(job)
    assert stale() == 0
    assert rows_before - _rows(services) == stale_rows  # what is not stale is all still there
    line = next(r.getMessage() for r in caplog.records if f"job={name}" in r.getMessage())
    assert "event=housekeeping" in line and "result=ok" in line


def _rows(services) -> int:
    """Everything the jobs may remove, summed: a job that removed what is fresh too would remove more."""
    tables = ["blobs", "change_log", "push_subscriptions", "ws_tickets", "event_processed", "event_dead_letters"]
    tables += ["login_failures", "login_sources"]
    return sum(count(services, f"SELECT COUNT(*) FROM {t}") for t in tables)


def test_a_job_runs_once_per_interval_across_processes(services):
    """Two processes (two Housekeeping holders on one database): whoever asks first runs the job, the other
    skips it until the lease ends; the holder may run again (the next interval on the same process)."""
    runs: list[str] = []
    job = Job("probe", 3600.0, lambda: runs.append("ran") or 0)
    one, two = Housekeeping(services.db, [job]), Housekeeping(services.db, [job])
    assert one.run_once(job) is True
    assert two.run_once(job) is False
    assert one.run_once(job) is True
    assert runs == ["ran", "ran"]


def test_a_lease_that_ran_out_goes_to_the_next_asker(db):
    assert leases.try_acquire(db, "job", "node-a", 60)
    assert not leases.try_acquire(db, "job", "node-b", 60)
    assert leases.try_acquire(db, "expired", "node-a", 0)  # expires at once: a holder that died
    assert leases.try_acquire(db, "expired", "node-b", 60)
    leases.release(db, "job", "node-a")
    assert leases.try_acquire(db, "job", "node-b", 60)


def test_a_failing_job_is_logged_and_does_not_stop_the_others(services, caplog):
    caplog.set_level(logging.INFO, logger="jmapmono.housekeeping")

    def boom() -> int:
        raise RuntimeError("disk on fire")

    jobs = [Job("boom", 3600.0, boom), Job("fine", 3600.0, lambda: 0)]
    keeper = Housekeeping(services.db, jobs)
    assert all(keeper.run_once(job) for job in jobs)
    messages = [r.getMessage() for r in caplog.records if "event=housekeeping" in r.getMessage()]
    assert any("job=boom" in m and "RuntimeError: disk on fire" in m for m in messages)
    assert any("job=fine" in m and "result=ok" in m for m in messages)


# -- every deployment form runs every job ---------------------------------------------------------------------


@pytest.mark.parametrize("form", ["serve", "serve-workers", "gunicorn"])
def test_every_job_runs_under_serve_and_under_gunicorn(services, config, tmp_path, form):
    every = {"JMAPMONO_HOUSEKEEPING_SECONDS": "1"}
    if form.startswith("serve"):
        workers = 2 if form == "serve-workers" else 1
        server = start_serve(config.database_url, tmp_path, lmtp=False, workers=workers, **every)
        output = server.stderr
    else:
        server = start_gunicorn(config.database_url, config.data_dir, tmp_path, workers=2, **every)
        output = server.log

    def ran() -> set[str]:
        text = output()
        return {name for name in JOBS if f"event=housekeeping job={name} " in text}

    try:
        wait_until(lambda: ran() == set(JOBS), timeout=30, message=f"every housekeeping job to run under {form}")
    finally:
        server.stop()
    text = output()
    assert "Traceback" not in text, text
    failed = [line for line in text.splitlines() if "event=housekeeping" in line and "result=ok" not in line]
    assert not failed, failed

"""The store: migrations, transactions, rollback, after-commit hooks, on both backends."""

import gevent
import pytest

from jmapmono.accounts.principal import Principal
from jmapmono.store import StoreError
from jmapmono.store.migrations import load_migrations, migrate, to_postgres


def test_migrations_are_recorded_and_idempotent(db):
    with db.read() as tx:
        versions = [r["version"] for r in tx.query("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == [m.version for m in load_migrations(db.dialect)]
    assert migrate(db) == versions[-1]  # a second start applies nothing and fails on nothing


def test_rollback_on_error_keeps_nothing(db):
    with pytest.raises(RuntimeError):
        with db.transaction() as tx:
            tx.execute("INSERT INTO blobs (id, size, data, created_at) VALUES (?, ?, ?, ?)", ("Gx", 1, b"x", 0))
            raise RuntimeError("boom")
    with db.read() as tx:
        assert tx.value("SELECT COUNT(*) FROM blobs") == 0


def test_bytes_round_trip_exactly(db):
    data = bytes(range(256)) * 3 + b"\r\n.\r\n"
    with db.transaction() as tx:
        tx.execute("INSERT INTO blobs (id, size, data, created_at) VALUES (?, ?, ?, ?)", ("Gy", len(data), data, 0))
    with db.read() as tx:
        assert bytes(tx.value("SELECT data FROM blobs WHERE id = ?", ("Gy",))) == data


def test_after_commit_runs_only_after_commit(db):
    seen = []
    with db.transaction() as tx:
        tx.after_commit(lambda: seen.append("committed"))
        assert seen == []
    assert seen == ["committed"]
    with pytest.raises(ValueError):
        with db.transaction() as tx:
            tx.after_commit(lambda: seen.append("rolled back"))
            raise ValueError
    assert seen == ["committed"]


def test_nested_transaction_joins_outer(db):
    with pytest.raises(RuntimeError):
        with db.transaction() as outer:
            outer.execute("INSERT INTO blobs (id, size, data, created_at) VALUES ('Ga', 1, ?, 0)", (b"a",))
            with db.transaction() as inner:
                inner.execute("INSERT INTO blobs (id, size, data, created_at) VALUES ('Gb', 1, ?, 0)", (b"b",))
            raise RuntimeError
    with db.read() as tx:
        assert tx.value("SELECT COUNT(*) FROM blobs") == 0


def test_percent_and_placeholders_survive_translation(db):
    with db.transaction() as tx:
        tx.execute("INSERT INTO blobs (id, size, data, created_at) VALUES (?, 1, ?, 0)", ("G%1", b"z"))
        assert tx.value("SELECT id FROM blobs WHERE id LIKE 'G%'") == "G%1"


def test_a_query_alone_reads_committed_rows_and_joins_an_open_transaction(db):
    with db.transaction() as tx:
        tx.execute("INSERT INTO blobs (id, size, data, created_at) VALUES ('Gq', 1, ?, 0)", (b"q",))
        assert db.query_alone("SELECT id FROM blobs WHERE id = ?", ("Gq",)) == [{"id": "Gq"}]  # its own write
        assert db.query_alone("SELECT id FROM blobs WHERE id = ?", ("Gr",)) == []
    assert db.query_alone("SELECT id, size FROM blobs ORDER BY id") == [{"id": "Gq", "size": 1}]
    with pytest.raises(Exception):  # noqa: B017 (each backend has its own error class for bad SQL)
        db.query_alone("SELECT no_such_column FROM blobs")
    assert db.query_alone("SELECT COUNT(*) AS n FROM blobs") == [{"n": 1}]  # the failure left nothing behind


def test_a_lease_write_commits_alone_joins_an_open_transaction_and_leaves_the_stamp(db):
    db.hears_others = True  # as in a serving process: the stamp moves with this process's commits
    stamp = db.change_stamp()
    insert = "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, 1) RETURNING holder"
    assert db.lease_write(insert, ("job", "node-a")) == [{"holder": "node-a"}]
    assert db.lease_write("UPDATE leases SET expires_at = 2 WHERE name = 'job'") == []  # no RETURNING: no rows
    assert db.query_alone("SELECT holder, expires_at FROM leases") == [{"holder": "node-a", "expires_at": 2}]
    assert db.change_stamp() == stamp  # bookkeeping: nothing a cache keeps under the stamp moved
    with pytest.raises(RuntimeError):
        with db.transaction():
            db.lease_write(insert, ("other", "node-b"))  # part of the open transaction …
            raise RuntimeError("boom")
    assert db.query_alone("SELECT name FROM leases") == [{"name": "job"}]  # … so rolled back with it
    with db.transaction() as tx:
        tx.execute("UPDATE leases SET expires_at = 3")
    assert db.change_stamp() != stamp  # while a real commit does move it


def test_lease_writes_do_not_wait_for_the_disk_and_keep_the_url_options(postgres_url):
    from urllib.parse import quote

    from jmapmono.store import open_database

    sep = "&" if "?" in postgres_url else "?"
    db = open_database(f"{postgres_url}{sep}options={quote('-c statement_timeout=4321')}")
    try:
        settings = "SELECT current_setting('synchronous_commit') AS sync, current_setting('statement_timeout') AS t"
        assert db.query_alone(settings) == [{"sync": "on", "t": "4321ms"}]
        assert db.lease_write(settings) == [{"sync": "off", "t": "4321ms"}]
        with db.transaction() as tx:  # durable transactions keep the server's setting
            assert tx.query(settings) == [{"sync": "on", "t": "4321ms"}]
    finally:
        db.close()


def test_an_announced_change_is_notified_with_the_commit_and_never_on_rollback(postgres_url, monkeypatch):
    import psycopg

    from jmapmono.store import open_database
    from jmapmono.store.base import NOTIFY_CHANNEL
    from jmapmono.store.postgres import PostgresTransaction

    statements: list[str] = []
    run = PostgresTransaction._run

    def counted(tx, sql, params):
        statements.append(sql)
        return run(tx, sql, params)

    monkeypatch.setattr(PostgresTransaction, "_run", counted)
    db = open_database(postgres_url)
    try:
        with psycopg.connect(postgres_url, autocommit=True) as listener:
            listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
            with pytest.raises(RuntimeError):
                with db.transaction() as tx:
                    tx.execute("INSERT INTO leases (name, holder, expires_at) VALUES ('a', 'x', 1)")
                    tx.announce_change()
                    raise RuntimeError("rolled back")
            with db.transaction() as tx:
                tx.execute("INSERT INTO leases (name, holder, expires_at) VALUES ('b', 'x', 1)")
                tx.announce_change()
            with psycopg.connect(postgres_url, autocommit=True) as marker:  # notifications arrive in commit order
                marker.execute(f"NOTIFY {NOTIFY_CHANNEL}, 'end'")
            heard = []
            for n in listener.notifies(timeout=10):
                if n.payload == "end":
                    break
                heard.append(n)
            assert [n.channel for n in heard] == [NOTIFY_CHANNEL]  # the committed one; nothing from the rolled back
        assert [sql.split("VALUES")[1] for sql in statements] == [" ('a', 'x', 1)", " ('b', 'x', 1)"]
        # no statement of its own: the NOTIFY travels with the COMMIT
        assert db.query_alone("SELECT name FROM leases") == [{"name": "b"}]
    finally:
        db.close()


def test_a_killed_query_alone_does_not_go_back_to_the_pool(postgres_url):
    import psycopg

    from jmapmono.store import open_database
    from tests.support.waiting import wait_until

    db = open_database(postgres_url)
    try:
        started = gevent.event.Event()

        def slow() -> None:
            started.set()
            db.query_alone("SELECT pg_sleep(5)")

        worker = gevent.spawn(slow)
        assert started.wait(5)
        with psycopg.connect(postgres_url, autocommit=True) as watcher:  # the kill must land mid-query

            def sleeping() -> bool:
                sql = "SELECT COUNT(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(5)' AND state = 'active'"
                return watcher.execute(sql).fetchone() == (1,)

            wait_until(sleeping, 5, message="the query to run")
        worker.kill(block=True, timeout=5)
        assert worker.dead
        assert db.pooled_connections() == 0  # closed, not pooled mid-query
        assert db.query_alone("SELECT 1 AS one") == [{"one": 1}]
    finally:
        db.close()


def test_postgres_dialect_rewrite():
    assert to_postgres("id INTEGER PRIMARY KEY AUTOINCREMENT, n INTEGER, d BLOB") == (
        "id BIGSERIAL PRIMARY KEY, n BIGINT, d BYTEA"
    )


def test_comments_never_reach_the_database(tmp_path):
    from jmapmono.store.migrations import load_migrations

    schema = tmp_path / "schema.sql"
    schema.write_text("-- version: 1\nCREATE TABLE t (\n    a TEXT -- what?\n    -- a line with ?\n);\n")
    (migration,) = load_migrations("postgres", schema)
    assert migration.statements == ("CREATE TABLE t (\n    a TEXT\n)",)


def test_a_killed_greenlet_is_not_turned_into_a_store_error(db):
    import gevent

    started = gevent.event.Event()

    def slow_query():
        with db.transaction() as tx:
            started.set()
            if db.dialect == "postgres":
                tx.execute("SELECT pg_sleep(5)")
            else:
                gevent.sleep(5)  # SQLite never yields inside a transaction; this stands in for one

    worker = gevent.spawn(slow_query)
    assert started.wait(5)
    worker.kill(block=True, timeout=5)
    assert isinstance(worker.exception, gevent.GreenletExit) or worker.exception is None
    assert worker.dead
    with db.read() as tx:  # the store is still usable
        assert tx.value("SELECT 1") == 1


def test_a_version_2_database_migrates_to_the_login_throttle_tables(backend, tmp_path, request):
    """A database made by the previous release (schema version 2, with a user in it) gains the failed-login
    tables at start, and they work."""
    from jmapmono.accounts.throttle import LoginThrottle
    from jmapmono.store import open_database

    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'v2.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_server").new_database()
    db = open_database(url)
    try:
        with db.transaction() as tx:
            tx.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")
        for migration in load_migrations(db.dialect)[:2]:
            with db.transaction() as tx:
                for statement in migration.statements:
                    tx.execute(statement)
                tx.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?, 0)", (migration.version,))
        with db.transaction() as tx:
            tx.execute(
                "INSERT INTO users (email, account_id, password_hash, created_at) "
                "VALUES ('a@example.org', 'a1', 'h', 0)"
            )
        assert migrate(db) == load_migrations(db.dialect)[-1].version >= 3
        throttle = LoginThrottle(db, 3)
        throttle.record_failure("2001:db8::1", "a@example.org")
        with db.read() as tx:
            user_id = tx.value("SELECT id FROM users WHERE email = 'a@example.org'")
        throttle.record_known_good(user_id, "192.0.2.1")
        state = throttle.login_state("a@example.org", "2001:db8::2")
        assert state.user is not None and state.user.id == user_id
        assert (state.address_failures, state.user_failures, state.known_good) == (1, 1, False)
        assert throttle.login_state("a@example.org", "192.0.2.1").known_good
    finally:
        db.close()


def test_a_version_3_database_migrates_with_its_push_subscriptions_tied_to_the_account_password(
    backend, tmp_path, request, config
):
    """A database the previous release left (schema version 3), with a subscription made with the account
    password and one made with an app password: after the migration each is its credential's, and a
    password change destroys the first only."""
    from jmapmono.push.subscriptions_store import PushSubscriptions
    from jmapmono.runtime import Runtime
    from jmapmono.store import open_database

    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'v3.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_server").new_database()
    db = open_database(url)
    runtime = Runtime(config, db)
    try:
        assert migrate(db, target=3) == 3
        with db.transaction() as tx:
            user_id = tx.value(
                "INSERT INTO users (email, account_id, password_hash, created_at) "
                "VALUES ('alice@example.org', 'a1', 'h', 0) RETURNING id"
            )
            tx.execute(
                "INSERT INTO app_passwords (id, user_id, secret_hash, created_at) VALUES ('pphone', ?, 's', 0)",
                (user_id,),
            )
            for sub_id, app_password_id in (("Sdesk", None), ("Sphone", "pphone")):
                tx.execute(
                    "INSERT INTO push_subscriptions (id, user_id, app_password_id, device_client_id, url, "
                    "verification_code, verified, expires_at, created_at) "
                    "VALUES (?, ?, ?, 'd', 'https://x/', 'c', 1, ?, 0)",
                    (sub_id, user_id, app_password_id, 2**62),
                )

        assert migrate(db) == load_migrations(db.dialect)[-1].version >= 4
        store, user = PushSubscriptions(db), runtime.accounts.require("alice@example.org")
        by_password = Principal(user.id, user.email, user.account_id)
        by_phone = Principal(user.id, user.email, user.account_id, "pphone")
        assert [s.id for s in store.list(by_password)] == ["Sdesk"]
        assert [s.id for s in store.list(by_phone)] == ["Sphone"]
        assert {s.id for s in store.targets("a1")} == {"Sdesk", "Sphone"}
        assert runtime.accounts.check_credential(by_password) is None

        runtime.accounts.set_password("alice@example.org", "a new password")
        assert [s.id for s in store.targets("a1")] == ["Sphone"]
        assert runtime.accounts.check_credential(by_password) is not None
    finally:
        runtime.close()


def read_one(db) -> object:
    with db.read() as tx:
        return tx.value("SELECT 1")


def test_a_call_waits_for_a_connection_only_so_long(postgres_url):
    """Every connection held (hung queries, a burst): the next call fails with StoreError (a 503, an LMTP 451)
    after the connect timeout instead of waiting for one to come free."""
    from jmapmono.store.postgres import PostgresDatabase

    db = PostgresDatabase(postgres_url, pool_size=1, connect_timeout=1)
    try:
        with db.transaction():
            waiting = gevent.spawn(read_one, db)
            waiting.join(timeout=30)
            assert waiting.ready(), "still waiting for a connection"
        assert isinstance(waiting.exception, StoreError) and "no connection free" in str(waiting.exception)
        with db.read() as tx:  # the pool is whole again
            assert tx.value("SELECT 1") == 1
    finally:
        db.close()

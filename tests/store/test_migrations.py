"""Schema migrations as deployments meet them: several processes starting at once on an empty database, and
the current code started on a database written by the first release (``fixtures/schema_v1.sql``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from jmapmono.store import open_database
from jmapmono.store.migrations import load_migrations
from tests.support.jmap import CORE, MAIL
from tests.support.lmtp_client import LMTPClient
from tests.support.servers import PostgresServer, ServeProcess, run_serve, start_serve, wait_for_port
from tests.support.waiting import wait_until

FIXTURES = Path(__file__).resolve().parent / "fixtures"
#: Written by the first release (its schema.sql before version 2, then its ``user add`` and ``deliver``).
V1_USER, V1_PASSWORD, V1_SUBJECT = "alice@example.org", "alice-password-1", "kept across the upgrade"
STARTING_AT_ONCE = 4


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database (no schema at all) of each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        yield server.new_database()


@contextmanager
def created_elsewhere(url: str) -> Iterator[None]:
    """On Postgres, hold ``schema_migrations`` created but uncommitted until every process waits on a lock, then
    roll it back: they all reach the creation of the table at the same moment, the race of a real start."""
    if not url.startswith("postgres"):
        yield
        return
    import psycopg

    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")
        yield

        def waiting() -> int:
            with psycopg.connect(url, autocommit=True) as watcher:
                sql = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                sql += "AND wait_event_type = 'Lock'"
                row = watcher.execute(sql).fetchone()
                return row[0] if row else 0

        wait_until(lambda: waiting() == STARTING_AT_ONCE, 60, message="every process to wait on the schema")
        conn.rollback()


def versions(url: str) -> list[int]:
    db = open_database(url)
    try:
        with db.read() as tx:
            return [r["version"] for r in tx.query("SELECT version FROM schema_migrations ORDER BY version")]
    finally:
        db.close()


def test_processes_starting_at_once_on_an_empty_database_all_start_and_migrate_it_once(empty_database, tmp_path):
    servers: list[ServeProcess] = []
    logs = ""
    try:
        with created_elsewhere(empty_database):
            servers = [run_serve(empty_database, tmp_path, lmtp=False) for _ in range(STARTING_AT_ONCE)]
        for server in servers:
            try:
                wait_for_port(server.http_port, 60, server.proc)
            except (RuntimeError, TimeoutError) as e:
                raise AssertionError(f"{e}\n{server.stderr()}") from None
        logs = "".join(server.stderr() for server in servers)
        latest = len(load_migrations("sqlite"))
        for version in range(1, latest + 1):
            assert len(re.findall(rf"event=migration_applied version={version} ", logs)) == 1, logs
        assert versions(empty_database) == list(range(1, latest + 1))
        printed = lambda: "".join(server.stdout() for server in servers)  # noqa: E731
        wait_until(lambda: "password:" in printed(), 30, message="the first user")
        assert len(re.findall(r"password: +\S+", printed())) == 1, printed()  # made by one of them
        for server in servers:
            assert requests.get(f"{server.url}/.well-known/jmap", timeout=10).status_code == 401
    finally:
        codes = [server.stop() for server in servers]
    assert codes == [0] * STARTING_AT_ONCE, logs
    assert "Traceback" not in logs, logs


def load_release_one(url: str) -> None:
    """Build the first release's database: its schema and rows, recorded as version 1 as that release did."""
    (migration,) = load_migrations("postgres" if url.startswith("postgres") else "sqlite", FIXTURES / "schema_v1.sql")
    db = open_database(url)
    try:
        with db.transaction() as tx:
            tx.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")
            for statement in migration.statements:
                if db.dialect == "postgres":  # X'..' is SQLite's blob literal
                    statement = re.sub(r"X'([0-9a-f]*)'", r"decode('\1', 'hex')", statement)
                tx.execute(statement)
            tx.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (1, 1796476460)")
            if db.dialect == "postgres":  # the rows came with their ids: move the sequences past them
                for row in tx.query(
                    "SELECT table_name AS t FROM information_schema.columns "
                    "WHERE table_schema = 'public' AND column_name = 'id' AND column_default LIKE 'nextval%'"
                ):
                    tx.execute(
                        f"SELECT setval(pg_get_serial_sequence('{row['t']}', 'id'), "
                        f"COALESCE((SELECT MAX(id) FROM {row['t']}), 0) + 1, false)"
                    )
    finally:
        db.close()


def test_the_current_code_upgrades_a_first_release_database_keeping_its_data(empty_database, tmp_path):
    load_release_one(empty_database)
    assert versions(empty_database) == [1]
    server = start_serve(empty_database, tmp_path)
    try:
        assert versions(empty_database) == list(range(1, len(load_migrations("sqlite")) + 1))
        assert "password:" not in server.stdout()  # the release's user is there: no first user made

        auth = (V1_USER, V1_PASSWORD)
        session = requests.get(f"{server.url}/.well-known/jmap", auth=auth, timeout=10).json()
        account_id = session["primaryAccounts"][MAIL]

        def call(*calls: list) -> list:
            body = {"using": [CORE, MAIL], "methodCalls": list(calls)}
            answer = requests.post(session["apiUrl"], json=body, auth=auth, timeout=10)
            assert answer.status_code == 200, answer.text
            return answer.json()["methodResponses"]

        mailboxes = call(["Mailbox/get", {"accountId": account_id, "properties": ["role", "totalEmails"]}, "m"])
        totals = {m["role"]: m["totalEmails"] for m in mailboxes[0][1]["list"]}
        assert len(totals) == 6 and totals["inbox"] == 1, mailboxes
        ids = {"resultOf": "q", "name": "Email/query", "path": "/ids"}
        get = {"accountId": account_id, "#ids": ids, "properties": ["subject", "bodyValues", "textBody"]}
        emails = call(
            ["Email/query", {"accountId": account_id}, "q"], ["Email/get", {**get, "fetchTextBodyValues": True}, "g"]
        )
        (email,) = emails[1][1]["list"]
        assert email["subject"] == V1_SUBJECT
        assert [v["value"] for v in email["bodyValues"].values()] == ["Written by release one.\n"]
        state = emails[0][1]["queryState"]

        with LMTPClient("127.0.0.1", server.lmtp_port) as lmtp:  # new rows after the release's
            assert lmtp.lhlo().code == 250
            message = b"From: bob@example.org\r\nSubject: after the upgrade\r\n\r\nNew.\r\n"
            rcpt, data = lmtp.transaction("bob@example.org", [V1_USER], message)
            assert [r.code for r in rcpt + data] == [250, 250], (rcpt, data)
        changes = call(["Email/queryChanges", {"accountId": account_id, "sinceQueryState": state}, "c"])
        assert len(changes[0][1]["added"]) == 1, changes
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.stderr(), server.stderr()

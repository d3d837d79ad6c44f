"""Test fixtures. gevent patches the process before anything else is imported.

Backends: every test that takes ``services`` (or ``db``) runs against SQLite and
against a real Postgres started for the run. ``rabbitmq`` is a real broker
started on first use. Set JMAPMONO_TEST_BACKENDS=sqlite for a quick local run.
"""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import sys  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

# Many tests start processes (CLI, serve, lmtp, deliver, gunicorn…) that import jmapmono: let them and this
# process keep its compiled bytecode (git-ignored __pycache__) rather than each compile it all again.
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

import pytest  # noqa: E402

from jmapmono.config import Config, load_config  # noqa: E402
from jmapmono.store import Database, open_database  # noqa: E402
from jmapmono.store.migrations import migrate  # noqa: E402
from tests.support.servers import PostgresServer, RabbitMQServer  # noqa: E402

BACKENDS = [b for b in os.environ.get("JMAPMONO_TEST_BACKENDS", "sqlite,postgres").split(",") if b]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """One migrated database per test process, emptied after each test."""
    url = postgres_server.new_database()
    db = open_database(url)
    migrate(db)
    db.close()
    return url


@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[RabbitMQServer]:
    server = RabbitMQServer()
    yield server
    server.close()


#: Empties every table but schema_migrations and restarts every sequence, in one round trip. DELETE, not
#: TRUNCATE: truncating ~40 tables (new files for each table and index) took 50-150 ms after every test,
#: deleting a test's few rows takes a few; a table left with many rows is still truncated. Foreign keys
#: are not checked meanwhile (session_replication_role: the test cluster's superuser), since all go.
_EMPTY_ALL = """DO $$
DECLARE
    t text;
    many boolean;
    big text[] := '{}';
BEGIN
    SET LOCAL session_replication_role = replica;
    FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_migrations' LOOP
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I OFFSET 1000)', t) INTO many;
        IF many THEN
            big := big || t;
        ELSE
            EXECUTE format('DELETE FROM %I', t);
        END IF;
    END LOOP;
    IF cardinality(big) > 0 THEN
        EXECUTE 'TRUNCATE ' || (SELECT string_agg(quote_ident(b), ', ') FROM unnest(big) AS b) || ' CASCADE';
    END IF;
    PERFORM setval(format('%I.%I', schemaname, sequencename)::regclass, 1, false)
    FROM pg_sequences WHERE schemaname = 'public' AND last_value IS NOT NULL;
END $$"""


def _truncate_all(db: Database) -> None:
    with db.transaction() as tx:
        tx.execute(_EMPTY_ALL)


@pytest.fixture(autouse=True)
def fast_password_hashing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cheap Argon2id parameters in this process: the KDF's cost is not what most tests measure.
    A test that measures it requests ``real_kdf``."""
    if "real_kdf" not in request.fixturenames:
        from tests.support.jmap import cheap_password_hashing

        cheap_password_hashing(monkeypatch)


@pytest.fixture
def real_kdf() -> None:
    """Keep the production Argon2id parameters for this test."""


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'jmapmono.sqlite3'}"
        return
    url = request.getfixturevalue("postgres_url")
    yield url
    db = open_database(url)
    _truncate_all(db)
    db.close()


@pytest.fixture
def config(database_url: str, tmp_path: Path) -> Config:
    """Configuration as a deployment would load it, on the test's database, LMTP off."""
    env = {
        "DATABASE_URL": database_url,
        "JMAPMONO_DATA_DIR": str(tmp_path / "data"),
        "BROKER_URL": "memory://localhost/",
        "JMAPMONO_LMTP_LISTEN": "off",
        "JMAPMONO_LOG_LEVEL": "INFO",
        # Housekeeping runs a day after a runtime starts: its jobs are tested on their own
        # (tests/test_housekeeping.py), not as a side effect of a test's first seconds.
        "JMAPMONO_HOUSEKEEPING_SECONDS": "86400",
    }
    return load_config(env)


@pytest.fixture
def db(config: Config) -> Iterator[Database]:
    database = open_database(config.database_url)
    migrate(database)
    yield database
    database.close()


@pytest.fixture
def services(config: Config, db: Database):
    from jmapmono.runtime import Runtime

    s = Runtime(config, db)
    yield s


@pytest.fixture
def app(services):
    from jmapmono.web.app import create_app

    return create_app(services)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def alice(services, client):
    """A user ``alice@example.org`` with a JMAP client on her own account."""
    from tests.support.jmap import PASSWORD, JmapClient

    user, _ = services.accounts.create_user("alice@example.org", PASSWORD)
    return JmapClient(client, user.email, user.account_id)


@pytest.fixture
def bob(services, client):
    """A second user ``bob@example.org``, isolated from alice unless a test delegates."""
    from tests.support.jmap import PASSWORD, JmapClient

    user, _ = services.accounts.create_user("bob@example.org", PASSWORD)
    return JmapClient(client, user.email, user.account_id)


@pytest.fixture(scope="module")
def sink(tmp_path_factory):
    """A real SMTP server (aiosmtpd, a process of its own) recording what it is sent, one per test module:
    the relay of tests that send mail (their ``config`` points ``smtp_relay`` at it)."""
    from tests.support.smtp_sink import SmtpSink

    server = SmtpSink(tmp_path_factory.mktemp("smtp"))
    yield server
    server.stop()

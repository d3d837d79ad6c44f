"""Login cost with the production Argon2id parameters (from the timed test it replaces; the test checks
that an unknown user runs the same KDF as a wrong password): HTTP Basic checked outside Flask for a
wrong password, an unknown user and the right password (credential cache off), one attempt at a time,
each from its own client address (so that no rate limit applies). SQLite, in this process.

    .venv/bin/python bench/login_timing.py [--samples 30]
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()  # as every benchmark (common.py expects it)

import sys  # noqa: E402
import time  # noqa: E402

import common  # noqa: E402

from jmapmono.accounts.authn import Unauthenticated  # noqa: E402
from jmapmono.config import load_config  # noqa: E402
from jmapmono.runtime import Runtime  # noqa: E402
from jmapmono.store import open_database  # noqa: E402
from jmapmono.store.migrations import migrate  # noqa: E402

USER = "bench@example.org"


def attempt(services: Runtime, user: str, password: str, ip: str) -> float:
    """Milliseconds to accept or refuse one Basic authorization."""
    started = time.perf_counter()
    try:
        services.authenticator.authenticate(common.basic(user, password), ip)
    except Unauthenticated:
        pass
    return (time.perf_counter() - started) * 1000


def main(argv: list[str]) -> None:
    samples = common.arg_int(argv, "samples", 30)
    common.banner(f"login cost (Argon2id, production parameters), {samples} attempts each")
    figures = common.Figures("login_timing")
    with common.temp_dir() as work:
        url = common.database_url("sqlite", work)
        db = open_database(url)
        migrate(db)
        env = {"DATABASE_URL": url, "JMAPMONO_DATA_DIR": str(work), "JMAPMONO_AUTH_CACHE_SECONDS": "0"}
        services = Runtime(load_config(env).with_overrides(login_failures_per_minute=10**6), db)
        try:
            services.accounts.create_user(USER, common.PASSWORD)
            cases = {
                "wrong password": (USER, "not the password"),
                "unknown user": ("nobody@example.org", "not the password"),
                "right password": (USER, common.PASSWORD),
            }
            for name, (user, password) in cases.items():
                attempt(services, user, password, "192.0.2.1")  # warm-up
                times = [attempt(services, user, password, f"10.{i // 250}.{i % 250}.1") for i in range(samples)]
                figures.latency(name, times)
        finally:
            services.close()
            db.close()


if __name__ == "__main__":
    main(sys.argv[1:])

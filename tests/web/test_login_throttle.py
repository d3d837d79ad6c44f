"""Failed-login throttling over HTTP, on both backends: the attacking address is refused (429), its victim
is not; IPv6 counted per /64; a user's failures only delay addresses that are not known-good for them;
app passwords exempt; counters shared by every runtime on the database (real servers, real sockets);
the client address behind trusted proxies."""

from __future__ import annotations

import base64
import http.client
import logging

import pytest

from jmapmono.accounts.authn import Authenticator, RateLimited
from jmapmono.runtime import Runtime
from jmapmono.store import open_database
from jmapmono.web.app import create_app
from tests.support.servers import start_app, start_gunicorn

URL = "/jmap/session"
LIMIT = 3
PASSWORD = "correct horse"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def get(client, authorization: str, ip: str, **headers: str):
    return client.get(URL, headers={"Authorization": authorization, **headers}, environ_base={"REMOTE_ADDR": ip})


class World:
    """A runtime with a failure limit of LIMIT, its test client, and every delay it imposed (not slept)."""

    def __init__(self, config, db, **overrides) -> None:
        self.services = Runtime(config.with_overrides(login_failures_per_minute=LIMIT, **overrides), db)
        self.delays: list[float] = []
        self.services.authenticator.sleep = self.delays.append
        self.client = create_app(self.services).test_client()
        self.alice = self.services.accounts.create_user("alice@example.org", PASSWORD)[0]

    def status(self, authorization: str, ip: str, **headers: str) -> int:
        return get(self.client, authorization, ip, **headers).status_code


@pytest.fixture
def world(config, db) -> World:
    return World(config, db)


def test_the_attacking_address_is_refused_and_the_user_still_logs_in(world, caplog):
    caplog.set_level(logging.INFO, logger="jmapmono.auth")
    statuses = [world.status(basic("alice@example.org", f"guess {i}"), "127.0.0.2") for i in range(30)]
    assert statuses == [401] * LIMIT + [429] * (30 - LIMIT)
    refused = get(world.client, basic("alice@example.org", PASSWORD), "127.0.0.2")
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 60
    assert world.status(basic("alice@example.org", PASSWORD), "127.0.0.3") == 200  # her, from a clean address
    line = next(r.getMessage() for r in caplog.records if "event=login_throttled" in r.getMessage())
    assert "ip=127.0.0.2 prefix=127.0.0.2 user=alice@example.org reason=address_failures retry_after=" in line


def test_a_throttled_address_is_refused_for_every_user_without_a_password_check(world):
    world.services.accounts.create_user("bob@example.org", "bob pw")
    for i in range(LIMIT):
        assert world.status(basic(f"nobody{i}@example.org", "guess"), "192.0.2.7") == 401
    assert world.status(basic("bob@example.org", "bob pw"), "192.0.2.7") == 429
    assert world.status(basic("bob@example.org", "bob pw"), "192.0.2.8") == 200


def test_ipv6_is_counted_per_64(world):
    for i in range(LIMIT):  # different user names: only the address limit is reached
        assert world.status(basic(f"nobody{i}@example.org", "guess"), f"2001:db8:1:2::{i + 1}") == 401
    assert world.status(basic("alice@example.org", PASSWORD), "2001:db8:1:2:ffff:ffff:ffff:ffff") == 429
    assert world.status(basic("alice@example.org", PASSWORD), "2001:db8:1:3::1") == 200  # the next /64


def test_user_failures_delay_unknown_addresses_progressively_and_never_refuse(config, db):
    """Each guess from a new address (none reaches the address limit): past LIMIT failures for the user each
    attempt from an address that is not known-good waits longer, up to the cap; the right password from a
    clean address still gets in, and makes that address known-good (no more delay from there)."""
    now = [1_000_000_000]
    services = Runtime(config.with_overrides(login_failures_per_minute=LIMIT, auth_cache_seconds=0), db)
    services.accounts.create_user("alice@example.org", PASSWORD)
    delays: list[float] = []
    auth = Authenticator(services.config, db, services.accounts, clock=lambda: now[0], sleep=delays.append)

    def attempt(password: str, ip: str) -> bool:
        now[0] += 1000
        try:
            return auth.authenticate(basic("alice@example.org", password), ip).email == "alice@example.org"
        except Exception as e:
            assert not isinstance(e, RateLimited)
            return False

    assert not any(attempt("guess", f"198.51.100.{i}") for i in range(9))
    assert delays == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0]  # after 3, 4, … 8 failures
    delays.clear()
    assert attempt(PASSWORD, "203.0.113.1")  # a clean, unknown address: delayed, not refused
    assert delays == [4.0]
    assert attempt(PASSWORD, "203.0.113.1") and not attempt("typo", "203.0.113.1")  # now known-good
    assert delays == [4.0]
    assert attempt(PASSWORD, "203.0.113.2") and delays == [4.0, 4.0]  # another address still waits
    now[0] += 15 * 60_000  # the failures left the user's window
    assert attempt(PASSWORD, "203.0.113.3") and delays == [4.0, 4.0]


def test_app_passwords_ignore_the_users_failures(world):
    from jmapmono.accounts.app_passwords import AppPasswords

    _, token = AppPasswords(world.services.db, world.services.accounts).create(world.alice, "phone")
    for i in range(3 * LIMIT):  # enough failures from many addresses to delay her password logins
        assert world.status(basic("alice@example.org", "guess"), f"198.51.100.{i}") == 401
    world.delays.clear()
    assert world.status(basic("alice@example.org", token), "203.0.113.9") == 200
    assert world.status(f"Bearer {token}", "203.0.113.9") == 200
    assert world.delays == []


def test_bad_tokens_count_against_the_address_and_good_ones_still_pass(world):
    from jmapmono.accounts.app_passwords import AppPasswords

    _, token = AppPasswords(world.services.db, world.services.accounts).create(world.alice, "phone")
    for _ in range(LIMIT):
        assert world.status("Bearer jmm_pxxxxxxxxxxxx_" + "A" * 43, "192.0.2.50") == 401
    assert world.status("Bearer jmm_nope", "192.0.2.50") == 429
    assert world.status(basic("alice@example.org", PASSWORD), "192.0.2.50") == 429  # password logins too
    assert world.status(f"Bearer {token}", "192.0.2.50") == 200  # a 256-bit secret cannot be guessed


# -- trusted proxies ------------------------------------------------------------------------------------------------

PEER = "10.0.0.1"


@pytest.mark.parametrize(
    ("hops", "forwarded_for", "client"),
    [
        (0, "198.51.100.7", PEER),  # no trusted proxy: the header is anyone's to send
        (1, "203.0.113.5, 198.51.100.7", "198.51.100.7"),
        (2, "203.0.113.5, 198.51.100.7", "203.0.113.5"),
        (2, "203.0.113.5,198.51.100.7, 10.0.0.9", "198.51.100.7"),
        (1, "[2001:db8::7]:4711", "2001:db8::7"),
        (1, "garbage", PEER),
        (1, "198.51.100.7, unknown", PEER),
        (2, "198.51.100.7", PEER),  # fewer entries than proxies
        (1, "", PEER),
    ],
)
def test_the_client_address_behind_trusted_proxies(config, db, caplog, hops, forwarded_for, client):
    caplog.set_level(logging.INFO)
    world = World(config, db, trusted_proxies=hops)
    for _ in range(LIMIT):
        assert world.status(basic("alice@example.org", "guess"), PEER, **{"X-Forwarded-For": forwarded_for}) == 401
    assert world.status(basic("alice@example.org", PASSWORD), client) == 429  # the address that was counted
    logged = {r.getMessage().split(" ip=")[1].split(" ")[0] for r in caplog.records if " ip=" in r.getMessage()}
    assert logged == {client}  # login lines and request lines alike


def test_without_trusted_proxies_a_spoofed_header_does_not_change_the_counted_address(world):
    for i in range(LIMIT):
        spoofed = {"X-Forwarded-For": f"198.51.100.{i}"}
        assert world.status(basic("alice@example.org", "guess"), "192.0.2.60", **spoofed) == 401
    assert world.status(basic("alice@example.org", PASSWORD), "192.0.2.60", **{"X-Forwarded-For": "1.2.3.4"}) == 429


# -- real servers: counters shared by every runtime on the database ---------------------------------------------------


def http_get(port: int, authorization: str, source: str = "127.0.0.1", **headers: str) -> tuple[int, str | None]:
    """One request on its own connection from ``source`` (any 127/8 address reaches the loopback listener)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    try:
        conn.request("GET", URL, headers={"Authorization": authorization, **headers})
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("Retry-After")
    finally:
        conn.close()


def test_two_runtimes_on_one_database_share_the_counters(services, config, db):
    """As two nodes: each runtime with its own connections to the database."""
    services.accounts.create_user("alice@example.org", PASSWORD)
    other_db = open_database(config.database_url)
    servers = [start_app(config, one_db, login_failures_per_minute=LIMIT) for one_db in (db, other_db)]
    try:
        ports = [s.port for s in servers]
        for i in range(LIMIT):  # the guesses spread over both
            assert http_get(ports[i % 2], basic("alice@example.org", "guess"), "127.0.0.2")[0] == 401
        for port in ports:
            status, retry_after = http_get(port, basic("alice@example.org", PASSWORD), "127.0.0.2")
            assert status == 429 and retry_after is not None and 1 <= int(retry_after) <= 60
            assert http_get(port, basic("alice@example.org", PASSWORD), "127.0.0.3")[0] == 200
    finally:
        for server in servers:
            server.stop()
        other_db.close()


def test_gunicorn_workers_share_the_counters_of_the_forwarded_client(services, config, tmp_path):
    """Two gunicorn workers behind one trusted proxy: the forwarded client is counted, whichever worker
    answers, and putting another address in front of its own does not get it out."""
    services.accounts.create_user("alice@example.org", PASSWORD)
    env = {"JMAPMONO_TRUSTED_PROXIES": "1", "JMAPMONO_LOGIN_FAILURES_PER_MINUTE": str(LIMIT)}
    server = start_gunicorn(config.database_url, config.data_dir, tmp_path, workers=2, **env)
    try:
        for i in range(2 * LIMIT):
            status, _ = http_get(
                server.port, basic("alice@example.org", "guess"), **{"X-Forwarded-For": "198.51.100.7"}
            )
            assert status == (401 if i < LIMIT else 429)
        spoofed = {"X-Forwarded-For": "203.0.113.1, 198.51.100.7"}
        assert http_get(server.port, basic("alice@example.org", PASSWORD), **spoofed)[0] == 429
        other = {"X-Forwarded-For": "198.51.100.8"}
        assert http_get(server.port, basic("alice@example.org", PASSWORD), **other)[0] == 200
    finally:
        server.stop()
    assert "Traceback" not in server.log()

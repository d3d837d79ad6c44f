"""Authentication over HTTP and outside Flask, on both backends.

Credential cache (no KDF on a hit, invalidated by a password change or a
deletion), app passwords as Bearer and Basic, their list/create/revoke
endpoints, failed-login limiting per client address (the rest of the throttle:
test_login_throttle.py), and malformed headers answered 401, never 500.
"""

from __future__ import annotations

import base64
import logging

import pytest

from jmapmono.accounts import passwords
from jmapmono.accounts.authn import Authenticator, RateLimited, Unauthenticated
from jmapmono.runtime import Runtime
from jmapmono.web.app import create_app

URL = "/jmap/app-passwords"
#: Any authenticated resource: what the authentication tests knock on (app passwords may not list their siblings).
PROBE = "/jmap/session"
LIMIT = 3


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def get(client, authorization: str | None, ip: str = "192.0.2.1"):
    headers = {"Authorization": authorization} if authorization is not None else {}
    return client.get(PROBE, headers=headers, environ_base={"REMOTE_ADDR": ip})


@pytest.fixture
def kdf_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every password verification (real KDF run) made from now on."""
    calls: list[str] = []
    real = passwords.verify_password

    def counting(hashed: str, password: str) -> bool:
        calls.append(password)
        return real(hashed, password)

    monkeypatch.setattr(passwords, "verify_password", counting)
    return calls


@pytest.fixture
def limited(config, db):
    """Runtime and a test client with a failed-login limit of LIMIT per minute."""
    services = Runtime(config.with_overrides(login_failures_per_minute=LIMIT), db)
    return services, create_app(services).test_client()


@pytest.fixture
def alice(services):
    user, _ = services.accounts.create_user("alice@example.org", "correct horse")
    return user


def test_basic_login_is_case_insensitive_and_sets_the_principal(services, client, alice):
    response = get(client, basic("Alice@Example.ORG", "correct horse"))
    assert response.status_code == 200
    assert response.get_json()["username"] == "alice@example.org"
    principal = services.authenticator.authenticate(basic("ALICE@example.org", "correct horse"), "192.0.2.1")
    assert (principal.user_id, principal.email, principal.account_id) == (alice.id, alice.email, alice.account_id)
    assert principal.app_password_id is None


def test_missing_credentials_get_a_basic_challenge(client, alice):
    response = get(client, None)
    assert response.status_code == 401
    assert response.content_type == "application/problem+json"
    assert response.headers["WWW-Authenticate"].startswith('Basic realm="jmapmono"')
    assert response.get_json()["status"] == 401


def test_a_pages_script_gets_a_challenge_that_opens_no_browser_prompt(client, alice):
    """A browser answers a Basic challenge to fetch() with its own modal prompt, and the page's request
    hangs behind it; a page's script (Sec-Fetch-Mode cors or same-origin) gets a Bearer challenge."""
    wrong = basic("alice@example.org", "wrong")
    for mode in ("cors", "same-origin"):
        for headers in ({}, {"Authorization": wrong}):
            response = client.get("/jmap/session", headers={**headers, "Sec-Fetch-Mode": mode})
            assert response.status_code == 401 and response.headers["WWW-Authenticate"] == 'Bearer realm="jmapmono"'
        refused = client.post("/jmap/app-passwords", headers={"Authorization": wrong, "Sec-Fetch-Mode": mode})
        assert refused.headers["WWW-Authenticate"] == 'Bearer realm="jmapmono"'
    navigated = client.get("/jmap/session", headers={"Sec-Fetch-Mode": "navigate"})
    assert navigated.headers["WWW-Authenticate"].startswith('Basic realm="jmapmono"')


@pytest.mark.parametrize(
    "header",
    [
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"alice@example.org").decode(),  # no colon
        "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),  # not UTF-8
        "Basic " + base64.b64encode(b":nouser").decode(),
        "Basic",
        "Bearer",
        "Bearer two words",
        "Digest username=alice",
        "Negotiate abc",
        "\x00\x01",
        "Basic " + "A" * 10_000,
    ],
)
def test_malformed_authorization_is_401_not_500(client, alice, kdf_calls, header):
    response = get(client, header)
    assert response.status_code == 401
    assert "WWW-Authenticate" in response.headers
    assert kdf_calls == []


def test_cache_hit_avoids_the_kdf(client, alice, kdf_calls):
    assert get(client, basic("alice@example.org", "correct horse")).status_code == 200
    assert len(kdf_calls) == 1
    for _ in range(3):
        assert get(client, basic("ALICE@example.org", "correct horse")).status_code == 200
    assert len(kdf_calls) == 1


def test_failures_are_never_cached(client, alice, kdf_calls):
    for _ in range(2):
        assert get(client, basic("alice@example.org", "wrong")).status_code == 401
    assert len(kdf_calls) == 2


def test_password_change_invalidates_cached_credentials_at_once(services, client, alice, kdf_calls):
    assert get(client, basic("alice@example.org", "correct horse")).status_code == 200
    services.accounts.set_password("alice@example.org", "battery staple")
    assert get(client, basic("alice@example.org", "correct horse")).status_code == 401
    assert get(client, basic("alice@example.org", "battery staple")).status_code == 200
    assert len(kdf_calls) == 3  # every check after the change ran the KDF: no stale hit


def test_user_deletion_invalidates_cached_credentials_at_once(services, client, alice):
    assert get(client, basic("alice@example.org", "correct horse")).status_code == 200
    services.accounts.delete("alice@example.org")
    assert get(client, basic("alice@example.org", "correct horse")).status_code == 401


def test_cache_disabled_when_seconds_is_zero(config, db, kdf_calls):
    services = Runtime(config.with_overrides(auth_cache_seconds=0), db)
    services.accounts.create_user("alice@example.org", "correct horse")
    for _ in range(2):
        services.authenticator.authenticate(basic("alice@example.org", "correct horse"), "192.0.2.1")
    assert len(kdf_calls) == 2


def test_unknown_user_costs_a_kdf_run_like_a_wrong_password(real_kdf, services, alice, monkeypatch):
    """The same work either way: one verification against a hash of the same Argon2id parameters (how long
    each takes: bench/login_timing.py)."""
    verified: list[str] = []  # the hashes verified against
    real = passwords.verify_password
    monkeypatch.setattr(passwords, "verify_password", lambda hashed, pw: verified.append(hashed) or real(hashed, pw))

    def fails(user: str, ip: str) -> None:
        with pytest.raises(Unauthenticated):
            services.authenticator.authenticate(basic(user, "guess"), ip)

    for i in range(3):
        fails("nobody@example.org", f"192.0.2.{i}")
    unknown = list(verified)
    for i in range(3):
        fails("alice@example.org", f"198.51.100.{i}")
    wrong = verified[3:]
    assert len(unknown) == len(wrong) == 3  # a KDF run for each attempt, known user or not

    def parameters(hashed: str) -> str:  # "$argon2id$v=19$m=…,t=…,p=…$salt$hash": what the work depends on
        return "$".join(hashed.split("$")[:4])

    assert (
        {parameters(h) for h in unknown} == {parameters(h) for h in wrong} == {parameters(passwords._hasher.hash("x"))}
    )
    assert parameters(wrong[0]).startswith("$argon2id$")


def test_failed_login_is_logged_without_the_password(client, alice, caplog):
    with caplog.at_level(logging.INFO, logger="jmapmono.auth"):
        get(client, basic("alice@example.org", "s3cret-guess"), ip="203.0.113.9")
        get(client, basic("ghost@example.org", "s3cret-guess"), ip="203.0.113.9")
    lines = [r.getMessage() for r in caplog.records if "login_failed" in r.getMessage()]
    assert len(lines) == 2
    assert "user=alice@example.org" in lines[0] and "ip=203.0.113.9" in lines[0]
    assert "reason=bad_password" in lines[0] and "reason=unknown_user" in lines[1]
    assert not any("s3cret-guess" in r.getMessage() for r in caplog.records)


# --- app passwords ---------------------------------------------------------------------------------


def create_token(client, label: object = "phone", auth: str | None = None):
    return client.post(
        URL, json={"label": label}, headers={"Authorization": auth or basic("alice@example.org", "correct horse")}
    )


def test_app_password_as_bearer_and_as_basic_password(services, client, alice, kdf_calls):
    response = create_token(client)
    assert response.status_code == 201
    body = response.get_json()
    token = body["token"]
    assert token.startswith("jmm_") and len(token) > 50
    assert body["label"] == "phone" and body["lastUsed"] is None and body["created"].endswith("Z")
    kdf_calls.clear()

    assert get(client, f"Bearer {token}").status_code == 200
    assert get(client, basic("alice@example.org", token)).status_code == 200
    assert kdf_calls == []  # no KDF for app passwords
    principal = services.authenticator.authenticate(f"Bearer {token}", "192.0.2.1")
    assert principal.account_id == alice.account_id and principal.app_password_id == body["id"]


def test_app_password_of_another_user_is_refused_in_basic(services, client, alice):
    services.accounts.create_user("bob@example.org", "bob pw")
    token = create_token(client).get_json()["token"]
    assert get(client, basic("bob@example.org", token)).status_code == 401


def test_list_and_revoke_over_http(services, client, alice, monkeypatch):
    from jmapmono.accounts import app_passwords

    with monkeypatch.context() as patch:
        patch.setattr(app_passwords, "now_ms", lambda: 1_700_000_000_000)  # both made in one millisecond
        first = create_token(client, "phone").get_json()
        second = create_token(client, "laptop").get_json()
    assert first["created"] == second["created"]
    assert get(client, f"Bearer {first['token']}").status_code == 200

    listed = client.get(URL, headers={"Authorization": basic("alice@example.org", "correct horse")}).get_json()
    listed = listed["appPasswords"]
    assert [(p["id"], p["label"]) for p in listed] == [(first["id"], "phone"), (second["id"], "laptop")]  # as made
    assert set(listed[0]) == {"id", "label", "created", "lastUsed"}  # never the token again
    assert listed[0]["lastUsed"] is not None and listed[1]["lastUsed"] is None

    auth = {"Authorization": basic("alice@example.org", "correct horse")}
    assert client.delete(f"{URL}/{first['id']}", headers=auth).status_code == 204
    assert get(client, f"Bearer {first['token']}").status_code == 401
    assert get(client, basic("alice@example.org", first["token"])).status_code == 401
    assert get(client, f"Bearer {second['token']}").status_code == 200
    assert client.delete(f"{URL}/{first['id']}", headers=auth).status_code == 404


def test_one_user_cannot_revoke_another_users_app_password(services, client, alice):
    services.accounts.create_user("bob@example.org", "bob pw")
    token = create_token(client).get_json()
    response = client.delete(f"{URL}/{token['id']}", headers={"Authorization": basic("bob@example.org", "bob pw")})
    assert response.status_code == 404
    assert get(client, f"Bearer {token['token']}").status_code == 200
    bob_list = client.get(URL, headers={"Authorization": basic("bob@example.org", "bob pw")}).get_json()["appPasswords"]
    assert bob_list == []


def test_creating_an_app_password_needs_the_account_password(client, alice):
    token = create_token(client).get_json()["token"]
    assert create_token(client, auth=f"Bearer {token}").status_code == 403
    assert create_token(client, auth=basic("alice@example.org", token)).status_code == 403


def test_bad_create_requests_are_4xx(client, alice):
    auth = {"Authorization": basic("alice@example.org", "correct horse")}
    assert client.post(URL, json={"label": 5}, headers=auth).status_code == 400
    assert client.post(URL, json={"label": "x" * 101}, headers=auth).status_code == 400
    assert client.post(URL, json=["phone"], headers=auth).status_code == 400
    bad_json = client.post(URL, data=b"{nope", content_type="application/json", headers=auth)
    assert bad_json.status_code == 400 and bad_json.content_type == "application/problem+json"
    assert client.post(URL, data=b"label=x", content_type="text/plain", headers=auth).status_code == 415
    assert client.post(URL, headers=auth).status_code == 201  # no body: no label


def test_last_used_is_written_at_most_once_a_minute(services, client, alice, db, monkeypatch):
    from jmapmono.accounts import app_passwords

    now = 1_700_000_000_000
    monkeypatch.setattr(app_passwords, "now_ms", lambda: now)  # the clock tokens are checked by
    created = create_token(client).get_json()
    bearer = f"Bearer {created['token']}"

    def last_used() -> int | None:
        with db.read() as tx:
            return tx.value("SELECT last_used_at FROM app_passwords WHERE id = ?", (created["id"],))

    def set_last_used(value: int) -> None:
        with db.transaction() as tx:
            tx.execute("UPDATE app_passwords SET last_used_at = ? WHERE id = ?", (value, created["id"]))

    set_last_used(now - 30_000)
    assert get(client, bearer).status_code == 200
    assert last_used() == now - 30_000  # used 30 s ago: not written again
    set_last_used(now - 60_000)
    assert get(client, bearer).status_code == 200
    assert last_used() == now  # a minute ago: written


# --- rate limiting ---------------------------------------------------------------------------------


def test_rate_limit_per_client_address(limited, kdf_calls):
    services, client = limited
    services.accounts.create_user("alice@example.org", "correct horse")
    for i in range(LIMIT):  # different user names: only the address limit is reached
        assert get(client, basic(f"user{i}@example.org", "guess"), ip="192.0.2.7").status_code == 401
    calls = len(kdf_calls)
    response = get(client, basic("alice@example.org", "correct horse"), ip="192.0.2.7")
    assert response.status_code == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert response.content_type == "application/problem+json"
    assert response.get_json()["status"] == 429
    assert len(kdf_calls) == calls  # no KDF once limited
    assert get(client, basic("alice@example.org", "correct horse"), ip="192.0.2.8").status_code == 200


def test_bearer_failures_count_per_address(limited):
    services, client = limited
    for _ in range(LIMIT):
        assert get(client, "Bearer jmm_pxxxxxxxxxxxx_" + "A" * 43, ip="192.0.2.50").status_code == 401
    assert get(client, "Bearer jmm_nope", ip="192.0.2.50").status_code == 429


def test_success_does_not_reset_another_clients_counter(limited):
    services, client = limited
    services.accounts.create_user("alice@example.org", "correct horse")
    for _ in range(LIMIT - 1):
        assert get(client, basic("alice@example.org", "guess"), ip="192.0.2.20").status_code == 401
    assert get(client, basic("alice@example.org", "correct horse"), ip="192.0.2.21").status_code == 200
    assert get(client, basic("alice@example.org", "guess"), ip="192.0.2.20").status_code == 401
    assert get(client, basic("alice@example.org", "correct horse"), ip="192.0.2.20").status_code == 429


def test_window_slides_and_errors_are_typed_outside_flask(config, db):
    now = [1_000_000]
    services = Runtime(config.with_overrides(login_failures_per_minute=2), db)
    services.accounts.create_user("alice@example.org", "correct horse")
    delays: list[float] = []
    auth = Authenticator(services.config, services.db, services.accounts, clock=lambda: now[0], sleep=delays.append)
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            auth.authenticate(basic("alice@example.org", "guess"), "192.0.2.30")
        now[0] += 10_000
    with pytest.raises(RateLimited) as limited:
        auth.authenticate(basic("alice@example.org", "correct horse"), "192.0.2.30")
    assert limited.value.retry_after == 40  # the first failure leaves the window at t=1060 s
    now[0] = 1_060_500  # one failure left the window: one more attempt is allowed
    assert auth.authenticate(basic("alice@example.org", "correct horse"), "192.0.2.30").email == "alice@example.org"
    assert delays == [0.25]  # the user's two failures delay an address that is not known-good for her


def test_a_repeated_request_reads_nothing_until_a_commit_changes_the_answer(services, client, alice, monkeypatch):
    """Credentials accepted once from an address, and the accounts their user sees, are not read again while
    nothing was committed; a password change (or any commit) makes the next request check again, at once."""
    from tests.support.statements import count_statements

    # As in a serving process, whose event flow hears other processes' commits:
    monkeypatch.setattr(services.db, "hears_others", True)
    echo = {"using": ["urn:ietf:params:jmap:core"], "methodCalls": [["Core/echo", {"n": 1}, "0"]]}
    old = {"Authorization": basic("alice@example.org", "correct horse")}
    assert client.post("/jmap/api", json=echo, headers=old).status_code == 200
    sent = count_statements(monkeypatch)
    for _ in range(3):
        assert client.post("/jmap/api", json=echo, headers=old).status_code == 200
    assert sent == []
    services.accounts.set_password("alice@example.org", "battery staple")
    assert client.post("/jmap/api", json=echo, headers=old).status_code == 401
    new = {"Authorization": basic("alice@example.org", "battery staple")}
    assert client.post("/jmap/api", json=echo, headers=new).status_code == 200
    elsewhere = {"REMOTE_ADDR": "192.0.2.9"}
    assert client.post("/jmap/api", json=echo, headers=old, environ_base=elsewhere).status_code == 401

"""Users, app passwords, delegation, the credential cache and the KDF (the login throttle: test_throttle.py)."""

from __future__ import annotations

import base64
import hashlib

import gevent
import pytest
from argon2 import PasswordHasher

from jmapmono.accounts import passwords
from jmapmono.accounts.app_passwords import AppPasswordError, AppPasswords, parse_token
from jmapmono.accounts.authn import CredentialCache
from jmapmono.accounts.principal import Principal
from jmapmono.accounts.users import (
    APP_PASSWORD,
    PASSWORD,
    USER_DELETED,
    AccountError,
    InvalidEmail,
    Revocation,
    UnknownUser,
    UserExists,
)
from tests.support.clock import one_millisecond


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture(autouse=True)
def fast_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    monkeypatch.setattr(passwords, "_dummy_hash", None)


@pytest.fixture
def tokens(services) -> AppPasswords:
    return AppPasswords(services.db, services.accounts)


# --- users -----------------------------------------------------------------------------------------


def test_users_are_stored_lower_case_and_unique(services):
    user, password = services.accounts.create_user("  Alice@Example.ORG ")
    assert user.email == "alice@example.org" and len(password) >= 16
    assert services.accounts.get("ALICE@example.org") == user
    with pytest.raises(UserExists):
        services.accounts.create_user("alice@EXAMPLE.org", "x")
    with pytest.raises(InvalidEmail):
        services.accounts.create_user("not an address", "x")
    assert [u.email for u in services.accounts.list()] == ["alice@example.org"]


def test_only_an_argon2id_hash_is_stored(services, db):
    services.accounts.create_user("alice@example.org", "correct horse")
    with db.read() as tx:
        stored = tx.value("SELECT password_hash FROM users")
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    assert passwords.verify_password(stored, "correct horse")
    assert not passwords.verify_password(stored, "Correct horse")
    assert not passwords.verify_password("not a hash", "correct horse")


def test_set_password_and_unknown_users(services):
    services.accounts.create_user("alice@example.org", "one")
    services.accounts.set_password("alice@example.org", "two")
    assert (
        services.authenticator.authenticate(basic("alice@example.org", "two"), "192.0.2.1").email == "alice@example.org"
    )
    with pytest.raises(UnknownUser):
        services.accounts.set_password("bob@example.org", "x")
    with pytest.raises(UnknownUser):
        services.accounts.delete("bob@example.org")


def test_delete_cascades_app_passwords_and_delegations_and_runs_hooks(services, tokens, db):
    alice, _ = services.accounts.create_user("alice@example.org", "a")
    bob, _ = services.accounts.create_user("bob@example.org", "b")
    services.accounts.delegate("alice@example.org", "bob@example.org")
    tokens.create(alice, "phone")
    seen = []
    services.accounts.on_user_deleted.append(lambda tx, user: seen.append((user.email, tx.value("SELECT 1"))))
    services.accounts.delete("alice@example.org")
    assert seen == [("alice@example.org", 1)]
    with db.read() as tx:
        assert tx.value("SELECT COUNT(*) FROM app_passwords") == 0
        assert tx.value("SELECT COUNT(*) FROM delegations") == 0
    assert list(services.accounts.accessible_accounts(bob.id)) == [bob.account_id]


def test_delegation_shows_the_owners_account(services):
    alice, _ = services.accounts.create_user("alice@example.org", "a")
    bob, _ = services.accounts.create_user("bob@example.org", "b")
    changes = []
    services.accounts.on_delegation_changed.append(lambda o, d, granted: changes.append((o.email, d.email, granted)))
    assert services.accounts.delegate("alice@example.org", "bob@example.org") is True
    assert services.accounts.delegate("alice@example.org", "bob@example.org") is False
    access = services.accounts.accessible_accounts(bob.id)
    assert list(access) == [bob.account_id, alice.account_id]
    assert access[alice.account_id].is_personal is False and access[alice.account_id].name == "alice@example.org"
    assert services.accounts.access(alice.id, bob.account_id) is None
    assert services.accounts.undelegate("alice@example.org", "bob@example.org") is True
    assert services.accounts.undelegate("alice@example.org", "bob@example.org") is False
    assert list(services.accounts.accessible_accounts(bob.id)) == [bob.account_id]
    assert changes == [("alice@example.org", "bob@example.org", True), ("alice@example.org", "bob@example.org", False)]
    with pytest.raises(AccountError):
        services.accounts.delegate("alice@example.org", "alice@example.org")


def test_outdated_hash_is_upgraded_on_login(services, db):
    user, _ = services.accounts.create_user("alice@example.org", "pw")
    old = PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1).hash("pw")
    with db.transaction() as tx:
        tx.execute("UPDATE users SET password_hash = ? WHERE id = ?", (old, user.id))
    assert services.authenticator.authenticate(basic("alice@example.org", "pw"), "192.0.2.1").user_id == user.id
    with db.read() as tx:
        upgraded = tx.value("SELECT password_hash FROM users WHERE id = ?", (user.id,))
    assert upgraded != old and not passwords.needs_rehash(upgraded)
    assert services.authenticator.authenticate(basic("alice@example.org", "pw"), "192.0.2.1").user_id == user.id


def test_a_credential_stays_valid_until_revoked_and_a_rehash_revokes_nothing(services, tokens, db):
    """What a connection that may have missed a revocation asks: the password it authenticated with is still
    the user's (a rehash with new parameters keeps it), its app password still exists, its user too."""
    alice, _ = services.accounts.create_user("alice@example.org", "pw")
    by_password = services.authenticator.authenticate(basic("alice@example.org", "pw"), "192.0.2.1")
    phone, laptop = tokens.create(alice, "phone")[0], tokens.create(alice, "laptop")[0]
    by_phone = Principal(alice.id, alice.email, alice.account_id, phone.id)
    by_laptop = Principal(alice.id, alice.email, alice.account_id, laptop.id)
    accounts = services.accounts
    assert [accounts.check_credential(p) for p in (by_password, by_phone, by_laptop)] == [None, None, None]

    with db.read() as tx:
        stored = tx.value("SELECT password_hash FROM users WHERE id = ?", (alice.id,))
    assert accounts.upgrade_hash(alice.id, stored, PasswordHasher(time_cost=2, memory_cost=2048).hash("pw"))
    assert accounts.check_credential(by_password) is None

    accounts.set_password("alice@example.org", "pw2")
    assert accounts.check_credential(by_password) == Revocation(alice.id, PASSWORD)
    again = services.authenticator.authenticate(basic("alice@example.org", "pw2"), "192.0.2.1")
    assert accounts.check_credential(again) is None and accounts.check_credential(by_phone) is None

    assert tokens.revoke(alice.id, phone.id)
    assert accounts.check_credential(by_phone) == Revocation(alice.id, APP_PASSWORD, phone.id)
    assert accounts.check_credential(by_laptop) is None

    accounts.delete("alice@example.org")
    assert {accounts.check_credential(p) for p in (again, by_laptop)} == {Revocation(alice.id, USER_DELETED)}


# --- app passwords ---------------------------------------------------------------------------------


def test_app_password_keeps_only_a_sha256(services, tokens, db):
    alice, _ = services.accounts.create_user("alice@example.org", "a")
    created, token = tokens.create(alice, " phone ")
    pid, secret = parse_token(token)
    assert pid == created.id and created.label == "phone" and len(secret) == 43
    with db.read() as tx:
        row = tx.one("SELECT * FROM app_passwords")
    assert row["secret_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in str(row)
    owner = tokens.check(token)
    assert owner is not None and owner.user == alice and owner.app_password_id == created.id


def test_tampered_or_malformed_tokens_are_refused(services, tokens):
    alice, _ = services.accounts.create_user("alice@example.org", "a")
    _, token = tokens.create(alice)
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    for bad in (flipped, token + "x", token[:-1], "jmm_", "jmm_pzzzzzzzzzzzz_" + "A" * 43, "", "jmm_" + "x" * 2000):
        assert tokens.check(bad) is None


def test_revoke_only_own_and_label_rules(services, tokens):
    alice, _ = services.accounts.create_user("alice@example.org", "a")
    bob, _ = services.accounts.create_user("bob@example.org", "b")
    created, token = tokens.create(alice, "phone")
    assert tokens.revoke(bob.id, created.id) is False
    assert tokens.check(token) is not None
    assert [p.id for p in tokens.list(alice.id)] == [created.id] and tokens.list(bob.id) == []
    assert tokens.revoke(alice.id, created.id) is True
    assert tokens.check(token) is None and tokens.list(alice.id) == []
    for label in (7, "x" * 101, "a\tb", "new\nline"):
        with pytest.raises(AppPasswordError):
            tokens.create(alice, label)


# --- credential cache and KDF (no storage) ----------------------------------------------------------


def test_credential_cache_expires_and_is_bounded():
    now = [0.0]
    cache = CredentialCache(60, max_entries=3, clock=lambda: now[0])
    p = Principal(1, "alice@example.org", "a1")
    key = cache.key("alice@example.org", "pw", "$hash1")
    assert key != cache.key("alice@example.org", "pw", "$hash2")
    assert key != cache.key("alice@example.org", "pw2", "$hash1")
    assert key != CredentialCache(60).key("alice@example.org", "pw", "$hash1")  # per-process key
    assert b"pw" not in key
    cache.put(key, p)
    now[0] = 59.9
    assert cache.get(key) == p
    now[0] = 60.0
    assert cache.get(key) is None and len(cache) == 0
    for i in range(10):
        cache.put(cache.key(f"u{i}", "pw", "h"), p)
    assert len(cache) == 3
    assert cache.get(cache.key("u9", "pw", "h")) == p and cache.get(cache.key("u0", "pw", "h")) is None
    off = CredentialCache(0)
    off.put(key, p)
    assert off.get(key) is None and len(off) == 0


def test_kdf_runs_off_the_hub_so_other_greenlets_keep_running(monkeypatch):
    """run_kdf hands the hashing to a thread: a greenlet runs WHILE it works. Here the "KDF" waits for that
    greenlet (in its own OS thread, without gevent): it can return True only if the hub kept running."""
    from gevent import monkey

    ran = monkey.get_original("_thread", "allocate_lock")()  # an OS lock: waiting on it never yields
    ran.acquire()

    def needs_the_hub_free() -> bool:
        return ran.acquire(timeout=10)  # released by the greenlet below, if it gets to run

    greenlet = gevent.spawn(ran.release)
    assert passwords.run_kdf(needs_the_hub_free) is True
    greenlet.join()
    monkeypatch.setattr(passwords, "_hasher", PasswordHasher())  # and the real thing, at its real cost
    hashed = passwords.hash_password("pw")
    assert passwords.run_kdf(passwords.verify_password, hashed, "pw") is True


def test_app_passwords_made_in_one_millisecond_are_listed_in_the_order_made(services, tokens, monkeypatch):
    alice, _ = services.accounts.create_user("alice@example.org")
    with one_millisecond(monkeypatch):
        made = [tokens.create(alice, f"device {i}")[0] for i in range(12)]
    assert len({p.created_at for p in made}) == 1
    assert [p.label for p in tokens.list(alice.id)] == [f"device {i}" for i in range(12)]

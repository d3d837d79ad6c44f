"""Blob store semantics, Blob/copy and garbage collection, on both backends."""

from __future__ import annotations

import pytest

from jmapmono.accounts.principal import Principal
from jmapmono.accounts.users import AccountAccess
from jmapmono.clock import now_ms
from jmapmono.jmap.blob import blob_copy
from jmapmono.jmap.errors import MethodError
from jmapmono.jmap.registry import CORE, METHODS, Invocation
from jmapmono.mailbox.blobs import BlobContent, blob_id_for

HOUR_MS = 3600 * 1000


def _user(services, email):
    user, _ = services.accounts.create_user(email, "secret-password")
    return user


def _principal(user) -> Principal:
    return Principal(user.id, user.email, user.account_id)


def _copy(services, user, **args) -> dict:
    inv = Invocation(
        name="Blob/copy",
        args=args,
        call_id="c0",
        services=services,
        principal=_principal(user),
        using=frozenset({CORE}),
        created_ids={},
    )
    return blob_copy(inv)


def _hold(services, account_id, blob_id, ref):
    with services.db.transaction() as tx:
        services.blobs.add_ref(tx, account_id, blob_id, ref)


def _blob_exists(services, blob_id) -> bool:
    with services.db.read() as tx:
        return tx.one("SELECT id FROM blobs WHERE id = ?", (blob_id,)) is not None


@pytest.fixture
def alice(services):
    return _user(services, "alice@example.org")


@pytest.fixture
def bob(services):
    return _user(services, "bob@example.org")


# -- reading rules --------------------------------------------------------------------------------------------------


def test_upload_is_readable_by_its_uploader_only_until_referenced(services, alice, bob):
    services.accounts.delegate("alice@example.org", "bob@example.org")
    meta = services.blobs.upload(alice.account_id, bob.id, b"draft attachment", "text/plain")
    # Bob uploaded into Alice's account: unreferenced, so only Bob may read it (RFC 8620 §6.1).
    assert services.blobs.read(alice.account_id, meta.blob_id, bob.id).data == b"draft attachment"
    assert services.blobs.read(alice.account_id, meta.blob_id, alice.id) is None
    assert services.blobs.lookup(alice.account_id, meta.blob_id, alice.id) is None
    _hold(services, alice.account_id, meta.blob_id, "message:M1")
    assert services.blobs.read(alice.account_id, meta.blob_id, alice.id).data == b"draft attachment"


def test_identical_bytes_in_two_accounts_share_storage_but_not_access(services, alice, bob):
    a = services.blobs.upload(alice.account_id, alice.id, b"same", "text/plain")
    assert services.blobs.read(bob.account_id, a.blob_id, bob.id) is None
    b = services.blobs.upload(bob.account_id, bob.id, b"same", "application/x-other")
    assert a.blob_id == b.blob_id == blob_id_for(b"same")
    assert services.blobs.read(bob.account_id, b.blob_id, bob.id).type == "application/x-other"
    assert services.blobs.read(alice.account_id, a.blob_id, alice.id).type == "text/plain"
    with services.db.read() as tx:
        assert tx.value("SELECT COUNT(*) AS n FROM blobs") == 1


def test_get_keeps_working_for_delivered_mail(services, alice):
    raw = b"Subject: x\r\n\r\n\x00\xff body\r\n"
    delivered = services.mailboxes.deliver("alice@example.org", raw)
    assert services.blobs.get(alice.account_id, delivered.blob_id) == raw
    assert services.blobs.lookup(alice.account_id, delivered.blob_id, alice.id).type == "message/rfc822"


def test_resolver_serves_ids_that_are_not_stored_blobs(services, alice, bob):
    message = services.blobs.upload(alice.account_id, alice.id, b"whole message", "message/rfc822")
    part_id = message.blob_id + "_2"

    def parts(account_id, blob_id, user_id):
        holder, _, part = blob_id.partition("_")
        if part != "2" or services.blobs.lookup(account_id, holder, user_id) is None:
            return None
        return BlobContent(blob_id, b"decoded part", "image/png", "cat.png")

    services.blobs.resolvers.append(parts)
    assert services.blobs.read(alice.account_id, part_id, alice.id).data == b"decoded part"
    assert services.blobs.read(bob.account_id, part_id, bob.id) is None
    assert services.blobs.read(alice.account_id, "Gnothing_2", alice.id) is None


def test_remove_ref_releases_the_holder(services, alice):
    meta = services.blobs.upload(alice.account_id, alice.id, b"x", "text/plain")
    _hold(services, alice.account_id, meta.blob_id, "message:M9")
    with services.db.transaction() as tx:
        assert services.blobs.remove_ref(tx, alice.account_id, meta.blob_id, "message:M9")
        assert not services.blobs.remove_ref(tx, alice.account_id, meta.blob_id, "message:M9")
    assert services.blobs.collect_garbage(now_ms() + 2 * HOUR_MS) == 1


# -- garbage collection ---------------------------------------------------------------------------------------------


def test_collection_keeps_unexpired_and_referenced_blobs_and_frees_the_rest(services, alice):
    before = now_ms()
    orphan = services.blobs.upload(alice.account_id, alice.id, b"orphan", "text/plain")
    kept = services.blobs.upload(alice.account_id, alice.id, b"attached later", "text/plain")
    _hold(services, alice.account_id, kept.blob_id, "message:M1")
    mail = services.mailboxes.deliver("alice@example.org", b"Subject: delivered\r\n\r\nbody\r\n")
    after = now_ms()

    assert services.blobs.collect_garbage(before + HOUR_MS - 1) == 0
    assert services.blobs.read(alice.account_id, orphan.blob_id, alice.id) is not None

    assert services.blobs.collect_garbage(after + HOUR_MS) == 1
    assert not _blob_exists(services, orphan.blob_id)
    assert services.blobs.read(alice.account_id, orphan.blob_id, alice.id) is None
    assert services.blobs.read(alice.account_id, kept.blob_id, alice.id).data == b"attached later"
    assert services.blobs.get(alice.account_id, mail.blob_id) == b"Subject: delivered\r\n\r\nbody\r\n"
    with services.db.read() as tx:  # the expired upload reference is gone, the durable one stays
        refs = tx.query("SELECT ref FROM blob_refs WHERE blob_id = ?", (kept.blob_id,))
    assert [r["ref"] for r in refs] == ["message:M1"]
    assert services.blobs.collect_garbage(after + 2 * HOUR_MS) == 0


def test_reupload_renews_the_expiry(services, alice):
    first = now_ms()
    meta = services.blobs.upload(alice.account_id, alice.id, b"again", "text/plain")
    with services.db.transaction() as tx:  # pretend the first upload was 50 minutes ago
        tx.execute("UPDATE blob_refs SET expires_at = ? WHERE blob_id = ?", (first + 10 * 60 * 1000, meta.blob_id))
    services.blobs.upload(alice.account_id, alice.id, b"again", "text/plain")
    assert services.blobs.collect_garbage(first + 30 * 60 * 1000) == 0
    assert _blob_exists(services, meta.blob_id)


def test_collection_works_in_batches(services, alice):
    for i in range(7):
        services.blobs.upload(alice.account_id, alice.id, f"blob {i}".encode(), "text/plain")
    _hold(services, alice.account_id, blob_id_for(b"blob 3"), "message:M3")
    assert services.blobs.collect_garbage(now_ms() + 2 * HOUR_MS, batch_size=2) == 6
    with services.db.read() as tx:
        assert [r["id"] for r in tx.query("SELECT id FROM blobs")] == [blob_id_for(b"blob 3")]


def test_collection_skips_a_blob_held_only_by_a_foreign_key(services, alice):
    """A holder that forgot its reference must not lose its bytes, nor stop the collection of others."""
    kept = services.blobs.upload(alice.account_id, alice.id, b"held by a foreign key", "text/plain")
    services.blobs.upload(alice.account_id, alice.id, b"really unused", "text/plain")
    with services.db.transaction() as tx:
        tx.execute("CREATE TABLE gc_test_holder (blob_id TEXT NOT NULL REFERENCES blobs(id))")
        tx.execute("INSERT INTO gc_test_holder (blob_id) VALUES (?)", (kept.blob_id,))
    assert services.blobs.collect_garbage(now_ms() + 2 * HOUR_MS) == 1
    assert _blob_exists(services, kept.blob_id)
    with services.db.transaction() as tx:
        tx.execute("DROP TABLE gc_test_holder")


# -- Blob/copy ------------------------------------------------------------------------------------------------------


def test_blob_copy_is_registered_as_a_core_write():
    spec = METHODS["Blob/copy"]
    assert (spec.capability, spec.needs_account, spec.writes) == (CORE, True, True)


def test_blob_copy_copies_into_the_other_account(services, alice, bob):
    services.accounts.delegate("bob@example.org", "alice@example.org")
    meta = services.blobs.upload(alice.account_id, alice.id, b"\x00binary\xff", "image/png")
    before = now_ms()
    result = _copy(
        services, alice, fromAccountId=alice.account_id, accountId=bob.account_id, blobIds=[meta.blob_id, "Gmissing"]
    )
    assert result["fromAccountId"] == alice.account_id and result["accountId"] == bob.account_id
    assert result["copied"] == {meta.blob_id: meta.blob_id}
    assert list(result["notCopied"]) == ["Gmissing"]
    assert result["notCopied"]["Gmissing"]["type"] == "notFound"
    copy = services.blobs.read(bob.account_id, meta.blob_id, alice.id)
    assert (copy.data, copy.type) == (b"\x00binary\xff", "image/png")
    # Held like an upload by Alice: Bob does not see it until something references it; it expires.
    assert services.blobs.read(bob.account_id, meta.blob_id, bob.id) is None
    with services.db.transaction() as tx:
        tx.execute("DELETE FROM blob_refs WHERE account_id = ?", (alice.account_id,))
    assert services.blobs.collect_garbage(before + HOUR_MS - 1) == 0
    assert services.blobs.collect_garbage(now_ms() + HOUR_MS) == 1


def test_blob_copy_reports_unreadable_blobs_as_not_found(services, alice, bob):
    services.accounts.delegate("bob@example.org", "alice@example.org")
    bobs_own = services.blobs.upload(bob.account_id, bob.id, b"bob's upload", "text/plain")
    # Alice can see Bob's account but not Bob's unreferenced upload in it.
    result = _copy(
        services, alice, fromAccountId=bob.account_id, accountId=alice.account_id, blobIds=[bobs_own.blob_id]
    )
    assert result["copied"] is None
    assert result["notCopied"][bobs_own.blob_id]["type"] == "notFound"
    result = _copy(services, alice, fromAccountId=bob.account_id, accountId=alice.account_id, blobIds=["bad id!"])
    assert result["notCopied"]["bad id!"]["type"] == "notFound"


def test_blob_copy_errors(services, alice, bob, monkeypatch):
    meta = services.blobs.upload(alice.account_id, alice.id, b"x", "text/plain")

    def error_of(**args) -> str:
        with pytest.raises(MethodError) as e:
            _copy(services, alice, **args)
        return e.value.type

    # Bob's account is not Alice's to read.
    assert error_of(fromAccountId=bob.account_id, accountId=alice.account_id, blobIds=[meta.blob_id]) == (
        "fromAccountNotFound"
    )
    assert error_of(fromAccountId=alice.account_id, accountId=alice.account_id, blobIds=[meta.blob_id]) == (
        "invalidArguments"
    )
    assert error_of(fromAccountId=alice.account_id, accountId=bob.account_id, blobIds=[meta.blob_id]) == (
        "accountNotFound"
    )
    services.accounts.delegate("bob@example.org", "alice@example.org")
    assert error_of(fromAccountId=alice.account_id, accountId=bob.account_id, blobIds="x") == "invalidArguments"
    assert error_of(fromAccountId=None, accountId=bob.account_id, blobIds=[]) == "invalidArguments"
    real_access = services.accounts.access

    def read_only_bob(user_id, account_id):
        access = real_access(user_id, account_id)
        if access is not None and account_id == bob.account_id:
            return AccountAccess(access.account_id, access.name, access.owner_user_id, access.is_personal, True)
        return access

    monkeypatch.setattr(services.accounts, "access", read_only_bob)
    assert error_of(fromAccountId=alice.account_id, accountId=bob.account_id, blobIds=[meta.blob_id]) == (
        "accountReadOnly"
    )

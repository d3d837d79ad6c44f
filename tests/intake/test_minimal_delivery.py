"""Delivery stores the raw bytes durably, retrievable by blob id, on both backends."""

import pytest

from jmapmono.accounts.users import UnknownUser


def test_delivered_bytes_come_back_exactly(services):
    user, _ = services.accounts.create_user("alice@example.org")
    raw = b"From: bob@example.org\r\nSubject: hi\r\n\r\nbody \xff\r\n.\r\n"
    delivered = services.mailboxes.deliver("Alice@Example.org", raw)
    assert delivered.account_id == user.account_id
    assert services.blobs.get(user.account_id, delivered.blob_id) == raw


def test_other_accounts_cannot_read_the_blob(services):
    services.accounts.create_user("alice@example.org")
    bob, _ = services.accounts.create_user("bob@example.org")
    delivered = services.mailboxes.deliver("alice@example.org", b"Subject: x\r\n\r\ny\r\n")
    assert services.blobs.get(bob.account_id, delivered.blob_id) is None


def test_unknown_recipient_is_refused(services):
    with pytest.raises(UnknownUser):
        services.mailboxes.deliver("nobody@example.org", b"x")

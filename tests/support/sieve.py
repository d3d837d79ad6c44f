"""Setting a user's active Sieve script directly through the store (as SieveScript/set does)."""

from __future__ import annotations

from jmapmono.mailbox.sieve.scripts import Change, Content


def activate(services, email: str, script: str) -> str:
    """Store ``script`` for ``email`` and make it the active one; its id."""
    user = services.accounts.get(email)
    sieve = services.mailboxes.sieve
    data = script.encode()
    with services.db.transaction() as tx:
        blob_id = services.blobs.store_bytes(tx, data)
    change = Change(create={"s": (None, Content(blob_id, sieve.compile(data)))}, activate="#s")
    result = sieve.apply(user.account_id, change)
    assert not result.errors and result.active_id is not None, result
    return result.active_id

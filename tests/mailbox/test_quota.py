"""Quota usage kept in each mutating transaction and its limits (RFC 9425), on both backends: usage equals a
recount after every kind of change, mail over a limit is refused whole and nothing is stored."""

import json

import pytest

from jmapmono.mailbox import quota
from jmapmono.mailbox.model import NewMessage
from jmapmono.store.migrations import migrate


def raw(subject: str, body: str = "body") -> bytes:
    return f"From: bob@example.org\r\nTo: alice@example.org\r\nSubject: {subject}\r\n\r\n{body}\r\n".encode()


@pytest.fixture
def alice(services):
    user, _ = services.accounts.create_user("alice@example.org")
    return user


def roles(services, account_id: str) -> dict[str, str]:
    mailboxes, _ = services.mailboxes.get_mailboxes(account_id)
    return {mb.role: mb.id for mb in mailboxes if mb.role}


def kept_and_counted(services, account_id: str) -> tuple[quota.Usage, quota.Usage]:
    with services.db.read() as tx:
        return quota.read(tx, account_id, quota.Limits()).usage, quota.recount(tx, account_id)


def test_usage_equals_a_recount_after_deliveries_moves_copies_and_deletes(services, alice):
    mgr, account = services.mailboxes, alice.account_id
    box = roles(services, account)
    delivered = [mgr.deliver(alice.email, raw(f"m{i}", "x" * (100 * i))) for i in range(6)]
    kept, counted = kept_and_counted(services, account)
    assert kept == counted and counted.messages == 6
    mgr.move_messages(account, [delivered[0].message_id], add=[box["archive"]], remove=[box["inbox"]])
    mgr.move_messages(account, [delivered[1].message_id], add=[box["archive"]])  # in two mailboxes: counted once
    assert kept_and_counted(services, account)[0] == counted
    appended = mgr.append_many(account, [NewMessage(raw("draft"), (box["drafts"],), ("$draft",))])
    bob, _ = services.accounts.create_user("bob@example.org")
    mgr.append(bob.account_id, raw("copied"), [roles(services, bob.account_id)["inbox"]])
    mgr.destroy_messages(account, [delivered[2].message_id, appended.created[0].id, "Mnonexistent"])
    mgr.delete_mailbox(account, box["archive"], remove_emails=True)  # destroys m0; m1 stays in the Inbox
    kept, counted = kept_and_counted(services, account)
    assert kept == counted and counted.messages == 4
    assert kept_and_counted(services, bob.account_id)[0] == kept_and_counted(services, bob.account_id)[1]
    mgr.destroy_messages(account, [d.message_id for d in delivered])
    assert kept_and_counted(services, account) == (quota.Usage(0, 0), quota.Usage(0, 0))


def test_the_migration_counts_what_accounts_already_hold(services, alice):
    mgr, db = services.mailboxes, services.db
    for i in range(3):
        mgr.deliver(alice.email, raw(f"m{i}"))
    with db.transaction() as tx:  # the database as the previous release left it, with the same mail
        tx.execute("DROP TABLE quota_usage")
        tx.execute("DROP TABLE quota_limits")
        tx.execute("DELETE FROM schema_migrations WHERE version = 6")
    assert migrate(db) >= 6  # the latest version, this one included
    kept, counted = kept_and_counted(services, alice.account_id)
    assert kept == counted and counted.messages == 3


def test_a_delivery_over_a_limit_is_refused_and_nothing_is_stored(services, alice):
    mgr, account = services.mailboxes, alice.account_id
    first = raw("first")
    mgr.deliver(alice.email, first)
    mgr.set_quota(account, octets=len(first) + 10)
    with pytest.raises(quota.OverQuota):
        mgr.deliver(alice.email, raw("second, too large"))
    kept, counted = kept_and_counted(services, account)
    assert kept == counted == quota.Usage(len(first), 1)
    mgr.set_quota(account, octets=quota.UNLIMITED, messages=1)
    with pytest.raises(quota.OverQuota):
        mgr.deliver(alice.email, raw("s"))
    mgr.set_quota(account, messages=None)  # back to the default: none
    mgr.deliver(alice.email, raw("s"))
    assert kept_and_counted(services, account)[1].messages == 2


def test_appends_are_refused_one_by_one_past_the_limit(services, alice):
    mgr, account = services.mailboxes, alice.account_id
    inbox = roles(services, account)["inbox"]
    mgr.set_quota(account, messages=2)
    result = mgr.append_many(account, [NewMessage(raw(f"m{i}"), (inbox,)) for i in range(3)])
    assert sorted(result.created) == [0, 1] and list(result.errors) == [2]
    assert isinstance(result.errors[2], quota.OverQuota) and result.errors[2].set_error == "overQuota"
    assert kept_and_counted(services, account)[1].messages == 2


def test_limits_create_update_and_destroy_quota_objects_in_the_change_log(services, alice):
    mgr, account = services.mailboxes, alice.account_id
    changes = services.changes
    start = changes.state(account, "Quota")
    mgr.deliver(alice.email, raw("no quota yet"))  # usage without a quota object logs nothing
    assert changes.state(account, "Quota") == start
    mgr.set_quota(account, octets=1_000_000)
    c = changes.changes_since(account, "Quota", start)
    assert (c.created, c.updated, c.destroyed) == (["storage"], [], [])
    with services.db.read() as tx:
        event = json.loads(tx.value("SELECT event FROM event_outbox ORDER BY id DESC LIMIT 1"))
    assert event["type"] == "StatesChanged" and event["states"] == {"Quota": c.new_state}
    assert event["changes"] == {"Quota": {"created": ["storage"], "updated": [], "destroyed": []}}
    mgr.deliver(alice.email, raw("counted"))
    c2 = changes.changes_since(account, "Quota", c.new_state)
    assert (c2.created, c2.updated, c2.destroyed) == ([], ["storage"], [])
    mgr.set_quota(account, octets=None)
    c3 = changes.changes_since(account, "Quota", c2.new_state)
    assert (c3.created, c3.updated, c3.destroyed) == ([], [], ["storage"])


def test_the_configured_default_applies_until_the_account_has_its_own(config, db):
    from jmapmono.runtime import Runtime

    services = Runtime(config.with_overrides(quota_messages=1), db)
    user, _ = services.accounts.create_user("carol@example.org")
    services.mailboxes.deliver(user.email, raw("one"))
    with pytest.raises(quota.OverQuota):
        services.mailboxes.deliver(user.email, raw("two"))
    account, _ = services.mailboxes.get_quota(user.account_id)
    assert account.objects()["messages"]["hardLimit"] == 1 and "storage" not in account.objects()
    services.mailboxes.set_quota(user.account_id, messages=quota.UNLIMITED)
    services.mailboxes.deliver(user.email, raw("two"))

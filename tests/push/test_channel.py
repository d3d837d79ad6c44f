"""The push channel shared by WebSocket and EventSource: coalescing, types, pushState resume, delegation."""

import pytest

from jmapmono.events.event import Event
from jmapmono.push import push_state
from jmapmono.push.channel import PushChannel
from jmapmono.push.jmap_bus_events import user_key
from tests.support.waiting import wait_until


@pytest.fixture
def bus(services):
    services.jmap_bus.start()
    yield services.jmap_bus
    services.jmap_bus.stop()


@pytest.fixture
def users(services):
    alice, _ = services.accounts.create_user("alice@example.org", "pw-alice")
    bob, _ = services.accounts.create_user("bob@example.org", "pw-bob")
    return alice, bob


def principal_of(user):
    from jmapmono.accounts.principal import Principal

    return Principal(user.id, user.email, user.account_id)


def state_change(account_id: str, **changed: str) -> Event:
    return Event.new("StateChange", {"accountId": account_id, "changed": changed})


def test_pending_changes_coalesce_newest_state_wins(services, bus, users):
    alice, bob = users
    rings = []
    channel = PushChannel(services, principal_of(alice), lambda: rings.append(1))
    channel.enable(["Email", "Mailbox"])
    for seq in ("a", "b", "c"):
        bus.dispatch(state_change(alice.account_id, Email=seq, Thread=seq), keys=[alice.account_id])
    wait_until(lambda: len(rings) >= 3)
    sent = channel.take()
    assert sent["changed"] == {alice.account_id: {"Email": "c"}}  # Thread not enabled; newest Email wins
    assert channel.take() is None
    assert push_state.decode(sent["pushState"]) == {alice.account_id: 12}  # "c" in base 36
    channel.close()
    assert bus.listener_count(alice.account_id) == 0 and bus.listener_count(user_key(alice.id)) == 0


def test_other_users_accounts_are_not_heard(services, bus, users):
    alice, bob = users
    channel = PushChannel(services, principal_of(bob), lambda: None)
    channel.enable(None)
    bus.dispatch(state_change(alice.account_id, Email="5"), keys=[alice.account_id])
    bus.dispatch(state_change(bob.account_id, Email="6"), keys=[bob.account_id])  # a barrier bob does hear
    wait_until(lambda: channel._pending)
    assert channel.take()["changed"] == {bob.account_id: {"Email": "6"}}
    channel.close()


def test_resume_from_push_state_sends_only_what_moved(services, bus, users):
    alice, _ = users
    channel = PushChannel(services, principal_of(alice), lambda: None)
    channel.enable(None)
    token = channel.push_state()
    channel.close()
    services.mailboxes.deliver("alice@example.org", b"Subject: hi\r\n\r\nbody\r\n")
    resumed = PushChannel(services, principal_of(alice), lambda: None)
    resumed.enable(None, resume_from=token)
    sent = resumed.take()
    changed = sent["changed"][alice.account_id]
    assert {"Email", "Thread", "Mailbox", "EmailDelivery"} <= set(changed)
    assert changed["Email"] == services.changes.state(alice.account_id, "Email")
    # Resuming from the new token finds nothing.
    again = PushChannel(services, principal_of(alice), lambda: None)
    again.enable(None, resume_from=sent["pushState"])
    assert again.take() is None
    for c in (resumed, again):
        c.close()


def test_unknown_push_state_resends_everything(services, bus, users):
    alice, _ = users
    channel = PushChannel(services, principal_of(alice), lambda: None)
    channel.enable(["Mailbox"], resume_from="garbage")
    assert set(channel.take()["changed"][alice.account_id]) == {"Mailbox"}
    channel.close()


def test_delegation_granted_while_connected_is_heard_without_reconnect(services, bus, users):
    alice, bob = users
    rings = []
    channel = PushChannel(services, principal_of(bob), lambda: rings.append(1))
    channel.enable(None)
    services.accounts.delegate("alice@example.org", "bob@example.org")
    bus.dispatch(Event.new("AccessChanged", {}), keys=[user_key(bob.id)])
    wait_until(lambda: alice.account_id in channel._pending)  # the gained account's current states
    channel.take()
    bus.dispatch(state_change(alice.account_id, Email="z"), keys=[alice.account_id])
    wait_until(lambda: channel._pending)
    assert channel.take()["changed"] == {alice.account_id: {"Email": "z"}}
    services.accounts.undelegate("alice@example.org", "bob@example.org")
    bus.dispatch(Event.new("AccessChanged", {}), keys=[user_key(bob.id)])
    wait_until(lambda: bus.listener_count(alice.account_id) == 0)
    channel.close()


def test_a_late_older_state_never_replaces_a_newer_pending_one(services, bus, users):
    alice, _ = users
    rings = []
    channel = PushChannel(services, principal_of(alice), lambda: rings.append(1))
    channel.enable(None)
    bus.dispatch(state_change(alice.account_id, Email="k"), keys=[alice.account_id])
    bus.dispatch(state_change(alice.account_id, Email="f", Mailbox="f"), keys=[alice.account_id])  # older, late
    wait_until(lambda: len(rings) >= 2)
    assert channel.take()["changed"] == {alice.account_id: {"Email": "k", "Mailbox": "f"}}
    channel.close()

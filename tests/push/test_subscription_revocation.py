"""Push subscriptions die with the credential that created them, on SQLite and Postgres (RFC 8620 §7.2):

    "The push subscription is tied to the credentials used to authenticate the API request that created
    it.  Should these credentials expire or be revoked, the push subscription MUST be destroyed by the
    JMAP server.  Only subscriptions created by these credentials are returned when the client fetches
    existing subscriptions."

A password change destroys those made with the password, an app-password revocation those made with it,
a user deletion all of the user's, each in its own transaction and nothing else; none is pushed to again.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from jmapmono.accounts.app_passwords import AppPasswords
from jmapmono.accounts.principal import Principal
from jmapmono.push.subscriptions_store import PushSubscriptions
from jmapmono.runtime.event_flow import EventFlow
from tests.push.test_subscription import create, get_all, ok
from tests.push.test_webpush_delivery import message, settle, subscribe
from tests.support.jmap import PASSWORD, JmapClient, basic_auth


@pytest.fixture
def config(config):
    """Loopback receivers: private targets (and http://) allowed, as a lab deployment would."""
    return config.with_overrides(push_allow_private_targets=True)


@pytest.fixture
def flow(services, alice, bob) -> Iterator[EventFlow]:
    services.webpush.retry_backoff = 0.05
    running = services.start().flow
    settle(services, running)  # the provisioning of alice's and bob's mailboxes
    yield running
    running.stop()


def with_token(client: JmapClient, token: str) -> JmapClient:
    """The same user's client, authenticated with an app password (Bearer)."""
    other = JmapClient(client.client, client.email, client.account_id)
    other.headers = {"Authorization": f"Bearer {token}"}
    return other


def with_password(client: JmapClient, password: str) -> JmapClient:
    other = JmapClient(client.client, client.email, client.account_id)
    other.headers = basic_auth(client.email, password)
    return other


def stored(services) -> set[str]:
    with services.db.read() as tx:
        return {r["id"] for r in tx.query("SELECT id FROM push_subscriptions")}


def test_each_revocation_destroys_exactly_the_subscriptions_made_with_its_credential(services, alice, bob, receiver):
    accounts, tokens = services.accounts, AppPasswords(services.db, services.accounts)
    user = accounts.require(alice.email)
    phone, phone_token = tokens.create(user, "phone")
    _, tablet_token = tokens.create(user, "tablet")
    by_phone, by_tablet = with_token(alice, phone_token), with_token(alice, tablet_token)
    desk = {create(alice, receiver.url(f"/desk{n}"), deviceClientId=f"desk-{n}")["id"] for n in (1, 2)}
    on_phone, on_tablet = (
        create(by_phone, receiver.url("/phone"))["id"],
        create(by_tablet, receiver.url("/tablet"))["id"],
    )
    bobs = create(bob, receiver.url("/bob"))["id"]
    assert {s["id"] for s in get_all(alice)["list"]} == desk

    accounts.set_password(alice.email, "a new password")
    assert stored(services) == {on_phone, on_tablet, bobs}
    renewed = with_password(alice, "a new password")
    assert get_all(renewed)["list"] == []  # none was made with this password
    on_renewed = create(renewed, receiver.url("/renewed"))["id"]
    assert [s["id"] for s in get_all(renewed)["list"]] == [on_renewed]
    assert [s["id"] for s in get_all(by_phone)["list"]] == [on_phone]

    assert tokens.revoke(user.id, phone.id)
    assert stored(services) == {on_tablet, on_renewed, bobs}

    accounts.delete(alice.email)
    assert stored(services) == {bobs}
    assert [s["id"] for s in get_all(bob)["list"]] == [bobs]


@pytest.mark.parametrize("credential", ["password", "app password"])
def test_a_creation_whose_credential_is_revoked_while_the_call_runs_is_refused(
    services, alice, receiver, monkeypatch, credential
):
    """The call authenticated before the revocation committed; the subscription would be inserted after."""
    accounts, tokens = services.accounts, AppPasswords(services.db, services.accounts)
    user = accounts.require(alice.email)
    if credential == "password":
        client, revoke = alice, lambda: accounts.set_password(alice.email, "a new password")
    else:
        phone, token = tokens.create(user, "phone")
        client, revoke = with_token(alice, token), lambda: tokens.revoke(user.id, phone.id)
    resolver = services.webpush.resolver
    resolve_all = resolver.resolve_all

    def revoked_meanwhile(*args, **kwargs):  # the seam: the URL's host is resolved outside any transaction
        revoke()
        return resolve_all(*args, **kwargs)

    monkeypatch.setattr(resolver, "resolve_all", revoked_meanwhile)
    result = ok(client, "PushSubscription/set", {"create": {"k1": {"deviceClientId": "d", "url": receiver.url()}}})
    assert result["created"] is None
    assert result["notCreated"]["k1"]["type"] == "forbidden"
    assert stored(services) == set()


def test_no_push_reaches_a_subscription_destroyed_with_its_password(services, alice, receiver, flow):
    _, token = AppPasswords(services.db, services.accounts).create(services.accounts.require(alice.email), "phone")
    subscribe(alice, receiver, "/desk")
    subscribe(with_token(alice, token), receiver, "/phone")
    services.mailboxes.deliver(alice.email, message(1))
    receiver.wait("/desk", 2)
    receiver.wait("/phone", 2)

    services.accounts.set_password(alice.email, "a new password")
    services.mailboxes.deliver(alice.email, message(2))

    receiver.wait("/phone", 3)  # the app password's subscription lives on
    settle(services, flow)
    assert len(receiver.at("/desk")) == 2  # its verification and the first push only


def test_a_subscription_of_a_replaced_password_is_never_listed_nor_pushed_to_and_is_pruned(
    services, alice, receiver, monkeypatch
):
    """A creation that commits just after a password change (on Postgres the change's DELETE cannot see a
    row not yet committed) leaves a row made with the old password: it counts as gone everywhere."""
    sub_id = subscribe(alice, receiver, "/desk")
    user = services.accounts.require(alice.email)
    store = PushSubscriptions(services.db)
    assert [s.id for s in store.targets(user.account_id)] == [sub_id]
    with monkeypatch.context() as m:  # the password changes (to the same one); the row stays
        m.setattr(services.accounts, "on_credentials_revoked", [])
        services.accounts.set_password(alice.email, PASSWORD)

    assert store.targets(user.account_id) == [] and store.by_id(sub_id) is None
    assert get_all(alice)["list"] == []
    stale = Principal(user.id, user.email, user.account_id, password_epoch=0)
    assert [s.id for s in store.list(stale)] == [sub_id]  # what that password made, as it would see it
    assert store.prune_expired() == 1
    assert stored(services) == set()

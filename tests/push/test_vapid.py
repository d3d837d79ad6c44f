"""VAPID for web push (RFC 8292) advertised as RFC 9749 describes, through the real API and a real push
receiver that checks every push's ``Authorization`` as a push service does; on SQLite and Postgres."""

from __future__ import annotations

import base64

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from jmapmono.config import ConfigError, load_config
from jmapmono.push.vapid import WEBPUSH_VAPID, VapidKeys
from jmapmono.runtime import Runtime
from tests.cli.test_events import run_cli
from tests.push.test_subscription import create, get_all
from tests.push.test_webpush_delivery import message, subscribe
from tests.support.jmap import CORE, basic_auth
from tests.support.lmtp_client import LMTPClient
from tests.support.push_receiver import check_vapid
from tests.support.servers import add_user, start_serve
from tests.support.ws_client import WsClient, basic


@pytest.fixture
def config(config):
    return config.with_overrides(push_allow_private_targets=True)


def session(client, email: str = "alice@example.org") -> dict:
    response = client.get("/.well-known/jmap", headers=basic_auth(email))
    assert response.status_code == 200
    return response.get_json()


def server_key(client) -> str:
    return session(client)["capabilities"][WEBPUSH_VAPID]["applicationServerKey"]


def test_the_session_advertises_one_p256_key_kept_in_the_store(config, services, client, alice):
    """RFC 9749 §3: the capability's ``applicationServerKey`` is the P-256 public key, an uncompressed point
    (RFC 8292 §3.2), base64url-encoded; the same for every request, process and restart."""
    key = server_key(client)
    assert "=" not in key and "+" not in key and "/" not in key
    point = base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))
    assert len(point) == 65 and point[0] == 4
    ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)  # a point on the curve
    assert server_key(client) == key
    other = Runtime(config)  # another process on the same database
    try:
        assert other.vapid.current().public_key == key
    finally:
        other.close()


def test_every_push_is_signed_with_the_advertised_key(services, client, alice, receiver):
    """RFC 9749 §4: pushes carry VAPID (RFC 8292 §3: ``vapid t=<ES256 JWT>, k=<key>``, aud the push
    service's origin, exp within 24 hours, a contact in sub) — the verification and every StateChange."""
    key = server_key(client)
    url = receiver.url("/phone")
    sub_id = subscribe(alice, receiver, "/phone")
    (verification,) = receiver.at("/phone")
    claims = check_vapid(verification, key, url)
    assert claims["sub"] == services.config.vapid_contact
    flow = services.start().flow
    try:
        services.mailboxes.deliver("alice@example.org", message())
        push = receiver.wait("/phone", 2)[-1]
    finally:
        flow.stop()
    assert push.json()["@type"] == "StateChange"
    check_vapid(push, key, url)
    assert get_all(alice)["list"][0]["id"] == sub_id


def test_rotation_makes_a_new_key_and_destroys_every_subscription(config, services, client, alice, bob, receiver):
    """RFC 9749 §5: after the key changes, pushes signed with it would be refused for endpoints made with the
    old one: every PushSubscription goes, the Session's state changes, new subscriptions use the new key."""
    before, state = server_key(client), session(client)["state"]
    create(alice, receiver.url("/a"))
    create(bob, receiver.url("/b"))
    done = run_cli(config, "vapid", "rotate")
    assert done.returncode == 0, done.stderr
    new_key, generation, destroyed = done.stdout.strip().split("\t")
    assert (generation, destroyed) == ("generation 2", "2 push subscriptions destroyed")
    assert new_key != before
    services.vapid._current = None  # this process would look again within a minute; the test does not wait
    assert server_key(client) == new_key
    assert session(client)["state"] != state
    assert get_all(alice)["list"] == [] and get_all(bob)["list"] == []
    url = receiver.url("/again")
    create(alice, url)
    (verification,) = receiver.wait("/again")
    check_vapid(verification, new_key, url)
    shown = run_cli(config, "vapid", "show")
    assert shown.stdout.strip() == f"{new_key}\tgeneration 2"


def test_a_subscription_made_while_a_process_still_advertised_the_old_key_keeps_working(
    services, client, alice, receiver
):
    """A process learns of a rotation within a minute; what it subscribed meanwhile was made for the key it
    advertised, and its pushes are signed with that key, not with the newer one."""
    old = server_key(client)  # this process has read generation 1
    VapidKeys(services.db, "mailto:ops@example.org").rotate()  # another process rotates
    assert server_key(client) == old  # not seen yet here
    url = receiver.url("/late")
    create(alice, url)
    (verification,) = receiver.wait("/late")
    check_vapid(verification, old, url)


def test_processes_starting_together_agree_on_the_first_key(services):
    """The first key is made by whichever process needs it first; a race leaves one key, read by all."""
    first, second = VapidKeys(services.db, "mailto:a@example.org"), VapidKeys(services.db, "mailto:b@example.org")
    assert first._create_first().public_key == second._create_first().public_key
    assert second.current().generation == 1


def test_subscriptions_made_before_vapid_are_signed_with_the_newest_key(services, alice, receiver, client):
    url = receiver.url("/old")
    sub_id = create(alice, url)["id"]
    receiver.wait("/old")
    with services.db.transaction() as tx:
        tx.execute("UPDATE push_subscriptions SET vapid_generation = NULL WHERE id = ?", (sub_id,))
    key, _ = services.vapid.rotate()
    assert services.vapid.generation(None).public_key == key.public_key
    assert services.vapid.authorization(None, url).endswith(f", k={key.public_key}")


def test_the_contact_setting(config):
    env = {"DATABASE_URL": config.database_url, "JMAPMONO_DATA_DIR": str(config.data_dir)}
    assert load_config({**env, "JMAPMONO_BASE_URL": "https://mail.example.org"}).vapid_contact == (
        "https://mail.example.org"
    )
    plain = load_config({**env, "JMAPMONO_BASE_URL": "http://mail.example.org:8080"})
    assert plain.vapid_contact == "mailto:postmaster@mail.example.org"
    chosen = load_config({**env, "JMAPMONO_VAPID_SUBJECT": "mailto:ops@example.org"})
    assert chosen.vapid_contact == "mailto:ops@example.org"
    with pytest.raises(ConfigError, match="JMAPMONO_VAPID_SUBJECT"):
        load_config({**env, "JMAPMONO_VAPID_SUBJECT": "ops@example.org"})


def test_a_subscription_made_over_the_websocket_of_a_real_server_is_signed(tmp_path, receiver):
    """RFC 9749 §3–§4 against ``serve`` with two workers: the key a client reads from the Session over HTTP
    signs the verification of a PushSubscription made over an RFC 8887 WebSocket, and the StateChange of
    mail delivered over LMTP, whichever worker sends them."""
    url_db, password = f"sqlite:///{tmp_path / 'jmapmono.sqlite3'}", "alice-password-1"
    add_user(url_db, tmp_path / "data", "alice@example.org", password)
    server = start_serve(url_db, tmp_path, workers=2, JMAPMONO_PUSH_ALLOW_PRIVATE_TARGETS="on")
    try:
        auth = basic("alice@example.org", password)
        got = requests.get(f"http://127.0.0.1:{server.http_port}/.well-known/jmap", headers={"Authorization": auth})
        key = got.json()["capabilities"][WEBPUSH_VAPID]["applicationServerKey"]
        url = receiver.url("/ws")
        ws = WsClient(server.http_port, auth)
        try:
            create = {"create": {"k": {"deviceClientId": "d", "url": url}}}
            [(name, created, _)] = ws.call([["PushSubscription/set", create, "c"]], "r1", using=[CORE])
            assert name == "PushSubscription/set" and created["notCreated"] is None, created
            (verification,) = receiver.wait("/ws")
            check_vapid(verification, key, url)
            update = {
                "update": {created["created"]["k"]["id"]: {"verificationCode": verification.json()["verificationCode"]}}
            }
            [(name, updated, _)] = ws.call([["PushSubscription/set", update, "u"]], "r2", using=[CORE])
            assert updated["notUpdated"] is None, updated
        finally:
            ws.close()
        assert server.lmtp_port is not None
        with LMTPClient("127.0.0.1", server.lmtp_port) as lmtp:
            assert lmtp.lhlo().code == 250
            lmtp.transaction("bob@example.org", ["alice@example.org"], message())
        push = receiver.wait("/ws", 2)[-1]
        assert push.json()["@type"] == "StateChange"
        check_vapid(push, key, url)
    finally:
        server.stop()

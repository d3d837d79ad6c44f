"""PushSubscription/get and /set (RFC 8620 §7.2) through the real API, with a real HTTP receiver for the
PushVerification, on SQLite and Postgres."""

from __future__ import annotations

import _socket
import time
from datetime import UTC, datetime, timedelta

import gevent
import pytest
from gevent.monkey import get_original

from jmapmono.accounts import passwords
from jmapmono.jmap.submission import parse_utc_date
from jmapmono.push import subscription_methods, subscriptions_store
from tests.support.clock import one_millisecond
from tests.support.jmap import CORE, JmapClient
from tests.support.push_receiver import PushReceiver, UserAgentKeys
from tests.support.waiting import wait_until

DAY_MS = 86400 * 1000
#: Never contacted: every object using it is refused before any request.
LOOPBACK = "http://127.0.0.1:9/x"


@pytest.fixture
def config(config):
    """Loopback receivers: private targets (and http://) allowed, as a lab deployment would."""
    return config.with_overrides(push_allow_private_targets=True)


def call(client: JmapClient, method: str, args: dict) -> tuple[str, dict]:
    name, result, _ = client.responses([[method, args, "c0"]], using=[CORE])[0]
    return name, result


def ok(client: JmapClient, method: str, args: dict) -> dict:
    name, result = call(client, method, args)
    assert name == method, result
    return result


def create(client: JmapClient, url: str, **props) -> dict:
    result = ok(client, "PushSubscription/set", {"create": {"k1": {"deviceClientId": "dev-1", "url": url, **props}}})
    assert result["notCreated"] is None, result["notCreated"]
    return result["created"]["k1"]


def not_created(client: JmapClient, obj: dict) -> dict:
    result = ok(client, "PushSubscription/set", {"create": {"k1": {"deviceClientId": "dev-1", **obj}}})
    assert result["created"] is None, result
    return result["notCreated"]["k1"]


def get_all(client: JmapClient, **args) -> dict:
    return ok(client, "PushSubscription/get", {"ids": None, **args})


def utc(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def verification(receiver: PushReceiver, path: str = "/push") -> dict:
    (request,) = receiver.wait(path)
    return request.json()


# -- create, get, verification --------------------------------------------------------------------------------------


def test_create_sends_a_verification_and_get_hides_url_keys_and_the_code(alice, receiver):
    before = int(time.time()) * 1000  # whole seconds, as a UTCDate from the server has them
    created = create(alice, receiver.url())
    after = int(time.time()) * 1000
    assert set(created) == {"id", "expires", "keys", "types"}
    assert created["keys"] is None and created["types"] is None
    # No expiry asked: the server sets its longest, 7 days from the moment it was created.
    assert before + 7 * DAY_MS <= parse_utc_date(created["expires"]) <= after + 7 * DAY_MS

    body = verification(receiver)
    assert body["@type"] == "PushVerification"
    assert body["pushSubscriptionId"] == created["id"]
    assert len(body["verificationCode"]) >= 32  # 128 bits: not guessable
    (request,) = receiver.at("/push")
    assert request.headers["content-type"] == "application/json"
    assert int(request.headers["ttl"]) > 0
    assert "content-encoding" not in request.headers

    got = get_all(alice)
    assert "accountId" not in got and "state" not in got
    assert got["notFound"] == []
    assert got["list"] == [
        {
            "id": created["id"],
            "deviceClientId": "dev-1",
            "verificationCode": None,
            "expires": created["expires"],
            "types": None,
        }
    ]


def test_verification_code_must_match_and_is_shown_once_set(services, alice, receiver):
    sub_id = create(alice, receiver.url())["id"]
    code = verification(receiver)["verificationCode"]

    wrong = ok(alice, "PushSubscription/set", {"update": {sub_id: {"verificationCode": code[:-1] + "x"}}})
    assert wrong["notUpdated"][sub_id]["type"] == "invalidProperties"
    assert wrong["notUpdated"][sub_id]["properties"] == ["verificationCode"]
    assert get_all(alice)["list"][0]["verificationCode"] is None

    right = ok(alice, "PushSubscription/set", {"update": {sub_id: {"verificationCode": code}}})
    assert right["updated"] == {sub_id: None}
    assert get_all(alice)["list"][0]["verificationCode"] == code
    assert subscriptions_store.PushSubscriptions(services.db).by_id(sub_id).verified


def test_encrypted_verification_decrypts_with_the_subscription_keys(alice, receiver):
    ua = UserAgentKeys()
    created = create(alice, receiver.url("/enc"), keys=ua.keys)
    assert "keys" not in created
    (request,) = receiver.wait("/enc")
    assert request.headers["content-encoding"] == "aes128gcm"
    body = ua.decrypt(request)
    assert body["@type"] == "PushVerification" and body["pushSubscriptionId"] == created["id"]


def test_get_refuses_url_and_keys_and_unknown_arguments(alice, receiver):
    sub_id = create(alice, receiver.url())["id"]
    for prop in ("url", "keys"):
        name, error = call(alice, "PushSubscription/get", {"ids": None, "properties": ["id", prop]})
        assert name == "error" and error["type"] == "forbidden", error
    name, error = call(alice, "PushSubscription/get", {"properties": ["nope"]})
    assert name == "error" and error["type"] == "invalidArguments"
    name, error = call(alice, "PushSubscription/get", {"accountId": alice.account_id})
    assert name == "error" and error["type"] == "invalidArguments"
    name, error = call(alice, "PushSubscription/set", {"accountId": alice.account_id, "destroy": [sub_id]})
    assert name == "error" and error["type"] == "invalidArguments"

    got = ok(alice, "PushSubscription/get", {"ids": [sub_id, "Snope"], "properties": ["deviceClientId"]})
    assert got["list"] == [{"id": sub_id, "deviceClientId": "dev-1"}]
    assert got["notFound"] == ["Snope"]


# -- validation -----------------------------------------------------------------------------------------------------


def test_expires_is_capped_at_seven_days_and_a_past_one_is_refused(alice, receiver):
    now = datetime.now(UTC)
    past = not_created(alice, {"url": receiver.url(), "expires": utc(now - timedelta(minutes=1))})
    assert past["type"] == "invalidProperties" and past["properties"] == ["expires"]
    bad = not_created(alice, {"url": receiver.url(), "expires": "tomorrow"})
    assert bad["properties"] == ["expires"]

    asked = utc(now + timedelta(days=2))
    kept = create(alice, receiver.url("/a"), expires=asked)
    assert "expires" not in kept  # as asked: nothing to report
    assert get_all(alice)["list"][0]["expires"] == asked

    def seven_days_from_the_call(call) -> tuple[object, int, int]:
        """(what ``call()`` returned, the earliest and latest cap it can have set: 7 days from its moment)."""
        before = int(time.time()) * 1000
        result = call()
        return result, before + 7 * DAY_MS, int(time.time()) * 1000 + 7 * DAY_MS

    far, earliest, latest = seven_days_from_the_call(
        lambda: create(alice, receiver.url("/b"), expires=utc(now + timedelta(days=30)))
    )
    assert earliest <= parse_utc_date(far["expires"]) <= latest

    # Updating expires: capped too (and reported); a past one refused.
    result, earliest, latest = seven_days_from_the_call(
        lambda: ok(alice, "PushSubscription/set", {"update": {kept["id"]: {"expires": utc(now + timedelta(days=90))}}})
    )
    assert earliest <= parse_utc_date(result["updated"][kept["id"]]["expires"]) <= latest
    result = ok(alice, "PushSubscription/set", {"update": {kept["id"]: {"expires": utc(now - timedelta(days=1))}}})
    assert result["notUpdated"][kept["id"]]["properties"] == ["expires"]


INVALID_CREATES = [
    ({"url": LOOPBACK, "deviceClientId": None}, "deviceClientId"),
    ({"url": 42}, "url"),
    ({"url": "ftp://127.0.0.1/x"}, "url"),
    ({"url": "http://user:pw@127.0.0.1:9/x"}, "url"),
    ({"url": LOOPBACK, "types": "Email"}, "types"),
    ({"url": LOOPBACK, "types": [1]}, "types"),
    ({"url": LOOPBACK, "verificationCode": "abc"}, "verificationCode"),
    ({"url": LOOPBACK, "keys": {"p256dh": "AAAA", "auth": "AAAAAAAAAAAAAAAAAAAAAA"}}, "keys"),
    ({"url": LOOPBACK, "keys": {"p256dh": UserAgentKeys().keys["p256dh"], "auth": "AA"}}, "keys"),
    ({"url": LOOPBACK, "id": "Sx"}, "id"),
    ({"url": LOOPBACK, "colour": "red"}, "colour"),
]


def test_invalid_create_objects_are_invalid_properties(alice):
    for obj, prop in INVALID_CREATES:
        error = not_created(alice, obj)
        assert error["type"] == "invalidProperties", (obj, error)
        assert error["properties"] == [prop], (obj, error)
        assert error.get("description"), obj


def test_types_null_means_all_and_a_list_is_kept(alice, receiver):
    a = create(alice, receiver.url("/a"), types=None)
    assert "types" not in a
    b = create(alice, receiver.url("/b"), types=["Email", "Mailbox", "Email"])
    by_id = {s["id"]: s for s in get_all(alice)["list"]}
    assert by_id[a["id"]]["types"] is None
    assert by_id[b["id"]]["types"] == ["Email", "Mailbox"]
    result = ok(alice, "PushSubscription/set", {"update": {b["id"]: {"types": None}}})
    assert result["updated"] == {b["id"]: None}
    assert {s["id"]: s for s in get_all(alice)["list"]}[b["id"]]["types"] is None


def test_only_verification_code_expires_and_types_can_change(alice, receiver):
    sub_id = create(alice, receiver.url())["id"]
    for patch, prop in [
        ({"url": receiver.url("/other")}, "url"),
        ({"deviceClientId": "dev-2"}, "deviceClientId"),
        ({"keys": UserAgentKeys().keys}, "keys"),
        ({"colour": "red"}, "colour"),
    ]:
        result = ok(alice, "PushSubscription/set", {"update": {sub_id: patch}})
        assert result["notUpdated"][sub_id]["type"] == "invalidProperties", patch
        assert result["notUpdated"][sub_id]["properties"] == [prop]
    # The same values are no change.
    same = ok(alice, "PushSubscription/set", {"update": {sub_id: {"deviceClientId": "dev-1", "url": receiver.url()}}})
    assert same["updated"] == {sub_id: None}


# -- private targets ------------------------------------------------------------------------------------------------


PRIVATE_URLS = [
    "https://127.0.0.1/push",
    "https://localhost/push",
    "https://10.1.2.3/push",
    "https://192.168.0.1/push",
    "https://169.254.169.254/latest",
    "https://[::1]/push",
    "https://[::ffff:127.0.0.1]/push",
    "https://[fe80::1]/push",
    "https://0.0.0.0/push",
    "https://100.64.0.1/push",
]


def test_private_targets_are_refused_unless_allowed(services, alice, monkeypatch):
    monkeypatch.setattr(services, "config", services.config.with_overrides(push_allow_private_targets=False))
    for url in PRIVATE_URLS:
        error = not_created(alice, {"url": url})
        assert error["type"] == "invalidProperties" and error["properties"] == ["url"], (url, error)
        assert "address" in error["description"], (url, error)
    assert get_all(alice)["list"] == []


def test_a_refused_host_gets_one_description_whatever_dns_answered(services, alice, monkeypatch):
    """Telling "no such name" from "resolves to 10.1.2.3" would map internal names through subscriptions."""
    monkeypatch.setattr(services, "config", services.config.with_overrides(push_allow_private_targets=False))
    urls = ["https://localhost/push", "https://10.1.2.3/push", "https://[::1]/push", "https://127.0.0.1/push"]
    [description] = {not_created(alice, {"url": url})["description"] for url in urls}
    assert not any(word in description for word in ("127.0.0.1", "10.1.2.3", "::1", "loopback", "private"))


def test_creations_past_the_per_call_cap_are_rate_limited(alice, receiver):
    cap = subscription_methods.MAX_CREATE_PER_CALL
    create = {f"k{i}": {"deviceClientId": "d", "url": receiver.url(f"/c{i}")} for i in range(cap + 2)}
    result = ok(alice, "PushSubscription/set", {"create": create})
    assert sorted(result["created"]) == sorted(list(create)[:cap])
    assert {k: e["type"] for k, e in result["notCreated"].items()} == {
        f"k{cap}": "rateLimit",
        f"k{cap + 1}": "rateLimit",
    }


def test_creations_over_quota_are_refused_before_any_lookup(alice, receiver, monkeypatch):
    monkeypatch.setattr(subscriptions_store, "MAX_PER_USER", 2)
    looked_up: list[str] = []
    real = _socket.getaddrinfo

    def counting(host, *args, **kwargs):
        looked_up.append(host)
        return real(host, *args, **kwargs)

    create(alice, receiver.url("/first"))
    monkeypatch.setattr(_socket, "getaddrinfo", counting)
    urls = [receiver.url("/x"), "http://127.0.0.2:9/y", "http://127.0.0.3:9/z"]
    result = ok(
        alice,
        "PushSubscription/set",
        {"create": {k: {"deviceClientId": "d", "url": u} for k, u in zip("xyz", urls, strict=True)}},
    )
    assert list(result["created"]) == ["x"]
    assert [e["type"] for e in result["notCreated"].values()] == ["overQuota", "overQuota"]
    assert "127.0.0.1" in looked_up and not {"127.0.0.2", "127.0.0.3"} & set(looked_up)  # y, z: no look-up


def test_slow_dns_waits_on_threads_of_its_own_within_one_deadline(alice, monkeypatch):
    """A resolver that never answers holds the web push resolver's threads, never gevent's pool (password
    hashing), at most RESOLVE_CONCURRENCY look-ups of one call at once, all ended by the call's deadline."""
    gate = get_original("_thread", "allocate_lock")()
    gate.acquire()
    waiting: list[str] = []
    real = _socket.getaddrinfo

    def never_answers(host, *args, **kwargs):
        if host != "slow.push.test":
            return real(host, *args, **kwargs)
        waiting.append(host)
        gate.acquire(timeout=60)  # a real thread blocked, as in a real resolver
        gate.release()
        raise _socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(_socket, "getaddrinfo", never_answers)
    monkeypatch.setattr(subscription_methods, "RESOLVE_DEADLINE_SECONDS", 1.0)
    creations = {f"k{i}": {"deviceClientId": "d", "url": f"https://slow.push.test/{i}"} for i in range(6)}
    try:
        call = gevent.spawn(ok, alice, "PushSubscription/set", {"create": creations})
        wait_until(lambda: waiting, 10, message="a look-up in progress")
        assert len(gevent.get_hub().threadpool) == 0  # the pool password hashing runs on holds none of them
        assert passwords.run_kdf(lambda: "hashed") == "hashed"
        result = call.get(timeout=60)
    finally:
        gate.release()
    assert result["created"] is None
    assert len({(e["type"], e["description"]) for e in result["notCreated"].values()}) == 1
    assert result["notCreated"]["k0"]["type"] == "invalidProperties" and "timed out" not in str(result)
    assert len(waiting) == subscription_methods.RESOLVE_CONCURRENCY  # the rest never started: no time was left


def test_plain_http_is_refused_unless_private_targets_are_allowed(services, alice, receiver, monkeypatch):
    monkeypatch.setattr(services, "config", services.config.with_overrides(push_allow_private_targets=False))
    error = not_created(alice, {"url": receiver.url()})
    assert error["properties"] == ["url"] and "https" in error["description"]
    assert receiver.received == []


def test_address_checks():
    from jmapmono.push.webpush_http import refused_reason

    assert refused_reason("93.184.216.34") is None
    assert refused_reason("2606:4700::1111") is None
    for address in ("127.0.0.1", "10.0.0.1", "172.16.0.1", "::1", "fe80::1", "::", "fc00::1", "224.0.0.1"):
        assert refused_reason(address) is not None, address
    assert refused_reason("::ffff:10.0.0.1") is not None


# -- destroy, isolation, credentials --------------------------------------------------------------------------------


def test_destroy_erases_the_subscription(services, alice, receiver):
    sub_id = create(alice, receiver.url())["id"]
    result = ok(alice, "PushSubscription/set", {"destroy": [sub_id, "Snope"]})
    assert result["destroyed"] == [sub_id]
    assert result["notDestroyed"] == {"Snope": {"type": "notFound", "description": "no push subscription Snope"}}
    assert ok(alice, "PushSubscription/get", {"ids": [sub_id]})["notFound"] == [sub_id]
    with services.db.read() as tx:
        assert tx.value("SELECT COUNT(*) FROM push_subscriptions") == 0


def test_users_see_and_change_only_their_own(alice, bob, receiver):
    sub_id = create(alice, receiver.url())["id"]
    assert get_all(bob)["list"] == []
    assert ok(bob, "PushSubscription/get", {"ids": [sub_id]})["notFound"] == [sub_id]
    result = ok(bob, "PushSubscription/set", {"update": {sub_id: {"types": ["Email"]}}, "destroy": [sub_id]})
    assert result["notUpdated"][sub_id]["type"] == "notFound"
    assert result["notDestroyed"][sub_id]["type"] == "notFound"
    assert [s["id"] for s in get_all(alice)["list"]] == [sub_id]


def test_subscriptions_belong_to_the_credentials_and_die_with_an_app_password(services, alice, receiver):
    user = services.accounts.get(alice.email)
    app_password, token = _app_password(services, user)
    phone = JmapClient(alice.client, alice.email, alice.account_id)
    phone.headers = {"Authorization": f"Bearer {token}"}

    by_password = create(alice, receiver.url("/desk"))["id"]
    by_token = create(phone, receiver.url("/phone"))["id"]
    assert [s["id"] for s in get_all(alice)["list"]] == [by_password]
    assert [s["id"] for s in get_all(phone)["list"]] == [by_token]

    _revoke(services, user, app_password)
    with services.db.read() as tx:
        left = [r["id"] for r in tx.query("SELECT id FROM push_subscriptions")]
    assert left == [by_password]
    services.accounts.delete(alice.email)  # and every subscription goes with its user
    with services.db.read() as tx:
        assert tx.value("SELECT COUNT(*) FROM push_subscriptions") == 0


def _app_password(services, user):
    from jmapmono.accounts.app_passwords import AppPasswords

    return AppPasswords(services.db, services.accounts).create(user, "phone")


def _revoke(services, user, app_password):
    from jmapmono.accounts.app_passwords import AppPasswords

    assert AppPasswords(services.db, services.accounts).revoke(user.id, app_password.id)


def test_creation_ids_can_be_referenced_and_quota_is_enforced(alice, receiver, monkeypatch):
    monkeypatch.setattr(subscriptions_store, "MAX_PER_USER", 2)
    responses = alice.responses(
        [
            ["PushSubscription/set", {"create": {"a": {"deviceClientId": "d", "url": receiver.url("/a")}}}, "0"],
            ["PushSubscription/set", {"update": {"#a": {"types": ["Email"]}}, "destroy": ["#a"]}, "1"],
        ],
        using=[CORE],
    )
    created_id = responses[0][1]["created"]["a"]["id"]
    assert responses[1][1]["updated"] == {created_id: None}
    assert responses[1][1]["destroyed"] == [created_id]

    result = ok(
        alice,
        "PushSubscription/set",
        {"create": {k: {"deviceClientId": "d", "url": receiver.url(f"/{k}")} for k in ("x", "y", "z")}},
    )
    assert len(result["created"]) == 2
    assert [e["type"] for e in result["notCreated"].values()] == ["overQuota"]


def test_verification_is_retried_on_5xx_and_a_gone_answer_removes_the_subscription(services, alice, receiver):
    sender = services.webpush
    sender.retry_backoff = 0.01
    receiver.answer(503)
    retried = create(alice, receiver.url("/retried"))["id"]
    first, second = receiver.wait("/retried", 2)
    assert first.body == second.body and first.json()["pushSubscriptionId"] == retried

    receiver.answer(410)
    gone = create(alice, receiver.url("/gone"))["id"]
    receiver.wait("/gone")
    assert sender.wait_idle(5)
    assert ok(alice, "PushSubscription/get", {"ids": [gone, retried]})["notFound"] == [gone]
    assert len(receiver.at("/retried")) == 2


def test_subscriptions_made_in_one_millisecond_are_listed_in_the_order_made(alice, receiver, monkeypatch):
    with one_millisecond(monkeypatch):
        made = [create(alice, receiver.url(f"/p{i}"), deviceClientId=f"dev-{i}")["id"] for i in range(6)]
    receiver.wait("/p5")  # the verifications went out (after the clock moved on)
    assert [s["id"] for s in get_all(alice)["list"]] == made

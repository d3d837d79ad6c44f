"""Quota/get, /changes, /query, /queryChanges (RFC 9425 §4) and ``overQuota`` where mail is added over JMAP
(RFC 8620 §5.3), with uploads refused past the storage limit."""

from jmapmono.mailbox.quota import UNLIMITED
from tests.support.emails import create, message, roles, upload
from tests.support.jmap import QUOTA

STORAGE = {
    "id": "storage",
    "resourceType": "octets",
    "scope": "account",
    "name": "Mail storage",
    "types": ["Email"],
    "warnLimit": None,
    "softLimit": None,
    "description": None,
}


def quotas(client) -> dict:
    return client.call("Quota/get", ids=None)


def test_the_session_advertises_the_capability(alice):
    """RFC 9425 (capabilities): ``urn:ietf:params:jmap:quota``, an empty object in the Session and the account."""
    session = alice.client.get("/jmap/session", headers=alice.headers).get_json()
    assert session["capabilities"][QUOTA] == {}
    assert session["accounts"][alice.account_id]["accountCapabilities"][QUOTA] == {}
    assert session["primaryAccounts"][QUOTA] == alice.account_id


def test_get_shows_only_limited_resources_with_exact_usage(alice, services):
    """RFC 9425 §4.1, §4.2: each Quota object with used and hardLimit; none while nothing is limited."""
    got = quotas(alice)
    assert got["list"] == [] and got["notFound"] == []
    raw = message("hello", "q1@x")
    services.mailboxes.deliver(alice.email, raw)
    services.mailboxes.set_quota(alice.account_id, octets=2 * 1024**3, messages=100)
    got = quotas(alice)
    by_id = {q["id"]: q for q in got["list"]}
    assert by_id["storage"] == {**STORAGE, "used": len(raw), "hardLimit": 2 * 1024**3}
    assert by_id["messages"]["resourceType"] == "count" and by_id["messages"]["used"] == 1
    assert by_id["messages"]["hardLimit"] == 100
    got = alice.call("Quota/get", ids=["messages", "nope"], properties=["used"])
    assert got["list"] == [{"id": "messages", "used": 1}] and got["notFound"] == ["nope"]


def test_changes_follow_usage_and_limits(alice, services):
    """RFC 9425 §4.3: the Quota state moves with usage and limits; a lifted limit's quota is destroyed."""
    mgr = services.mailboxes
    start = quotas(alice)["state"]
    mgr.set_quota(alice.account_id, octets=10_000_000)
    c = alice.call("Quota/changes", sinceState=start)
    assert (c["created"], c["updated"], c["destroyed"]) == (["storage"], [], [])
    mgr.deliver(alice.email, message("hello", "q2@x"))
    c2 = alice.call("Quota/changes", sinceState=c["newState"])
    assert (c2["created"], c2["updated"], c2["destroyed"]) == ([], ["storage"], [])
    assert c2["newState"] == quotas(alice)["state"]
    mgr.set_quota(alice.account_id, octets=UNLIMITED)
    c3 = alice.call("Quota/changes", sinceState=c2["newState"])
    assert (c3["created"], c3["updated"], c3["destroyed"]) == ([], [], ["storage"])
    assert alice.error("Quota/changes", sinceState="zzzz")["type"] == "cannotCalculateChanges"


def test_query_filters_and_sorts(alice, services):
    """RFC 9425 §4.4: filter on name, scope, resourceType, type; sort by name and used."""
    services.mailboxes.set_quota(alice.account_id, octets=10_000_000, messages=10)
    services.mailboxes.deliver(alice.email, message("hello", "q3@x"))

    def ids(**args):
        return alice.call("Quota/query", **args)["ids"]

    assert ids(sort=[{"property": "name"}]) == ["storage", "messages"]  # "Mail storage" < "Messages"
    assert ids(sort=[{"property": "used", "isAscending": False}]) == ["storage", "messages"]
    assert ids(filter={"resourceType": "count"}) == ["messages"]
    assert ids(filter={"name": "STORAGE"}) == ["storage"]
    assert sorted(ids(filter={"scope": "account", "type": "Email"})) == ["messages", "storage"]
    assert ids(filter={"type": "Calendar"}) == []
    assert ids(filter={"operator": "NOT", "conditions": [{"resourceType": "count"}]}) == ["storage"]
    assert alice.error("Quota/query", filter={"hardLimit": 3})["type"] == "unsupportedFilter"
    assert alice.error("Quota/query", sort=[{"property": "hardLimit"}])["type"] == "unsupportedSort"
    first = alice.call("Quota/query", sort=[{"property": "name"}], calculateTotal=True)
    assert first["total"] == 2 and first["canCalculateChanges"] is True
    services.mailboxes.deliver(alice.email, message("again", "q4@x"))
    qc = alice.call("Quota/queryChanges", sinceQueryState=first["queryState"], sort=[{"property": "name"}])
    assert qc["removed"] == ["messages", "storage"]
    assert qc["added"] == [{"id": "storage", "index": 0}, {"id": "messages", "index": 1}]


def test_email_import_copy_and_create_get_over_quota(alice, bob, services):
    """RFC 8620 §5.3: a creation that would pass a hard limit is refused with overQuota."""
    mgr = services.mailboxes
    inbox = roles(services, alice.account_id)["inbox"]
    blob = upload(alice, message("imported", "q5@x"), "message/rfc822")
    mgr.set_quota(alice.account_id, messages=1)
    imported = alice.call(
        "Email/import",
        emails={
            "a": {"blobId": blob, "mailboxIds": {inbox: True}},
            "b": {"blobId": blob, "mailboxIds": {inbox: True}},
        },
    )
    assert len(imported["created"]) == 1 and list(imported["notCreated"].values())[0]["type"] == "overQuota"
    made = create(alice, {"mailboxIds": {inbox: True}, "subject": "draft", "bodyValues": {}})
    assert made["notCreated"]["k"]["type"] == "overQuota"
    services.accounts.delegate("alice@example.org", "bob@example.org")
    own = mgr.deliver(bob.email, message("bob's", "q6@x")).message_id
    copied = bob.call(
        "Email/copy",
        fromAccountId=bob.account_id,
        accountId=alice.account_id,
        create={"c": {"id": own, "mailboxIds": {inbox: True}}},
    )
    assert copied["created"] is None and copied["notCreated"]["c"]["type"] == "overQuota"
    assert mgr.get_quota(alice.account_id)[0].usage.messages == 1


def test_upload_past_the_storage_limit_is_refused(alice, services):
    """RFC 8620 §6.1 leaves upload errors to problem details: 413 with the overQuota type."""
    services.mailboxes.set_quota(alice.account_id, octets=100)
    upload(alice, b"x" * 100, "application/octet-stream")  # up to the limit: fits
    r = alice.client.post(
        f"/jmap/upload/{alice.account_id}/",
        data=b"x" * 101,
        headers={**alice.headers, "Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 413 and r.get_json()["type"] == "urn:ietf:params:jmap:error:overQuota"


def test_a_change_of_the_configured_defaults_is_a_quota_change(config, alice, bob, services):
    """RFC 9425 §4.3: Quota/changes reports every change of a Quota object, including one made by the
    operator's configuration: a process started with other default limits records it, once, for the accounts
    that follow the defaults (bob has limits of his own)."""
    from dataclasses import replace

    from jmapmono.runtime import Runtime
    from jmapmono.web.app import create_app
    from tests.support.jmap import JmapClient

    services.mailboxes.set_quota(bob.account_id, octets=5_000_000)
    assert services.mailboxes.apply_quota_defaults() == 0  # the first defaults seen are recorded, nothing moves
    states = {c.account_id: quotas(c)["state"] for c in (alice, bob)}

    def restart_with(**limits: object) -> tuple[int, dict, dict]:
        """A process of its own started with these defaults: the accounts it changed, then alice's and bob's
        Quota/changes since the last call, as its clients see them."""
        other = Runtime(replace(config, **limits))
        try:
            changed = other.mailboxes.apply_quota_defaults()
            http = create_app(other).test_client()
            out = []
            for c in (alice, bob):
                got = JmapClient(http, c.email, c.account_id).call("Quota/changes", sinceState=states[c.account_id])
                states[c.account_id] = got["newState"]
                out.append({k: sorted(got[k]) for k in ("created", "updated", "destroyed")})
            return changed, out[0], out[1]
        finally:
            other.stop()

    nothing = {"created": [], "updated": [], "destroyed": []}
    assert restart_with(quota_storage=1_000_000) == (1, {**nothing, "created": ["storage"]}, nothing)
    assert restart_with(quota_storage=1_000_000) == (0, nothing, nothing)  # recorded once, whoever starts next
    assert restart_with(quota_storage=2_000_000, quota_messages=10) == (
        2,
        {**nothing, "created": ["messages"], "updated": ["storage"]},
        {**nothing, "created": ["messages"]},
    )
    assert restart_with() == (
        2,
        {**nothing, "destroyed": ["messages", "storage"]},
        {**nothing, "destroyed": ["messages"]},
    )

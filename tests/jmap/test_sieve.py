"""SieveScript/get, /set, /query, /validate (RFC 9661 §2) and SieveScript/changes, over HTTP."""

from tests.support.emails import upload
from tests.support.jmap import SIEVE

GOOD = b'require ["fileinto"];\r\nif header :contains "subject" "jmap" { fileinto "Lists"; }\r\n'
OTHER = b"keep;\r\n"


def script_blob(client, text: bytes) -> str:
    return upload(client, text, "application/sieve")


def create(client, name, text=GOOD, **args):
    return client.call("SieveScript/set", create={"s": {"name": name, "blobId": script_blob(client, text)}}, **args)


def test_the_session_advertises_the_capability(alice):
    """RFC 9661 §1.2.1: an empty object in the Session; in the account, maxSizeScriptName (at least 512),
    maxSizeScript, maxNumberScripts, maxNumberRedirects, sieveExtensions, notificationMethods,
    externalLists and implementation."""
    session = alice.client.get("/jmap/session", headers=alice.headers).get_json()
    assert session["capabilities"][SIEVE] == {}
    account = session["accounts"][alice.account_id]["accountCapabilities"][SIEVE]
    assert account["maxSizeScriptName"] >= 512
    assert account["maxSizeScript"] == 65536 and account["maxNumberScripts"] == 16
    assert account["maxNumberRedirects"] == 4
    for extension in ("fileinto", "imap4flags", "vacation", "reject", "ereject", "envelope", "mailbox"):
        assert extension in account["sieveExtensions"]
    assert account["notificationMethods"] is None and account["externalLists"] is None
    assert account["implementation"]
    assert session["primaryAccounts"][SIEVE] == alice.account_id


def test_create_activate_get_and_changes(alice):
    """RFC 9661 §2.4: onSuccessActivateScript names a creation ("#s"); the activated script is reported with
    isActive true. §2.3: /get returns id, name, blobId, isActive. The change log follows (RFC 8620 §5.2)."""
    start = alice.call("SieveScript/get", ids=None)["state"]
    blob = script_blob(alice, GOOD)
    r = alice.call("SieveScript/set", create={"s": {"name": "main", "blobId": blob}}, onSuccessActivateScript="#s")
    created = r["created"]["s"]
    assert created["isActive"] is True and r["oldState"] == start
    got = alice.call("SieveScript/get", ids=None)
    assert got["list"] == [{"id": created["id"], "name": "main", "blobId": blob, "isActive": True}]
    c = alice.call("SieveScript/changes", sinceState=start)
    assert c["created"] == [created["id"]] and c["newState"] == got["state"]
    # a second script activated in its place: the first reported updated with isActive false
    r2 = create(alice, "other", OTHER, onSuccessActivateScript="#s")
    second = r2["created"]["s"]["id"]
    assert r2["created"]["s"]["isActive"] is True
    assert r2["updated"] == {created["id"]: {"isActive": False}}
    active = [s["id"] for s in alice.call("SieveScript/get", ids=None)["list"] if s["isActive"]]
    assert active == [second]
    c2 = alice.call("SieveScript/changes", sinceState=got["state"])
    assert c2["created"] == [second] and c2["updated"] == [created["id"]]


def test_invalid_script_is_refused_with_its_line(alice):
    """RFC 9661 §2.4: content that is not valid Sieve is refused with ``invalidSieve``; RFC 5228 §3.2: an
    extension must be required before use."""
    bad = script_blob(alice, b'require "fileinto";\r\nif header :is "subject" {\r\n  fileinto "x";\r\n}\r\n')
    r = alice.call("SieveScript/set", create={"s": {"name": "bad", "blobId": bad}})
    error = r["notCreated"]["s"]
    assert error["type"] == "invalidSieve" and "line 2" in error["description"]
    unrequired = script_blob(alice, b'fileinto "x";\r\n')
    r = alice.call("SieveScript/set", create={"s": {"name": "bad", "blobId": unrequired}})
    error = r["notCreated"]["s"]
    assert error["type"] == "invalidSieve" and 'require "fileinto"' in error["description"]
    assert alice.call("SieveScript/get", ids=None)["list"] == []


def test_validate(alice):
    """RFC 9661 §2.6: ``error`` is null for a valid script, an invalidSieve SetError otherwise; nothing stored."""
    ok = alice.call("SieveScript/validate", blobId=script_blob(alice, GOOD))
    assert ok == {"accountId": alice.account_id, "error": None}
    bad = alice.call("SieveScript/validate", blobId=script_blob(alice, b"frobnicate;\r\n"))
    assert bad["error"]["type"] == "invalidSieve" and "line 1" in bad["error"]["description"]
    missing = alice.call("SieveScript/validate", blobId="G" + "0" * 40)
    assert missing["error"]["type"] == "blobNotFound"
    assert alice.call("SieveScript/get", ids=None)["list"] == []


def test_names_are_unique_and_server_set_properties_refused(alice):
    """RFC 9661 §2.4: a duplicate name is ``alreadyExists`` with existingId; isActive is server-set; a name
    left null is given by the server."""
    first = create(alice, "main")["created"]["s"]["id"]
    dup = alice.call("SieveScript/set", create={"s": {"name": "main", "blobId": script_blob(alice, OTHER)}})
    assert dup["notCreated"]["s"]["type"] == "alreadyExists" and dup["notCreated"]["s"]["existingId"] == first
    forced = alice.call(
        "SieveScript/set", create={"s": {"name": "x", "blobId": script_blob(alice, OTHER), "isActive": True}}
    )
    assert forced["notCreated"]["s"]["type"] == "invalidProperties"
    unnamed = alice.call("SieveScript/set", create={"s": {"name": None, "blobId": script_blob(alice, OTHER)}})
    assert unnamed["created"]["s"]["name"].startswith("script-")
    renamed = alice.call("SieveScript/set", update={first: {"name": "renamed"}})
    assert renamed["updated"] == {first: None}
    names = sorted(s["name"] for s in alice.call("SieveScript/get", ids=None)["list"])
    assert names == sorted(["renamed", unnamed["created"]["s"]["name"]])


def test_active_script_cannot_be_destroyed_unless_deactivated(alice):
    """RFC 9661 §2.4: destroying the active script is ``sieveIsActive``; onSuccessDeactivateScript
    deactivates it (reported with isActive false)."""
    script = create(alice, "main", onSuccessActivateScript="#s")["created"]["s"]["id"]
    r = alice.call("SieveScript/set", destroy=[script])
    assert r["notDestroyed"][script]["type"] == "sieveIsActive"
    off = alice.call("SieveScript/set", onSuccessDeactivateScript=True)
    assert off["updated"] == {script: {"isActive": False}}
    gone = alice.call("SieveScript/set", destroy=[script])
    assert gone["destroyed"] == [script]


def test_update_content_recompiles_and_refuses_bad_content(alice):
    """RFC 9661 §2.4: a new blobId replaces the content, checked as on creation."""
    script = create(alice, "main")["created"]["s"]["id"]
    bad = alice.call("SieveScript/set", update={script: {"blobId": script_blob(alice, b"keep\r\n")}})
    assert bad["notUpdated"][script]["type"] == "invalidSieve"
    new_blob = script_blob(alice, OTHER)
    ok = alice.call("SieveScript/set", update={script: {"blobId": new_blob}})
    assert script in ok["updated"]
    assert alice.call("SieveScript/get", ids=[script])["list"][0]["blobId"] == new_blob


def test_limits_too_large_and_too_many(alice, services, monkeypatch):
    """RFC 9661 §2.4: a script over maxSizeScript is ``tooLarge``; one past maxNumberScripts ``overQuota``."""
    from dataclasses import replace

    sieve = services.mailboxes.sieve
    monkeypatch.setattr(sieve, "limits", replace(sieve.limits, max_script_size=100, max_scripts=1))
    big = alice.call("SieveScript/set", create={"s": {"name": "big", "blobId": script_blob(alice, b"#" * 200)}})
    assert big["notCreated"]["s"]["type"] == "tooLarge"
    create(alice, "one", OTHER)
    over = alice.call("SieveScript/set", create={"s": {"name": "two", "blobId": script_blob(alice, OTHER)}})
    assert over["notCreated"]["s"]["type"] == "overQuota"


def test_query_filters_and_sorts(alice):
    """RFC 9661 §2.5: filter on name and isActive, sort by name and isActive."""
    a = create(alice, "Alpha")["created"]["s"]["id"]
    b = create(alice, "beta", OTHER, onSuccessActivateScript="#s")["created"]["s"]["id"]

    def ids(**args):
        return alice.call("SieveScript/query", **args)["ids"]

    assert ids(sort=[{"property": "name"}]) == [a, b]
    assert ids(sort=[{"property": "name", "isAscending": False}]) == [b, a]
    assert ids(filter={"isActive": True}) == [b]
    assert ids(filter={"name": "ALP"}) == [a]
    assert ids(sort=[{"property": "isActive", "isAscending": False}]) == [b, a]
    assert alice.error("SieveScript/query", filter={"blobId": "x"})["type"] == "unsupportedFilter"
    assert alice.error("SieveScript/query", sort=[{"property": "blobId"}])["type"] == "unsupportedSort"

"""Email/import (RFC 8621 §4.8) and Email/copy (§4.7): uploaded messages into mailboxes, copies between accounts."""

from __future__ import annotations

import json

import pytest

from tests.support.emails import download, get, message, roles, upload
from tests.support.jmap import JmapClient

LF_ONLY = (
    b"Received: from mx.example.net by mail.example.org; Tue, 01 Sep 2020 10:00:00 +0200\n"
    b"Received: from a.example by mx.example.net; Tue, 01 Sep 2020 09:59:00 +0200\n"
    b"From: Carol <carol@example.net>\nTo: alice@example.org\nSubject: Imported with LF only\n"
    b"Message-ID: <lf@example.net>\nDate: Tue, 01 Sep 2020 09:58:00 +0200\n\nFirst line\nSecond line\n"
)


def import_one(client: JmapClient, obj: dict, **args) -> dict:
    return client.call("Email/import", {"emails": {"i": obj}, **args})


def test_import_of_an_lf_only_upload(alice, services):
    inbox = roles(services, alice.account_id)["inbox"]
    blob = upload(alice, LF_ONLY, "message/rfc822")
    old = alice.call("Email/get", {"ids": []})["state"]
    result = import_one(
        alice,
        {
            "blobId": blob,
            "mailboxIds": {inbox: True},
            "keywords": {"$Seen": True},
            "receivedAt": "2020-09-02T08:00:00Z",
        },
    )
    created = result["created"]["i"]
    assert created["blobId"] == blob and created["size"] == len(LF_ONLY)  # kept exactly as uploaded
    assert set(created) == {"id", "blobId", "threadId", "size"} and result["notCreated"] is None
    assert result["oldState"] == old and result["newState"] == alice.call("Email/get", {"ids": []})["state"]
    (email,) = get(
        alice,
        [created["id"]],
        ["subject", "from", "keywords", "mailboxIds", "receivedAt", "sentAt", "bodyValues", "threadId"],
        fetchTextBodyValues=True,
    )
    assert email["subject"] == "Imported with LF only"
    assert email["from"] == [{"name": "Carol", "email": "carol@example.net"}]
    assert email["keywords"] == {"$seen": True} and email["mailboxIds"] == {inbox: True}
    assert email["receivedAt"] == "2020-09-02T08:00:00Z" and email["sentAt"] == "2020-09-01T09:58:00+02:00"
    assert list(email["bodyValues"].values())[0]["value"] == "First line\nSecond line\n"
    assert email["threadId"] == created["threadId"]
    assert download(alice, created["blobId"]) == LF_ONLY
    changes = alice.call("Email/changes", {"sinceState": old})
    assert changes["created"] == [created["id"]] and changes["newState"] == result["newState"]


def test_received_at_defaults_to_the_most_recent_received_field(alice, services):
    inbox = roles(services, alice.account_id)["inbox"]
    blob = upload(alice, LF_ONLY, "message/rfc822")
    created = import_one(alice, {"blobId": blob, "mailboxIds": {inbox: True}})["created"]["i"]
    assert get(alice, [created["id"]], ["receivedAt"])[0]["receivedAt"] == "2020-09-01T08:00:00Z"
    plain = upload(alice, message("no trace", "nt@x"), "message/rfc822")
    created = import_one(alice, {"blobId": plain, "mailboxIds": {inbox: True}, "receivedAt": None})["created"]["i"]
    assert get(alice, [created["id"]], ["receivedAt"])[0]["receivedAt"] >= "2024-01-01T00:00:00Z"  # now


def test_import_several_in_one_call_with_references(alice, services):
    r = roles(services, alice.account_id)
    blobs = [upload(alice, message(f"s{i}", f"s{i}@x"), "message/rfc822") for i in range(3)]
    response = alice.responses(
        [
            [
                "Email/import",
                {
                    "accountId": alice.account_id,
                    "emails": {
                        "a": {"blobId": blobs[0], "mailboxIds": {r["inbox"]: True}},
                        "b": {"blobId": blobs[1], "mailboxIds": {r["archive"]: True, r["inbox"]: True}},
                        "c": {"blobId": blobs[2], "mailboxIds": {"Mnope": True}},
                    },
                },
                "0",
            ],
            ["Email/get", {"accountId": alice.account_id, "ids": ["#a", "#b"], "properties": ["subject"]}, "1"],
        ]
    )
    (_, imported, _), (_, got, _) = response
    assert sorted(imported["created"]) == ["a", "b"]
    assert imported["notCreated"]["c"]["type"] == "invalidProperties"
    assert imported["notCreated"]["c"]["properties"] == ["mailboxIds"]
    assert [e["subject"] for e in got["list"]] == ["s0", "s1"]


def test_import_of_an_internationalized_message(alice, services):
    inbox = roles(services, alice.account_id)["inbox"]
    eai = (
        "From: Jöran Øster <jöran@exämple.org>\r\nTo: alice@example.org\r\nSubject: Grüße aus Köln\r\n"
        "Message-ID: <eai@exämple.org>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHallö\r\n"
    ).encode()
    blob = upload(alice, eai, "message/global")
    created = import_one(alice, {"blobId": blob, "mailboxIds": {inbox: True}})["created"]["i"]
    (email,) = get(alice, [created["id"]], ["from", "subject", "messageId", "preview"])
    assert email == {
        "id": created["id"],
        "from": [{"name": "Jöran Øster", "email": "jöran@exämple.org"}],
        "subject": "Grüße aus Köln",
        "messageId": ["eai@exämple.org"],
        "preview": "Hallö",
    }


def test_import_of_an_attached_message_part(alice, services):
    inbox = roles(services, alice.account_id)["inbox"]
    inner = message("the inner one", "inner@x", "inner body\r\n")
    outer = (
        b"From: bob@example.org\r\nSubject: fwd\r\nMessage-ID: <outer@x>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee below\r\n'
        b"--b\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"\r\n--b--\r\n"
    )
    source = services.mailboxes.deliver("alice@example.org", outer).message_id
    (part,) = get(alice, [source], ["attachments"])[0]["attachments"]
    created = import_one(alice, {"blobId": part["blobId"], "mailboxIds": {inbox: True}})["created"]["i"]
    assert created["size"] == len(inner)
    assert get(alice, [created["id"]], ["subject"])[0]["subject"] == "the inner one"


BAD_IMPORTS = [
    ({"mailboxIds": {"INBOX": True}}, "invalidProperties", ["blobId"]),
    ({"blobId": "GnoSuchBlob", "mailboxIds": {"INBOX": True}}, "invalidProperties", ["blobId"]),
    ({"blobId": "BLOB"}, "invalidProperties", ["mailboxIds"]),
    ({"blobId": "BLOB", "mailboxIds": {}}, "invalidProperties", ["mailboxIds"]),
    ({"blobId": "BLOB", "mailboxIds": {"INBOX": False}}, "invalidProperties", ["mailboxIds"]),
    (
        {"blobId": "BLOB", "mailboxIds": {"INBOX": True}, "keywords": {"bad keyword": True}},
        "invalidProperties",
        ["keywords"],
    ),
    (
        {"blobId": "BLOB", "mailboxIds": {"INBOX": True}, "receivedAt": "2020-01-01"},
        "invalidProperties",
        ["receivedAt"],
    ),
    ({"blobId": "BLOB", "mailboxIds": {"INBOX": True}, "subject": "x"}, "invalidProperties", ["subject"]),
    ({"blobId": "EMPTY", "mailboxIds": {"INBOX": True}}, "invalidEmail", None),
    ({"blobId": "GARBAGE", "mailboxIds": {"INBOX": True}}, "invalidEmail", None),
]


def test_import_errors(alice, services):
    """Each bad import is refused on its own (one call holds them all)."""
    inbox = roles(services, alice.account_id)["inbox"]
    blobs = {
        "BLOB": upload(alice, message("ok", "ok@x"), "message/rfc822"),
        "EMPTY": upload(alice, b"", "message/rfc822"),
        "GARBAGE": upload(alice, bytes(range(256)) * 8, "application/octet-stream"),
    }
    emails = {}
    for i, (obj, _, _) in enumerate(BAD_IMPORTS):
        obj = dict(obj)
        if obj.get("blobId") in blobs:
            obj["blobId"] = blobs[obj["blobId"]]
        if isinstance(obj.get("mailboxIds"), dict):
            obj["mailboxIds"] = {inbox if k == "INBOX" else k: v for k, v in obj["mailboxIds"].items()}
        emails[f"i{i}"] = obj
    result = alice.call("Email/import", {"emails": emails})
    assert result["created"] is None and result["oldState"] == result["newState"]
    for i, (obj, error, properties) in enumerate(BAD_IMPORTS):
        refusal = result["notCreated"][f"i{i}"]
        assert refusal["type"] == error, (obj, refusal)
        if properties is not None:
            assert refusal["properties"] == properties, (obj, refusal)


def test_import_cannot_use_another_users_blob(alice, bob, services):
    blob = upload(alice, message("private", "p@x"), "message/rfc822")
    inbox = roles(services, bob.account_id)["inbox"]
    error = import_one(bob, {"blobId": blob, "mailboxIds": {inbox: True}})["notCreated"]["i"]
    assert error["type"] == "invalidProperties" and error["properties"] == ["blobId"]


def test_import_arguments_and_state(alice, services):
    inbox = roles(services, alice.account_id)["inbox"]
    blob = upload(alice, message("ok", "ok@x"), "message/rfc822")
    assert alice.error("Email/import", {})["type"] == "invalidArguments"
    assert alice.error("Email/import", {"emails": None})["type"] == "invalidArguments"
    assert alice.error("Email/import", {"emails": {"i": 5}})["type"] == "invalidArguments"
    assert alice.error("Email/import", {"emails": {}, "other": 1})["type"] == "invalidArguments"
    item = {"blobId": blob, "mailboxIds": {inbox: True}}
    assert alice.error("Email/import", {"emails": {"i": item}, "ifInState": "nope"})["type"] == "stateMismatch"
    state = alice.call("Email/get", {"ids": []})["state"]
    assert import_one(alice, item, ifInState=state)["created"]["i"]["blobId"] == blob


# --- Email/copy ----------------------------------------------------------------------------------------------------


@pytest.fixture
def shared(alice, bob, services):
    """Alice delegates her account to bob; bob has one email of his own. Returns (bob's email id, both roles)."""
    services.accounts.delegate("alice@example.org", "bob@example.org")
    own = services.mailboxes.deliver("bob@example.org", message("bob's own", "own@x")).message_id
    services.mailboxes.set_keywords(bob.account_id, [own], add=["$flagged"])
    return own, roles(services, bob.account_id), roles(services, alice.account_id)


def test_copy_from_the_delegates_account_to_the_delegating_one(alice, bob, shared):
    own, _, alice_roles = shared
    state = alice.call("Email/get", {"ids": []})["state"]
    result = bob.call(
        "Email/copy",
        {
            "fromAccountId": bob.account_id,
            "accountId": alice.account_id,
            "create": {"k45": {"id": own, "mailboxIds": {alice_roles["archive"]: True}}},
        },
    )
    copy = result["created"]["k45"]
    assert result["fromAccountId"] == bob.account_id and result["accountId"] == alice.account_id
    assert set(copy) == {"id", "blobId", "threadId", "size"} and copy["id"] != own
    assert result["oldState"] == state and result["newState"] == alice.call("Email/get", {"ids": []})["state"]
    (original,) = get(bob, [own], ["blobId", "size", "subject", "keywords", "receivedAt"])
    (copied,) = get(alice, [copy["id"]], ["blobId", "size", "subject", "keywords", "receivedAt", "mailboxIds"])
    assert copied["mailboxIds"] == {alice_roles["archive"]: True}
    assert {k: copied[k] for k in original if k != "id"} == {k: original[k] for k in original if k != "id"}
    assert copy["blobId"] == original["blobId"] and download(alice, copy["blobId"]) == download(bob, original["blobId"])
    assert get(bob, [own], ["subject"])  # the original stays


def test_copy_overrides_and_destroys_the_original(alice, bob, shared):
    own, _, alice_roles = shared
    bob_in_alice = JmapClient(bob.client, bob.email, alice.account_id)
    source_state = bob.call("Email/get", {"ids": []})["state"]
    responses = bob_in_alice.responses(
        [
            [
                "Email/copy",
                {
                    "fromAccountId": bob.account_id,
                    "accountId": alice.account_id,
                    "create": {
                        "k": {
                            "id": own,
                            "mailboxIds": {alice_roles["inbox"]: True},
                            "keywords": {"$Seen": True},
                            "receivedAt": "2019-05-05T05:05:05Z",
                        }
                    },
                    "onSuccessDestroyOriginal": True,
                    "destroyFromIfInState": source_state,
                },
                "0",
            ],
            [
                "Email/get",
                {"accountId": alice.account_id, "ids": ["#k"], "properties": ["keywords", "receivedAt"]},
                "1",
            ],
        ]
    )
    assert [(name, call_id) for name, _, call_id in responses] == [
        ("Email/copy", "0"),
        ("Email/set", "0"),
        ("Email/get", "1"),
    ]
    destroyed = responses[1][1]
    assert destroyed["accountId"] == bob.account_id and destroyed["destroyed"] == [own]
    assert destroyed["oldState"] == source_state
    assert responses[2][1]["list"][0]["keywords"] == {"$seen": True}
    assert responses[2][1]["list"][0]["receivedAt"] == "2019-05-05T05:05:05Z"
    assert bob.call("Email/get", {"ids": [own]})["notFound"] == [own]


def test_destroy_original_state_mismatch_is_reported_after_the_copy(alice, bob, shared):
    own, _, alice_roles = shared
    responses = bob.responses(
        [
            [
                "Email/copy",
                {
                    "fromAccountId": bob.account_id,
                    "accountId": alice.account_id,
                    "create": {"k": {"id": own, "mailboxIds": {alice_roles["inbox"]: True}}},
                    "onSuccessDestroyOriginal": True,
                    "destroyFromIfInState": "stale",
                },
                "c",
            ]
        ]
    )
    assert [(n, c) for n, _, c in responses] == [("Email/copy", "c"), ("error", "c")]
    assert responses[0][1]["created"]["k"] and responses[1][1]["type"] == "stateMismatch"
    assert bob.call("Email/get", {"ids": [own]})["notFound"] == []


def test_copy_into_the_same_account_is_refused(alice, services):
    delivered = services.mailboxes.deliver("alice@example.org", message("x", "x@x")).message_id
    error = alice.error(
        "Email/copy",
        {"fromAccountId": alice.account_id, "create": {"k": {"id": delivered, "mailboxIds": {"M1": True}}}},
    )
    assert error["type"] == "invalidArguments"


def test_copy_errors(alice, bob, shared, services):
    own, bob_roles, alice_roles = shared
    base = {"fromAccountId": bob.account_id, "accountId": alice.account_id}
    # alice may not read bob's account: fromAccountNotFound
    error = alice.error(
        "Email/copy", {**base, "create": {"k": {"id": own, "mailboxIds": {alice_roles["inbox"]: True}}}}
    )
    assert error["type"] == "fromAccountNotFound"
    assert bob.error("Email/copy", {**base, "fromAccountId": "nobody", "create": {}})["type"] == "fromAccountNotFound"
    assert bob.error("Email/copy", {**base, "create": {}, "ifFromInState": "x"})["type"] == "stateMismatch"
    assert bob.error("Email/copy", {**base, "create": {}, "ifInState": "x"})["type"] == "stateMismatch"
    assert bob.error("Email/copy", {**base, "create": {}, "unknown": 1})["type"] == "invalidArguments"
    assert bob.error("Email/copy", {"accountId": alice.account_id, "create": {}})["type"] == "invalidArguments"
    result = bob.call(
        "Email/copy",
        {
            **base,
            "create": {
                "missing": {"id": "Mnothere", "mailboxIds": {alice_roles["inbox"]: True}},
                "immutable": {"id": own, "mailboxIds": {alice_roles["inbox"]: True}, "subject": "x"},
                "foreign": {"id": own},  # bob's mailbox ids do not exist in alice's account
                "nokeyword": {"id": own, "mailboxIds": {alice_roles["inbox"]: True}, "keywords": {"a b": True}},
            },
        },
    )
    errors = {k: (v["type"], v.get("properties")) for k, v in result["notCreated"].items()}
    assert errors == {
        "missing": ("notFound", None),
        "immutable": ("invalidProperties", ["subject"]),
        "foreign": ("invalidProperties", ["mailboxIds"]),
        "nokeyword": ("invalidProperties", ["keywords"]),
    }
    assert result["created"] is None and result["oldState"] == result["newState"]


def test_copy_of_many_is_one_operation(alice, bob, shared, services):
    _, _, alice_roles = shared
    ids = [services.mailboxes.deliver("bob@example.org", message(f"c{i}", f"c{i}@x")).message_id for i in range(5)]
    with services.db.read() as tx:
        mark = int(tx.value("SELECT COALESCE(MAX(id), 0) FROM event_outbox"))
    result = bob.call(
        "Email/copy",
        {
            "fromAccountId": bob.account_id,
            "accountId": alice.account_id,
            "create": {f"k{i}": {"id": m, "mailboxIds": {alice_roles["inbox"]: True}} for i, m in enumerate(ids)},
        },
    )
    assert len(result["created"]) == 5
    with services.db.read() as tx:
        events = [json.loads(r["event"]) for r in tx.query("SELECT event FROM event_outbox WHERE id > ?", (mark,))]
    assert [(e["type"], e["account_id"], len(e["message_ids"])) for e in events] == [("Added", alice.account_id, 5)]
    assert events[0]["delivery"]  # new mail in the account: EmailDelivery moves (RFC 8621 §1.5)

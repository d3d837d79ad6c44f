"""Mailbox sharing over real HTTP: what a sharee sees of the owner's account and what they may change.

draft-ietf-jmap-mail-sharing (Mailbox ``shareWith``, the ``mayShare`` right) builds on RFC 9670 (principals
and the sharing model) and RFC 8621 §2, MailboxRights: "mayReadItems: If true, the user may use this
Mailbox as part of a filter in an Email/query call, and the Mailbox may be included in the mailboxIds
property of Email objects. Email objects may be fetched if they are in at least one Mailbox with this
permission"; "maySetSeen … maySetKeywords: If an Email belongs to multiple Mailboxes, the user may only
modify … if they have this permission for all of the Mailboxes"; "mayAddItems", "mayRemoveItems",
"mayRename", "mayDelete", "mayCreateChild".
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from tests.support.emails import mail
from tests.support.jmap import PASSWORD, JmapClient, basic_auth
from tests.support.servers import start_app

ALICE, BOB, CAROL = "alice@example.org", "bob@example.org", "carol@example.org"
SHARE = "urn:ietf:params:jmap:mail:share"
USING = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail", SHARE]


class _Http:
    """The Flask-test-client surface JmapClient uses, over a real socket."""

    def __init__(self, url: str) -> None:
        self.url = url

    def post(self, path: str, data: str, headers: dict, content_type: str) -> Any:
        r = requests.post(self.url + path, data=data, headers={**headers, "Content-Type": content_type}, timeout=10)
        r.get_data = lambda as_text=False: r.text  # type: ignore[attr-defined]
        r.get_json = r.json  # type: ignore[attr-defined]
        return r


class World:
    def __init__(self, server) -> None:
        self.server = server
        self.services = s = server.services
        users = {e: s.accounts.create_user(e, PASSWORD)[0] for e in (ALICE, BOB, CAROL)}
        self.alice, self.bob, self.carol = users[ALICE], users[BOB], users[CAROL]
        self.account = self.alice.account_id
        role = s.mailboxes.mailbox_by_role
        self.inbox, self.archive = role(self.account, "inbox").id, role(self.account, "archive").id
        self.shared = s.mailboxes.create_mailbox(self.account, "Family").id
        self.other = s.mailboxes.create_mailbox(self.account, "Other shared").id
        http = _Http(server.url)
        self.as_alice = JmapClient(http, ALICE, self.account)
        self.as_bob = JmapClient(http, BOB, self.account)
        self.as_carol = JmapClient(http, CAROL, self.account)

    def add(self, boxes: list[str], subject: str = "Hello", keywords: tuple = ()) -> str:
        raw = mail(subject=subject, msgid=f"{subject.replace(' ', '.')}@example.org")
        return self.services.mailboxes.append(self.account, raw, boxes, keywords).id

    def share(self, mailbox_id: str, *rights: str) -> None:
        self.services.mailboxes.share_mailbox(self.account, mailbox_id, self.bob.id, rights)

    def bob_call(self, method: str, **args: Any) -> tuple[str, dict]:
        args.setdefault("accountId", self.account)
        name, result, _ = self.as_bob.responses([[method, args, "c"]], USING)[0]
        return name, result


@pytest.fixture
def world(config, db):
    server = start_app(config, db)
    yield World(server)
    server.stop()


def test_a_read_only_sharee_sees_only_the_shared_mailbox_and_its_emails(world):
    shared_only = world.add([world.shared], "in family")
    both = world.add([world.shared, world.inbox], "in both")
    hidden = world.add([world.inbox], "private")
    world.share(world.shared, "mayReadItems")

    session = requests.get(world.server.url + "/.well-known/jmap", headers=basic_auth(BOB), timeout=10).json()
    account = session["accounts"][world.account]
    assert (account["isPersonal"], account["isReadOnly"], account["name"]) == (False, True, ALICE)

    name, got = world.bob_call("Mailbox/get", ids=None)
    assert [mb["id"] for mb in got["list"]] == [world.shared]
    rights = got["list"][0]["myRights"]
    assert rights["mayReadItems"] and not any(v for k, v in rights.items() if k != "mayReadItems")
    assert got["list"][0]["shareWith"] is None  # bob may not share it
    _, got = world.bob_call("Mailbox/get", ids=[world.inbox])
    assert got["notFound"] == [world.inbox]
    _, got = world.bob_call("Mailbox/query", sortAsTree=True)
    assert got["ids"] == [world.shared]

    _, got = world.bob_call("Email/get", ids=[shared_only, both, hidden], properties=["mailboxIds", "blobId"])
    assert {e["id"]: e["mailboxIds"] for e in got["list"]} == {
        shared_only: {world.shared: True},
        both: {world.shared: True},
    }
    assert got["notFound"] == [hidden]
    _, got = world.bob_call("Email/query")
    assert set(got["ids"]) == {shared_only, both}
    _, got = world.bob_call("Email/query", filter={"inMailbox": world.inbox})
    assert got["ids"] == [both]  # the shared email only, even filtering on a mailbox bob cannot see
    _, got = world.bob_call("Email/query", filter={"text": "private"})
    assert got["ids"] == []
    hidden_thread = world.services.mailboxes.get_messages(world.account, [hidden])[0][hidden].thread_id
    _, got = world.bob_call("Thread/get", ids=[hidden_thread])
    assert got["notFound"] == [hidden_thread]
    _, got = world.bob_call("SearchSnippet/get", emailIds=[hidden, both], filter={"text": "hello"})
    assert got["notFound"] == [hidden]

    blob = world.services.mailboxes.get_messages(world.account, [hidden])[0][hidden].blob_id
    seen = world.services.mailboxes.get_messages(world.account, [both])[0][both].blob_id
    url = world.server.url + f"/jmap/download/{world.account}/{{}}/m.eml"
    assert requests.get(url.format(blob), headers=basic_auth(BOB), timeout=10).status_code == 404
    assert requests.get(url.format(seen), headers=basic_auth(BOB), timeout=10).status_code == 200
    assert requests.get(url.format(blob), headers=basic_auth(ALICE), timeout=10).status_code == 200
    _, got = world.bob_call("Email/parse", blobIds=[blob])
    assert got["notFound"] == [blob]


def test_a_read_only_sharee_changes_nothing(world):
    email = world.add([world.shared])
    world.share(world.shared, "mayReadItems")
    for method, args in [
        ("Email/set", {"update": {email: {"keywords/$seen": True}}}),
        ("Email/set", {"update": {email: {f"mailboxIds/{world.shared}": None, f"mailboxIds/{world.inbox}": True}}}),
        ("Email/set", {"destroy": [email]}),
        ("Mailbox/set", {"update": {world.shared: {"name": "Mine now"}}}),
        ("Mailbox/set", {"destroy": [world.shared]}),
    ]:
        name, result = world.bob_call(method, **args)
        assert (name, result["type"]) == ("error", "accountReadOnly"), (method, args)
    found = world.services.mailboxes.get_messages(world.account, [email])[0][email]
    assert found.mailbox_ids == {world.shared} and not found.keywords


def test_each_right_allows_only_its_change(world):
    """RFC 8621 §2: $seen needs maySetSeen, other keywords maySetKeywords, in every mailbox of the email."""
    email = world.add([world.shared])
    also_private = world.add([world.shared, world.inbox], "two")
    world.share(world.shared, "mayReadItems", "maySetSeen")
    world.share(world.other, "mayReadItems", "mayAddItems")

    name, got = world.bob_call(
        "Email/set",
        update={
            email: {"keywords/$seen": True},
            also_private: {"keywords/$seen": True},
        },
    )
    assert name == "Email/set" and list(got["updated"]) == [email]
    assert got["notUpdated"][also_private]["type"] == "forbidden"  # also in alice's Inbox
    _, got = world.bob_call("Email/set", update={email: {"keywords/$flagged": True}})
    assert got["notUpdated"][email]["type"] == "forbidden"
    # Moving takes mayRemoveItems from the source (which bob lacks), even to a mailbox he may add to.
    _, got = world.bob_call(
        "Email/set", update={email: {f"mailboxIds/{world.shared}": None, f"mailboxIds/{world.other}": True}}
    )
    assert got["notUpdated"][email]["type"] == "forbidden"
    _, got = world.bob_call("Email/set", update={email: {f"mailboxIds/{world.other}": True}})
    assert list(got["updated"]) == [email]  # copying into a mailbox with mayAddItems
    _, got = world.bob_call("Email/set", update={email: {f"mailboxIds/{world.inbox}": True}})
    assert got["notUpdated"][email]["type"] == "invalidProperties"  # a mailbox bob cannot see is none
    _, got = world.bob_call("Email/set", destroy=[email])
    assert got["notDestroyed"][email]["type"] == "forbidden"
    _, got = world.bob_call("Mailbox/set", update={world.shared: {"name": "Renamed"}}, destroy=[world.other])
    assert got["notUpdated"][world.shared]["type"] == "forbidden"
    assert got["notDestroyed"][world.other]["type"] == "forbidden"
    _, got = world.bob_call("Mailbox/set", create={"k": {"name": "Child", "parentId": world.shared}})
    assert got["notCreated"]["k"]["type"] == "forbidden"
    found = world.services.mailboxes.get_messages(world.account, [email])[0][email]
    assert found.mailbox_ids == {world.shared, world.other} and found.keywords == {"$seen"}


def test_a_user_with_no_share_gets_account_not_found(world):
    world.add([world.shared])
    world.share(world.shared, "mayReadItems")
    name, got, _ = world.as_carol.responses([["Mailbox/get", {"accountId": world.account}, "c"]], USING)[0]
    assert (name, got["type"]) == ("error", "accountNotFound")


def test_share_with_is_set_by_the_owner_and_by_holders_of_may_share(world):
    name, got, _ = world.as_alice.responses(
        [
            [
                "Mailbox/set",
                {
                    "accountId": world.account,
                    "update": {
                        world.shared: {f"shareWith/{world.bob.account_id}": {"mayReadItems": True, "mayShare": True}}
                    },
                },
                "c",
            ]
        ],
        USING,
    )[0]
    assert name == "Mailbox/set" and world.shared in got["updated"]
    _, got = world.bob_call("Mailbox/get", ids=[world.shared], properties=["shareWith", "myRights"])
    assert got["list"][0]["myRights"]["mayShare"] is True
    assert got["list"][0]["shareWith"][world.bob.account_id]["mayReadItems"] is True
    # Bob (mayShare) passes read access on to carol, never more than he holds; carol cannot go further.
    name, got = world.bob_call(
        "Mailbox/set",
        update={world.shared: {f"shareWith/{world.carol.account_id}": {"mayReadItems": True, "mayDelete": True}}},
    )
    assert got["notUpdated"][world.shared]["type"] == "forbidden"
    name, got = world.bob_call(
        "Mailbox/set", update={world.shared: {f"shareWith/{world.carol.account_id}": {"mayReadItems": True}}}
    )
    assert name == "Mailbox/set" and world.shared in got["updated"], got
    name, got, _ = world.as_carol.responses(
        [["Mailbox/set", {"accountId": world.account, "update": {world.shared: {"shareWith": None}}}, "c"]], USING
    )[0]
    assert (name, got["type"]) == ("error", "accountReadOnly")
    name, got, _ = world.as_alice.responses(
        [["Mailbox/set", {"accountId": world.account, "update": {world.shared: {"shareWith": None}}}, "c"]], USING
    )[0]
    assert name == "Mailbox/set", got
    assert world.services.mailboxes.list_shares(world.account) == []
    name, got, _ = world.as_bob.responses([["Mailbox/get", {"accountId": world.account}, "c"]], USING)[0]
    assert (name, got["type"]) == ("error", "accountNotFound")


def test_a_sharee_changes_shows_what_appeared_and_what_went(world):
    """RFC 8620 §5.2: /changes lists what the client must fetch or forget; for a sharee, an email that left the
    shared mailboxes is destroyed, and one in a newly shared mailbox is updated."""
    first = world.add([world.shared], "first")
    world.share(world.shared, "mayReadItems")
    _, got = world.bob_call("Email/get", ids=None, properties=["id"])
    state = got["state"]
    later = world.add([world.other], "later")
    world.services.mailboxes.move_messages(world.account, [first], [world.inbox], [world.shared])
    world.share(world.other, "mayReadItems")
    _, got = world.bob_call("Email/changes", sinceState=state)
    assert got["destroyed"] == [first]
    assert set(got["created"]) | set(got["updated"]) == {later}
    _, mailboxes = world.bob_call("Mailbox/get", ids=None, properties=["id"])
    assert {mb["id"] for mb in mailboxes["list"]} == {world.shared, world.other}
    json.dumps(got)


def test_share_notifications_tell_the_sharee_what_changed_and_only_destroy_is_allowed(world):
    """RFC 9670 §5: "The ShareNotification data type records when the user's permissions to access a shared
    object changes"; §5.3: "Only destroy is supported; any attempt to create/update MUST be rejected with a
    forbidden SetError"."""
    principals = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:principals"]
    own = world.bob.account_id
    bob = JmapClient(world.as_bob.client, BOB, own)

    def call(method: str, **args: Any) -> dict:
        name, result, _ = bob.responses([[method, {"accountId": own, **args}, "c"]], principals)[0]
        assert name == method, result
        return result

    start = call("ShareNotification/get", ids=None)
    assert start["list"] == []
    world.share(world.shared, "mayReadItems")
    world.share(world.shared, "mayReadItems", "maySetSeen")
    world.share(world.shared)
    changes = call("ShareNotification/changes", sinceState=start["state"])
    assert len(changes["created"]) == 3
    got = call("ShareNotification/get", ids=None)["list"]
    assert [(n["oldRights"] is None, n["newRights"] is None) for n in got] == [
        (True, False),
        (False, False),
        (False, True),
    ]
    assert got[1]["newRights"]["maySetSeen"] and not got[1]["oldRights"]["maySetSeen"]
    assert {(n["objectType"], n["objectAccountId"], n["objectId"], n["name"]) for n in got} == {
        ("Mailbox", world.account, world.shared, "Family")
    }
    assert got[0]["changedBy"] == {"name": ALICE, "email": ALICE, "principalId": world.account}
    newest = call("ShareNotification/query", sort=[{"property": "created", "isAscending": False}])["ids"]
    assert newest == [n["id"] for n in reversed(got)]

    done = call(
        "ShareNotification/set",
        create={"x": {"name": "forged"}},
        update={got[0]["id"]: {"name": "edited"}},
        destroy=[got[0]["id"], "Nmissing"],
    )
    assert done["notCreated"]["x"]["type"] == done["notUpdated"][got[0]["id"]]["type"] == "forbidden"
    assert done["destroyed"] == [got[0]["id"]] and done["notDestroyed"]["Nmissing"]["type"] == "notFound"
    assert call("ShareNotification/changes", sinceState=changes["newState"])["destroyed"] == [got[0]["id"]]


def test_the_owner_destroying_a_shared_mailbox_notifies_the_sharee(world):
    """RFC 9670 §5: a ShareNotification records a change of the user's permissions to a shared object; the
    mailbox going takes them all (``newRights`` null), as a revocation does."""
    principals = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:principals"]
    bob = JmapClient(world.as_bob.client, BOB, world.bob.account_id)

    def notifications() -> list[dict]:
        args = {"accountId": world.bob.account_id, "ids": None}
        return bob.responses([["ShareNotification/get", args, "c"]], principals)[0][1]["list"]

    world.share(world.shared, "mayReadItems", "maySetSeen")
    assert len(notifications()) == 1
    world.services.mailboxes.delete_mailbox(world.account, world.shared)
    assert world.services.accounts.access(world.bob.id, world.account) is None
    last = notifications()[-1]
    assert len(notifications()) == 2 and last["newRights"] is None and last["oldRights"]["maySetSeen"]
    assert (last["objectId"], last["name"], last["changedBy"]["email"]) == (world.shared, "Family", ALICE)
    world.services.mailboxes.delete_mailbox(world.account, world.other)
    assert len(notifications()) == 2  # a mailbox shared with nobody notifies nobody


def test_a_child_made_by_a_sharee_is_shared_with_them_and_a_destroyed_mailbox_takes_its_shares(world):
    """RFC 8621 §2 mayCreateChild: "The user may create a Mailbox with this Mailbox as its parent"; rights are
    per mailbox (draft-ietf-jmap-mail-sharing): the child gets its parent's share, for its creator only."""
    world.share(world.shared, "mayReadItems", "mayCreateChild")
    name, got = world.bob_call("Mailbox/set", create={"k": {"name": "Child", "parentId": world.shared}})
    assert name == "Mailbox/set" and "k" in got["created"], got
    child = got["created"]["k"]["id"]
    _, got = world.bob_call("Mailbox/get", ids=None, properties=["id", "parentId", "myRights"])
    rights = {mb["id"]: mb["myRights"] for mb in got["list"]}
    assert set(rights) == {world.shared, child} and rights[child]["mayCreateChild"]
    name, got = world.bob_call("Mailbox/set", create={"top": {"name": "Top"}})
    assert got["notCreated"]["top"]["type"] == "forbidden"
    session = requests.get(world.server.url + "/.well-known/jmap", headers=basic_auth(BOB), timeout=10).json()
    caps = session["accounts"][world.account]["accountCapabilities"]
    assert caps["urn:ietf:params:jmap:mail"]["mayCreateTopLevelMailbox"] is False
    assert caps["urn:ietf:params:jmap:principals"]["currentUserPrincipalId"] == world.bob.account_id
    assert caps["urn:ietf:params:jmap:principals:owner"]["principalId"] == world.account

    world.services.mailboxes.delete_mailbox(world.account, child)
    world.services.mailboxes.delete_mailbox(world.account, world.shared)
    assert world.services.accounts.access(world.bob.id, world.account) is None


def test_a_sharee_copies_and_sends_nothing_they_cannot_see(world):
    """RFC 8620 §5.4 /copy and §6.3 Blob/copy read from an account the user can see, and only what they can see
    of it; sending as the owner is not a right a mailbox share gives."""
    visible = world.add([world.shared], "visible")
    hidden = world.add([world.inbox], "hidden")
    world.share(world.shared, "mayReadItems")
    bob_inbox = world.services.mailboxes.mailbox_by_role(world.bob.account_id, "inbox").id
    name, got, _ = world.as_bob.responses(
        [
            [
                "Email/copy",
                {
                    "fromAccountId": world.account,
                    "accountId": world.bob.account_id,
                    "create": {
                        "a": {"id": visible, "mailboxIds": {bob_inbox: True}},
                        "b": {"id": hidden, "mailboxIds": {bob_inbox: True}},
                    },
                },
                "c",
            ]
        ],
        USING,
    )[0]
    assert name == "Email/copy" and set(got["created"]) == {"a"} and got["notCreated"]["b"]["type"] == "notFound"
    blob = world.services.mailboxes.get_messages(world.account, [hidden])[0][hidden].blob_id
    name, got, _ = world.as_bob.responses(
        [["Blob/copy", {"fromAccountId": world.account, "accountId": world.bob.account_id, "blobIds": [blob]}, "c"]],
        USING,
    )[0]
    assert name == "Blob/copy" and list(got["notCopied"]) == [blob]
    name, got, _ = world.as_bob.responses(
        [["Identity/get", {"accountId": world.account}, "c"]],
        [*USING, "urn:ietf:params:jmap:submission"],
    )[0]
    assert (name, got["type"]) == ("error", "accountNotSupportedByMethod")
    session = requests.get(world.server.url + "/.well-known/jmap", headers=basic_auth(BOB), timeout=10).json()
    caps = set(session["accounts"][world.account]["accountCapabilities"])
    assert "urn:ietf:params:jmap:submission" not in caps and "urn:ietf:params:jmap:mail" in caps

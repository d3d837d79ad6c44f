"""Email/changes (RFC 8621 §4.3): the standard /changes over the change log, paging, errors, on both backends."""

from __future__ import annotations

import pytest

from tests.jmap.test_email_get import SIMPLE


@pytest.fixture
def deliver(services, alice):
    def run(raw: bytes, to: str = "alice@example.org"):
        return services.mailboxes.deliver(to, raw)

    return run


def test_changes_created_updated_destroyed(services, alice, deliver):
    start = alice.call("Email/get", {"ids": []})["state"]
    m1, m2, m3 = (deliver(SIMPLE).message_id for _ in range(3))
    after_deliveries = alice.call("Email/get", {"ids": []})["state"]
    changes = alice.call("Email/changes", {"sinceState": start})
    assert changes["oldState"] == start and changes["newState"] == after_deliveries
    assert sorted(changes["created"]) == sorted([m1, m2, m3])
    assert changes["updated"] == [] and changes["destroyed"] == [] and changes["hasMoreChanges"] is False
    services.mailboxes.set_keywords(alice.account_id, [m1], add=["$seen"])
    services.mailboxes.destroy_messages(alice.account_id, [m2])
    changes = alice.call("Email/changes", {"sinceState": after_deliveries})
    assert (changes["created"], changes["updated"], changes["destroyed"]) == ([], [m1], [m2])
    now = alice.call("Email/get", {"ids": []})["state"]
    assert changes["newState"] == now
    # From the current state: nothing.
    same = alice.call("Email/changes", {"sinceState": now})
    assert same["oldState"] == same["newState"] == now
    assert (same["created"], same["updated"], same["destroyed"], same["hasMoreChanges"]) == ([], [], [], False)
    # From the start: m2 was created and destroyed within the window, m1 created then updated.
    whole = alice.call("Email/changes", {"sinceState": start})
    assert sorted(whole["created"]) == sorted([m1, m3]) and whole["updated"] == [] and whole["destroyed"] == []


def test_changes_paging_with_max_changes(services, alice, deliver):
    start = alice.call("Email/get", {"ids": []})["state"]
    ids = [deliver(SIMPLE).message_id for _ in range(5)]
    services.mailboxes.set_keywords(alice.account_id, ids[:2], add=["$flagged"])
    services.mailboxes.destroy_messages(alice.account_id, [ids[4]])
    final = alice.call("Email/get", {"ids": []})["state"]
    state, pages = start, []
    for _ in range(20):
        page = alice.call("Email/changes", {"sinceState": state, "maxChanges": 2})
        assert page["oldState"] == state
        assert len(page["created"]) + len(page["updated"]) + len(page["destroyed"]) <= 2
        pages.append(page)
        state = page["newState"]
        if not page["hasMoreChanges"]:
            break
    assert state == final and len(pages) >= 4
    # Replaying the pages yields the current set of emails.
    seen: set[str] = set()
    for page in pages:
        assert not set(page["created"]) & seen
        seen |= set(page["created"])
        assert set(page["updated"]) <= seen
        seen -= set(page["destroyed"])
    assert seen == set(ids[:4])
    assert {e["id"] for e in alice.call("Email/get", {"ids": None, "properties": []})["list"]} == seen


@pytest.mark.parametrize(
    "args,error",
    [
        ({"sinceState": "not-a-state"}, "cannotCalculateChanges"),
        ({"sinceState": "zzzzzz"}, "cannotCalculateChanges"),  # in the future
        ({}, "invalidArguments"),
        ({"sinceState": 5}, "invalidArguments"),
        ({"sinceState": "0", "maxChanges": 0}, "invalidArguments"),
        ({"sinceState": "0", "maxChanges": -1}, "invalidArguments"),
        ({"sinceState": "0", "extra": 1}, "invalidArguments"),
    ],
)
def test_changes_errors(alice, args, error):
    assert alice.error("Email/changes", args)["type"] == error


def test_changes_isolated_per_account(alice, bob, deliver):
    start = bob.call("Email/get", {"ids": []})["state"]
    deliver(SIMPLE)
    changes = bob.call("Email/changes", {"sinceState": start})
    assert changes["created"] == [] and changes["newState"] == start

"""Thread/get and Thread/changes over HTTP (RFC 8621 §3), on both backends: replies delivered join
their thread, emailIds oldest first whatever the arrival order, ids null within maxObjectsInGet,
and an exact Thread change log (created, updated, destroyed) whose state Thread/get agrees with."""

from __future__ import annotations

from dataclasses import replace

from jmapmono.runtime import Runtime
from jmapmono.web.app import create_app
from tests.support.clock import one_millisecond
from tests.support.jmap import JmapClient


def raw(subject: str, msgid: str, refs: str = "") -> bytes:
    head = f"From: bob@example.org\r\nTo: alice@example.org\r\nSubject: {subject}\r\nMessage-ID: <{msgid}>\r\n"
    if refs:
        head += f"In-Reply-To: <{refs.split()[-1]}>\r\nReferences: {' '.join(f'<{r}>' for r in refs.split())}\r\n"
    return (head + "\r\nhello\r\n").encode()


def inbox(services, account_id: str) -> str:
    return services.mailboxes.mailbox_by_role(account_id, "inbox").id


def test_rfc_example_thread_get_after_replies_are_delivered(services, alice):
    """RFC 8621 §3.1.1: one thread of several emails, one of a single email, and a notFound."""
    mgr, acc = services.mailboxes, alice.account_id
    box = inbox(services, acc)
    # the first reply arrives before the message it answers; receivedAt decides the order, not arrival
    reply = mgr.append(acc, raw("Re: Lunch?", "b@x", "a@x"), [box], received_at=3_000_000)
    original = mgr.append(acc, raw("Lunch?", "a@x"), [box], received_at=1_000_000)
    second = mgr.append(acc, raw("RE: lunch?", "c@x", "a@x b@x"), [box], received_at=2_000_000)
    lone = mgr.deliver("alice@example.org", raw("Something else", "d@x"))
    delivered = mgr.deliver("alice@example.org", raw("Re: Lunch?", "e@x", "a@x c@x"))
    assert original.thread_id == reply.thread_id == second.thread_id == delivered.thread_id != lone.thread_id
    r = alice.call("Thread/get", {"ids": [reply.thread_id, lone.thread_id, "Tnope"]})
    assert r["list"] == [
        {"id": reply.thread_id, "emailIds": [original.id, second.id, reply.id, delivered.message_id]},
        {"id": lone.thread_id, "emailIds": [lone.message_id]},
    ]
    assert r["notFound"] == ["Tnope"]
    assert r["state"] == alice.call("Thread/changes", {"sinceState": "0"})["newState"]


def test_a_new_subject_starts_a_new_thread_even_when_replying(services, alice):
    mgr = services.mailboxes
    first = mgr.deliver("alice@example.org", raw("Plans", "p@x"))
    other = mgr.deliver("alice@example.org", raw("Totally different", "q@x", "p@x"))
    assert first.thread_id != other.thread_id
    r = alice.call("Thread/get", {"ids": [first.thread_id, other.thread_id]})
    assert [t["emailIds"] for t in r["list"]] == [[first.message_id], [other.message_id]]


def test_ids_null_properties_and_argument_errors(services, alice):
    mgr = services.mailboxes
    a = mgr.deliver("alice@example.org", raw("one", "1@x"))
    b = mgr.deliver("alice@example.org", raw("two", "2@x"))
    everything = alice.call("Thread/get", {"ids": None})
    assert sorted(t["id"] for t in everything["list"]) == sorted([a.thread_id, b.thread_id])
    assert alice.call("Thread/get", {"ids": [a.thread_id], "properties": ["id"]})["list"] == [{"id": a.thread_id}]
    assert alice.call("Thread/get", {"ids": []})["list"] == []
    assert alice.error("Thread/get", {"ids": None, "properties": ["subject"]})["type"] == "invalidArguments"
    assert alice.error("Thread/get", {"ids": ["not an id"]})["type"] == "invalidArguments"
    assert alice.error("Thread/get", {"ids": None, "fetchAll": True})["type"] == "invalidArguments"


def test_ids_null_over_max_objects_in_get_is_too_large(services, alice):
    threads = [services.mailboxes.deliver("alice@example.org", raw(f"s{i}", f"{i}@x")).thread_id for i in range(3)]
    limits = replace(services.config.limits, max_objects_in_get=2)
    small = Runtime(services.config.with_overrides(limits=limits), services.db)
    client = JmapClient(create_app(small).test_client(), alice.email, alice.account_id)
    assert client.error("Thread/get", {"ids": None})["type"] == "requestTooLarge"
    assert len(client.call("Thread/get", {"ids": threads[:2]})["list"]) == 2
    assert client.error("Thread/get", {"ids": threads})["type"] == "requestTooLarge"


def test_thread_changes_report_created_updated_and_destroyed(services, alice):
    mgr, acc = services.mailboxes, alice.account_id
    start = alice.call("Thread/get", {"ids": []})["state"]
    first = mgr.deliver("alice@example.org", raw("Topic", "t1@x"))
    c = alice.call("Thread/changes", {"sinceState": start})
    assert (c["created"], c["updated"], c["destroyed"]) == ([first.thread_id], [], [])
    after_create = c["newState"]
    reply = mgr.deliver("alice@example.org", raw("Re: Topic", "t2@x", "t1@x"))
    c = alice.call("Thread/changes", {"sinceState": after_create})
    assert (c["created"], c["updated"], c["destroyed"]) == ([], [first.thread_id], [])
    assert c["newState"] == alice.call("Thread/get", {"ids": [first.thread_id]})["state"]
    mgr.destroy_messages(acc, [first.message_id])
    after_one = alice.call("Thread/changes", {"sinceState": c["newState"]})
    assert after_one["updated"] == [first.thread_id] and after_one["destroyed"] == []
    assert alice.call("Thread/get", {"ids": [first.thread_id]})["list"][0]["emailIds"] == [reply.message_id]
    mgr.destroy_messages(acc, [reply.message_id])
    gone = alice.call("Thread/changes", {"sinceState": after_one["newState"]})
    assert (gone["created"], gone["updated"], gone["destroyed"]) == ([], [], [first.thread_id])
    assert alice.call("Thread/get", {"ids": [first.thread_id]})["notFound"] == [first.thread_id]
    whole = alice.call("Thread/changes", {"sinceState": start})  # created then destroyed: not reported at all
    assert whole["created"] == whole["updated"] == whole["destroyed"] == []
    assert whole["newState"] == gone["newState"] and "updatedProperties" not in whole


def test_thread_changes_page_and_refuse_bad_states(services, alice):
    start = alice.call("Thread/get", {"ids": []})["state"]
    threads = {services.mailboxes.deliver("alice@example.org", raw(f"s{i}", f"{i}@x")).thread_id for i in range(3)}
    seen, since = [], start
    for _ in range(5):
        page = alice.call("Thread/changes", {"sinceState": since, "maxChanges": 2})
        assert len(page["created"]) <= 2
        seen += page["created"]
        since = page["newState"]
        if not page["hasMoreChanges"]:
            break
    assert sorted(seen) == sorted(threads)
    assert alice.error("Thread/changes", {"sinceState": "nope!"})["type"] == "cannotCalculateChanges"
    assert alice.error("Thread/changes", {"sinceState": start, "maxChanges": -1})["type"] == "invalidArguments"
    assert alice.error("Thread/changes", {"sinceState": 5})["type"] == "invalidArguments"


def test_emails_received_in_one_millisecond_are_listed_in_the_order_they_arrived(services, alice, monkeypatch):
    """emailIds is oldest first by receivedAt; emails that tie on it come in the order they were stored."""
    mgr, acc = services.mailboxes, alice.account_id
    box = inbox(services, acc)
    first = mgr.append(acc, raw("Plans", "p0@x"), [box], received_at=1_000_000)
    with one_millisecond(monkeypatch):
        replies = [mgr.append(acc, raw("Re: Plans", f"p{i}@x", "p0@x"), [box]) for i in range(1, 7)]
    assert len({r.received_at for r in replies}) == 1
    [thread] = alice.call("Thread/get", {"ids": [first.thread_id]})["list"]
    assert thread["emailIds"] == [first.id, *(r.id for r in replies)]

"""Each kind of mutation writes exactly ONE event to the outbox (bulk included), logs its changes,
and moves the states of exactly the types it changed (EmailDelivery only on delivery)."""

import json
from dataclasses import dataclass

import pytest

from jmapmono.events import outbox
from jmapmono.mailbox import changes
from jmapmono.mailbox.model import AlreadyExists, MessageUpdate, NewMessage


def raw(subject: str, msgid: str) -> bytes:
    return f"From: bob@example.org\r\nSubject: {subject}\r\nMessage-ID: <{msgid}>\r\n\r\nhi\r\n".encode()


@dataclass
class World:
    services: object
    account: str
    user_id: int
    roles: dict
    m1: str  # unread, inbox, thread T1
    m2: str  # unread, inbox, thread T2
    m3: str  # seen, archive, own thread

    @property
    def mgr(self):
        return self.services.mailboxes


@pytest.fixture
def world(services) -> World:
    user, _ = services.accounts.create_user("alice@example.org")
    mgr = services.mailboxes
    roles = {mb.role: mb.id for mb in mgr.get_mailboxes(user.account_id)[0]}
    m1 = mgr.deliver("alice@example.org", raw("one", "1@x")).message_id
    m2 = mgr.deliver("alice@example.org", raw("two", "2@x")).message_id
    m3 = mgr.append(user.account_id, raw("three", "3@x"), [roles["archive"]], ["$seen"]).id
    return World(services, user.account_id, user.id, roles, m1, m2, m3)


def snapshot(db, account):
    with db.read() as tx:
        return (
            int(tx.value("SELECT COALESCE(MAX(id), 0) FROM event_outbox")),
            int(tx.value("SELECT last FROM account_changes WHERE account_id = ?", (account,))),
        )


def after(db, account, mark):
    with db.read() as tx:
        events = [
            json.loads(r["event"])
            for r in tx.query("SELECT event FROM event_outbox WHERE id > ? ORDER BY id", (mark[0],))
        ]
        rows = tx.query(
            "SELECT seq, type, object_id, kind, count_only FROM change_log "
            "WHERE account_id = ? AND seq > ? ORDER BY seq",
            (account, mark[1]),
        )
        states = changes.states(tx, account)
    return events, rows, states


def _new_mailbox(w):
    w.mgr.create_mailbox(w.account, "New")


def _delete_full_mailbox(w):
    box = w.mgr.create_mailbox(w.account, "Full")
    w.mgr.append(w.account, raw("four", "4@x"), [box.id])
    return box.id


# (name, action(world) -> None, event type, extra event checks, {type: {kind+"count" flags}}
CASES = [
    (
        "delivery",
        lambda w: w.mgr.deliver("alice@example.org", raw("Re: one", "5@x")),
        "Added",
        {"delivery": True},
        {"Email": {"c"}, "Thread": {"c"}, "Mailbox": {"u#"}, "EmailDelivery": {"c"}},
    ),
    (
        "import with $seen into archive",
        lambda w: w.mgr.append(w.account, raw("x", "6@x"), [w.roles["archive"]], ["$seen"]),
        "Added",
        {"delivery": False},
        {"Email": {"c"}, "Thread": {"c"}, "Mailbox": {"u#"}},
    ),
    (
        "bulk append of three",
        lambda w: w.mgr.append_many(
            w.account, [NewMessage(raw(f"b{i}", f"b{i}@x"), [w.roles["drafts"]]) for i in range(3)]
        ),
        "Added",
        {"delivery": False},
        {"Email": {"c"}, "Thread": {"c"}, "Mailbox": {"u#"}},
    ),
    (
        "mark two seen",
        lambda w: w.mgr.set_keywords(w.account, [w.m1, w.m2], add=["$seen"]),
        "FlagsUpdated",
        {},
        {"Email": {"u"}, "Mailbox": {"u#"}},
    ),
    (
        "flag (no count moves)",
        lambda w: w.mgr.set_keywords(w.account, [w.m1, w.m2], add=["$flagged"]),
        "FlagsUpdated",
        {},
        {"Email": {"u"}},
    ),
    (
        "move two to archive",
        lambda w: w.mgr.move_messages(w.account, [w.m1, w.m2], add=[w.roles["archive"]], remove=[w.roles["inbox"]]),
        "Moved",
        {},
        {"Email": {"u"}, "Mailbox": {"u#"}},
    ),
    (
        "keywords and mailboxes at once",
        lambda w: w.mgr.update_messages(
            w.account,
            {
                w.m1: MessageUpdate(add_keywords=["$seen"]),
                w.m3: MessageUpdate(mailbox_ids=[w.roles["inbox"], w.roles["archive"]]),
            },
        ),
        "MessagesUpdated",
        {},
        {"Email": {"u"}, "Mailbox": {"u#"}},
    ),
    (
        "destroy two",
        lambda w: w.mgr.destroy_messages(w.account, [w.m1, w.m3]),
        "Expunged",
        {},
        {"Email": {"d"}, "Thread": {"d"}, "Mailbox": {"u#"}},
    ),
    ("create mailbox", _new_mailbox, "MailboxAdded", {}, {"Mailbox": {"c"}}),
    (
        "rename mailbox",
        lambda w: w.mgr.update_mailbox(w.account, w.roles["junk"], name="Spam"),
        "MailboxRenamed",
        {"old": {"name": "Junk"}, "new": {"name": "Spam"}},
        {"Mailbox": {"u"}},
    ),
    (
        "subscribe",
        lambda w: w.mgr.set_subscribed(w.account, w.roles["junk"], w.user_id, False),
        "MailboxSubscriptionChanged",
        {"subscribed": False},
        {"Mailbox": {"u"}},
    ),
    (
        "delete empty mailbox",
        lambda w: w.mgr.delete_mailbox(w.account, w.roles["junk"]),
        "MailboxDeleted",
        {"name": "Junk"},
        {"Mailbox": {"d"}},
    ),
]


@pytest.mark.parametrize("name, action, event_type, fields, expected", CASES, ids=[c[0] for c in CASES])
def test_one_event_and_the_right_changes_per_mutation(world, name, action, event_type, fields, expected):
    db = world.services.db
    mark = snapshot(db, world.account)
    before = world.mgr.states(world.account)
    action(world)
    events, rows, states = after(db, world.account, mark)
    assert len(events) == 1, [e["type"] for e in events]
    event = events[0]
    assert event["type"] == event_type and event["account_id"] == world.account
    for key, value in fields.items():
        assert event[key] == value
    logged: dict[str, set[str]] = {}
    for r in rows:
        logged.setdefault(r["type"], set()).add(r["kind"] + ("#" if r["count_only"] else ""))
    assert logged == expected
    # seqs are contiguous, and the event carries the new state of exactly the changed types
    assert [r["seq"] for r in rows] == list(range(mark[1] + 1, mark[1] + 1 + len(rows)))
    assert event["states"] == {t: states[t] for t in expected}
    assert all(states[t] == before[t] for t in states if t not in expected)
    for mailbox_id, c in event["counts"].items():
        assert mailbox_id in event["mailbox_ids"]
        got = {mb.id: mb.counts.to_json() for mb in world.mgr.get_mailboxes(world.account)[0]}
        assert got[mailbox_id] == c


def test_deleting_a_mailbox_with_emails_is_one_event_logging_every_email(world):
    db = world.services.db
    box = _delete_full_mailbox(world)
    world.mgr.move_messages(world.account, [world.m2], add=[box])
    mark = snapshot(db, world.account)
    world.mgr.delete_mailbox(world.account, box, remove_emails=True)
    events, rows, _ = after(db, world.account, mark)
    assert [e["type"] for e in events] == ["MailboxDeleted"]
    kinds = {(r["type"], r["kind"], bool(r["count_only"])) for r in rows}
    assert kinds == {
        ("Email", "d", False),  # only in the deleted mailbox
        ("Email", "u", False),  # m2 stays in the Inbox
        ("Thread", "d", False),
        ("Mailbox", "d", False),
    }


def test_a_no_op_writes_no_event_and_moves_no_state(world):
    db = world.services.db
    world.mgr.set_keywords(world.account, [world.m3], add=["$seen"])  # already seen
    mark = snapshot(db, world.account)
    before = world.mgr.states(world.account)
    result = world.mgr.set_keywords(world.account, [world.m3], add=["$seen"])
    events, rows, states = after(db, world.account, mark)
    assert result.updated == [world.m3] and result.states == {}
    assert events == [] and rows == [] and states == before


def test_bulk_update_of_fifty_messages_is_one_event(world):
    db = world.services.db
    ids = [
        a.id
        for a in world.mgr.append_many(
            world.account, [NewMessage(raw(f"n{i}", f"n{i}@x"), [world.roles["inbox"]]) for i in range(50)]
        ).created.values()
    ]
    mark = snapshot(db, world.account)
    world.mgr.set_keywords(world.account, ids, add=["$seen"])
    events, rows, _ = after(db, world.account, mark)
    assert len(events) == 1 and len(events[0]["flags"]) == 50
    assert sum(1 for r in rows if r["type"] == "Email") == 50


def test_after_commit_listeners_get_the_event_only_when_committed(world):
    seen = []
    unsubscribe = outbox.subscribe(world.services.db, lambda outbox_id, bus, event: seen.append((bus, event.type)))
    try:
        world.mgr.set_keywords(world.account, [world.m1], add=["$flagged"])
        with pytest.raises(AlreadyExists):
            world.mgr.create_mailbox(world.account, "Inbox")  # refused: rolled back, no event
    finally:
        unsubscribe()
    assert seen == [("mailbox", "FlagsUpdated")]
    with world.services.db.transaction() as tx:
        pending = outbox.pending(tx, limit=1000)
        assert pending[-1].event["type"] == "FlagsUpdated" and pending[-1].bus == "mailbox"
        assert outbox.mark_dispatched(world.services.db, [p.id for p in pending]) == len(pending)
        assert outbox.pending(tx) == []

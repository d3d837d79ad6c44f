"""MailboxManager: default mailboxes, mailbox rules (names, parents, roles, delete), per-user
subscriptions, delivery by name, appends and updates refused with typed errors, on both backends."""

import json

import pytest

from jmapmono.accounts.users import UnknownUser
from jmapmono.mailbox import counts
from jmapmono.mailbox.events import MailboxEvent
from jmapmono.mailbox.model import (
    DEFAULT_MAILBOXES,
    AlreadyExists,
    Forbidden,
    InvalidProperties,
    MailboxHasChild,
    MailboxHasEmail,
    MessageUpdate,
    NewMessage,
    NotFound,
)
from tests.support.clock import one_millisecond
from tests.support.statements import alone_only


def raw(subject: str = "hello", msgid: str | None = None, body: str = "body") -> bytes:
    head = f"From: Bob <bob@example.org>\r\nTo: alice@example.org\r\nSubject: {subject}\r\n"
    if msgid:
        head += f"Message-ID: <{msgid}>\r\n"
    return (head + f"\r\n{body}\r\n").encode()


@pytest.fixture
def alice(services):
    user, _ = services.accounts.create_user("alice@example.org")
    return user


def by_role(services, account_id: str) -> dict:
    mailboxes, _ = services.mailboxes.get_mailboxes(account_id)
    return {mb.role: mb.id for mb in mailboxes if mb.role}


def outbox_events(db) -> list[dict]:
    with db.read() as tx:
        return [json.loads(r["event"]) for r in tx.query("SELECT event FROM event_outbox ORDER BY id")]


def test_new_account_gets_default_mailboxes_subscribed_in_one_event(services, alice):
    mailboxes, state = services.mailboxes.get_mailboxes(alice.account_id, user_id=alice.id)
    assert {(mb.name, mb.role) for mb in mailboxes} == {(n, r) for n, r, _ in DEFAULT_MAILBOXES}
    assert all(mb.is_subscribed and mb.parent_id is None for mb in mailboxes)
    assert state != "0"
    events = outbox_events(services.db)
    assert [e["type"] for e in events] == ["MailboxAdded"]
    assert {m["role"] for m in events[0]["mailboxes"]} == {r for _, r, _ in DEFAULT_MAILBOXES}
    assert events[0]["states"] == {"Mailbox": state}


def test_delivery_to_an_account_without_mailboxes_creates_them(services):
    services.accounts.on_user_created.clear()  # an account made before provisioning existed
    user, _ = services.accounts.create_user("old@example.org")
    assert services.mailboxes.get_mailboxes(user.account_id)[0] == []
    delivered = services.mailboxes.deliver("old@example.org", raw())
    roles = by_role(services, user.account_id)
    assert delivered.mailbox_id == roles["inbox"] and len(roles) == len(DEFAULT_MAILBOXES)


def test_sibling_names_are_unique_case_insensitively_but_not_across_parents(services, alice):
    mgr, acc = services.mailboxes, alice.account_id
    work = mgr.create_mailbox(acc, "Work")
    with pytest.raises(AlreadyExists) as e:
        mgr.create_mailbox(acc, "work")
    assert e.value.set_error == "alreadyExists"
    inner = mgr.create_mailbox(acc, "Work", parent_id=work.id)
    assert inner.parent_id == work.id
    other = mgr.create_mailbox(acc, "Other")
    with pytest.raises(AlreadyExists):
        mgr.update_mailbox(acc, other.id, name="WORK")
    with pytest.raises(AlreadyExists):  # moving next to a sibling of the same name
        mgr.update_mailbox(acc, inner.id, parent_id=None)


@pytest.mark.parametrize(
    "kwargs, prop",
    [
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "a\x07b"}, "name"),
        ({"name": "x" * 256}, "name"),
        ({"name": "ok", "role": "nonsense"}, "role"),
        ({"name": "ok", "role": "inbox"}, "role"),  # already taken
        ({"name": "ok", "sort_order": -1}, "sortOrder"),
        ({"name": "ok", "parent_id": "Bnope"}, "parentId"),
    ],
)
def test_invalid_mailbox_properties_are_refused(services, alice, kwargs, prop):
    with pytest.raises(InvalidProperties) as e:
        services.mailboxes.create_mailbox(alice.account_id, **kwargs)
    assert e.value.properties == [prop] and e.value.set_error == "invalidProperties"


def test_a_mailbox_cannot_move_under_itself_or_a_descendant(services, alice):
    mgr, acc = services.mailboxes, alice.account_id
    a = mgr.create_mailbox(acc, "A")
    b = mgr.create_mailbox(acc, "B", parent_id=a.id)
    c = mgr.create_mailbox(acc, "C", parent_id=b.id)
    for parent in (a.id, b.id, c.id):
        with pytest.raises(InvalidProperties) as e:
            mgr.update_mailbox(acc, a.id, parent_id=parent)
        assert e.value.properties == ["parentId"]
    states = mgr.update_mailbox(acc, c.id, parent_id=None, name="C2", sort_order=7)
    got = {mb.id: mb for mb in mgr.get_mailboxes(acc)[0]}
    assert got[c.id].parent_id is None and got[c.id].name == "C2" and got[c.id].sort_order == 7
    assert states["Mailbox"] == mgr.get_mailboxes(acc)[1]
    assert mgr.update_mailbox(acc, c.id, name="C2") == {}  # no change, no new state


def test_roles_move_but_stay_unique_and_the_inbox_keeps_its_role(services, alice):
    mgr, acc = services.mailboxes, alice.account_id
    roles = by_role(services, acc)
    with pytest.raises(InvalidProperties):
        mgr.update_mailbox(acc, roles["archive"], role="trash")
    with pytest.raises(Forbidden):
        mgr.update_mailbox(acc, roles["inbox"], role=None)
    mgr.update_mailbox(acc, roles["archive"], role=None)
    mgr.update_mailbox(acc, roles["junk"], role="archive")
    assert by_role(services, acc)["archive"] == roles["junk"]


def test_delete_refuses_children_even_with_remove_emails_and_keeps_the_emails(services, alice):
    mgr, acc = services.mailboxes, alice.account_id
    parent = mgr.create_mailbox(acc, "Parent")
    mgr.create_mailbox(acc, "Child", parent_id=parent.id)
    appended = mgr.append(acc, raw(), [parent.id])
    with pytest.raises(MailboxHasChild) as e:
        mgr.delete_mailbox(acc, parent.id, remove_emails=True)
    assert e.value.set_error == "mailboxHasChild"
    found, _ = mgr.get_messages(acc, [appended.id])
    assert found[appended.id].mailbox_ids == {parent.id}


def test_delete_with_emails_needs_remove_emails(services, alice):
    mgr, acc = services.mailboxes, alice.account_id
    box = mgr.create_mailbox(acc, "Box")
    mgr.append(acc, raw(), [box.id])
    with pytest.raises(MailboxHasEmail):
        mgr.delete_mailbox(acc, box.id)
    assert box.id in {mb.id for mb in mgr.get_mailboxes(acc)[0]}


def test_delete_with_remove_emails_destroys_only_emails_left_in_no_mailbox(services, alice):
    mgr, acc = services.mailboxes, alice.account_id
    box, inbox = mgr.create_mailbox(acc, "Box"), by_role(services, acc)["inbox"]
    only_here = mgr.append(acc, raw("one"), [box.id])
    also_inbox = mgr.append(acc, raw("two"), [box.id, inbox])
    mgr.delete_mailbox(acc, box.id, remove_emails=True)
    found, _ = mgr.get_messages(acc, [only_here.id, also_inbox.id])
    assert set(found) == {also_inbox.id} and found[also_inbox.id].mailbox_ids == {inbox}
    assert services.blobs.get(acc, only_here.blob_id) is None  # its message: reference is gone
    assert box.id not in {mb.id for mb in mgr.get_mailboxes(acc)[0]}
    with services.db.read() as tx:
        assert counts.recount(tx, inbox) == counts.read(tx, [inbox])[inbox]
        assert tx.value("SELECT COUNT(*) FROM mailbox_threads WHERE mailbox_id = ?", (box.id,)) == 0
    event = outbox_events(services.db)[-1]
    assert event["type"] == "MailboxDeleted"
    assert event["destroyed_message_ids"] == [only_here.id] and event["removed_message_ids"] == [also_inbox.id]


def test_the_inbox_cannot_be_deleted_and_unknown_mailboxes_are_not_found(services, alice):
    mgr, acc = services.mailboxes, alice.account_id
    with pytest.raises(Forbidden):
        mgr.delete_mailbox(acc, by_role(services, acc)["inbox"])
    with pytest.raises(NotFound):
        mgr.delete_mailbox(acc, "Bnothing")
    bob, _ = services.accounts.create_user("bob@example.org")
    with pytest.raises(NotFound):  # another account's mailbox is not found, not touched
        mgr.update_mailbox(acc, by_role(services, bob.account_id)["trash"], name="mine")


def test_subscriptions_are_per_user(services, alice):
    bob, _ = services.accounts.create_user("bob@example.org")
    services.accounts.delegate("alice@example.org", "bob@example.org")
    mgr, acc = services.mailboxes, alice.account_id
    box = mgr.create_mailbox(acc, "Shared", subscribe_user_id=alice.id)
    assert mgr.set_subscribed(acc, box.id, bob.id, True)
    assert mgr.set_subscribed(acc, box.id, alice.id, False)
    assert mgr.set_subscribed(acc, box.id, alice.id, False) == {}  # already unsubscribed: no change
    as_alice = {mb.id: mb.is_subscribed for mb in mgr.get_mailboxes(acc, user_id=alice.id)[0]}
    as_bob = {mb.id: mb.is_subscribed for mb in mgr.get_mailboxes(acc, user_id=bob.id)[0]}
    assert as_alice[box.id] is False and as_bob[box.id] is True
    assert as_bob[by_role(services, acc)["inbox"]] is False  # the owner's defaults are not the delegate's


@pytest.mark.parametrize(
    "name, expected", [(None, "inbox"), ("ARCHIVE", "archive"), ("Work/Projects", "projects"), ("nope", "inbox")]
)
def test_delivery_picks_the_mailbox_by_name_else_the_inbox(services, alice, name, expected):
    mgr, acc = services.mailboxes, alice.account_id
    work = mgr.create_mailbox(acc, "Work")
    projects = mgr.create_mailbox(acc, "Projects", parent_id=work.id)
    targets = {**by_role(services, acc), "projects": projects.id}
    delivered = mgr.deliver("alice@example.org", raw(), mailbox_name=name)
    found, _ = mgr.get_messages(acc, [delivered.message_id])
    assert found[delivered.message_id].mailbox_ids == {targets[expected]}


def test_delivery_keeps_bytes_exactly_even_when_mime_is_garbage(services, alice):
    data = b"\x00\xff\xfe not mail at all \r\n\r\n--\x80\r\n.\r\n" + bytes(range(256))
    delivered = services.mailboxes.deliver("alice@example.org", data)
    assert services.blobs.get(alice.account_id, delivered.blob_id) == data
    found, _ = services.mailboxes.get_messages(alice.account_id, [delivered.message_id])
    assert found[delivered.message_id].size == len(data)


def test_a_parser_crash_never_rejects_mail(services, alice, monkeypatch):
    from jmapmono.mailbox import manager

    def boom(raw: bytes):
        raise RecursionError("too deep")

    monkeypatch.setattr(manager, "parse_message", boom)
    data = raw("still kept")
    delivered = services.mailboxes.deliver("alice@example.org", data)
    assert services.blobs.get(alice.account_id, delivered.blob_id) == data
    with services.db.read() as tx:
        problems = tx.value("SELECT problems_json FROM messages WHERE id = ?", (delivered.message_id,))
    assert json.loads(problems) == ["unparsable: RecursionError"]


def test_unknown_recipient_is_refused(services):
    with pytest.raises(UnknownUser):
        services.mailboxes.deliver("nobody@example.org", raw())


def test_message_summary_is_stored_for_email_get(services, alice):
    data = (
        b"From: Bob <bob@example.org>\r\nTo: Alice <alice@example.org>, carol@example.org\r\n"
        b"Subject: Lunch?\r\nMessage-ID: <m1@example.org>\r\nDate: Tue, 1 Jul 2025 10:00:00 +0000\r\n"
        b"\r\nShall we meet at noon?\r\n"
    )
    delivered = services.mailboxes.deliver("alice@example.org", data)
    found, state = services.mailboxes.get_messages(alice.account_id, [delivered.message_id, "Mmissing"])
    m = found[delivered.message_id]
    assert set(found) == {delivered.message_id}
    assert m.subject == "Lunch?" and m.message_id == ["m1@example.org"] and m.sent_at == 1751364000000
    assert m.from_ == [{"name": "Bob", "email": "bob@example.org"}]
    assert [a["email"] for a in m.to] == ["alice@example.org", "carol@example.org"]
    assert m.preview.startswith("Shall we meet") and m.keywords == frozenset() and state != "0"


def test_messages_come_with_their_keywords_mailboxes_and_the_state_of_the_same_moment(services, alice):
    mgr, acc = services.mailboxes, alice.account_id
    inbox, archive = by_role(services, acc)["inbox"], by_role(services, acc)["archive"]
    first = mgr.deliver("alice@example.org", raw("one"))
    second = mgr.deliver("alice@example.org", raw("two"))
    mgr.set_keywords(acc, [first.message_id], add=["$seen", "$flagged"])
    mgr.move_messages(acc, [first.message_id], add=[archive])
    state = services.changes.state(acc, "Email")

    found, got = mgr.get_messages(acc, [first.message_id, second.message_id, "Mmissing"])
    assert got == state
    assert found[first.message_id].keywords == {"$seen", "$flagged"}
    assert found[first.message_id].mailbox_ids == {inbox, archive}
    assert found[second.message_id].keywords == frozenset() and found[second.message_id].mailbox_ids == {inbox}
    assert mgr.get_messages(acc, ["Mmissing"]) == ({}, state)  # no row to carry the state: read alone
    assert mgr.get_messages(acc, []) == ({}, state)
    many = [f"M{n}" for n in range(500)] + [second.message_id]  # more ids than one statement takes
    assert mgr.get_messages(acc, many) == ({second.message_id: found[second.message_id]}, state)
    assert mgr.get_messages(acc, iter(many)) == ({second.message_id: found[second.message_id]}, state)  # read once


def test_messages_are_read_by_one_statement_outside_any_transaction(services, alice, monkeypatch):
    delivered = services.mailboxes.deliver("alice@example.org", raw("one"))
    state = services.changes.state(alice.account_id, "Email")
    with alone_only(services.db, monkeypatch) as statements:
        found, got = services.mailboxes.get_messages(alice.account_id, [delivered.message_id])
    assert set(found) == {delivered.message_id} and got == state and len(statements) == 1


def test_mailboxes_are_read_by_one_statement_with_each_subscription(services, alice, monkeypatch):
    mgr, acc = services.mailboxes, alice.account_id
    unsubscribed = mgr.create_mailbox(acc, "Projects").id  # nobody subscribed
    state = services.changes.state(acc, "Mailbox")
    with alone_only(services.db, monkeypatch) as statements:
        mine, got = mgr.get_mailboxes(acc, user_id=alice.id)
        plain, _ = mgr.get_mailboxes(acc, ids=[unsubscribed, "Mmissing"])
    assert got == state and len(statements) == 2
    subscribed = {mb.id: mb.is_subscribed for mb in mine}
    assert subscribed.pop(unsubscribed) is False and set(subscribed.values()) == {True}
    assert [(mb.id, mb.name, mb.is_subscribed) for mb in plain] == [(unsubscribed, "Projects", None)]


def test_appends_and_updates_are_refused_per_item_with_typed_errors(services, alice):
    mgr, acc = services.mailboxes, alice.account_id
    inbox = by_role(services, acc)["inbox"]
    result = mgr.append_many(
        acc,
        [
            NewMessage(raw("ok"), [inbox], ["$Seen", "Custom"]),
            NewMessage(raw("no mailbox"), []),
            NewMessage(raw("unknown mailbox"), ["Bnope"]),
            NewMessage(raw("bad keyword"), [inbox], ["bad keyword"]),
        ],
    )
    assert set(result.created) == {0} and set(result.errors) == {1, 2, 3}
    assert all(e.set_error == "invalidProperties" for e in result.errors.values())
    ok = result.created[0].id
    assert mgr.get_messages(acc, [ok])[0][ok].keywords == {"$seen", "custom"}  # lower-cased
    updated = mgr.update_messages(
        acc,
        {
            ok: MessageUpdate(keywords=["$flagged"]),
            "Mnope": MessageUpdate(add_keywords=["$seen"]),
        },
    )
    assert updated.updated == [ok] and isinstance(updated.errors["Mnope"], NotFound)
    refused = mgr.update_messages(acc, {ok: MessageUpdate(remove_mailboxes=[inbox])})
    assert refused.errors[ok].properties == ["mailboxIds"]  # an email must stay in a mailbox
    assert mgr.get_messages(acc, [ok])[0][ok].mailbox_ids == {inbox}


def test_destroy_drops_the_blob_reference_and_reports_missing_ids(services, alice):
    mgr, acc = services.mailboxes, alice.account_id
    delivered = mgr.deliver("alice@example.org", raw())
    result = mgr.destroy_messages(acc, [delivered.message_id, "Mmissing"])
    assert result.destroyed == [delivered.message_id] and result.not_found == ["Mmissing"]
    assert services.blobs.get(acc, delivered.blob_id) is None
    assert mgr.get_messages(acc, [delivered.message_id])[0] == {}


def test_deleting_the_user_removes_the_account_mail(services, alice):
    services.mailboxes.deliver("alice@example.org", raw())
    services.accounts.delete("alice@example.org")
    with services.db.read() as tx:
        for table in ("mailboxes", "messages", "change_log", "thread_keys"):
            assert tx.value(f"SELECT COUNT(*) FROM {table} WHERE account_id = ?", (alice.account_id,)) == 0


def test_events_survive_a_json_round_trip(services, alice):
    services.mailboxes.deliver("alice@example.org", raw())
    for data in outbox_events(services.db):
        event = MailboxEvent.from_json(data)
        assert event.to_json() == data and event.account_id == alice.account_id


def test_delivery_by_name_takes_the_mailbox_made_first_of_those_so_named(services, alice, monkeypatch):
    """Two sub-mailboxes called "Reports" (under different parents): the first one made gets the mail, even
    when both were made in one millisecond."""
    mgr, acc = services.mailboxes, alice.account_id
    with one_millisecond(monkeypatch):
        parents = [mgr.create_mailbox(acc, f"Team {i}") for i in range(40)]
        reports = [mgr.create_mailbox(acc, "Reports", parent_id=p.id) for p in parents]
    delivered = mgr.deliver("alice@example.org", raw(), mailbox_name="reports")
    found, _ = mgr.get_messages(acc, [delivered.message_id])
    assert found[delivered.message_id].mailbox_ids == {reports[0].id}

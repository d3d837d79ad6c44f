"""Mailbox counts (totalEmails, unreadEmails, totalThreads, unreadThreads): exact after each kind of
mutation, equal to a recount after a long random sequence, and the inbox view reads an index."""

import random

import pytest

from jmapmono.mailbox import counts
from jmapmono.mailbox.model import Counts, MessageUpdate


def mail(subject: str, msgid: str, in_reply_to: str | None = None) -> bytes:
    head = f"From: bob@example.org\r\nSubject: {subject}\r\nMessage-ID: <{msgid}>\r\n"
    if in_reply_to:
        head += f"In-Reply-To: <{in_reply_to}>\r\n"
    return (head + "\r\nbody\r\n").encode()


@pytest.fixture
def acc(services):
    user, _ = services.accounts.create_user("alice@example.org")
    return user.account_id


def roles(services, acc) -> dict:
    return {mb.role: mb.id for mb in services.mailboxes.get_mailboxes(acc)[0] if mb.role}


def count(services, acc, mailbox_id) -> Counts:
    return {mb.id: mb.counts for mb in services.mailboxes.get_mailboxes(acc)[0]}[mailbox_id]


def test_counts_follow_deliveries_keywords_moves_and_destroys(services, acc):
    mgr, r = services.mailboxes, roles(services, acc)
    inbox, archive = r["inbox"], r["archive"]
    a = mgr.deliver("alice@example.org", mail("Topic", "a@x")).message_id
    b = mgr.deliver("alice@example.org", mail("Re: Topic", "b@x", in_reply_to="a@x")).message_id
    c = mgr.deliver("alice@example.org", mail("Other", "c@x")).message_id
    assert count(services, acc, inbox) == Counts(3, 3, 2, 2)
    mgr.set_keywords(acc, [a, c], add=["$seen"])
    assert count(services, acc, inbox) == Counts(3, 1, 2, 1)  # thread a/b still has unread b
    mgr.set_keywords(acc, [b], add=["$draft"])  # drafts do not count as unread
    assert count(services, acc, inbox) == Counts(3, 0, 2, 0)
    mgr.set_keywords(acc, [a, b, c], remove=["$seen", "$draft"])
    mgr.move_messages(acc, [b], add=[archive])  # copy: in both
    assert count(services, acc, inbox) == Counts(3, 3, 2, 2)
    assert count(services, acc, archive) == Counts(1, 1, 1, 1)
    mgr.move_messages(acc, [a], add=[archive], remove=[inbox])  # move
    assert count(services, acc, inbox) == Counts(2, 2, 2, 2)
    assert count(services, acc, archive) == Counts(2, 2, 1, 1)
    mgr.destroy_messages(acc, [b, c])
    assert count(services, acc, inbox) == Counts(0, 0, 0, 0)
    assert count(services, acc, archive) == Counts(1, 1, 1, 1)


def test_counts_equal_a_recount_after_random_mutations(services, acc):
    rng = random.Random(8621)
    mgr = services.mailboxes
    boxes = list(roles(services, acc).values()) + [mgr.create_mailbox(acc, f"F{i}").id for i in range(2)]
    live: list[str] = []
    for step in range(70):
        op = rng.random()
        if op < 0.35 or len(live) < 3:
            parent = rng.choice(live) if live and rng.random() < 0.5 else None
            found = mgr.get_messages(acc, [parent])[0] if parent else {}
            reply_to = found[parent].message_id[0] if parent else None
            targets = rng.sample(boxes, rng.randint(1, 2))
            keywords = rng.sample(["$seen", "$draft", "$flagged"], rng.randint(0, 2))
            m = mgr.append(acc, mail("Re: s" if reply_to else "s", f"{step}@x", reply_to), targets, keywords)
            live.append(m.id)
        elif op < 0.6:
            chosen = rng.sample(live, min(len(live), rng.randint(1, 4)))
            mgr.set_keywords(acc, chosen, add=rng.sample(["$seen", "$draft"], 1), remove=rng.sample(["$seen"], 1))
        elif op < 0.85:
            updates = {i: MessageUpdate(mailbox_ids=rng.sample(boxes, rng.randint(1, 3))) for i in rng.sample(live, 2)}
            mgr.update_messages(acc, updates)
        else:
            gone = rng.sample(live, min(len(live), 2))
            mgr.destroy_messages(acc, gone)
            live = [i for i in live if i not in gone]
    with services.db.read() as tx:
        for mailbox_id in boxes:
            assert counts.read(tx, [mailbox_id])[mailbox_id] == counts.recount(tx, mailbox_id), mailbox_id
    assert sum(count(services, acc, b).total_emails for b in boxes) > 0


def test_inbox_view_reads_the_membership_index(services, acc, backend):
    """Newest-first listing of one mailbox must come from (mailbox_id, received_at) without a scan or a sort."""
    sql = "SELECT message_id FROM message_mailboxes WHERE mailbox_id = ? ORDER BY received_at DESC, message_id LIMIT 50"
    inbox = roles(services, acc)["inbox"]
    with services.db.read() as tx:
        if backend == "sqlite":
            plan = " ".join(str(r["detail"]) for r in tx.query("EXPLAIN QUERY PLAN " + sql, (inbox,)))
            assert "message_mailboxes_view" in plan and "TEMP B-TREE" not in plan, plan
        else:
            for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):  # a tiny table: force the choice
                tx.execute(f"SET LOCAL {setting} = off")
            plan = " ".join(r["QUERY PLAN"] for r in tx.query("EXPLAIN " + sql.replace("?", "'x'")))
            assert "message_mailboxes_view" in plan and "Sort" not in plan, plan

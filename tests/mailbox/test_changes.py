"""The change log: state tokens, */changes paging with small maxChanges (created-then-updated and
created-then-destroyed traps), cannotCalculateChanges, count-only windows, pruning, and gap-free
commit-ordered sequences under concurrent deliveries — on both backends."""

import gevent
import pytest

from jmapmono.mailbox import changes, counts
from jmapmono.mailbox.changes import CannotCalculateChanges, ChangeLog
from tests.support.statements import alone_only
from tests.support.waiting import wait_until

ACC = "acc1"


@pytest.fixture(params=[500, 2], ids=["whole-window", "in-batches"])
def log(db, request, monkeypatch) -> ChangeLog:
    """With the real batch, each window here comes with its head in one statement; with batches of 2, the
    longer ones are read batch after batch in a transaction: the answers must not differ."""
    monkeypatch.setattr(changes, "_BATCH", request.param)
    return ChangeLog(db)


def rec(db, type: str = "Email", **kinds) -> str:
    with db.transaction() as tx:
        changes.lock(tx, ACC)
        return changes.record(tx, ACC, type, **kinds)


def page_all(log: ChangeLog, since: str, max_changes: int, type: str = "Email") -> list:
    pages = []
    for _ in range(100):
        c = log.changes_since(ACC, type, since, max_changes)
        assert len(c.created) + len(c.updated) + len(c.destroyed) <= max_changes
        pages.append(c)
        since = c.new_state
        if not c.has_more_changes:
            return pages
    raise AssertionError("paging never ended")


@pytest.mark.parametrize("seq", [0, 1, 35, 36, 1295, 10**12])
def test_tokens_round_trip(seq):
    assert changes.parse_token(changes.token(seq)) == seq


@pytest.mark.parametrize("bad", ["", "-1", "A", "00", "01", "x y", None, 5, "z" * 14])
def test_foreign_tokens_are_not_parsed(bad):
    assert changes.parse_token(bad) is None


def test_first_state_is_zero_and_record_moves_only_its_type(db, log):
    assert log.states(ACC) == {t: "0" for t in changes.TYPES}
    state = rec(db, created=["a"])
    assert log.state(ACC, "Email") == state != "0"
    assert log.state(ACC, "Mailbox") == "0"
    assert rec(db) is None  # nothing to record: no new state
    assert log.state(ACC, "Email") == state


@pytest.mark.parametrize(
    "steps, created, updated, destroyed",
    [
        ([{"created": ["a"]}, {"updated": ["a"]}], ["a"], [], []),  # created then updated: created only
        ([{"created": ["a"]}, {"destroyed": ["a"]}], [], [], []),  # created then destroyed: neither
        ([{"updated": ["a"]}, {"destroyed": ["a"]}], [], [], ["a"]),
        ([{"updated": ["a"]}, {"updated": ["a"]}], [], ["a"], []),
        ([{"created": ["a", "b"], "updated": ["a"]}], ["a", "b"], [], []),
        ([{"created": ["a"]}, {"updated": ["b"], "destroyed": ["c"]}], ["a"], ["b"], ["c"]),
    ],
)
def test_window_classification(db, log, steps, created, updated, destroyed):
    for step in steps:
        rec(db, **step)
    c = log.changes_since(ACC, "Email", "0")
    assert (c.created, c.updated, c.destroyed) == (created, updated, destroyed)
    assert c.old_state == "0" and c.new_state == log.state(ACC, "Email") and not c.has_more_changes


def test_paging_reports_creations_in_created_even_when_updated_later(db, log):
    rec(db, created=["x"])
    rec(db, created=["y"])
    rec(db, updated=["x"])
    rec(db, created=["z"], destroyed=["y"])
    pages = page_all(log, "0", 1)
    assert [(p.created, p.updated, p.destroyed) for p in pages] == [
        (["x"], [], []),
        (["y"], [], []),
        ([], ["x"], []),  # the update comes after the page that created it
        (["z"], [], []),
        ([], [], ["y"]),
    ]
    assert [p.has_more_changes for p in pages] == [True, True, True, True, False]
    two = log.changes_since(ACC, "Email", "0", 2)
    assert (two.created, two.updated, two.has_more_changes) == (["x", "y"], [], True)  # x's update rides along
    rest = log.changes_since(ACC, "Email", two.new_state, 2)
    assert (rest.created, rest.updated, rest.destroyed, rest.has_more_changes) == (["z"], [], ["y"], False)


def test_every_intermediate_state_answers(db, log):
    rec(db, created=["a", "b", "c"])  # one transaction, three seqs
    c = log.changes_since(ACC, "Email", "0", 2)
    assert c.created == ["a", "b"] and c.has_more_changes
    assert log.changes_since(ACC, "Email", c.new_state).created == ["c"]


@pytest.mark.parametrize("since", ["nonsense", "ZZ", "", "zzzzzz"])
def test_unknown_or_future_states_cannot_be_calculated(db, log, since):
    rec(db, created=["a"])
    with pytest.raises(CannotCalculateChanges):
        log.changes_since(ACC, "Email", since)


def test_up_to_date_and_other_types_points_in_time(db, log):
    s1 = rec(db, created=["a"])
    s2 = rec(db, "Mailbox", created=["m"])  # a later point in time the Email log never had
    assert log.changes_since(ACC, "Email", s1) == changes.Changes(s1, s1, False)
    c = log.changes_since(ACC, "Email", s2)
    assert (c.created, c.new_state) == ([], s1)


def test_count_only_windows(db, log):
    base = rec(db, "Mailbox", created=["m1", "m2"])
    rec(db, "Mailbox", count_only=["m1"])
    rec(db, "Mailbox", updated=["m2"], count_only=True)
    assert log.changes_since(ACC, "Mailbox", base).count_only_updates
    rec(db, "Mailbox", updated=["m1"])  # a rename: not count-only
    c = log.changes_since(ACC, "Mailbox", base)
    assert c.updated == ["m1", "m2"] and not c.count_only_updates
    assert not log.changes_since(ACC, "Mailbox", "0").count_only_updates  # creations are not count changes


def test_a_window_is_one_statement_alone_with_its_head(db, monkeypatch):
    log = ChangeLog(db)
    first = rec(db, created=["a", "b"])
    rec(db, updated=["a"], destroyed=["b"])
    rec(db, "Mailbox", created=["m"])
    with alone_only(db, monkeypatch) as statements:
        c = log.changes_since(ACC, "Email", first)
        up_to_date = log.changes_since(ACC, "Email", c.new_state)
        empty = log.changes_since("nobody", "Email", "0")
    assert len(statements) == 3
    assert (c.created, c.updated, c.destroyed, c.has_more_changes) == ([], ["a"], ["b"], False)
    assert up_to_date == changes.Changes(c.new_state, c.new_state, False)
    assert empty == changes.Changes("0", "0", False)


def test_prune_keeps_recent_states_answerable(db, log):
    old = rec(db, created=["a"])
    rec(db, "Mailbox", created=["m"])
    with db.transaction() as tx:
        tx.execute("UPDATE change_log SET created_at = 1 WHERE account_id = ?", (ACC,))
    recent = rec(db, created=["b"])
    assert log.prune(older_than_ms=1000) == 2
    with pytest.raises(CannotCalculateChanges):
        log.changes_since(ACC, "Email", "0")
    assert log.changes_since(ACC, "Email", old).created == ["b"]
    assert log.changes_since(ACC, "Email", recent).created == []
    assert log.changes_since(ACC, "Mailbox", log.state(ACC, "Mailbox")).created == []
    rec(db, created=["c"])
    assert log.prune_expired() == 0  # default retention: 30 days, nothing that old is left
    assert log.changes_since(ACC, "Email", old).created == ["b", "c"]


def test_concurrent_deliveries_give_gap_free_commit_ordered_seqs(services):
    """Several greenlets deliver to one account while a reader pages Email/changes with maxChanges 3:
    the reader sees every email exactly once in `created`, and the sequence has no holes."""
    user, _ = services.accounts.create_user("alice@example.org")
    acc, log = user.account_id, services.changes
    services.mailboxes.deliver("alice@example.org", b"Subject: topic\r\nMessage-ID: <root@x>\r\n\r\nroot\r\n")
    start = log.state(acc, "Email")
    writers, per_writer = 6, 8
    delivered: list[str] = []

    def write(n: int) -> None:
        for i in range(per_writer):
            # all in one thread: its per-mailbox counters are one row every writer updates
            raw = f"Subject: Re: topic\r\nMessage-ID: <{n}.{i}@x>\r\nIn-Reply-To: <root@x>\r\n\r\nbody\r\n".encode()
            delivered.append(services.mailboxes.deliver("alice@example.org", raw).message_id)

    seen: list[str] = []
    done = False

    def read() -> None:
        since = start

        def caught_up() -> bool:  # one page; the writers run between pages
            nonlocal since
            finished = done  # read before paging: a last pass after the writers ended sees everything
            c = log.changes_since(acc, "Email", since, 3)
            assert not c.updated and not c.destroyed
            seen.extend(c.created)
            since = c.new_state
            return finished and not c.has_more_changes

        wait_until(caught_up, timeout=60, interval=0, message="the reader to catch up")

    reader = gevent.spawn(read)
    gevent.joinall([gevent.spawn(write, n) for n in range(writers)], raise_error=True)
    done = True
    reader.get(timeout=60)
    assert len(delivered) == writers * per_writer
    assert sorted(seen) == sorted(delivered) and len(set(seen)) == len(seen)
    with services.db.read() as tx:
        seqs = [r["seq"] for r in tx.query("SELECT seq FROM change_log WHERE account_id = ? ORDER BY seq", (acc,))]
        last = tx.value("SELECT last FROM account_changes WHERE account_id = ?", (acc,))
        inbox = tx.value("SELECT id FROM mailboxes WHERE account_id = ? AND role = 'inbox'", (acc,))
        assert counts.read(tx, [inbox])[inbox] == counts.recount(tx, inbox)  # no lost count update either
        stored = tx.query("SELECT thread_id, emails FROM mailbox_threads WHERE mailbox_id = ?", (inbox,))
        actual = tx.query(
            "SELECT thread_id, COUNT(*) AS emails FROM message_mailboxes WHERE mailbox_id = ? GROUP BY thread_id",
            (inbox,),
        )
        assert {r["thread_id"]: r["emails"] for r in stored} == {r["thread_id"]: r["emails"] for r in actual}
    assert seqs == list(range(1, last + 1))

"""The sync proof: a client replica built only from ``*/changes`` + ``*/get`` always matches the server.

A hypothesis state machine mixes every way mail changes (deliveries and replies that grow threads,
keyword and mailbox patches in bulk, email destruction, drafts, imports, mailbox creation, renaming,
moving and destruction with and without ``onDestroyRemoveEmails``) with a sync step: the replica pages
through Mailbox/Email/Thread changes with maxChanges 1–3, then must equal a fresh full fetch, property
for property, state for state (tests/support/replica.py). Mail also changes between the pages of a sync,
and a second replica, offline all along, catches up once at the end over long windows. Each example
runs on a new database through the JMAP API (tests/support/sync_world.py), on SQLite and on Postgres.

Two regression tests pin traps a reference server falls into: a mailbox destruction must not make older
Email states unanswerable, and paging must never report a creation only as an update.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

from tests.support.emails import upload
from tests.support.jmap import JmapClient
from tests.support.replica import Replica, consistency_problems, differences, page_all, snapshot
from tests.support.sync_world import AccountDriver, World, draft, pick, raw_message, world_factory

EMAIL = "alice@example.org"
#: "work" and "Work" collide: sibling names are unique case-insensitively (alreadyExists).
MAILBOX_NAMES = ["Work", "Lists", "Old", "Travel", "work"]
KEYWORDS = ["$seen", "$flagged"]
DATES = [None, "2020-01-01T10:00:00Z", "2021-06-15T08:30:00Z", "2040-01-01T00:00:00Z"]
PICK = st.integers(0, 99)
#: What the state machine's syncs went through in this run (printed by the test: is it doing real work?).
TOTALS: Counter[str] = Counter()
SETTINGS = settings(
    max_examples=20,
    stateful_step_count=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.fixture
def new_world(backend: str, database_url: str, tmp_path: Path) -> Callable[[], World]:
    """A factory of fresh servers for the examples (see :func:`world_factory`)."""
    return world_factory(backend, database_url, tmp_path, EMAIL)


def _tracked(fn: Callable) -> Callable:
    """Marks the machine unclean while a step runs, so that teardown checks only after steps that passed."""

    @functools.wraps(fn)
    def step(self: SyncMachine, *args: Any, **kwargs: Any) -> Any:
        self.clean = False
        result = fn(self, *args, **kwargs)
        self.clean = True
        return result

    return step


class SyncMachine(AccountDriver, RuleBasedStateMachine):
    """Random mail changes against a real server, with a replica that must keep up (see the module doc)."""

    def __init__(self, new_world: Callable[[], World]) -> None:
        super().__init__()
        self.drive(new_world())
        self.clean = True
        for reply in (None, None, 0, None):  # the account has mail, a thread of two, when the clients first sync
            self._deliver_one(reply, None)
        self.replica = Replica(self.client)
        self.replica.load()
        #: A client that was offline the whole time: it syncs once, at the end, over long windows.
        self.offline = Replica(self.client)
        self.offline.load()

    def teardown(self) -> None:
        try:
            if self.clean:
                self._check_sync(1)
                self.offline.sync(2)
                problems = differences(self.offline.view, self.replica.view)
                assert not problems, "the offline replica differs from the server:\n" + "\n".join(problems)
        finally:
            self.world.close()

    # -- mail arrives -------------------------------------------------------------------------------------------

    @rule(count=st.integers(1, 2), reply=st.none() | PICK, into=st.none() | PICK)
    @_tracked
    def deliver(self, count: int, reply: int | None, into: int | None) -> None:
        name = None if into is None else pick(self._live_mailboxes(), into)["name"]
        for _ in range(count):
            self._deliver_one(reply, name)

    @rule(
        count=st.integers(1, 2),
        where=st.none() | PICK,
        reply=st.none() | PICK,
        seen=st.booleans(),
        date=st.sampled_from(DATES),
        discard=st.booleans(),
    )
    @_tracked
    def create_draft(
        self, count: int, where: int | None, reply: int | None, seen: bool, date: str | None, discard: bool
    ) -> None:
        """Email/set create of 1-2 drafts in one call; ``discard``: the same call destroys the first again."""
        mailbox = self._role("drafts") if where is None else None
        mailbox = mailbox or pick(self._live_mailboxes(), where or 0)["id"]
        create, learned = {}, {}
        for k in range(count):
            message_id, subject, parents = self._new_message(reply)
            obj = draft(mailbox, message_id, subject, parents, seen)
            if date is not None:
                obj["receivedAt"] = date
            create[f"d{k}"] = obj
            learned[f"d{k}"] = (message_id, subject)
        result = self._set("Email/set", {"create": create, **({"destroy": ["#d0"]} if discard else {})})
        assert result["notCreated"] is None and result["notDestroyed"] is None, result
        for key, (message_id, subject) in learned.items():
            self._learn(result["created"][key]["id"], message_id, subject)
        assert (result["destroyed"] or []) == ([result["created"]["d0"]["id"]] if discard else []), result

    @rule(
        where=st.lists(PICK, min_size=1, max_size=2),
        reply=st.none() | PICK,
        seen=st.booleans(),
        date=st.sampled_from(DATES),
    )
    @_tracked
    def import_email(self, where: list[int], reply: int | None, seen: bool, date: str | None) -> None:
        mailboxes = self._live_mailboxes()
        message_id, subject, parents = self._new_message(reply)
        blob = upload(self.client, raw_message(message_id, subject, parents), "message/rfc822")
        obj: dict[str, Any] = {
            "blobId": blob,
            "mailboxIds": {pick(mailboxes, w)["id"]: True for w in where},
            "keywords": {"$seen": True} if seen else {},
        }
        if date is not None:
            obj["receivedAt"] = date
        result = self._set("Email/import", {"emails": {"i": obj}})
        assert result["notCreated"] is None, result
        self._learn(result["created"]["i"]["id"], message_id, subject)

    # -- emails change --------------------------------------------------------------------------------------------

    @rule(
        picks=st.lists(PICK, min_size=1, max_size=4),
        keyword=st.sampled_from(KEYWORDS),
        on=st.booleans(),
        whole=st.booleans(),
    )
    @_tracked
    def set_keyword(self, picks: list[int], keyword: str, on: bool, whole: bool) -> None:
        ids = self._targets(picks)
        if not ids:
            return
        if whole:
            patch: dict[str, Any] = {"keywords": {keyword: True} if on else {}}
        else:
            patch = {f"keywords/{keyword}": True if on else None}
        result = self._set("Email/set", {"update": {i: patch for i in ids}})
        assert set(result["updated"] or {}) == set(ids) and result["notUpdated"] is None, result

    @rule(
        picks=st.lists(PICK, min_size=1, max_size=3),
        to=PICK,
        mode=st.sampled_from(["move", "add", "remove", "replace"]),
    )
    @_tracked
    def move_emails(self, picks: list[int], to: int, mode: str) -> None:
        ids = self._targets(picks)
        if not ids:
            return
        dest = pick(self._live_mailboxes(), to)["id"]
        current = {
            e["id"]: sorted(e["mailboxIds"])
            for e in self.client.call("Email/get", {"ids": ids, "properties": ["mailboxIds"]})["list"]
        }
        update, refused = {}, set()
        for i in ids:
            first = current[i][0]
            if mode == "move":
                update[i] = {f"mailboxIds/{dest}": True, **({f"mailboxIds/{first}": None} if first != dest else {})}
            elif mode == "add":
                update[i] = {f"mailboxIds/{dest}": True}
            elif mode == "remove":
                update[i] = {f"mailboxIds/{first}": None}
                if current[i] == [first]:
                    refused.add(i)  # an email is in at least one mailbox
            else:
                update[i] = {"mailboxIds": {dest: True}}
        result = self._set("Email/set", {"update": update})
        not_updated = result["notUpdated"] or {}
        assert set(not_updated) == refused, result
        assert all(e["type"] == "invalidProperties" for e in not_updated.values()), result
        assert set(result["updated"] or {}) == set(ids) - refused, result

    @rule(picks=st.lists(PICK, min_size=1, max_size=3), gone=st.none() | PICK)
    @_tracked
    def destroy_emails(self, picks: list[int], gone: int | None) -> None:
        ids = self._targets(picks)
        live = set(self._live_emails())
        dead = [e for e in self.emails if e not in live]
        missing = [pick(dead, gone)] if gone is not None and dead else []
        if not ids and not missing:
            return
        result = self._set("Email/set", {"destroy": ids + missing})
        assert sorted(result["destroyed"] or []) == sorted(ids), result
        assert set(result["notDestroyed"] or {}) == set(missing), result
        assert all(e["type"] == "notFound" for e in (result["notDestroyed"] or {}).values())

    @rule(which=PICK)
    @_tracked
    def stale_if_in_state(self, which: int) -> None:
        """A write guarded by a state that has moved on changes nothing."""
        before = snapshot(self.client).states
        error = self.client.error("Email/set", {"ifInState": "1", "destroy": [pick(self.emails, which)]})
        assert error["type"] == "stateMismatch", error
        assert snapshot(self.client).states == before

    # -- mailboxes change ---------------------------------------------------------------------------------------------

    @rule(
        which=PICK,
        name=st.none() | st.sampled_from(MAILBOX_NAMES),
        parent=st.none() | st.just(-1) | PICK,
        subscribed=st.none() | st.booleans(),
        order=st.none() | st.integers(0, 3),
    )
    @_tracked
    def update_mailbox(
        self, which: int, name: str | None, parent: int | None, subscribed: bool | None, order: int | None
    ) -> None:
        """A patch renaming, moving (-1: to the top), (un)subscribing and re-ordering a mailbox, or some of it."""
        mailboxes = self._live_mailboxes()
        mailbox = pick(mailboxes, which)["id"]
        patch = {"name": name, "isSubscribed": subscribed, "sortOrder": order}
        patch = {k: v for k, v in patch.items() if v is not None}
        if parent is not None:
            patch["parentId"] = None if parent < 0 else pick(mailboxes, parent)["id"]
        result = self._set("Mailbox/set", {"update": {mailbox: patch}})
        if not result["updated"]:
            assert result["notUpdated"][mailbox]["type"] in ("alreadyExists", "invalidProperties"), result

    @rule(picks=st.lists(PICK, min_size=1, max_size=2), remove_emails=st.booleans())
    @_tracked
    def destroy_mailboxes(self, picks: list[int], remove_emails: bool) -> None:
        """Mailbox/set destroy of one or two mailboxes (a parent with its child, say) in one call."""
        everything = self._live_mailboxes()
        mailboxes = [m for m in everything if m["role"] != "inbox"]
        if not mailboxes:
            return
        chosen = list({m["id"]: m for m in (pick(mailboxes, p) for p in picks)}.values())
        ids = [m["id"] for m in chosen]
        result = self._set("Mailbox/set", {"destroy": ids, "onDestroyRemoveEmails": remove_emails})
        refused, destroyed = result["notDestroyed"] or {}, set(result["destroyed"] or [])
        assert sorted([*destroyed, *refused]) == sorted(ids), result
        for m in chosen:
            children = {c["id"] for c in everything if c["parentId"] == m["id"]}
            if m["id"] in refused:
                expected = "mailboxHasChild" if children - destroyed else "mailboxHasEmail"
                assert refused[m["id"]]["type"] == expected, result
                assert expected == "mailboxHasChild" or (m["totalEmails"] and not remove_emails), result
            else:
                assert not children - destroyed, result
                assert remove_emails or not m["totalEmails"], result

    @rule(name=st.sampled_from(MAILBOX_NAMES), picks=st.lists(PICK, min_size=1, max_size=3))
    @_tracked
    def file_into_new_mailbox(self, name: str, picks: list[int]) -> None:
        """One request: Mailbox/set creates a mailbox, Email/set files emails into it by ``#creationId``."""
        ids = self._targets(picks)
        account = self.client.account_id
        self.seen = None
        (_, made, _), (name2, filed, _) = self.client.responses(
            [
                ["Mailbox/set", {"accountId": account, "create": {"f": {"name": name}}}, "m"],
                ["Email/set", {"accountId": account, "update": {i: {"mailboxIds/#f": True} for i in ids}}, "e"],
            ]
        )
        assert name2 == "Email/set", filed
        if made["created"]:
            self.mailboxes.append(made["created"]["f"]["id"])
            assert set(filed["updated"] or {}) == set(ids) and filed["notUpdated"] is None, filed
        else:
            assert made["notCreated"]["f"]["type"] == "alreadyExists", made
            assert filed["updated"] is None and set(filed["notUpdated"] or {}) == set(ids), filed

    @rule(
        name=st.sampled_from(MAILBOX_NAMES),
        parent=st.none() | PICK,
        move=st.none() | PICK,
        doomed=st.none() | PICK,
        remove_emails=st.booleans(),
    )
    @_tracked
    def create_mailbox(
        self, name: str, parent: int | None, move: int | None, doomed: int | None, remove_emails: bool
    ) -> None:
        """ONE Mailbox/set creating a mailbox, maybe moving another under it by ``#creationId`` and destroying a
        third (with or without their emails)."""
        mailboxes = self._live_mailboxes()
        parent_id = None if parent is None else pick(mailboxes, parent)["id"]
        args: dict[str, Any] = {"create": {"c": {"name": name, "parentId": parent_id}}}
        moved = [] if move is None else [pick(mailboxes, move)["id"]]
        if moved:
            args["update"] = {moved[0]: {"parentId": "#c"}}
        others = [m["id"] for m in mailboxes if m["role"] != "inbox" and m["id"] not in moved]
        gone = [] if doomed is None or not others else [pick(others, doomed)]
        if gone:
            args.update(destroy=gone, onDestroyRemoveEmails=remove_emails)
        result = self._set("Mailbox/set", args)
        if result["created"]:
            self.mailboxes.append(result["created"]["c"]["id"])
        else:
            assert result["notCreated"]["c"]["type"] in ("alreadyExists", "invalidProperties"), result
        assert set(result["updated"] or {}) | set(result["notUpdated"] or {}) == set(moved), result
        assert set(result["destroyed"] or []) | set(result["notDestroyed"] or {}) == set(gone), result

    @rule(source=PICK, other=PICK, shared=st.lists(st.booleans(), min_size=1, max_size=6))
    @_tracked
    def destroy_mailbox_shared(self, source: int, other: int, shared: list[bool]) -> None:
        """Destroy (removing emails) a mailbox some of whose emails are also in another one."""
        mailboxes = self._live_mailboxes()
        leaves = [m for m in mailboxes if m["role"] != "inbox" and not any(c["parentId"] == m["id"] for c in mailboxes)]
        if not leaves:
            return
        mailbox = pick(leaves, source)["id"]
        keep = pick([m for m in mailboxes if m["id"] != mailbox], other)["id"]
        inside = self.client.call("Email/query", {"filter": {"inMailbox": mailbox}})["ids"]
        if not inside:
            live = self._live_emails()
            if not live:
                return
            inside = live[: len(shared)]
            self._set("Email/set", {"update": {i: {f"mailboxIds/{mailbox}": True} for i in inside}})
        inside = [i for i in self.emails if i in set(inside)]
        also = [i for i, s in zip(inside, shared, strict=False) if s]
        if also:
            self._set("Email/set", {"update": {i: {f"mailboxIds/{keep}": True} for i in also}})
        now = {
            e["id"]: e["mailboxIds"]
            for e in self.client.call("Email/get", {"ids": inside, "properties": ["mailboxIds"]})["list"]
        }
        result = self._set("Mailbox/set", {"destroy": [mailbox], "onDestroyRemoveEmails": True})
        assert result["destroyed"] == [mailbox], result
        after = self.client.call("Email/get", {"ids": inside, "properties": ["mailboxIds"]})
        survivors = {e["id"]: e["mailboxIds"] for e in after["list"]}
        assert set(survivors) == {i for i, m in now.items() if set(m) != {mailbox}}
        assert all(mailbox not in m for m in survivors.values())

    # -- the client syncs ---------------------------------------------------------------------------------------------

    def _check_sync(self, max_changes: int, between: Callable[[int], None] | None = None) -> None:
        stats = self.replica.sync(max_changes, between)
        TOTALS.update(syncs=1, pages=sum(stats.pages.values()), changed=stats.created + stats.updated + stats.destroyed)
        server = snapshot(self.client)
        problems = differences(self.replica.view, server)
        assert not problems, "the replica differs from the server:\n" + "\n".join(problems)
        problems = consistency_problems(server)
        assert not problems, "the server's view is inconsistent:\n" + "\n".join(problems)

    @rule(max_changes=st.integers(1, 3))
    @_tracked
    def sync(self, max_changes: int) -> None:
        self._check_sync(max_changes)

    @rule()
    @_tracked
    def sync_one_by_one(self) -> None:
        self._check_sync(1)

    @rule(
        max_changes=st.integers(1, 2),
        changes=st.lists(
            st.tuples(st.sampled_from(["deliver", "flag", "destroy", "move", "rename"]), PICK), min_size=1, max_size=3
        ),
    )
    @_tracked
    def sync_while_mail_changes(self, max_changes: int, changes: list[tuple[str, int]]) -> None:
        """Mail changes between the pages of a sync: every page stays coherent, and the next sync (the one a
        push would trigger) ends equal to the server."""
        pending = list(changes)

        def between(_round: int) -> None:
            if pending:
                self._change(*pending.pop(0))

        self.replica.sync(max_changes, between)
        self._check_sync(max_changes)

    def _change(self, kind: str, index: int) -> None:
        live = self._live_emails()
        if kind == "deliver" or not live:
            self._deliver_one(index if index % 2 else None, None)
        elif kind == "flag":
            self._set("Email/set", {"update": {pick(live, index): {"keywords/$seen": bool(index % 2) or None}}})
        elif kind == "destroy":
            self._set("Email/set", {"destroy": [pick(live, index)]})
        elif kind == "move":
            mailbox = pick(self._live_mailboxes(), index)["id"]
            self._set("Email/set", {"update": {pick(live, index): {f"mailboxIds/{mailbox}": True}}})
        else:
            mailbox = pick(self._live_mailboxes(), index)["id"]
            self._set("Mailbox/set", {"update": {mailbox: {"name": f"Renamed {self.n}-{index}"}}})
            self.n += 1


@pytest.mark.timeout(480)  # a failure is shrunk for up to 300 s more: keep its minimal example, not a timeout
def test_replica_built_from_changes_matches_the_server(new_world: Callable[[], World], backend: str) -> None:
    TOTALS.clear()
    run_state_machine_as_test(lambda: SyncMachine(new_world), settings=SETTINGS)
    print(
        f"sync state machine on {backend}: {TOTALS['syncs']} syncs checked, "
        f"{TOTALS['pages']} */changes pages, {TOTALS['changed']} ids reported"
    )


# --- regression tests: traps a reference server falls into -----------------------------------------------------------


def _states(client: JmapClient) -> dict[str, str]:
    return snapshot(client).states


def _deliver(services: Any, subject: str, message_id: str, parent: str | None = None) -> str:
    return services.mailboxes.deliver(EMAIL, raw_message(message_id, subject, [parent] if parent else [])).message_id


def test_destroying_a_mailbox_keeps_older_email_states_answerable(services: Any, alice: JmapClient) -> None:
    """Email/changes from before a mailbox was destroyed answers exactly, it never asks for a full resync."""
    only_there, also_inbox, untouched = (_deliver(services, f"Topic {i}", f"keep{i}@sync.test") for i in range(3))
    made = alice.call("Mailbox/set", {"create": {"p": {"name": "Project"}}})["created"]["p"]["id"]
    inbox = next(m["id"] for m in alice.call("Mailbox/get", {"ids": None})["list"] if m["role"] == "inbox")
    alice.call(
        "Email/set",
        {"update": {only_there: {"mailboxIds": {made: True}}, also_inbox: {f"mailboxIds/{made}": True}}},
    )
    replica = Replica(alice)
    replica.load()
    before = replica.view.states
    thread_of = {i: e["threadId"] for i, e in replica.view.objects["Email"].items()}
    assert len({thread_of[i] for i in (only_there, also_inbox, untouched)}) == 3
    empty = alice.call("Mailbox/set", {"create": {"e": {"name": "Empty"}}})["created"]["e"]["id"]
    alice.call("Mailbox/set", {"destroy": [empty]})
    between = _states(alice)
    result = alice.call("Mailbox/set", {"destroy": [made], "onDestroyRemoveEmails": True})
    assert result["destroyed"] == [made]

    whole = alice.call("Email/changes", {"sinceState": before["Email"]})
    assert (whole["created"], whole["updated"], whole["destroyed"]) == ([], [also_inbox], [only_there])
    assert whole["newState"] == _states(alice)["Email"] and whole["hasMoreChanges"] is False
    assert page_all(alice, "Email", before["Email"], 1)[-1]["newState"] == whole["newState"]
    # Destroying an empty mailbox changed no email: the Email state did not move.
    assert between["Email"] == before["Email"]
    mailboxes = alice.call("Mailbox/changes", {"sinceState": before["Mailbox"]})
    # "Empty" came and went inside the window: in no list.
    assert (mailboxes["created"], mailboxes["updated"], mailboxes["destroyed"]) == ([], [], [made])
    threads = alice.call("Thread/changes", {"sinceState": before["Thread"]})
    assert (threads["created"], threads["updated"], threads["destroyed"]) == ([], [], [thread_of[only_there]])
    survivor = alice.call("Email/get", {"ids": [also_inbox, only_there], "properties": ["mailboxIds"]})
    assert survivor["list"] == [{"id": also_inbox, "mailboxIds": {inbox: True}}]
    assert survivor["notFound"] == [only_there]
    # A client that last synced before the destruction catches up through */changes alone.
    replica.sync(1)
    assert not differences(replica.view, snapshot(alice))


def test_paging_never_reports_a_creation_only_as_an_update(services: Any, alice: JmapClient) -> None:
    """With maxChanges 1, an email created in one page's window and changed later is still in ``created``."""
    before = _states(alice)
    drafts = next(m["id"] for m in alice.call("Mailbox/get", {"ids": None})["list"] if m["role"] == "drafts")
    first = _deliver(services, "Plans", "plans@sync.test")
    # Two drafts in ONE call: one transaction, so a page boundary falls inside it.
    create = {k: draft(drafts, f"{k}@sync.test", f"Draft {k}", []) for k in "ab"}
    created = alice.call("Email/set", {"create": create})["created"]
    a, b = created["a"]["id"], created["b"]["id"]
    alice.call("Email/set", {"update": {first: {"keywords/$seen": True}, b: {"keywords/$flagged": True}}})
    reply = _deliver(services, "Re: Plans", "re-plans@sync.test", parent="plans@sync.test")
    alice.call("Email/set", {"update": {a: {"keywords/$flagged": True}, reply: {"keywords/$seen": True}}})
    doomed = _deliver(services, "Gone", "gone@sync.test")
    alice.call("Email/set", {"update": {doomed: {"keywords/$seen": True}}})
    alice.call("Email/set", {"destroy": [doomed]})

    for type, expected in (("Email", {first, a, b, reply}), ("Thread", None)):
        for max_changes in (1, 2):
            pages = page_all(alice, type, before[type], max_changes)
            announced: set[str] = set()
            for page in pages:
                assert len(page["created"]) + len(page["updated"]) + len(page["destroyed"]) <= max_changes
                assert not set(page["created"]) & announced, f"created twice: {pages}"
                assert set(page["updated"]) <= announced, f"an update before (or instead of) its creation: {pages}"
                announced |= set(page["created"])
                announced -= set(page["destroyed"])
            current = {t["id"] for t in alice.call(f"{type}/get", {"ids": None})["list"]}
            assert announced == current, pages
            if expected is not None:
                assert announced == expected
                assert len(pages) >= 4 and pages[-1]["newState"] == _states(alice)[type]

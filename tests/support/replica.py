"""A client-side replica of one account kept only with ``*/changes`` + ``*/get``, and the server's full view.

:class:`Replica` is what a JMAP mail client does to stay in sync: it remembers a state per data type and,
on :meth:`Replica.sync`, pages through ``Mailbox/changes``, ``Email/changes`` and ``Thread/changes`` with a
small ``maxChanges``, fetches what was created or updated and drops what was destroyed. Every page is
checked against the rules a client relies on (RFC 8620 §5.2): no more ids than asked for, an id in one list
only, a created id never already known, an updated or destroyed id always known, a page that says there is
more always moving the state, ``updatedProperties`` honoured as sent.

:func:`snapshot` is the reference: the whole account fetched afresh in one request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.support.jmap import JmapClient

TYPES = ("Mailbox", "Email", "Thread")
#: The Email properties the replica keeps.
EMAIL_PROPERTIES = ["id", "threadId", "mailboxIds", "keywords", "receivedAt", "subject", "size"]
COUNT_PROPERTIES = {"totalEmails", "unreadEmails", "totalThreads", "unreadThreads"}
_MAX_PAGES = 10_000


class SyncBroken(AssertionError):
    """A ``*/changes`` answer a client could not build a correct replica from."""


@dataclass
class View:
    """Objects by type and id, and the state of each type they were read at."""

    objects: dict[str, dict[str, dict[str, Any]]] = field(default_factory=lambda: {t: {} for t in TYPES})
    states: dict[str, str] = field(default_factory=dict)


@dataclass
class SyncStats:
    pages: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TYPES, 0))
    created: int = 0
    updated: int = 0
    destroyed: int = 0
    count_only_pages: int = 0


def snapshot(client: JmapClient) -> View:
    """Every mailbox, email (from an unfiltered Email/query) and thread, in one request.

    Cross-checks the server's own listings: the query's total and Email/get's notFound, and that
    Thread/get with ``ids: null`` lists exactly the threads the emails name.
    """
    account = client.account_id
    responses = client.responses(
        [
            ["Mailbox/get", {"accountId": account, "ids": None}, "m"],
            ["Email/query", {"accountId": account, "calculateTotal": True}, "q"],
            [
                "Email/get",
                {
                    "accountId": account,
                    "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"},
                    "properties": EMAIL_PROPERTIES,
                },
                "e",
            ],
            ["Thread/get", {"accountId": account, "ids": None}, "t"],
        ]
    )
    for name, args, _ in responses:
        if name == "error":
            raise AssertionError(f"snapshot failed: {args}")
    (_, mailboxes, _), (_, query, _), (_, emails, _), (_, threads, _) = responses
    assert query["total"] == len(query["ids"]) == len(set(query["ids"])), query
    assert emails["notFound"] == [], emails["notFound"]
    assert query["queryState"] == emails["state"], "Email/query and Email/get disagree on the Email state"
    view = View()
    view.objects["Mailbox"] = {m["id"]: m for m in mailboxes["list"]}
    view.objects["Email"] = {e["id"]: e for e in emails["list"]}
    view.objects["Thread"] = {t["id"]: t for t in threads["list"]}
    view.states = {"Mailbox": mailboxes["state"], "Email": emails["state"], "Thread": threads["state"]}
    named = {e["threadId"] for e in emails["list"]}
    assert named == set(view.objects["Thread"]), "Thread/get lists other threads than the emails name"
    return view


class Replica:
    """One client's copy of the account (see the module doc)."""

    def __init__(self, client: JmapClient) -> None:
        self.client = client
        self.view = View()

    def load(self) -> None:
        """The first sync of a new client: everything, and the states to continue from."""
        self.view = snapshot(self.client)

    def sync(self, max_changes: int, between: Callable[[int], None] | None = None) -> SyncStats:
        """Bring every type up to date through ``*/changes`` pages of at most ``max_changes`` ids.

        Like a real client, each round is one request: per type still behind, ``Foo/changes`` and the
        ``Foo/get`` of its created and of its updated ids through result references (the updated ones
        with ``#properties`` from Mailbox/changes' ``updatedProperties``, RFC 8621 §2.2). ``between``
        is called with the round number after each round but the last: mail changing mid-sync.
        """
        stats = SyncStats()
        pending = {t: _TypeSync(t, self.view.states[t]) for t in TYPES}
        rounds = 0
        while pending:
            rounds += 1
            if rounds > _MAX_PAGES:
                raise SyncBroken(f"*/changes still had more changes after {_MAX_PAGES} pages: {sorted(pending)}")
            calls: list[list[Any]] = []
            for type, progress in pending.items():
                calls += self._round_calls(type, progress.state, max_changes)
            responses = self.client.responses(calls)
            for name, args, call_id in responses:
                if name == "error":
                    raise SyncBroken(f"{call_id} failed during sync: {args}")
            by_id = {call_id: args for _, args, call_id in responses}
            for type in list(pending):
                progress = pending[type]
                self._apply(type, progress, max_changes, by_id, stats)
                if progress.done:
                    gone = progress.vanished - progress.destroyed
                    _check(not gone, f"{type} ids {sorted(gone)} were not found yet never reported destroyed")
                    self.view.states[type] = progress.state
                    del pending[type]
            if pending and between is not None:
                between(rounds)
        return stats

    def _round_calls(self, type: str, state: str, max_changes: int) -> list[list[Any]]:
        account = self.client.account_id
        changes = f"{type}:changes"
        created: dict[str, Any] = {"accountId": account}
        updated: dict[str, Any] = {"accountId": account}
        created["#ids"] = {"resultOf": changes, "name": f"{type}/changes", "path": "/created"}
        updated["#ids"] = {"resultOf": changes, "name": f"{type}/changes", "path": "/updated"}
        if type == "Email":
            created["properties"] = updated["properties"] = EMAIL_PROPERTIES
        if type == "Mailbox":
            updated["#properties"] = {"resultOf": changes, "name": "Mailbox/changes", "path": "/updatedProperties"}
        return [
            [f"{type}/changes", {"accountId": account, "sinceState": state, "maxChanges": max_changes}, changes],
            [f"{type}/get", created, f"{type}:created"],
            [f"{type}/get", updated, f"{type}:updated"],
        ]

    def _apply(
        self, type: str, progress: _TypeSync, max_changes: int, by_id: dict[str, dict[str, Any]], stats: SyncStats
    ) -> None:
        """Check one page and apply it (with its fetched objects) to the replica."""
        objects = self.view.objects[type]
        page = by_id[f"{type}:changes"]
        state = progress.state
        stats.pages[type] += 1
        created, updated, destroyed = page["created"], page["updated"], page["destroyed"]
        where = f"{type}/changes since {state!r} (maxChanges {max_changes}): {page}"
        _check(page["oldState"] == state, f"oldState is not sinceState in {where}")
        everything = [*created, *updated, *destroyed]
        _check(len(everything) <= max_changes, f"more than maxChanges ids in {where}")
        _check(len(set(everything)) == len(everything), f"an id is in two lists (or twice) in {where}")
        known = set(objects) | progress.vanished
        _check(not set(created) & known, f"created ids the client already knew in {where}")
        _check(set(updated) <= known, f"updated ids never reported created in {where}")
        _check(set(destroyed) <= known, f"destroyed ids never reported created in {where}")
        if page["hasMoreChanges"]:
            _check(page["newState"] != state, f"hasMoreChanges without moving the state in {where}")
        only = page.get("updatedProperties") if type == "Mailbox" else None
        if only is not None:
            _check(set(only) <= COUNT_PROPERTIES, f"updatedProperties beyond the counts in {where}")
            stats.count_only_pages += 1
        for kind, ids in (("created", created), ("updated", updated)):
            got = by_id[f"{type}:{kind}"]
            _check(
                {o["id"] for o in got["list"]} | set(got["notFound"]) == set(ids),
                f"{type}/get of the {kind} ids answered for other ids: {got}",
            )
            for obj in got["list"]:
                if kind == "updated" and only is not None:
                    _check(set(obj) == {"id", *only}, f"Mailbox/get returned other properties than {only}: {obj}")
                    objects[obj["id"]].update(obj)
                else:
                    objects[obj["id"]] = obj
            for object_id in got["notFound"]:
                objects.pop(object_id, None)
                progress.vanished.add(object_id)
        for object_id in destroyed:
            objects.pop(object_id, None)
            progress.destroyed.add(object_id)
        stats.created += len(created)
        stats.updated += len(updated)
        stats.destroyed += len(destroyed)
        progress.state = page["newState"]
        progress.done = not page["hasMoreChanges"]


@dataclass
class _TypeSync:
    """One type's progress through its pages during one sync."""

    type: str
    state: str
    done: bool = False
    #: Reported created or updated, but already gone when fetched: must be reported destroyed later.
    vanished: set[str] = field(default_factory=set)
    destroyed: set[str] = field(default_factory=set)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise SyncBroken(message)


def differences(replica: View, server: View) -> list[str]:
    """What differs between two views (empty when they agree), readable in an assertion message."""
    out: list[str] = []
    for type in TYPES:
        mine, theirs = replica.objects[type], server.objects[type]
        for object_id in sorted(set(mine) - set(theirs)):
            out.append(f"{type} {object_id}: the replica still has it, the server does not")
        for object_id in sorted(set(theirs) - set(mine)):
            out.append(f"{type} {object_id}: the server has it, the replica does not ({theirs[object_id]})")
        for object_id in sorted(set(mine) & set(theirs)):
            if mine[object_id] != theirs[object_id]:
                keys = sorted(set(mine[object_id]) | set(theirs[object_id]))
                diff = {k: (mine[object_id].get(k), theirs[object_id].get(k)) for k in keys}
                diff = {k: v for k, v in diff.items() if v[0] != v[1]}
                out.append(f"{type} {object_id} differs (replica, server): {diff}")
        if replica.states.get(type) != server.states.get(type):
            out.append(f"{type} state: replica {replica.states.get(type)!r}, server {server.states.get(type)!r}")
    return out


def consistency_problems(view: View) -> list[str]:
    """Rules the server's own view must satisfy, computed from its emails alone.

    Every email is in at least one existing mailbox and in the thread it names; a thread lists its
    emails oldest first; each mailbox's four counts match its emails (unread: neither ``$seen`` nor
    ``$draft``; unreadThreads: threads with an unread email in the mailbox, RFC 8621 §2's simplest rule).
    """
    out: list[str] = []
    mailboxes, emails, threads = view.objects["Mailbox"], view.objects["Email"], view.objects["Thread"]
    by_thread: dict[str, list[dict[str, Any]]] = {}
    for e in emails.values():
        by_thread.setdefault(e["threadId"], []).append(e)
        if not e["mailboxIds"] or not set(e["mailboxIds"]) <= set(mailboxes):
            out.append(f"email {e['id']} is in mailboxes {sorted(e['mailboxIds'])}, not all of which exist")
    for thread_id, members in by_thread.items():
        listed = threads.get(thread_id, {}).get("emailIds", [])
        if sorted(listed) != sorted(m["id"] for m in members):
            out.append(f"thread {thread_id} lists {listed}, its emails are {sorted(m['id'] for m in members)}")
        received = [emails[i]["receivedAt"] for i in listed if i in emails]
        if received != sorted(received):
            out.append(f"thread {thread_id} is not oldest first: {received}")
    for mailbox_id, mb in mailboxes.items():
        inside = [e for e in emails.values() if mailbox_id in e["mailboxIds"]]
        unread = [e for e in inside if not {"$seen", "$draft"} & set(e["keywords"])]
        expected = {
            "totalEmails": len(inside),
            "unreadEmails": len(unread),
            "totalThreads": len({e["threadId"] for e in inside}),
            "unreadThreads": len({e["threadId"] for e in unread}),
        }
        actual = {k: mb[k] for k in expected}
        if actual != expected:
            out.append(f"mailbox {mailbox_id} ({mb['name']}) counts {actual}, its emails say {expected}")
    return out


def page_all(client: JmapClient, type: str, since: str, max_changes: int) -> list[dict[str, Any]]:
    """Every ``type``/changes page from ``since`` to the current state, ``max_changes`` ids at a time."""
    pages: list[dict[str, Any]] = []
    state = since
    for _ in range(_MAX_PAGES):
        page = client.call(f"{type}/changes", {"sinceState": state, "maxChanges": max_changes})
        assert page["oldState"] == state, page
        pages.append(page)
        state = page["newState"]
        if not page["hasMoreChanges"]:
            return pages
    raise SyncBroken(f"{type}/changes still had more changes after {_MAX_PAGES} pages")

"""Several mailbox changes in ONE operation: creations, updates and destructions, one transaction, one event.

This is what a client's single request to change its mailbox tree becomes (JMAP ``Mailbox/set``). Items
are processed in order (creations, then updates, then destructions, children before their parents)
against an in-memory view of the account's mailboxes that every accepted item updates. Each item is
checked completely before anything of it is written, so a refused item writes nothing and the others
still go through (Postgres never sees a failing statement that would abort the transaction).

The rules between mailboxes (sibling names, one mailbox per role, no loops, the depth limit) hold for the
state the whole call leaves, not between its items (RFC 8620 §5.3): two mailboxes may swap names or roles,
or a parent and its child their places, in one call. Updates are planned on the in-memory view first; a
rule the planned tree breaks refuses the latest update involved (an untouched mailbox never yields), until
the tree is valid; then they are written (renamed ones through a temporary key, as the unique indexes are
checked per statement). A creation refused for a name or role that an update of the call frees is tried
again after the updates; a creation or update refused for one a destruction frees, after the destructions.

A creation may name as parent a mailbox created earlier in the same batch (:class:`NewRef`); so may an
update's target, its new parent, and a destruction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from jmapmono.log import kv
from jmapmono.mailbox import changes, shares
from jmapmono.mailbox import messages as msgs
from jmapmono.mailbox.events import MailboxesChanged
from jmapmono.mailbox.mailboxes import UNCHANGED
from jmapmono.mailbox.model import (
    AlreadyExists,
    Counts,
    Forbidden,
    InvalidProperties,
    Mailbox,
    MailboxError,
    MailboxHasChild,
    MailboxHasEmail,
    NotFound,
    name_key,
    validate_mailbox_name,
    validate_role,
    validate_sort_order,
)
from jmapmono.mailbox.mutation import Mutation
from jmapmono.store import Transaction

log = logging.getLogger(__name__)

#: Deepest mailbox nesting allowed by default (a top-level mailbox has depth 1).
DEFAULT_MAX_DEPTH = 10


class StateMismatch(Exception):
    """The caller expected another Mailbox state: nothing was changed."""


@dataclass(frozen=True)
class NewRef:
    """A mailbox created earlier in the same batch, named by its creation key."""

    key: str

    def __str__(self) -> str:
        return f"#{self.key}"  # as the client wrote it, in error descriptions


#: A mailbox id, a mailbox created in the batch, or None (top level, for a parent).
Target = str | NewRef


@dataclass(frozen=True)
class MailboxCreate:
    key: str
    name: Any
    parent: Target | None = None
    role: Any = None
    sort_order: Any = 0
    #: Whether the acting user is subscribed to the new mailbox.
    subscribed: bool = True


@dataclass(frozen=True)
class MailboxPatch:
    """Changes to one mailbox; UNCHANGED leaves a property as it is."""

    target: Target
    name: Any = UNCHANGED
    parent: Any = UNCHANGED
    role: Any = UNCHANGED
    sort_order: Any = UNCHANGED
    subscribed: Any = UNCHANGED


@dataclass
class MailboxSetResult:
    """Per item: what was done or the MailboxError that refused it. Update and destroy results are keyed by
    the mailbox id, or by the :class:`NewRef` itself when it named no mailbox created in the batch."""

    old_state: str
    new_state: str = ""
    created: dict[str, Mailbox] = field(default_factory=dict)
    #: id -> the stored (normalised) value of every property the patch set, as JMAP names them.
    updated: dict[str, dict[str, Any]] = field(default_factory=dict)
    destroyed: list[str] = field(default_factory=list)
    not_created: dict[str, MailboxError] = field(default_factory=dict)
    not_updated: dict[str | NewRef, MailboxError] = field(default_factory=dict)
    not_destroyed: dict[str | NewRef, MailboxError] = field(default_factory=dict)
    #: The new state of every data type the batch changed.
    states: dict[str, str] = field(default_factory=dict)


@dataclass
class _Box:
    name: str
    parent: str | None
    role: str | None
    sort_order: int


class RoleTaken(InvalidProperties):
    """Another mailbox has the role (RFC 8621 §2: one mailbox per role): invalidProperties ``role``."""


#: Sibling names are compared on this key; cached, as a call may compare every name once per refusal.
_name_key = lru_cache(maxsize=4096)(name_key)

#: Refusals that a later part of the same call (an update, a destruction) may lift.
_CONFLICTS = (AlreadyExists, RoleTaken)


@dataclass
class _Planned:
    """An update checked on its own and applied to the in-memory tree, not yet written."""

    key: str
    patch: MailboxPatch
    old: dict[str, Any]
    new: dict[str, Any]
    changed: list[str]


class _Tree:
    """The account's mailboxes as the batch has left them so far."""

    def __init__(self, rows: list[dict]) -> None:
        self.boxes = {r["id"]: _Box(r["name"], r["parent_id"], r["role"], int(r["sort_order"])) for r in rows}

    def children(self, mailbox_id: str) -> list[str]:
        return [i for i, b in self.boxes.items() if b.parent == mailbox_id]

    def depth(self, mailbox_id: str) -> int:
        """1 for a top-level mailbox."""
        depth = 0
        current: str | None = mailbox_id
        while current is not None:
            depth += 1
            current = self.boxes[current].parent
        return depth

    def is_self_or_descendant(self, candidate: str, ancestor: str) -> bool:
        current: str | None = candidate
        while current is not None:
            if current == ancestor:
                return True
            current = self.boxes[current].parent
        return False

    def check_name(self, parent: str | None, name: str, self_id: str = "") -> None:
        key = name_key(name)
        for i, b in self.boxes.items():
            if i != self_id and b.parent == parent and name_key(b.name) == key:
                raise AlreadyExists(f"a sibling mailbox is already called {b.name!r}", ["name"], existing_id=i)

    def check_role(self, role: str | None, self_id: str = "") -> None:
        if role is not None and any(i != self_id and b.role == role for i, b in self.boxes.items()):
            raise RoleTaken(f"another mailbox already has the role {role!r}", ["role"])

    def _up(self, mailbox_id: str) -> str | None:
        parent = self.boxes[mailbox_id].parent
        return parent if parent in self.boxes else None

    def in_cycles(self) -> set[str]:
        """The mailboxes that are their own ancestors (none in a valid tree); O(n)."""
        done: dict[str, bool] = {}  # False while on the current walk up
        members: set[str] = set()
        for start in self.boxes:
            path: list[str] = []
            current: str | None = start
            while current is not None and current not in done:
                done[current] = False
                path.append(current)
                current = self._up(current)
            if current is not None and done[current] is False:
                members.update(path[path.index(current) :])
            done.update(dict.fromkeys(path, True))
        return members

    def depths(self) -> dict[str, int]:
        """Every mailbox's depth (1 at the top level), for a tree without cycles (one is cut, not followed). O(n)."""
        depth: dict[str, int] = {}
        for start in self.boxes:
            path: list[str] = []
            current: str | None = start
            while current is not None and current not in depth:
                path.append(current)
                current = self._up(current) if len(path) <= len(self.boxes) else None  # longer: a cycle
            level = 0 if current is None else depth[current]
            for node in reversed(path):
                level += 1
                depth[node] = level
        return depth

    def heights(self, depth: dict[str, int]) -> dict[str, int]:
        """Levels below every mailbox (0 for a leaf), from :meth:`depths`."""
        height = dict.fromkeys(self.boxes, 0)
        for node in sorted(self.boxes, key=lambda i: -depth[i]):
            parent = self._up(node)
            if parent is not None:
                height[parent] = max(height[parent], height[node] + 1)
        return height

    def check_parent(self, parent: str | None, levels_below: int, max_depth: int, self_id: str = "") -> None:
        """``parent`` exists, is not ``self_id`` or below it, and leaves the subtree within ``max_depth``."""
        if parent is None:
            depth = 1
        else:
            if parent not in self.boxes:
                raise InvalidProperties(f"no parent mailbox {parent}", ["parentId"])
            if self_id and self.is_self_or_descendant(parent, self_id):
                raise InvalidProperties("a mailbox cannot be moved under itself or its own child", ["parentId"])
            depth = self.depth(parent) + 1
        if depth + levels_below > max_depth:
            raise InvalidProperties(f"mailboxes nest at most {max_depth} deep", ["parentId"])


class MailboxBatchOps:
    """Mixed into MailboxManager (which provides ``db`` and ``blobs``, and ``_insert_mailbox``)."""

    db: Any
    blobs: Any
    quota_defaults: Any

    def set_mailboxes(
        self,
        account_id: str,
        user_id: int,
        creates: Sequence[MailboxCreate] = (),
        updates: Sequence[MailboxPatch] = (),
        destroys: Sequence[Target] = (),
        remove_emails: bool = False,
        if_in_state: str | None = None,
        max_depth: int = DEFAULT_MAX_DEPTH,
    ) -> MailboxSetResult:
        """Create, update, destroy mailboxes for ``user_id`` (whose subscriptions they set); one event.

        Raises StateMismatch, changing nothing, when ``if_in_state`` is given and is not the Mailbox state.
        ``remove_emails``: destroying a mailbox takes its emails out of it, destroying those in no other.
        """
        started = time.monotonic()
        with self.db.transaction() as tx:
            m = Mutation(tx, account_id, self.quota_defaults)
            result = MailboxSetResult(old_state=changes.state(tx, account_id, "Mailbox"))
            if if_in_state is not None and if_in_state != result.old_state:
                raise StateMismatch(f"the Mailbox state is {result.old_state!r}, not {if_in_state!r}")
            tree = _Tree(
                tx.query(
                    "SELECT id, name, parent_id, role, sort_order FROM mailboxes WHERE account_id = ?", (account_id,)
                )
            )
            event = MailboxesChanged(account_id=account_id)
            ctx = _Batch(self, tx, m, tree, event, result, account_id, user_id, max_depth)
            for create in creates:
                try:
                    ctx.create(create)
                except MailboxError as e:
                    result.not_created[create.key] = e
            ctx.update_all([(ctx.resolve(patch.target), patch) for patch in updates])
            if result.updated:
                ctx.retry_conflicts(creates, ())
            for key in ctx.destroy_order([ctx.resolve(t) for t in destroys]):
                try:
                    ctx.destroy(key, remove_emails)
                    result.destroyed.append(key)
                except MailboxError as e:
                    result.not_destroyed[key] = e
            if result.destroyed:
                ctx.retry_conflicts(creates, updates)
            event.message_ids = sorted(set(event.message_ids))
            event.thread_ids = sorted(set(event.thread_ids))
            result.states = m.finish(event)
            result.new_state = result.states.get("Mailbox", result.old_state)
        log.info(
            kv(
                event="mailboxes_set",
                account=account_id,
                user=user_id,
                created=len(result.created),
                updated=len(result.updated),
                destroyed=len(result.destroyed),
                refused=len(result.not_created) + len(result.not_updated) + len(result.not_destroyed),
                ms=round((time.monotonic() - started) * 1000, 1),
            )
        )
        return result


@dataclass
class _Batch:
    """One set_mailboxes call in progress (inside its transaction)."""

    ops: Any
    tx: Transaction
    m: Mutation
    tree: _Tree
    event: MailboxesChanged
    result: MailboxSetResult
    account_id: str
    user_id: int
    max_depth: int

    def resolve(self, target: Target | None) -> Any:
        """A mailbox id for a NewRef that was created in the batch; else the target as given."""
        if isinstance(target, NewRef) and target.key in self.result.created:
            return self.result.created[target.key].id
        return target

    def _parent(self, parent: Target | None) -> str | None:
        resolved = self.resolve(parent)
        if isinstance(resolved, NewRef):
            raise InvalidProperties(f"the parent #{resolved.key} was not created", ["parentId"])
        return resolved

    def _subscribe(self, mailbox_id: str, subscribed: bool) -> bool:
        if subscribed:
            return bool(
                self.tx.execute(
                    "INSERT INTO mailbox_subscriptions (user_id, mailbox_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                    (self.user_id, mailbox_id),
                )
            )
        return bool(
            self.tx.execute(
                "DELETE FROM mailbox_subscriptions WHERE user_id = ? AND mailbox_id = ?", (self.user_id, mailbox_id)
            )
        )

    def create(self, c: MailboxCreate) -> None:
        name, role, order = validate_mailbox_name(c.name), validate_role(c.role), validate_sort_order(c.sort_order)
        parent = self._parent(c.parent)
        self.tree.check_parent(parent, 0, self.max_depth)
        self.tree.check_name(parent, name)
        self.tree.check_role(role)
        mailbox_id = self.ops._insert_mailbox(self.tx, self.account_id, name, parent, role, order)
        if c.subscribed:
            self._subscribe(mailbox_id, True)
        self.tree.boxes[mailbox_id] = _Box(name, parent, role, order)
        self.m.created("Mailbox", [mailbox_id])
        self.event.created.append(
            {"id": mailbox_id, "name": name, "parentId": parent, "role": role, "sortOrder": order}
        )
        created_at = int(self.tx.value("SELECT created_at FROM mailboxes WHERE id = ?", (mailbox_id,)))
        self.result.created[c.key] = Mailbox(
            mailbox_id, self.account_id, name, parent, role, order, created_at, Counts(), c.subscribed
        )

    def update_all(self, items: list[tuple[Any, MailboxPatch]]) -> None:
        """Plan every update, refuse those the final tree cannot have, write the others."""
        planned: list[_Planned] = []
        for key, patch in items:
            try:
                planned.append(self.plan_update(key, patch))
            except MailboxError as e:
                self.result.not_updated[key] = e
        refused = self.settle(planned)
        self.result.not_updated.update(refused)
        accepted = [p for p in planned if p.key not in refused]
        # The unique indexes are checked per statement: renamed mailboxes go through a temporary key first.
        moving = [p for p in accepted if {"name", "parentId", "role"} & set(p.changed)]
        if len(moving) > 1:
            for p in moving:
                self.tx.execute("UPDATE mailboxes SET name_key = ?, role = NULL WHERE id = ?", ("\x01" + p.key, p.key))
        for p in accepted:
            self.result.updated[p.key] = self.write_update(p)

    def plan_update(self, mailbox_id: Any, p: MailboxPatch) -> _Planned:
        """Check an update on its own (values, parent exists, the Inbox's role) and apply it to the tree."""
        box = self.tree.boxes.get(mailbox_id) if isinstance(mailbox_id, str) else None
        if box is None:
            raise NotFound(f"no mailbox {mailbox_id}")
        old: dict[str, Any] = {"name": box.name, "parentId": box.parent, "role": box.role, "sortOrder": box.sort_order}
        new = dict(old)
        if p.name is not UNCHANGED:
            new["name"] = validate_mailbox_name(p.name)
        if p.parent is not UNCHANGED:
            new["parentId"] = self._parent(p.parent)
        if p.role is not UNCHANGED:
            new["role"] = validate_role(p.role)
        if p.sort_order is not UNCHANGED:
            new["sortOrder"] = validate_sort_order(p.sort_order)
        changed = [k for k in new if new[k] != old[k]]
        if "parentId" in changed and new["parentId"] is not None and new["parentId"] not in self.tree.boxes:
            raise InvalidProperties(f"no parent mailbox {new['parentId']}", ["parentId"])
        if "role" in changed and old["role"] == "inbox":
            raise Forbidden("the Inbox keeps its role", ["role"])
        self.tree.boxes[mailbox_id] = _Box(new["name"], new["parentId"], new["role"], new["sortOrder"])
        return _Planned(mailbox_id, p, old, new, changed)

    def settle(self, planned: list[_Planned]) -> dict[str, MailboxError]:
        """Refuse (and take back from the tree) the latest planned update breaking a rule, until none does."""
        refused: dict[str, MailboxError] = {}
        while True:
            live = [p for p in planned if p.key not in refused and p.changed]
            found = self._violation(live)
            if found is None:
                return refused
            item, error = found
            refused[item.key] = error
            o = item.old
            self.tree.boxes[item.key] = _Box(o["name"], o["parentId"], o["role"], o["sortOrder"])

    def _violation(self, live: list[_Planned]) -> tuple[_Planned, MailboxError] | None:
        """The latest planned update breaking a rule in the planned tree, and why; None when it is valid.
        Linear in the number of mailboxes (settle calls it once per refusal, up to maxObjectsInSet times)."""
        boxes = self.tree.boxes
        cyclic = self.tree.in_cycles()
        for p in reversed(live):  # loops first: depths mean nothing in a cyclic tree
            if "parentId" in p.changed and p.key in cyclic:
                return p, InvalidProperties("a mailbox cannot be moved under itself or its own child", ["parentId"])
        siblings: dict[tuple[str | None, str], list[str]] = {}
        holders: dict[str, list[str]] = {}
        for i, b in boxes.items():
            siblings.setdefault((b.parent, _name_key(b.name)), []).append(i)
            if b.role is not None:
                holders.setdefault(b.role, []).append(i)
        depth = self.tree.depths()
        height = self.tree.heights(depth)
        for p in reversed(live):
            box = boxes[p.key]
            if "name" in p.changed or "parentId" in p.changed:
                clash = [i for i in siblings[(box.parent, _name_key(box.name))] if i != p.key]
                if clash:
                    name = boxes[clash[0]].name
                    return p, AlreadyExists(
                        f"a sibling mailbox is already called {name!r}", ["name"], existing_id=clash[0]
                    )
            if "role" in p.changed and box.role is not None and len(holders[box.role]) > 1:
                return p, RoleTaken(f"another mailbox already has the role {box.role!r}", ["role"])
            if "parentId" in p.changed and depth[p.key] + height[p.key] > self.max_depth:
                return p, InvalidProperties(f"mailboxes nest at most {self.max_depth} deep", ["parentId"])
        return None

    def write_update(self, p: _Planned) -> dict[str, Any]:
        """Store a settled update (the tree already holds it); the stored value of every property it set."""
        mailbox_id, old, new, changed = p.key, p.old, p.new, p.changed
        if changed:
            self.tx.execute(
                "UPDATE mailboxes SET name = ?, name_key = ?, parent_id = ?, role = ?, sort_order = ? WHERE id = ?",
                (new["name"], name_key(new["name"]), new["parentId"], new["role"], new["sortOrder"], mailbox_id),
            )
            self.m.updated("Mailbox", [mailbox_id])
            self.event.updated.append(
                {"id": mailbox_id, "old": {k: old[k] for k in changed}, "new": {k: new[k] for k in changed}}
            )
        patch = p.patch
        stored = {
            prop: new[prop]
            for prop, value in (
                ("name", patch.name),
                ("parentId", patch.parent),
                ("role", patch.role),
                ("sortOrder", patch.sort_order),
            )
            if value is not UNCHANGED
        }
        if patch.subscribed is not UNCHANGED:
            subscribed = bool(patch.subscribed)
            if self._subscribe(mailbox_id, subscribed):
                self.m.updated("Mailbox", [mailbox_id])
                self.event.subscriptions.append({"id": mailbox_id, "user_id": self.user_id, "subscribed": subscribed})
            stored["isSubscribed"] = subscribed
        return stored

    def retry_conflicts(self, creates: Sequence[MailboxCreate], updates: Sequence[MailboxPatch]) -> None:
        """Creations and updates refused for a name or role that a later part of this call may have freed."""
        for c in creates:
            if isinstance(self.result.not_created.get(c.key), _CONFLICTS):
                try:
                    self.create(c)
                    del self.result.not_created[c.key]
                except MailboxError as e:
                    self.result.not_created[c.key] = e
        again = [
            (key, patch)
            for patch in updates
            if isinstance(self.result.not_updated.get(key := self.resolve(patch.target)), _CONFLICTS)
        ]
        for key, _ in again:
            del self.result.not_updated[key]
        self.update_all(again)

    def destroy_order(self, targets: list[Any]) -> list[Any]:
        """Children before their parents (so a parent destroyed with its children is not refused)."""
        known = [t for t in dict.fromkeys(targets) if isinstance(t, str) and t in self.tree.boxes]
        depth = {t: self.tree.depth(t) for t in known}
        return sorted(dict.fromkeys(targets), key=lambda t: -depth.get(t, 0))

    def destroy(self, mailbox_id: Any, remove_emails: bool) -> None:
        box = self.tree.boxes.get(mailbox_id) if isinstance(mailbox_id, str) else None
        if box is None:
            raise NotFound(f"no mailbox {mailbox_id}")
        if box.role == "inbox":
            raise Forbidden("the Inbox cannot be destroyed")
        if self.tree.children(mailbox_id):
            raise MailboxHasChild(f"mailbox {mailbox_id} has child mailboxes")
        tx, m = self.tx, self.m
        ids = [
            r["message_id"]
            for r in tx.query("SELECT message_id FROM message_mailboxes WHERE mailbox_id = ?", (mailbox_id,))
        ]
        if ids and not remove_emails:
            raise MailboxHasEmail(f"mailbox {mailbox_id} holds {len(ids)} emails")
        current = msgs.load(tx, self.account_id, ids)
        only_here = {i: c for i, c in current.items() if c.mailboxes == {mailbox_id}}
        elsewhere = {i: c for i, c in current.items() if i not in only_here}
        wanted = {i: msgs.Change(set(c.keywords), c.mailboxes - {mailbox_id}) for i, c in elsewhere.items()}
        msgs.update(tx, m, elsewhere, wanted)
        gone = msgs.destroy(tx, m, self.ops.blobs, only_here) if only_here else []
        m.apply_counts()  # the mailbox's own rows go before the mailbox does
        tx.execute("DELETE FROM mailbox_subscriptions WHERE mailbox_id = ?", (mailbox_id,))
        tx.execute("DELETE FROM mailbox_threads WHERE mailbox_id = ?", (mailbox_id,))
        shares.forget_mailbox(tx, self.ops.accounts, self.account_id, mailbox_id)
        tx.execute("DELETE FROM mailboxes WHERE id = ?", (mailbox_id,))
        del self.tree.boxes[mailbox_id]
        m.destroyed("Mailbox", [mailbox_id])
        self.event.destroyed.append(
            {
                "id": mailbox_id,
                "name": box.name,
                "removed_message_ids": sorted(elsewhere),
                "destroyed_message_ids": [g["id"] for g in gone],
            }
        )
        self.event.message_ids += sorted(current)
        self.event.thread_ids += sorted({c.thread_id for c in current.values()})

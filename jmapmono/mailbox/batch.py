"""Several mailbox changes in ONE operation: creations, updates and destructions, one transaction, one event.

This is what a client's single request to change its mailbox tree becomes (JMAP ``Mailbox/set``). Items
are processed in order (creations, then updates, then destructions, children before their parents)
against an in-memory view of the account's mailboxes that every accepted item updates. Each item is
checked completely before anything of it is written, so a refused item writes nothing and the others
still go through (Postgres never sees a failing statement that would abort the transaction).

A creation may name as parent a mailbox created earlier in the same batch (:class:`NewRef`); so may an
update's target, its new parent, and a destruction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from jmapmono.log import kv
from jmapmono.mailbox import changes
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
    updated: dict[str | NewRef, dict[str, Any]] = field(default_factory=dict)
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


class _Tree:
    """The account's mailboxes as the batch has left them so far."""

    def __init__(self, rows: list[dict]) -> None:
        self.boxes = {r["id"]: _Box(r["name"], r["parent_id"], r["role"], int(r["sort_order"])) for r in rows}

    def children(self, mailbox_id: str) -> list[str]:
        return [i for i, b in self.boxes.items() if b.parent == mailbox_id]

    def depth(self, mailbox_id: str) -> int:
        """1 for a top-level mailbox."""
        depth, current = 0, mailbox_id
        while current is not None:
            depth += 1
            current = self.boxes[current].parent
        return depth

    def height(self, mailbox_id: str) -> int:
        """Levels below ``mailbox_id`` (0 for a leaf)."""
        kids = self.children(mailbox_id)
        return 1 + max(self.height(k) for k in kids) if kids else 0

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
                raise AlreadyExists(f"a sibling mailbox is already called {b.name!r}", ["name"])

    def check_role(self, role: str | None, self_id: str = "") -> None:
        if role is not None and any(i != self_id and b.role == role for i, b in self.boxes.items()):
            raise InvalidProperties(f"another mailbox already has the role {role!r}", ["role"])

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
            m = Mutation(tx, account_id)
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
            for patch in updates:
                key = ctx.resolve(patch.target)
                try:
                    result.updated[key] = ctx.update(key, patch)
                except MailboxError as e:
                    result.not_updated[key] = e
            for key in ctx.destroy_order([ctx.resolve(t) for t in destroys]):
                try:
                    ctx.destroy(key, remove_emails)
                    result.destroyed.append(key)  # type: ignore[arg-type]
                except MailboxError as e:
                    result.not_destroyed[key] = e
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

    def update(self, mailbox_id: Any, p: MailboxPatch) -> dict[str, Any]:
        box = self.tree.boxes.get(mailbox_id) if isinstance(mailbox_id, str) else None
        if box is None:
            raise NotFound(f"no mailbox {mailbox_id}")
        old = {"name": box.name, "parentId": box.parent, "role": box.role, "sortOrder": box.sort_order}
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
        if "parentId" in changed:
            self.tree.check_parent(new["parentId"], self.tree.height(mailbox_id), self.max_depth, mailbox_id)
        if "name" in changed or "parentId" in changed:
            self.tree.check_name(new["parentId"], new["name"], mailbox_id)
        if "role" in changed:
            if old["role"] == "inbox":
                raise Forbidden("the Inbox keeps its role", ["role"])
            self.tree.check_role(new["role"], mailbox_id)
        if changed:
            self.tx.execute(
                "UPDATE mailboxes SET name = ?, name_key = ?, parent_id = ?, role = ?, sort_order = ? WHERE id = ?",
                (new["name"], name_key(new["name"]), new["parentId"], new["role"], new["sortOrder"], mailbox_id),
            )
            self.tree.boxes[mailbox_id] = _Box(new["name"], new["parentId"], new["role"], new["sortOrder"])
            self.m.updated("Mailbox", [mailbox_id])
            self.event.updated.append(
                {"id": mailbox_id, "old": {k: old[k] for k in changed}, "new": {k: new[k] for k in changed}}
            )
        stored = {
            prop: new[prop]
            for prop, value in (("name", p.name), ("parentId", p.parent), ("role", p.role), ("sortOrder", p.sort_order))
            if value is not UNCHANGED
        }
        if p.subscribed is not UNCHANGED:
            subscribed = bool(p.subscribed)
            if self._subscribe(mailbox_id, subscribed):
                self.m.updated("Mailbox", [mailbox_id])
                self.event.subscriptions.append({"id": mailbox_id, "user_id": self.user_id, "subscribed": subscribed})
            stored["isSubscribed"] = subscribed
        return stored

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

"""One MailboxManager operation in progress: what it changed, recorded once at its end.

A :class:`Mutation` is opened first thing in the operation's transaction (it takes the
account's change-log lock), collects created/updated/destroyed ids per data type and
the count deltas, and :meth:`Mutation.finish` applies the counts, writes the change
log, fills the event with the new states and counts, and writes it to the outbox, all
in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterable

from jmapmono.events import outbox
from jmapmono.mailbox import changes, counts, quota
from jmapmono.mailbox.events import MAILBOX_BUS, MailboxEvent
from jmapmono.store import Transaction

#: The order types are recorded in (fixed, so that seqs of one operation read naturally).
_ORDER = ("Email", "Thread", "Mailbox", "EmailDelivery", "Quota")


class Mutation:
    def __init__(self, tx: Transaction, account_id: str, quota_defaults: quota.Limits | None = None) -> None:
        self.tx = tx
        self.account_id = account_id
        #: The configured default quota limits (which Quota objects exist); None: usage logs both ids.
        self.quota_defaults = quota_defaults
        #: The account's limits when the operation has read them already (checking an append).
        self.quota_limits: quota.Limits | None = None
        self.counts = counts.CountDeltas()
        self._created: dict[str, dict[str, None]] = {}
        self._updated: dict[str, dict[str, None]] = {}
        self._destroyed: dict[str, dict[str, None]] = {}
        self._moved: set[str] = set()
        #: Octets and messages added (negative: removed) to the account's quota usage.
        self.usage_octets = 0
        self.usage_messages = 0
        changes.lock(tx, account_id)

    def created(self, type: str, ids: Iterable[str]) -> None:
        self._created.setdefault(type, {}).update(dict.fromkeys(ids))

    def updated(self, type: str, ids: Iterable[str]) -> None:
        self._updated.setdefault(type, {}).update(dict.fromkeys(ids))

    def destroyed(self, type: str, ids: Iterable[str]) -> None:
        self._destroyed.setdefault(type, {}).update(dict.fromkeys(ids))

    def usage(self, octets: int, messages: int) -> None:
        """Count messages appended (positive) or destroyed (negative) in the account's quota usage."""
        self.usage_octets += octets
        self.usage_messages += messages

    def apply_counts(self) -> set[str]:
        """Apply the count deltas gathered so far (before deleting a mailbox, say); return all moved so far."""
        self._moved |= self.counts.apply(self.tx)
        return self._moved

    def finish(self, event: MailboxEvent) -> dict[str, str]:
        """Apply counts, log every change, complete ``event`` and write it; return the new states.

        Writes no event when the operation changed nothing.
        """
        moved = self.apply_counts()
        if self.usage_octets or self.usage_messages:
            quota.add_usage(self.tx, self.account_id, self.usage_octets, self.usage_messages)
            limits = self.quota_limits
            if limits is None and self.quota_defaults is not None:
                limits = quota.read(self.tx, self.account_id, self.quota_defaults).limits
            self.updated(quota.TYPE, quota.IDS if limits is None else limits.quota_ids())  # only quotas that exist
            self.usage_octets = self.usage_messages = 0
        types = list(_ORDER) + sorted((set(self._created) | set(self._updated) | set(self._destroyed)) - set(_ORDER))
        batches = []
        for type in types:
            created = list(self._created.get(type, ()))
            updated = list(self._updated.get(type, ()))
            destroyed = list(self._destroyed.get(type, ()))
            count_only: Iterable[str] = ()
            if type == "Mailbox":
                gone = set(created) | set(updated) | set(destroyed)
                count_only = sorted(m for m in moved if m not in gone)
            batches.append(changes.Batch(type, created, updated, destroyed, count_only))
        states = changes.record_all(self.tx, self.account_id, batches)
        if not states:
            return states
        event.account_id = self.account_id
        event.states = states
        gone = set(self._destroyed.get("Mailbox", ()))
        known = {k: self.counts.after[k] for k in moved if k in self.counts.after and k not in gone}
        if len(known) + len(gone & moved) < len(moved):  # not all updated here: read what the table says
            known = counts.read(self.tx, moved)
        event.counts = {k: v.to_json() for k, v in sorted(known.items())}
        touched = set(self._created.get("Mailbox", ())) | set(self._updated.get("Mailbox", ()))
        touched |= set(self._destroyed.get("Mailbox", ())) | moved
        event.mailbox_ids = sorted(set(event.mailbox_ids) | touched)
        outbox.write(self.tx, event, MAILBOX_BUS)
        return states

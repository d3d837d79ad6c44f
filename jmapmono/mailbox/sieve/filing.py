"""Where a filtered delivery goes: the mailboxes of a script's keep and fileinto actions, inside the
delivery's transaction.

``fileinto`` names a mailbox by name (case-insensitive, a top-level one first) or by path with ``/``
between levels (``Lists/jmap``), whatever its role. ``:create`` (RFC 5490 §3.2) creates the missing
levels, the user subscribed; without it a missing mailbox is a run-time error (RFC 5228 §4.1): the
message goes to the Inbox instead, nothing is lost.
"""

from __future__ import annotations

from jmapmono.clock import now_ms
from jmapmono.mailbox.model import InvalidProperties, name_key, new_id, validate_mailbox_name
from jmapmono.mailbox.mutation import Mutation
from jmapmono.mailbox.sieve.run import Target
from jmapmono.store import Transaction

#: Levels ``fileinto :create`` may create in one path.
MAX_LEVELS = 10


def _child(tx: Transaction, account_id: str, parent: str | None, name: str) -> str | None:
    return tx.value(
        "SELECT id FROM mailboxes WHERE account_id = ? AND COALESCE(parent_id, '') = ? AND name_key = ?",
        (account_id, parent or "", name_key(name)),
    )


def find(tx: Transaction, account_id: str, name: str) -> str | None:
    """The mailbox ``name`` names (a name anywhere, top level first, else a ``/`` path), None if none."""
    found = tx.value(
        "SELECT id FROM mailboxes WHERE account_id = ? AND name_key = ? "
        "ORDER BY CASE WHEN parent_id IS NULL THEN 0 ELSE 1 END, created_at, id LIMIT 1",
        (account_id, name_key(name.strip())),
    )
    if found is not None or "/" not in name:
        return found
    parent: str | None = None
    for part in [p.strip() for p in name.split("/") if p.strip()]:
        parent = _child(tx, account_id, parent, part)
        if parent is None:
            return None
    return parent


def create(tx: Transaction, m: Mutation, user_id: int, name: str) -> str:
    """Create the levels of the path ``name`` that are missing; the last one's id. InvalidProperties for a
    name a mailbox cannot have."""
    parts = [p.strip() for p in name.split("/") if p.strip()]
    if not parts or len(parts) > MAX_LEVELS:
        raise InvalidProperties(f"cannot create {name!r}", ["name"])
    parent: str | None = None
    for part in parts:
        part = validate_mailbox_name(part)
        found = _child(tx, m.account_id, parent, part)
        if found is None:
            found = new_id("B")
            tx.execute(
                "INSERT INTO mailboxes (id, account_id, name, name_key, parent_id, role, sort_order, created_at) "
                "VALUES (?, ?, ?, ?, ?, NULL, 0, ?)",
                (found, m.account_id, part, name_key(part), parent, now_ms()),
            )
            tx.execute(
                "INSERT INTO mailbox_subscriptions (user_id, mailbox_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (user_id, found),
            )
            m.created("Mailbox", [found])
        parent = found
    assert parent is not None
    return parent


def resolve(
    tx: Transaction, m: Mutation, user_id: int, targets: list[Target], inbox: str
) -> tuple[set[str], frozenset[str], list[str]]:
    """The mailbox ids and keywords for ``targets`` (the Inbox, or the mailbox delivery defaults to, is
    ``inbox``), and the problems met (each sending that copy to ``inbox``)."""
    mailboxes: set[str] = set()
    keywords: set[str] = set()
    problems: list[str] = []
    for target in targets:
        keywords |= target.keywords
        if target.mailbox is None:
            mailboxes.add(inbox)
            continue
        found = find(tx, m.account_id, target.mailbox)
        if found is None and target.create:
            try:
                found = create(tx, m, user_id, target.mailbox)
            except InvalidProperties as e:
                problems.append(f"fileinto {target.mailbox!r}: {e}")
        elif found is None:
            problems.append(f"fileinto {target.mailbox!r}: no such mailbox")
        mailboxes.add(found if found is not None else inbox)
    return mailboxes, frozenset(keywords), problems

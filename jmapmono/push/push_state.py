"""pushState: a resume token for everything a user can see.

Each account has one change sequence (``account_changes.last``) and every
type's state is a number on it (jmapmono/mailbox/changes.py), so "the whole
server state visible to a user" is one number per account. A pushState lists
them: ``v1.<account>.<seq>,<account>.<seq>…`` (seq in base 36). Comparing a
pushState with the current states tells exactly which types of which accounts
moved since, with no log to keep: a type changed iff its state is newer than
the account's sequence in the token. The same token is the EventSource ``id:``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from jmapmono.mailbox.changes import TYPES, parse_token, token
from jmapmono.store import Database

PREFIX = "v1."


def encode(seqs: Mapping[str, int]) -> str:
    """The pushState for these account sequences."""
    return PREFIX + ",".join(f"{account}.{token(seq)}" for account, seq in sorted(seqs.items()))


def decode(push_state: object) -> dict[str, int] | None:
    """Account → sequence from a pushState; None when it is not one of ours (resume from nothing)."""
    if not isinstance(push_state, str) or not push_state.startswith(PREFIX):
        return None
    out: dict[str, int] = {}
    body = push_state[len(PREFIX) :]
    for item in body.split(",") if body else []:
        account, _, seq_token = item.rpartition(".")
        seq = parse_token(seq_token)
        if not account or seq is None:
            return None
        out[account] = seq
    return out


def current_seqs(db: Database, account_ids: Iterable[str]) -> dict[str, int]:
    """Each account's change sequence now (0 for an account that never changed)."""
    ids = list(account_ids)
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    with db.read() as tx:
        rows = tx.query(f"SELECT account_id, last FROM account_changes WHERE account_id IN ({marks})", ids)
    found = {r["account_id"]: int(r["last"]) for r in rows}
    return {a: found.get(a, 0) for a in ids}


def changed_since(db: Database, since: Mapping[str, int], account_ids: Iterable[str]) -> dict[str, dict[str, str]]:
    """Account → {type: current state} for every type newer than ``since`` (all types of an unknown account)."""
    ids = list(account_ids)
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    with db.read() as tx:
        rows = tx.query(
            f"SELECT account_id, type, state FROM change_states WHERE account_id IN ({marks})",
            ids,
        )
    states: dict[str, dict[str, int]] = {a: {} for a in ids}
    for r in rows:
        states[r["account_id"]][r["type"]] = int(r["state"])
    changed: dict[str, dict[str, str]] = {}
    for account in ids:
        seen = since.get(account)
        moved = {t: token(states[account].get(t, 0)) for t in TYPES if seen is None or states[account].get(t, 0) > seen}
        if moved:
            changed[account] = moved
    return changed


def max_seq(states: Mapping[str, str]) -> int:
    """The highest sequence among state tokens (the account's sequence after that change)."""
    return max((parse_token(s) or 0 for s in states.values()), default=0)

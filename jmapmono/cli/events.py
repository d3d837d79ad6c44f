"""The ``events`` CLI: list parked (dead-lettered) events and have them redelivered.

``events dead-letters`` lists them; ``events redeliver ID…`` / ``events redeliver --all`` records a
redelivery request in the database, which the running server picks up within a few seconds (whatever
the broker: memory:// is per process) and sends to the event's group listener only, deleting the row
once handled. The command waits (``--wait`` seconds, default 10) to report each outcome.
Exit codes: 0 done, 64 usage, 65 unknown dead-letter id, 75 database unavailable or not all handled
in time (still parked: run it again later).
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from jmapmono.events.deadletters import DeadLetter, DeadLetterStore
from jmapmono.exits import EX_DATAERR, EX_TEMPFAIL, CommandError

if TYPE_CHECKING:
    from jmapmono.runtime import Runtime


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``events`` sub-commands to the CLI."""
    events = sub.add_parser("events", help="the event buses: parked events and their redelivery")
    commands = events.add_subparsers(dest="events_command", metavar="SUBCOMMAND", parser_class=type(events))
    commands.required = True

    listing = commands.add_parser("dead-letters", help="list events parked after failing every attempt")
    listing.add_argument("--bus", help="only this bus (mailbox or jmap)")
    listing.add_argument("--group", help="only this group listener")
    listing.add_argument("--json", action="store_true", help="one JSON object per line, full error and event")
    listing.set_defaults(handler=_list)

    redeliver = commands.add_parser("redeliver", help="send parked events to their group listener again")
    redeliver.add_argument("ids", nargs="*", type=int, metavar="ID", help="dead-letter id (see dead-letters)")
    redeliver.add_argument("--all", action="store_true", help="every parked event (of --bus/--group)")
    redeliver.add_argument("--bus", help="with --all: only this bus")
    redeliver.add_argument("--group", help="with --all: only this group listener")
    redeliver.add_argument(
        "--wait", type=float, default=10.0, metavar="SECONDS", help="how long to wait for the outcome (0: do not)"
    )
    redeliver.set_defaults(handler=_redeliver, parser=redeliver)


def _time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _one_line(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _store() -> tuple[DeadLetterStore, Runtime]:
    from jmapmono.runtime import runtime_from_environment

    services = runtime_from_environment()
    return DeadLetterStore(services.db), services


def _list(args: argparse.Namespace) -> int:
    store, services = _store()
    try:
        letters = store.list(bus=args.bus, group=args.group)
    finally:
        services.close()
    if args.json:
        for d in letters:
            print(json.dumps(_as_json(d), separators=(",", ":")))
        return 0
    if not letters:
        print("no parked events")
        return 0
    rows = [("ID", "BUS", "GROUP", "TYPE", "ATTEMPTS", "FAILED AT", "EVENT ID", "ERROR")]
    for d in letters:
        when = _time(d.failed_at)
        error = _one_line(d.error, 60)
        rows.append((str(d.id), d.bus, d.group, d.event.type, str(d.attempts), when, d.event.id, error))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1])
    return 0


def _as_json(d: DeadLetter) -> dict:
    return {
        "id": d.id,
        "bus": d.bus,
        "group": d.group,
        "type": d.event.type,
        "attempts": d.attempts,
        "error": d.error,
        "failedAt": _time(d.failed_at),
        "createdAt": _time(d.created_at),
        "redeliveryRequested": d.redeliver_requested_at is not None,
        "event": {"id": d.event.id, "type": d.event.type, "payload": d.event.payload},
    }


def _redeliver(args: argparse.Namespace) -> int:
    if bool(args.ids) == bool(args.all):
        args.parser.error("give dead-letter IDs or --all (not both)")
    if args.ids and (args.bus or args.group):
        args.parser.error("--bus and --group go with --all")
    if args.wait < 0:
        args.parser.error("--wait must be 0 or more seconds")
    store, services = _store()
    try:
        if args.all:
            ids = [d.id for d in store.list(bus=args.bus, group=args.group)]
            if not ids:
                print("no parked events")
                return 0
        else:
            ids = list(dict.fromkeys(args.ids))
            unknown = [i for i in ids if store.get(i) is None]
            if unknown:
                raise CommandError(f"no parked event with id {', '.join(map(str, unknown))}", EX_DATAERR)
        marked = store.request_redelivery(ids)
        print(f"redelivery requested for {len(marked)} parked event(s)")
        if args.wait == 0:
            return 0
        outcome = _await(store, marked, args.wait)
    finally:
        services.close()
    failed = False
    for dead_letter_id in marked:
        status = outcome[dead_letter_id]
        print(f"{dead_letter_id}  {status}")
        failed = failed or status != "handled"
    if failed:
        raise CommandError("not every event was handled; they stay parked (see events dead-letters)", EX_TEMPFAIL)
    return 0


def _await(store: DeadLetterStore, ids: list[int], wait: float) -> dict[int, str]:
    """Poll until each row is gone (handled) or failed again, or ``wait`` seconds pass."""
    deadline = time.monotonic() + wait
    outcome: dict[int, str] = {}
    while True:
        for dead_letter_id in ids:
            if dead_letter_id in outcome:
                continue
            d = store.get(dead_letter_id)
            if d is None:
                outcome[dead_letter_id] = "handled"
            elif d.redeliver_requested_at is None:  # a bus took it and parked it again
                outcome[dead_letter_id] = f"failed again (attempts {d.attempts}): {_one_line(d.error, 100)}"
        if len(outcome) == len(ids) or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    for dead_letter_id in ids:
        outcome.setdefault(dead_letter_id, "pending: no running server has handled it yet")
    return outcome

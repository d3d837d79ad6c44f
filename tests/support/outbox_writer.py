"""A process that writes mail the way LMTP and ``deliver`` do, for the event-flow tests.

    python tests/support/outbox_writer.py crash EMAIL N [--flow]
        Deliver N messages to EMAIL (one transaction each), then flag them all in one bulk update, and
        SIGKILL itself in the after-commit hook of that last transaction: after its commit, before
        anything of it was published (and before its doorbell rang). With --flow the process runs the
        whole event flow (relay included, on memory://) and kills itself after the FIRST delivery's commit,
        before its own relay could publish it. That relay may have claimed the row already (woken by the
        commit's NOTIFY on Postgres while the commit's answer was on its way): its claims lapse after a
        second, as a dead relay's do after ``lease_seconds``.

    python tests/support/outbox_writer.py serve
        Read one recipient per line on standard input, deliver a message to it, and print one JSON line
        {"message_id", "account_id", "commit"} where ``commit`` is the wall-clock time (time.time())
        taken in the after-commit hook, for measuring wake-up latency from another process.

The database comes from DATABASE_URL (already migrated). Without --flow the process is not
gevent-patched, like the real LMTP and ``deliver`` processes.
"""

from __future__ import annotations

import sys

FLOW = "--flow" in sys.argv
if FLOW:
    from gevent import monkey

    monkey.patch_all()

import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402

from jmapmono.config import load_config  # noqa: E402
from jmapmono.events import outbox  # noqa: E402
from jmapmono.events.event import Event  # noqa: E402
from jmapmono.runtime import Runtime  # noqa: E402

MESSAGE = (
    "From: carol@example.org\r\nTo: {to}\r\nSubject: note {n}\r\nMessage-ID: <{n}.{pid}@example.org>\r\n\r\nHi.\r\n"
)


def _message(to: str, n: int) -> bytes:
    return MESSAGE.format(to=to, n=n, pid=os.getpid()).encode()


def crash(services: Runtime, email: str, count: int) -> None:
    commits = 0
    last = 1 if FLOW else count + 1  # count deliveries, then one bulk flag change

    def die(committed: int) -> None:
        print(json.dumps({"killing": committed}), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    def on_commit(_outbox_id: int, _bus: str, _event: object) -> None:
        nonlocal commits
        commits += 1
        if commits == last:
            die(commits)

    def before_publish(_bus: str, event: Event) -> None:
        if event.type == "Added":  # the relay only sees committed rows: after the delivery's commit, before its publish
            die(last)

    outbox.subscribe(services.db, on_commit)
    if FLOW:
        services.start(lease_seconds=1.0).flow.relay.before_publish.insert(0, before_publish)
    delivered = [services.mailboxes.deliver(email, _message(email, n)) for n in range(count)]
    services.mailboxes.set_keywords(delivered[0].account_id, [d.message_id for d in delivered], add=["$seen"])
    raise SystemExit("still alive after the last commit")


def serve(services: Runtime) -> None:
    commit_at: list[float] = []
    outbox.subscribe(services.db, lambda *_: commit_at.append(time.time()))
    for n, line in enumerate(sys.stdin):
        to = line.strip()
        if not to:
            continue
        commit_at.clear()
        delivered = services.mailboxes.deliver(to, _message(to, n))
        out = {"message_id": delivered.message_id, "account_id": delivered.account_id, "commit": commit_at[-1]}
        print(json.dumps(out), flush=True)


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--flow"]
    services = Runtime(load_config())
    if args[0] == "crash":
        crash(services, args[1], int(args[2]))
    elif args[0] == "serve":
        serve(services)
    else:
        raise SystemExit(f"unknown mode {args[0]!r}")


if __name__ == "__main__":
    main()

"""Push fan-out: one LMTP delivery → the StateChange on every push-enabled WebSocket of its recipients.

A real ``python -m jmapmono serve`` (SQLite, memory://, its LMTP child) and, in this process, light
byte-level WebSocket clients (tests/support/push_sockets.py: upgrade with HTTP Basic, WebSocketPushEnable,
then one read per delivery). Two cases:

- one user with ``--sockets`` sockets (default 1,500), one message to that user;
- ``--accounts`` users (default 50) with ``--spread`` sockets in all (default 5,000), one message with
  every user as a recipient (one LMTP transaction).

The clock starts when the final ``.`` of DATA is sent; each socket's sample is the arrival of its
StateChange. The row's p99 and note give the last socket: the time the whole fan-out took. ``--rounds``
deliveries of each (default 3), the sockets staying open.

    .venv/bin/python bench/push_fanout.py [--sockets 1500] [--spread 5000] [--accounts 50] [--rounds 3]
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()  # as every benchmark (common.py expects it)

import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import common  # noqa: E402
import gevent  # noqa: E402
from common import LMTPClient, message  # noqa: E402

from tests.support.lmtp_client import dot_stuff  # noqa: E402
from tests.support.push_sockets import read_text  # noqa: E402

WAIT = 120.0


def arrival(sock: socket.socket, account_of_user: str) -> float:
    """When the next StateChange arrived on ``sock`` (perf_counter)."""
    while True:
        change = read_text(sock)
        at = time.perf_counter()
        if change.get("@type") == "StateChange" and account_of_user in str(change.get("changed")):
            return at


def fan_out(lmtp_port: int, sockets: dict[str, list[socket.socket]], accounts: dict[str, str], n: int) -> list[float]:
    """One message to every user of ``sockets``; milliseconds from the end of DATA to each socket's push."""
    readers = [gevent.spawn(arrival, sock, accounts[email]) for email, socks in sockets.items() for sock in socks]
    client = LMTPClient("127.0.0.1", lmtp_port)
    try:
        client.lhlo()
        codes = [client.mail("carol@example.net").code] + [client.rcpt(email).code for email in sockets]
        codes.append(client.command("DATA").code)
        if set(codes[:-1]) != {250} or codes[-1] != 354:
            raise RuntimeError(f"LMTP envelope refused: {codes}")
        payload = dot_stuff(message(n, "everyone@example.org", 2000))
        sent = time.perf_counter()
        client.send(payload)
        replies = [client.read_reply().code for _ in sockets]
        if set(replies) != {250}:
            raise RuntimeError(f"LMTP refused the message: {replies}")
        gevent.joinall(readers, timeout=WAIT)
    finally:
        client.quit()
    missed = [r for r in readers if not r.successful()]
    if missed:
        raise RuntimeError(
            f"{len(missed)} of {len(readers)} sockets not pushed within {WAIT} s: {missed[0].exception!r}"
        )
    return [(r.value - sent) * 1000 for r in readers]


def case(figures: common.Figures, label: str, server: common.Serve, counts: dict, accounts: dict, rounds: int) -> None:
    sockets = common.open_sockets(server.http_port, counts)
    try:
        samples: list[float] = []
        last: list[float] = []
        for n in range(rounds):
            times = fan_out(server.lmtp_port, sockets, accounts, n)
            samples += times
            last.append(max(times))
        note = (
            "last socket: " + ", ".join(f"{ms:,.0f}" for ms in last) + f" ms; serve RSS {server.rss_kib() // 1024} MiB"
        )
        figures.latency(label, samples, note=note)
    finally:
        for socks in sockets.values():
            for sock in socks:
                sock.close()


def main(argv: list[str]) -> None:
    one = common.arg_int(argv, "sockets", 1500)
    spread = common.arg_int(argv, "spread", 5000)
    users = common.arg_int(argv, "accounts", 50)
    rounds = common.arg_int(argv, "rounds", 3)
    common.banner(f"push fan-out, DATA sent -> StateChange on each socket, {rounds} deliveries per case")
    figures = common.Figures("push_fanout")
    with common.temp_dir() as work:
        env = common.jmapmono_env(f"sqlite:///{work / 'jmapmono.sqlite3'}", work / "data")
        cap = str(max(one, spread))  # the per-user cap on push connections must let the sockets in
        env.update(JMAPMONO_WS_PING_SECONDS="0", JMAPMONO_MAX_PUSH_CONNECTIONS_PER_USER=cap)
        emails = [f"user{n}@example.org" for n in range(max(users, 1))]
        accounts = common.create_users(env, emails)
        with common.serving(env, work) as server:
            case(figures, f"1 user, {one:,} sockets", server, {emails[0]: one}, accounts, rounds)
            per_user = {email: spread // len(emails) for email in emails}
            label = f"{len(emails)} users, {sum(per_user.values()):,} sockets"
            case(figures, label, server, per_user, accounts, rounds)


if __name__ == "__main__":
    main(sys.argv[1:])

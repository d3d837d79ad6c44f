"""LMTP delivery throughput into a real ``python -m jmapmono serve`` (its LMTP child), SQLite and Postgres.

Messages of 4 KB and 100 KB, one recipient each, over one connection (MAIL, RCPT and DATA pipelined in
one write, as PIPELINING allows, then the message; the next once its ``250`` came back), and over 4
concurrent connections doing the same. The serving process runs its event flow meanwhile (relay,
MailboxChangeListener), as in production. Each case runs up to ``--seconds`` (default 4) or 1,000
deliveries; the number of emails in the inbox is checked afterwards over JMAP.

    .venv/bin/python bench/delivery_throughput.py [--seconds 4]
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()  # before requests, kombu, psycopg are imported

import sys  # noqa: E402
import time  # noqa: E402

import common  # noqa: E402
import gevent  # noqa: E402
from common import HttpClient, LMTPClient, basic, message, method_result  # noqa: E402

from tests.support.lmtp_client import dot_stuff  # noqa: E402

USER = "alice@example.org"
MAX_DELIVERIES = 1000


def deliver_loop(port: int, size: int, deadline: float, budget: list[int], samples: list[float]) -> None:
    """Deliver over one connection until the deadline or the shared budget runs out."""
    client = LMTPClient("127.0.0.1", port)
    if "PIPELINING" not in client.lhlo().text:
        raise RuntimeError("the LMTP server does not offer PIPELINING")
    n = 0
    while budget[0] > 0 and time.perf_counter() < deadline:
        budget[0] -= 1
        payload = dot_stuff(message(n, USER, size))
        n += 1
        started = time.perf_counter()
        client.send(f"MAIL FROM:<carol@example.net>\r\nRCPT TO:<{USER}>\r\nDATA\r\n".encode())
        codes = [client.read_reply().code for _ in range(3)]
        if codes != [250, 250, 354]:
            raise RuntimeError(f"LMTP envelope refused: {codes}")
        client.send(payload)
        reply = client.read_reply()
        if reply.code != 250:
            raise RuntimeError(f"LMTP refused the message: {reply}")
        samples.append((time.perf_counter() - started) * 1000)
    client.quit()


def inbox_total(http: HttpClient, account: str) -> int:
    boxes = method_result(http.jmap([["Mailbox/get", {"accountId": account, "ids": None}, "0"]]))["list"]
    return next(b["totalEmails"] for b in boxes if b["role"] == "inbox")


def run(figures: common.Figures, backend: str, seconds: float, pg: object = None) -> None:
    with common.temp_dir() as work:
        env = common.jmapmono_env(common.database_url(backend, work, pg), work / "data")
        common.add_user(env, USER)
        with common.serving(env, work) as server:
            http = HttpClient(server.http_port, basic(USER))
            account = common.account_id(http)
            for size in (4_000, 100_000):
                for connections in (1, 4):
                    before = inbox_total(http, account)
                    budget, samples = [MAX_DELIVERIES], []
                    started = time.perf_counter()
                    deadline = started + seconds
                    workers = [
                        gevent.spawn(deliver_loop, server.lmtp_port, size, deadline, budget, samples)
                        for _ in range(connections)
                    ]
                    gevent.joinall(workers, raise_error=True)
                    elapsed = time.perf_counter() - started
                    stored = inbox_total(http, account) - before
                    if stored != len(samples):
                        raise RuntimeError(f"{len(samples)} deliveries accepted but {stored} emails stored")
                    case = f"{backend}: {size // 1000} KB, {connections} connection{'s' if connections > 1 else ''}"
                    figures.throughput(case, len(samples), elapsed, samples, note=f"{rss(server)} MiB RSS serve")
            http.close()


def rss(server: common.Serve) -> int:
    return server.rss_kib() // 1024


def main(argv: list[str]) -> None:
    seconds = common.arg_int(argv, "seconds", 4)
    common.banner(f"LMTP deliveries/s (latency = envelope + DATA -> 250), up to {seconds} s per case")
    figures = common.Figures("delivery_throughput")
    run(figures, "sqlite", seconds)
    with common.postgres() as pg:
        run(figures, "postgres", seconds, pg)


if __name__ == "__main__":
    main(sys.argv[1:])

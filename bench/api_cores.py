"""API throughput on every core: 1 and 8 concurrent keep-alive clients against ``serve --workers 1``,
``serve --workers N`` (N: the number of CPUs) and the Procfile's ``web`` (gunicorn, N gevent workers), SQLite +
memory://.

A real ``python -m jmapmono serve`` holds one user with 120 delivered messages. Each client is a process
of its own (this script run with ``--client``), so the client's Python does not run on the server's
interpreter; each holds one keep-alive connection (raw socket, HTTP Basic, password cached by the
server) and sends one request at a time for ``--seconds`` (default 5), starting at the same moment:

- ``Core/echo`` (HTTP, auth, JSON, dispatch, no data work);
- ``Email/get`` of 10 emails, default properties.

The figure is the total of requests answered by all clients over the window. Note that the clients
share the machine's cores with the server.

    .venv/bin/python bench/api_cores.py [--seconds 5] [--workers N]
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import common  # noqa: E402
from common import HttpClient, LMTPClient, basic, lmtp_deliver, message, method_result  # noqa: E402

USER = "alice@example.org"
MESSAGES = 120
CORE = ["urn:ietf:params:jmap:core"]
CASES = ("echo", "get10")


def client_main(port: int, case: str, seconds: float) -> None:
    """One client process: warm up, say so, wait for the common start (read from stdin), count requests until
    the end; print the count."""
    http = HttpClient(port, basic(USER))
    account = common.account_id(http)
    ids: list[str] = []
    if case == "get10":
        ids = method_result(http.jmap([["Email/query", {"accountId": account, "limit": 10}, "0"]]))["ids"]
        if len(ids) != 10:
            raise RuntimeError(f"{len(ids)} emails, expected 10")

    def one() -> None:
        if case == "echo":
            body = http.jmap([["Core/echo", {"hello": "world"}, "0"]], using=CORE)
            if body["methodResponses"][0][0] != "Core/echo":
                raise RuntimeError(f"unexpected echo response: {body}")
        else:
            got = method_result(http.jmap([["Email/get", {"accountId": account, "ids": ids}, "0"]]))
            if len(got["list"]) != 10:
                raise RuntimeError("Email/get lost emails")

    for _ in range(20):
        one()
    print("ready", flush=True)
    start_at = float(sys.stdin.readline())  # the common start, sent once every client is warm
    time.sleep(max(0.0, start_at - time.time()))
    count = 0
    end = start_at + seconds
    while time.time() < end:
        one()
        count += 1
    print(json.dumps({"count": count, "elapsed": time.time() - start_at}), flush=True)
    http.close()


def run_clients(port: int, case: str, clients: int, seconds: float) -> float:
    """Requests per second answered to ``clients`` concurrent client processes."""
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--client", str(port), case, repr(seconds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=os.path.dirname(__file__),
        )
        for _ in range(clients)
    ]
    for proc in procs:  # every process started, connected and warmed up
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"a client failed to start (exit {proc.wait()})")
    start_at = repr(time.time() + 0.2).encode() + b"\n"  # then all start at the same moment
    for proc in procs:  # every client is told before any is waited for
        assert proc.stdin is not None
        proc.stdin.write(start_at)
        proc.stdin.close()
    total, elapsed = 0, 0.0
    for proc in procs:
        out, _ = proc.communicate(timeout=seconds + 60)
        if proc.returncode != 0:
            raise RuntimeError(f"a client failed (exit {proc.returncode})")
        result = json.loads(out.decode().strip().splitlines()[-1])
        total += result["count"]
        elapsed = max(elapsed, result["elapsed"])
    return total / elapsed


def main(argv: list[str]) -> None:
    if argv and argv[0] == "--client":
        client_main(int(argv[1]), argv[2], float(argv[3]))
        return
    seconds = common.arg_int(argv, "seconds", 5)
    many = common.arg_int(argv, "workers", os.cpu_count() or 1)
    common.banner(f"API throughput, 1 and 8 keep-alive client processes, {seconds} s per case, SQLite + memory://")
    figures = common.Figures("api_cores")
    with common.temp_dir() as work:
        url = common.database_url("sqlite", work)
        env = common.jmapmono_env(url, work / "data")
        common.add_user(env, USER)
        populated = False
        forms = [("serve", workers, False) for workers in sorted({1, many})] + [("gunicorn", many, True)]
        for form, workers, gunicorn in forms:
            with common.serving(env, work, workers=workers, gunicorn=gunicorn) as server:
                if not populated:
                    lmtp = LMTPClient("127.0.0.1", server.lmtp_port)
                    lmtp.lhlo()
                    for n in range(MESSAGES):
                        lmtp_deliver(lmtp, USER, message(n, USER, 4000))
                    lmtp.quit()
                    populated = True
                for case in CASES:
                    for clients in (1, 8):
                        rate = run_clients(server.http_port, case, clients, seconds)
                        name = "Core/echo" if case == "echo" else "Email/get 10"
                        figures.value(f"{form} workers={workers} clients={clients}: HTTP {name}", rate, "req/s")


if __name__ == "__main__":
    main(sys.argv[1:])

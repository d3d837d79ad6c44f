"""Wake-up latency: a delivery committed by ANOTHER process reaching a key listener in the serving process.

LMTP and ``deliver`` are other processes than the one serving push: what they commit sits in the outbox
until the serving process's relay is woken (SQLite: the doorbell, a datagram per committing process;
Postgres: NOTIFY). Here this process runs the whole event flow (relay, MailboxChangeListener, both buses
on memory://) with its safety poll at 60 s, so only a wake-up explains a prompt arrival; a writer process
(tests/support/outbox_writer.py, the way LMTP and ``deliver`` write mail) delivers messages one at a
time and reports the wall-clock time of each commit; the clock stops when the StateChange reaches the
key listener of the account here.

    .venv/bin/python bench/wakeup_latency.py [--samples 200]
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()  # before requests, kombu, psycopg are imported

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import common  # noqa: E402
import gevent.event  # noqa: E402

from jmapmono.config import load_config  # noqa: E402
from jmapmono.events.bus import Event  # noqa: E402
from jmapmono.runtime import Runtime  # noqa: E402

SLOW_POLL = 60.0
USER = "alice@example.org"
WARMUP = 5


class Pushes:
    """A key listener recording the wall-clock arrival time of each delivery's StateChange."""

    def __init__(self) -> None:
        self.arrived: list[float] = []
        self.flag = gevent.event.Event()

    def __call__(self, event: Event) -> None:
        if "EmailDelivery" in event.payload.get("changed", {}):
            self.arrived.append(time.time())
            self.flag.set()

    def wait_count(self, n: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.arrived) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{len(self.arrived)} pushes after {timeout}s, expected {n}")
            self.flag.clear()
            if len(self.arrived) < n:
                self.flag.wait(remaining)


def measure(figures: common.Figures, backend: str, url: str, work, samples: int) -> None:
    env = common.jmapmono_env(url, work / "data")
    config = load_config(env)
    services = Runtime(config)
    user, _ = services.accounts.create_user(USER, common.PASSWORD)
    flow = services.start(poll_interval=SLOW_POLL).flow
    pushes = Pushes()
    flow.jmap_bus.register_key(user.account_id, pushes)
    writer = subprocess.Popen(
        [sys.executable, str(common.ROOT / "tests" / "support" / "outbox_writer.py"), "serve"],
        cwd=common.ROOT,
        env=dict(env, PYTHONPATH=str(common.ROOT), JMAPMONO_LOG_LEVEL="WARNING"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    latencies: list[float] = []
    started = time.perf_counter()
    try:
        for i in range(WARMUP + samples):
            writer.stdin.write(f"{USER}\n".encode())
            writer.stdin.flush()
            line = writer.stdout.readline()
            if not line:
                raise RuntimeError("the writer process died")
            commit = json.loads(line)["commit"]
            pushes.wait_count(i + 1)
            if i >= WARMUP:
                latencies.append((pushes.arrived[i] - commit) * 1000)
        elapsed = time.perf_counter() - started
    finally:
        writer.stdin.close()
        writer.wait(timeout=30)
        flow.stop()
        services.close()
    wakeups = flow.relay.stats["wakeups"]
    how = "doorbell" if backend == "sqlite" else "NOTIFY"
    figures.latency(
        f"{backend} ({how}): commit elsewhere -> key listener",
        latencies,
        note=f"relay wake-ups {wakeups}",
        rate=(WARMUP + samples) / elapsed,
    )


def main(argv: list[str]) -> None:
    samples = common.arg_int(argv, "samples", 200)
    common.banner(f"wake-up latency from another process, {samples} deliveries one at a time")
    figures = common.Figures("wakeup_latency")
    with common.temp_dir() as work, common.postgres() as pg:
        for backend in ("sqlite", "postgres"):
            sub = work / backend
            sub.mkdir()
            measure(figures, backend, common.database_url(backend, sub, pg), sub, samples)


if __name__ == "__main__":
    main(sys.argv[1:])

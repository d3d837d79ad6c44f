"""Event bus latency and throughput, on memory:// and on a real RabbitMQ (amqp://), SQLite and Postgres.

``dispatch`` of an event with a registration key → the key listener called (at most once, no storage),
and → a group listener called (once per cluster: the processed-ids claim is written in the database, so
the backend matters there). On amqp:// two bus instances ("nodes", each with its own broker connections)
run in this process: a key listener on the dispatching node (called in-process) and one on the other
node (through the broker), and the group on the other node.

Latency: one event at a time (the next once every listener had it). Throughput: a burst of events
dispatched back to back, until the last one reached the listener.

    .venv/bin/python bench/bus_latency.py [--samples 200] [--burst 2000]
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()  # before requests, kombu, psycopg are imported

import sys  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402

import common  # noqa: E402
import gevent  # noqa: E402
import gevent.event  # noqa: E402

from jmapmono.events.bus import Event, EventBus  # noqa: E402
from jmapmono.store import Database, open_database  # noqa: E402
from jmapmono.store.migrations import migrate  # noqa: E402

MEMORY = "memory://localhost/"
BATCH = 100


class Arrivals:
    """A listener that records when it was called and wakes whoever waits for a count."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.flag = gevent.event.Event()

    def __call__(self, event: Event) -> None:
        self.times.append(time.perf_counter())
        self.flag.set()

    def wait_count(self, n: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.times) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{len(self.times)} events after {timeout}s, expected {n}")
            self.flag.clear()
            if len(self.times) < n:
                self.flag.wait(remaining)


def one_at_a_time(sender: EventBus, listeners: dict[str, Arrivals], samples: int) -> tuple[dict, float]:
    """Dispatch ``samples`` events one at a time: per-listener latencies (ms) and the total seconds."""
    latencies: dict[str, list[float]] = {name: [] for name in listeners}
    started = time.perf_counter()
    for i in range(samples):
        sent = time.perf_counter()
        sender.dispatch(Event.new("StateChange", {"n": i}), ["acc1"])
        for name, arrivals in listeners.items():
            arrivals.wait_count(i + 1)
            latencies[name].append((arrivals.times[i] - sent) * 1000)
    return latencies, time.perf_counter() - started


def burst(sender: EventBus, arrivals: Arrivals, count: int, group: bool = False) -> float:
    """Events/s of ``count`` events dispatched back to back, until the last one reached ``arrivals``.

    The sender yields every ``BATCH`` events, as a serving process does between requests (key listeners
    are called inline by dispatch; group copies wait in their queue until the sender yields)."""
    before = len(arrivals.times)
    started = time.perf_counter()
    for i in range(count):
        sender.dispatch(Event.new("StateChange", {"n": i}), [] if group else ["acc1"])
        if i % BATCH == BATCH - 1:
            gevent.sleep(0)
    arrivals.wait_count(before + count, timeout=60)
    return count / (arrivals.times[-1] - started)


def memory(figures: common.Figures, backend: str, db: Database, samples: int, count: int) -> None:
    bus = EventBus(f"b{uuid.uuid4().hex[:8]}", MEMORY, db)
    key, group = Arrivals(), Arrivals()
    bus.register_key("acc1", key)
    bus.register_group("g", group)
    bus.start()
    try:
        one_at_a_time(bus, {"key": key, "group": group}, 10)  # warm-up
        key.times.clear()
        group.times.clear()
        latencies, elapsed = one_at_a_time(bus, {"key": key, "group": group}, samples)
        figures.latency(f"memory:// {backend}: key listener", latencies["key"], rate=samples / elapsed)
        figures.latency(f"memory:// {backend}: group listener", latencies["group"])
        figures.add(common.Row(figures.bench, f"memory:// {backend}: key burst", count, rate=burst(bus, key, count)))
        figures.add(
            common.Row(figures.bench, f"memory:// {backend}: group burst", count, rate=burst(bus, group, count, True))
        )
    finally:
        bus.stop()


def amqp(figures: common.Figures, backend: str, db: Database, url: str, samples: int, count: int) -> None:
    name = f"b{uuid.uuid4().hex[:8]}"
    node_a, node_b = EventBus(name, url, db), EventBus(name, url, db)
    local, remote, group = Arrivals(), Arrivals(), Arrivals()
    node_a.register_key("acc1", local)
    node_b.register_key("acc1", remote)
    node_b.register_group("g", group)
    for node in (node_a, node_b):
        node.start()
        if not node.wait_ready(15):
            raise RuntimeError("a bus did not connect to the broker")
    try:
        listeners = {"local": local, "remote": remote, "group": group}
        one_at_a_time(node_a, listeners, 10)  # warm-up
        for arrivals in listeners.values():
            arrivals.times.clear()
        latencies, elapsed = one_at_a_time(node_a, listeners, samples)
        figures.latency(f"amqp:// {backend}: key, same instance", latencies["local"], rate=samples / elapsed)
        figures.latency(f"amqp:// {backend}: key, other instance", latencies["remote"])
        figures.latency(f"amqp:// {backend}: group, other instance", latencies["group"])
        count = count // 4  # each dispatch waits for the broker's confirms: a quarter keeps the run short
        rate = burst(node_a, remote, count)
        figures.add(common.Row(figures.bench, f"amqp:// {backend}: key burst to other", count, rate=rate))
        rate = burst(node_a, group, count, True)
        figures.add(common.Row(figures.bench, f"amqp:// {backend}: group burst", count, rate=rate))
    finally:
        node_a.stop()
        node_b.stop()


def main(argv: list[str]) -> None:
    samples = common.arg_int(argv, "samples", 200)
    count = common.arg_int(argv, "burst", 2000)
    common.banner(f"event bus, {samples} events one at a time; bursts of {count}")
    figures = common.Figures("bus_latency")
    with common.temp_dir() as work, common.postgres() as pg, common.rabbitmq() as url:
        for backend in ("sqlite", "postgres"):
            db = open_database(common.database_url(backend, work, pg))
            migrate(db)
            try:
                memory(figures, backend, db, samples, count)
                amqp(figures, backend, db, url, samples, count)
            finally:
                db.close()


if __name__ == "__main__":
    main(sys.argv[1:])

"""Run every benchmark and print one table of figures (``make bench``).

Each benchmark runs as its own process (as it would alone), in the order below, with a smaller sample
count or shorter cases where its default would not fit in about 5 minutes for the whole run on 2 cores.
One Postgres and one RabbitMQ are started here and shared (``JMAPMONO_BENCH_POSTGRES``,
``JMAPMONO_BENCH_AMQP``); each benchmark appends its rows to a JSON-lines file (``JMAPMONO_BENCH_JSON``).
A benchmark that fails is reported and the others still run; the exit status is then 1.

    .venv/bin/python bench/run_all.py [--only NAME,NAME]
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()  # before requests, kombu, psycopg are imported

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import common  # noqa: E402

from tests.support.servers import PostgresServer, RabbitMQServer  # noqa: E402

BENCH = Path(__file__).resolve().parent

#: (script, arguments for the whole-suite run). Defaults of each script are for a run on its own.
BENCHMARKS: list[tuple[str, list[str]]] = [
    ("push_latency.py", ["--samples", "200"]),
    ("push_fanout.py", ["--rounds", "2"]),
    ("api_throughput.py", ["--seconds", "1"]),  # every row of the throughput table, both backends
    ("api_cores.py", ["--seconds", "2"]),  # 1 vs 8 clients on one worker, on every core, under gunicorn
    ("resync_bytes.py", []),
    ("bus_latency.py", ["--samples", "200", "--burst", "2000"]),
    ("wakeup_latency.py", ["--samples", "200"]),
    ("delivery_throughput.py", ["--seconds", "2"]),
    ("inbox_query.py", ["--messages", "10000", "--seconds", "2"]),
    ("search_query.py", ["--messages", "10000", "--seconds", "2", "--deliveries", "20"]),
    ("inbox_first_paint.py", ["--messages", "10000", "--samples", "5", "--deliveries", "10"]),
    ("bulk_append.py", ["--messages", "2000", "--batch", "100", "--deliveries", "50"]),
    ("websocket_idle_memory.py", ["--connections", "200", "--echoes", "300", "--ours-only"]),
    ("websocket_lifecycle.py", ["--cycles", "500", "--deliveries", "50"]),
    ("stop_time.py", ["--repeat", "3"]),
    ("parse_speed.py", ["--repeat", "10"]),
    ("login_timing.py", ["--samples", "20"]),
]


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def run_one(script: str, args: list[str], env: dict[str, str], logs: Path) -> tuple[int, float, str]:
    """Run one benchmark, its output shown as it comes; (exit code, seconds, its output)."""
    started = time.monotonic()
    err_path = logs / f"{script}.stderr"
    with err_path.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, str(BENCH / script), *args], cwd=common.ROOT, env=env, stdout=subprocess.PIPE, stderr=err
        )
        lines = []
        for raw in proc.stdout:
            line = raw.decode(errors="replace")
            lines.append(line)
            print(line, end="", flush=True)
        code = proc.wait()
    if code != 0:
        print(f"!! {script} exited {code}; its stderr (last lines):\n{err_path.read_text(errors='replace')[-3000:]}")
    return code, time.monotonic() - started, "".join(lines)


def main(argv: list[str]) -> int:
    only = set(argv[argv.index("--only") + 1].split(",")) if "--only" in argv else None
    chosen = [(s, a) for s, a in BENCHMARKS if (BENCH / s).exists() and (only is None or s.removesuffix(".py") in only)]
    started = time.monotonic()
    print(f"jmapmono benchmarks, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, load {load_average()}")
    speed = common.python_speed()
    print(f"this machine's Python: 10**6 additions in {speed:.0f} ms (compare figures only between like machines)")
    with common.temp_dir("jmapmono-bench-all-") as work:
        postgres, rabbitmq = PostgresServer(), None
        try:
            rabbitmq = RabbitMQServer()
            figures = work / "figures.jsonl"
            env = dict(
                os.environ,
                JMAPMONO_BENCH_JSON=str(figures),
                JMAPMONO_BENCH_POSTGRES=postgres.url(),
                JMAPMONO_BENCH_AMQP=rabbitmq.url,
            )
            results = {script: run_one(script, args, env, work) for script, args in chosen}
            rows = [json.loads(line) for line in figures.read_text().splitlines()] if figures.exists() else []
        finally:
            if rabbitmq is not None:
                rabbitmq.close()
            postgres.stop()

    print(
        f"\n\n==== all figures ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, load {load_average()};"
        f" Python: 10**6 additions in {speed:.0f} ms)"
    )
    print(common.HEADER)
    for row in rows:
        print(common.format_row(common.Row(**row)))
    for script, (_, _, output) in results.items():
        if not any(r["bench"] == script.removesuffix(".py") for r in rows) and output.strip():
            print(f"\n-- {script} (as it printed)\n{output.strip()}")
    print()
    for script, (code, seconds, _) in results.items():
        print(f"{script:<28} {'ok' if code == 0 else f'FAILED ({code})':<12} {seconds:6.1f} s")
    print(f"{'total':<28} {'':<12} {time.monotonic() - started:6.1f} s")
    return 0 if all(code == 0 for code, _, _ in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

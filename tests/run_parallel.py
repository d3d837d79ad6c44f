"""Run the test suite in N parallel pytest processes, one shard of test files each.

pytest-xdist cannot be used: its workers run execnet's thread-based I/O loop,
which dies (LoopExit) once gevent has patched the process, and our tests must
run patched like the server. So each shard is a plain pytest process with its
own Postgres and RabbitMQ. Test files are found under tests/ at any depth and
dealt to shards by their recorded durations (tests/durations.json, keyed by the
file's path below tests/; largest first).

The run ends with the tests each backend ran (counted from the ``[sqlite]`` /
``[postgres]`` part of the test ids in the shards' JUnit reports) and one closing
line ``N passed, N failed, N skipped``. It fails when no test ran on Postgres (the
whole suite, or files with backend tests), unless JMAPMONO_TEST_BACKENDS leaves it out.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
DURATIONS = TESTS / "durations.json"
COUNTS = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)")
BACKENDS = ("sqlite", "postgres")


def key(path: Path) -> str:
    """A test file's key in durations.json: its path below tests/ (``events/test_bus.py``)."""
    return (ROOT / path).resolve().relative_to(TESTS).as_posix()


def shards(files: list[Path], n: int) -> list[list[Path]]:
    known = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
    weight = {f: known.get(key(f), f.stat().st_size / 200) for f in files}
    buckets: list[tuple[float, list[Path]]] = [(0.0, []) for _ in range(n)]
    for f in sorted(files, key=lambda f: -weight[f]):
        i = min(range(n), key=lambda k: buckets[k][0])
        buckets[i] = (buckets[i][0] + weight[f], buckets[i][1] + [f])
    return [b for _, b in buckets if b]


def test_cases(junit: Path) -> list[ElementTree.Element]:
    return list(ElementTree.parse(junit).iter("testcase")) if junit.exists() else []


def file_of(case: ElementTree.Element) -> str | None:
    """``tests.events.test_bus`` (possibly followed by a class name) -> ``events/test_bus.py``."""
    parts = case.get("classname", "").split(".")
    for i, part in enumerate(parts):
        if part.startswith("test_"):
            return "/".join([*parts[1:i], part]) + ".py"
    return None


def file_durations(cases: list[ElementTree.Element]) -> dict[str, float]:
    """Seconds spent per test file."""
    totals: dict[str, float] = {}
    for case in cases:
        name = file_of(case)
        if name:
            totals[name] = round(totals.get(name, 0.0) + float(case.get("time", 0)), 2)
    return totals


def backend_of(case: ElementTree.Element) -> str | None:
    """The backend in a test id's parameters (``test_x[sqlite]``, ``test_y[postgres-args0]``), if any."""
    params = re.search(r"\[(.*)\]$", case.get("name", ""))
    found = [b for b in BACKENDS if params and b in params.group(1).split("-")]
    return found[0] if found else None


def backend_counts(cases: list[ElementTree.Element]) -> Counter:
    """Tests that ran (passed or failed, not skipped) per backend; ``None`` for those without one."""
    return Counter(backend_of(c) for c in cases if c.find("skipped") is None)


def postgres_left_out_on_purpose() -> bool:
    chosen = os.environ.get("JMAPMONO_TEST_BACKENDS")
    return chosen is not None and "postgres" not in [b.strip() for b in chosen.split(",")]


def main(argv: list[str]) -> int:
    n = int(os.environ.get("JMAPMONO_TEST_SHARDS", "2"))
    extra = [a for a in argv if a.startswith("-")]
    chosen = [Path(a) for a in argv if not a.startswith("-")]
    files = chosen or sorted(TESTS.rglob("test_*.py"))
    runs = []
    for i, shard in enumerate(shards(files, n)):
        out = tempfile.TemporaryFile(mode="w+")
        junit = Path(tempfile.mkdtemp(prefix="jmapmono-junit-")) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-ra", f"--junitxml={junit}", *extra, *map(str, shard)]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        runs.append((i, shard, out, proc, time.time(), junit))
    totals: dict[str, int] = {}
    durations: dict[str, float] = {}
    per_backend: Counter = Counter()
    worst = 0
    for i, shard, out, proc, started, junit in runs:
        code = proc.wait()
        elapsed = time.time() - started
        out.seek(0)
        text = out.read()
        print(f"===== shard {i + 1}/{len(runs)}: {len(shard)} files, exit {code}, {elapsed:.0f} s =====")
        print(text.rstrip())
        last = [line for line in text.splitlines() if COUNTS.search(line)]
        for count, kind in COUNTS.findall(last[-1] if last else ""):
            kind = "errors" if kind.startswith("error") else kind
            totals[kind] = totals.get(kind, 0) + int(count)
        if code not in (0, 5):
            worst = code or 1
        cases = test_cases(junit)
        durations.update(file_durations(cases))
        per_backend += backend_counts(cases)
    if not chosen and os.environ.get("JMAPMONO_RECORD_DURATIONS"):
        DURATIONS.write_text(json.dumps(dict(sorted(durations.items())), indent=1) + "\n")
    if not totals.get("passed") and not totals.get("failed"):
        print("no test ran")
        return worst or 1
    ran = ", ".join(f"{b} {per_backend[b]}" for b in BACKENDS)
    print(f"backends: {ran} (tests on each; {per_backend[None]} tests use no database backend)")
    if not per_backend["postgres"] and not postgres_left_out_on_purpose() and (per_backend["sqlite"] or not chosen):
        print("no test ran on Postgres (make test installs it); JMAPMONO_TEST_BACKENDS=sqlite leaves it out on purpose")
        worst = worst or 1
    summary = f"{totals.get('passed', 0)} passed, {totals.get('failed', 0) + totals.get('errors', 0)} failed"
    if totals.get("skipped"):
        summary += f", {totals['skipped']} skipped"
    print(summary)
    return worst


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

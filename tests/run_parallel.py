"""Run the test suite in N parallel pytest processes, one shard of test files each.

pytest-xdist cannot be used: its workers run execnet's thread-based I/O loop,
which dies (LoopExit) once gevent has patched the process, and our tests must
run patched like the server. So each shard is a plain pytest process with its
own Postgres and RabbitMQ. Files are dealt to shards by their recorded
durations (largest first); the combined result ends with one closing line
``N passed, N failed, N skipped``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parent.parent
DURATIONS = ROOT / "tests" / "durations.json"
COUNTS = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)")


def shards(files: list[Path], n: int) -> list[list[Path]]:
    known = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
    weight = {f: known.get(f.name, f.stat().st_size / 200) for f in files}
    buckets: list[tuple[float, list[Path]]] = [(0.0, []) for _ in range(n)]
    for f in sorted(files, key=lambda f: -weight[f]):
        i = min(range(n), key=lambda k: buckets[k][0])
        buckets[i] = (buckets[i][0] + weight[f], buckets[i][1] + [f])
    return [b for _, b in buckets if b]


def file_durations(junit: Path) -> dict[str, float]:
    """Seconds spent per test file, from a shard's JUnit XML report."""
    totals: dict[str, float] = {}
    if not junit.exists():
        return totals
    for case in ElementTree.parse(junit).iter("testcase"):
        module = case.get("classname", "").split(".")
        name = next((m for m in module if m.startswith("test_")), None)
        if name:
            totals[f"{name}.py"] = round(totals.get(f"{name}.py", 0.0) + float(case.get("time", 0)), 2)
    return totals


def main(argv: list[str]) -> int:
    n = int(os.environ.get("JMAPMONO_TEST_SHARDS", "2"))
    extra = [a for a in argv if a.startswith("-")]
    chosen = [Path(a) for a in argv if not a.startswith("-")]
    files = chosen or sorted((ROOT / "tests").glob("test_*.py"))
    runs = []
    for i, shard in enumerate(shards(files, n)):
        out = tempfile.TemporaryFile(mode="w+")
        junit = Path(tempfile.mkdtemp(prefix="jmapmono-junit-")) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-ra", f"--junitxml={junit}", *extra, *map(str, shard)]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        runs.append((i, shard, out, proc, time.time(), junit))
    totals: dict[str, int] = {}
    durations: dict[str, float] = {}
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
        durations.update(file_durations(junit))
    if not chosen and os.environ.get("JMAPMONO_RECORD_DURATIONS"):
        DURATIONS.write_text(json.dumps(dict(sorted(durations.items())), indent=1) + "\n")
    if not totals.get("passed") and not totals.get("failed"):
        print("no test ran")
        return worst or 1
    summary = f"{totals.get('passed', 0)} passed, {totals.get('failed', 0) + totals.get('errors', 0)} failed"
    if totals.get("skipped"):
        summary += f", {totals['skipped']} skipped"
    print(summary)
    return worst


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

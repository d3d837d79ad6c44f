"""Metrics of several serving processes: gunicorn workers write into one directory and /metrics sums them."""

from __future__ import annotations

import base64
import json
import os
import re
import urllib.request
from pathlib import Path

from prometheus_client.multiprocess import MultiProcessCollector

from jmapmono.metrics_dir import prepare_multiprocess_dir
from tests.support.servers import start_gunicorn
from tests.support.waiting import wait_until

ECHO = "jmapmono_api_method_duration_seconds_count"
#: The hooks conf/gunicorn.conf.py carries (here alone, in a config of the test's own).
HOOKS = """
def on_starting(server):
    from jmapmono.metrics_dir import prepare_multiprocess_dir
    prepare_multiprocess_dir()


def child_exit(server, worker):
    from jmapmono.metrics_dir import mark_process_dead
    mark_process_dead(worker.pid)
"""


def echo_count(text_or_files: str | list[str]) -> float:
    if isinstance(text_or_files, list):
        families = MultiProcessCollector.merge(text_or_files, accumulate=True)
        samples = [s for f in families for s in f.samples]
        return sum(s.value for s in samples if s.name == ECHO and s.labels.get("method") == "Core/echo")
    match = re.search(r'^jmapmono_api_method_duration_seconds_count\{method="Core/echo"\} (\S+)$', text_or_files, re.M)
    return float(match.group(1)) if match else 0.0


def per_worker(directory: Path) -> dict[int, float]:
    """Core/echo calls counted in each worker's own file."""
    out = {}
    for path in directory.glob("histogram_*.db"):
        out[int(path.stem.split("_")[1])] = echo_count([str(path)])
    return out


def test_prepare_empties_the_directory_and_exports_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "unset below, and unset again after the test")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    stale = tmp_path / "metrics" / "counter_123.db"
    stale.parent.mkdir()
    stale.write_bytes(b"old run")
    path = prepare_multiprocess_dir(tmp_path)
    assert path == tmp_path / "metrics"
    assert list(path.iterdir()) == []
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(path)


def test_gunicorn_workers_metrics_are_summed(services, config, tmp_path):
    services.accounts.create_user("alice@example.org", "pw")
    conf = tmp_path / "gunicorn_hooks.py"
    conf.write_text(HOOKS)
    server = start_gunicorn(config.database_url, config.data_dir, tmp_path, workers=2, GUNICORN_CMD_ARGS=f"-c {conf}")
    directory = Path(config.data_dir) / "metrics"
    auth = "Basic " + base64.b64encode(b"alice@example.org:pw").decode()
    body = json.dumps({"using": ["urn:ietf:params:jmap:core"], "methodCalls": [["Core/echo", {}, "0"]]}).encode()
    sent = [0]

    def echo_until_both_workers_served() -> bool:
        request = urllib.request.Request(
            server.url + "/jmap/api",
            data=body,
            headers={"Authorization": auth, "Content-Type": "application/json", "Connection": "close"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        sent[0] += 1
        return len([n for n in per_worker(directory).values() if n > 0]) >= 2

    try:
        wait_until(echo_until_both_workers_served, timeout=60, message="both workers served a request")
        for _ in range(3):  # whichever worker answers the scrape, it sums both
            with urllib.request.urlopen(server.url + "/metrics", timeout=10) as response:
                assert echo_count(response.read().decode()) == sent[0]
    finally:
        server.stop()

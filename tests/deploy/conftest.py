"""Deployment fixtures: a virtualenv with the runtime requirements alone (requirements.txt), built once per
test session (what a Procfile platform installs for a source checkout; nothing from requirements-dev.txt is in
it), and a cluster of ``serve`` nodes on Postgres and RabbitMQ."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import ALICE, PASSWORD, Cluster
from tests.support.servers import ROOT, add_user
from tests.support.venvs import PIP_TIMEOUT, run


@pytest.fixture(scope="session")
def runtime_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("runtime-venv")
    venv = work / "venv"
    run([sys.executable, "-m", "venv", venv], work, PIP_TIMEOUT)
    run([venv / "bin" / "python", "-m", "pip", "install", "-q", "-r", ROOT / "requirements.txt"], work, PIP_TIMEOUT)
    return venv


@pytest.fixture
def cluster(postgres_server, rabbitmq, tmp_path) -> Iterator[Cluster]:
    """An empty cluster on a new database with alice in it; no node's log may hold a traceback at the end."""
    url = postgres_server.new_database()
    add_user(url, tmp_path / "data", ALICE, PASSWORD)
    cluster = Cluster(url, rabbitmq.url, tmp_path)
    yield cluster
    for log in cluster.stop():
        assert "Traceback" not in log, log

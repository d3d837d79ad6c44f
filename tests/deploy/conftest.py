"""A virtualenv with the runtime requirements alone (requirements.txt), built once per test session: what a
Procfile platform installs for a source checkout. Nothing from requirements-dev.txt is in it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.support.servers import ROOT
from tests.support.venvs import PIP_TIMEOUT, run


@pytest.fixture(scope="session")
def runtime_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("runtime-venv")
    venv = work / "venv"
    run([sys.executable, "-m", "venv", venv], work, PIP_TIMEOUT)
    run([venv / "bin" / "python", "-m", "pip", "install", "-q", "-r", ROOT / "requirements.txt"], work, PIP_TIMEOUT)
    return venv

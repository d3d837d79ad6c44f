"""Environments as a user builds them: a copy of the source tree, a fresh venv, commands run to completion.

Shared by the tests that start a deployment form from what a user installs (the package, the runtime
requirements alone) rather than from the test suite's own venv."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from tests.support.servers import ROOT

#: Seconds one pip or venv step may take (a cold cache downloads nothing: wheels come from PIP_FIND_LINKS).
PIP_TIMEOUT = 300


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without anything that would point a process at the source tree or configure jmapmono."""
    dropped = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "DATABASE_URL", "BROKER_URL", "PORT")
    env = {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("JMAPMONO_")}
    env.update(extra)
    return env


def run(argv: list[str | Path], cwd: Path, timeout: float, env: dict[str, str] | None = None) -> str:
    """Run ``argv`` to completion; its standard output, or a failure showing everything it printed."""
    proc = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env or clean_env(), capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def copy_source(dest: Path, names: Iterable[str]) -> Path:
    """Copy ``names`` (files and folders of the repository, without bytecode) into ``dest``; return it."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, dest / name)
    return dest

"""``conf/systemd/jmapmono.service`` as systemd reads it: ``systemd-analyze verify`` finds nothing to say."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.support.servers import ROOT

UNIT = ROOT / "conf" / "systemd" / "jmapmono.service"
EXEC = "/srv/jmapmono/venv/bin/jmapmono"


def test_the_unit_verifies_and_runs_serve_as_jmapmono_with_the_env_file(tmp_path):
    text = UNIT.read_text()
    assert f"ExecStart={EXEC} serve\n" in text
    for line in (
        "User=jmapmono",
        "EnvironmentFile=/etc/jmapmono/env",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/jmapmono",
        "NoNewPrivileges=yes",
    ):
        assert f"\n{line}\n" in text, line
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian: systemd)")
    # verify checks that ExecStart exists: point it at a stand-in, change nothing else.
    stand_in = tmp_path / "jmapmono"
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)
    unit = tmp_path / "jmapmono.service"
    unit.write_text(text.replace(EXEC, str(stand_in)))
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")

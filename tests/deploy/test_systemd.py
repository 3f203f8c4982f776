"""The shipped systemd unit (config/systemd/supnet.service) passes ``systemd-analyze verify`` without a warning.

verify also checks that ExecStart's program exists: the unit's /opt/supnet/bin/supnet (the guide's install path)
is pointed at the supnet installed beside this Python, nothing else changes. Without systemd-analyze the check
skips, except under CI=true.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO

UNIT = REPO / "config" / "systemd" / "supnet.service"
INSTALLED = "/opt/supnet/bin/supnet"


def _verify(unit: Path) -> str:
    """Everything systemd-analyze verify says about the unit (empty: nothing to complain about)."""
    if shutil.which("systemd-analyze") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-analyze is missing under CI (package systemd)")
        pytest.skip("systemd-analyze is not installed")
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    said = result.stdout + result.stderr
    return f"exit {result.returncode}: {said}" if result.returncode else said


def test_the_unit_runs_supnet_serve_as_its_own_user_on_its_state_directory() -> None:
    text = UNIT.read_text(encoding="utf-8")
    assert f"ExecStart={INSTALLED} serve --data-dir /var/lib/supnet" in text
    for line in ("User=supnet", "StateDirectory=supnet", "StateDirectoryMode=0700", "Restart=on-failure"):
        assert line in text.splitlines(), line


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    supnet = Path(sys.executable).parent / "supnet"
    assert supnet.is_file(), f"{supnet}: supnet is not installed beside this Python"
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text(encoding="utf-8").replace(INSTALLED, str(supnet)), encoding="utf-8")
    assert _verify(unit) == ""


def test_verify_as_used_here_catches_a_bad_unit(tmp_path: Path) -> None:
    """systemd-analyze exits 0 on an unknown key: only its silence counts as a pass."""
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text(encoding="utf-8").replace("RestartSec=", "RestartSecs="), encoding="utf-8")
    assert "RestartSecs" in _verify(unit)

"""Every benchmark starts as the README runs it (``python bench/NAME.py``) and as a module (``-m bench.NAME``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(path.stem for path in (REPO_ROOT / "bench").glob("*.py") if not path.stem.startswith("_"))


def test_the_benchmarks_are_found() -> None:
    assert {"federation", "federation_drilldown", "federation_reports", "ingest", "supervision"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_benchmark_starts_as_a_script_and_as_a_module(name: str) -> None:
    # Run as a script, bench/ is first on sys.path: bench/federation.py must not shadow the federation package.
    for command in ([sys.executable, f"bench/{name}.py", "--help"], [sys.executable, "-m", f"bench.{name}", "--help"]):
        result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, f"{' '.join(command[1:])}: {result.stderr[-2000:]}"
        assert "usage:" in result.stdout.lower()

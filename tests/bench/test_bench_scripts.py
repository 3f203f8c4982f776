"""Every benchmark starts as the README runs it (``python bench/NAME.py``) and as a module (``-m bench.NAME``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(path.stem for path in (REPO_ROOT / "bench").glob("*.py") if not path.stem.startswith("_"))


def test_the_benchmarks_are_found() -> None:
    assert {"federation", "federation_drilldown", "federation_reports", "grpc_idle", "ingest", "supervision"} <= set(
        SCRIPTS
    )


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_benchmark_starts_as_a_script_and_as_a_module(name: str) -> None:
    # Run as a script, bench/ is first on sys.path: bench/federation.py must not shadow the federation package.
    for command in ([sys.executable, f"bench/{name}.py", "--help"], [sys.executable, "-m", f"bench.{name}", "--help"]):
        result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, f"{' '.join(command[1:])}: {result.stderr[-2000:]}"
        assert "usage:" in result.stdout.lower()


def test_the_import_benchmark_runs_at_a_small_size_and_ends_with_its_json_line() -> None:
    # A schema change once broke the benchmark's raw-sqlite baseline while every test passed: run it small here.
    command = [sys.executable, "bench/ingest.py", "--cases", "300", "--skip-postgres"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["sqlite"]["rejected"] == 0 and figures["sqlite"]["records_per_s"] > 0
    # The CPU profile names the statements the import spends its database CPU on, the bucket upsert among them.
    profile = figures["sqlite"]["profile"]
    assert figures["sqlite"]["cpu_ratio_to_schema_baseline"] > 0
    assert "executemany INSERT metric_buckets" in profile["database_cpu_by_statement"]


def test_a_driver_call_is_labelled_by_its_verb_and_table() -> None:
    from bench._db_time import statement_label

    assert statement_label("executemany", ("INSERT INTO cases(case_no) VALUES (?)",)) == "executemany INSERT cases"
    assert statement_label("execute", ("UPDATE cases SET status = ? WHERE case_no = ?",)) == "execute UPDATE cases"
    assert statement_label("execute", ("select case_no from completions where 1",)) == "execute SELECT completions"
    assert statement_label("fetchall", ()) == "fetchall"


@pytest.mark.slow
def test_the_grpc_idle_benchmark_runs_at_a_small_size_and_ends_with_its_json_line() -> None:
    command = [sys.executable, "bench/grpc_idle.py", "--servers", "20", "--seconds", "1"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["benchmark"] == "grpc_idle" and figures["servers"] == 20
    # Idle sync servers still cost CPU: their pollers wake 5 times a second.
    assert figures["sync_idle_percent"] > 0 and figures["sync_dealloc_60s_idle_percent"] > 0
    assert figures["aio_idle_percent"] >= 0
    # grpc.aio's own path for sync handlers drops the cancel a subtree search needs (README, idle CPU): a grpc
    # upgrade that delivers it should be noticed.
    assert figures["aio_sync_stream_cancel_callback"] is False

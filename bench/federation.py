"""Federation benchmark (issue 4): every figure of the two federation benchmarks in one run and one JSON line.

Runs, one after the other so they do not share the two cores:
* ``bench/federation_drilldown.py``: drill-down latency p50/p99 over 1, 2 and 3 hops against a bare gRPC relay
  over the same hops (target ≤ 3x), and roll-up freshness street → province with report-on-change (< 2 s);
* ``bench/federation_reports.py``: report build + sign at a node holding 1,000,000 cases after ~10,000 new
  records (< 200 ms) and province fan-in of signed reports over mutual TLS against a bare echo (≥ 1,000/s).

Each part measures its own baseline in the same run and prints its own lines; this script passes their output
through and closes with one JSON line holding both parts' figures and which targets were met.
Usage: python bench/federation.py [--quick]   (--quick: 100,000 cases, fewer iterations; for a smoke run)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent


def _run(module: str, arguments: list[str]) -> dict[str, Any]:
    """Run one benchmark module, passing its lines through as they come; the figures of its closing JSON line."""
    # As a module from the repository root: run as a script, bench/ would come first on sys.path and this
    # file would shadow the federation package.
    command = [sys.executable, "-m", f"bench.{module}", *arguments]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=BENCH_DIR.parent) as process:
        assert process.stdout is not None  # stdout=PIPE
        last = ""
        for line in process.stdout:
            if last:
                print(last, end="", flush=True)
            last = line
    if process.returncode != 0 or not last.startswith("{"):
        raise SystemExit(f"bench.{module} failed (exit code {process.returncode})")
    figures: dict[str, Any] = json.loads(last)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="100,000 cases and fewer iterations")
    args = parser.parse_args(argv)
    drilldown = _run("federation_drilldown", ["--iterations", "100", "--trials", "3"] if args.quick else [])
    reports = _run("federation_reports", ["--quick"] if args.quick else [])
    latency = drilldown["latency"]
    targets = {
        "drilldown_ratio_max_3x": all(figures["ratio_p50"] <= 3.0 for figures in latency.values()),
        "freshness_under_2s": drilldown["freshness_seconds"]["median"] < 2.0,
        "build_sign_under_200ms": bool(reports["build_target_met"]),
        "fan_in_at_least_1000_per_s": bool(reports["fan_in_target_met"]),
    }
    print(json.dumps({"benchmark": "federation", "drilldown": drilldown, "reports": reports, "targets_met": targets}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

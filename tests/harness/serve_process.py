"""``supnet serve`` as a real process in tests: started on a data directory, and waited for until it writes its
state file (``serve.json``: pid and addresses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def start_serve(data_dir: Path) -> subprocess.Popen[bytes]:
    """``supnet serve`` on data_dir with INFO logs; its output (stdout and stderr together) is in ``stdout``."""
    return subprocess.Popen(
        [sys.executable, "-m", "node.cli.main", "serve", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "SUPNET_LOG_LEVEL": "INFO"},
    )


def wait_for_state(data_dir: Path, process: subprocess.Popen[bytes], timeout: float = 30) -> dict[str, object]:
    """The serve state file once the process has written it; AssertionError if it exits or times out first."""
    deadline = time.monotonic() + timeout
    state_file = data_dir / "serve.json"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited early: {process.stdout.read().decode() if process.stdout else ''}")
        if state_file.exists():
            return dict(json.loads(state_file.read_text()))
        time.sleep(0.05)
    raise AssertionError("serve did not write serve.json")

"""A serving node's state files (serve.json, enrol.json): where it listens, and whether its process is alive."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from node.errors import UnavailableError


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists (one of another user's counts: it exists, we may not signal it)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


SERVE_STATE_FILE = "serve.json"
ENROL_STATE_FILE = "enrol.json"
# How long ``supnet pki token`` waits for a serving node to open its enrolment listener for the new token: the
# node sees pki/tokens.json change within its file watcher's interval (1 s) and opens the listener at once.
ENROL_OPEN_WAIT_SECONDS = 5.0


def write_state_file(path: Path, state: dict[str, Any]) -> None:
    """Write a state file whole, then rename: a reader (supnet query, the launcher, a test) never sees half a file."""
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps(state, ensure_ascii=False, indent=2), encoding="utf-8")
    partial.replace(path)


def read_state_file(path: Path) -> dict[str, Any] | None:
    """A state file's object, or None when it is missing or not a JSON object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def live_address(path: Path) -> str | None:
    """The ``address`` a state file names, if the process that wrote it (its ``pid``) is still alive."""
    state = read_state_file(path)
    if state is None or not isinstance(state.get("address"), str):
        return None
    return str(state["address"]) if pid_alive(int(state.get("pid", 0))) else None


def serve_state_path(data_dir: Path) -> Path:
    """Where a serving node writes its pid and bound address (read by ``supnet query`` and the launcher)."""
    return data_dir / SERVE_STATE_FILE


def enrol_state_path(data_dir: Path) -> Path:
    """Where a serving node writes its enrolment listener's address (next to serve.json)."""
    return data_dir / ENROL_STATE_FILE


def local_server_address(data_dir: Path) -> str:
    """host:port of this data directory's running server; UnavailableError telling how to start one if none."""
    address = live_address(serve_state_path(data_dir))
    if address is not None:
        return address
    raise UnavailableError(
        f"no running server for {data_dir}: start it with 'supnet serve --data-dir {data_dir}' (or pass --address)"
    )


def running_enrol_address(data_dir: Path) -> str | None:
    """host:port of this node's running enrolment listener, or None."""
    return live_address(enrol_state_path(data_dir))


def wait_for_enrol_address(data_dir: Path, timeout: float) -> str | None:
    """The enrolment listener's address, waiting up to ``timeout`` s for it to open while the node is serving.

    None at once when no process serves the data directory (nothing would open it), or after ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        address = running_enrol_address(data_dir)
        if address is not None or live_address(serve_state_path(data_dir)) is None:
            return address
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)

"""A serving node's state files (serve.json, enrol.json): where it listens, and whether its process is alive."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from node.errors import ConfigError


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


def serve_state_path(data_dir: Path) -> Path:
    """Where a serving node writes its pid and bound address (read by ``supnet query`` and the launcher)."""
    return data_dir / SERVE_STATE_FILE


def read_serve_state(data_dir: Path) -> dict[str, Any] | None:
    """The running server's state file, or None if the node does not seem to be serving."""
    path = serve_state_path(data_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_serve_state(data_dir: Path, state: dict[str, Any]) -> None:
    """Write serve.json whole, then rename: a reader (supnet query, the launcher, a test) never sees half a file."""
    path = serve_state_path(data_dir)
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(state), encoding="utf-8")
    partial.replace(path)


def local_server_address(data_dir: Path) -> str:
    """host:port of this data directory's running server; ConfigError telling how to start one if none."""
    state = read_serve_state(data_dir)
    if state is not None and isinstance(state.get("address"), str) and pid_alive(int(state.get("pid", 0))):
        return str(state["address"])
    raise ConfigError(
        f"no running server for {data_dir}: start it with 'supnet serve --data-dir {data_dir}' (or pass --address)"
    )

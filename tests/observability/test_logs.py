"""Log lines of real ``supnet`` processes: JSON or text, every line on the node's clock (ISO 8601 with its offset,
in the node's zone, not the machine's) and naming the node; ``--log-format`` over ``[logging] format``; Alembic
silent unless DEBUG. The JSON ``supnet serve`` also serves /metrics and answers health and GetNodeInfo with the
version ``supnet --version`` prints."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path

from federation.proto.v1.node_service_pb2 import NodeInfoRequest
from federation.proto.v1.node_service_pb2_grpc import NodeServiceStub
from node.bootstrap import init_node
from node.config import load_config, save_config
from tests.harness.pki import channel_as, provision

ZONE = "Asia/Urumqi"  # +06:00 all year: neither the machine's zone nor the default one
OFFSET = "+06:00"
ISO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+06:00$")
TEXT_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d) (DEBUG|INFO|WARNING|ERROR) \[(\S+)\] (\S+): "
)


def _environment(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SUPNET_LOG")}
    return {**env, **extra}


def _supnet(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=_environment(**env),
    )


def _node(tmp_path: Path, node_id: str = "gd", **logging: str) -> Path:
    data_dir = tmp_path / node_id
    init_node(data_dir, node_id, level="province")
    config = load_config(data_dir)
    config.calendar.timezone = ZONE
    for key, value in logging.items():
        setattr(config.logging, key, value)
    save_config(data_dir, config)
    return data_dir


def _wait_for_state(data_dir: Path, process: subprocess.Popen[str], timeout: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "serve exited early"
        state_file = data_dir / "serve.json"
        if state_file.exists():
            return dict(json.loads(state_file.read_text()))
        time.sleep(0.05)
    raise AssertionError("serve did not write serve.json")


def test_json_serve_writes_only_json_lines_on_the_nodes_clock_and_serves_metrics(tmp_path: Path) -> None:
    data_dir = _node(tmp_path)
    provision(tmp_path, ["gd"])
    version = _supnet("--version").stdout.strip()
    assert re.fullmatch(r"supnet \d+\.\d+\.\S+", version), version
    process = subprocess.Popen(
        [sys.executable, "-m", "node", "--log-format", "json", "serve", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_environment(),
    )
    try:
        state = _wait_for_state(data_dir, process)
        with urllib.request.urlopen(f"http://{state['metrics_address']}/metrics", timeout=10) as reply:
            metrics = reply.read().decode()
        assert f'supnet_build_info{{node="gd",version="{version.split()[1]}"}} 1.0' in metrics
        assert "supnet_database_up 1.0" in metrics
        with channel_as(data_dir, str(state["address"]), "gd") as channel:
            info = NodeServiceStub(channel).GetNodeInfo(NodeInfoRequest(), timeout=10)
        assert f"supnet {info.software_version}" == version
        assert _supnet("health", "--data-dir", str(data_dir)).returncode == 0  # finds it through serve.json
        assert str(state["started_at"]).endswith(OFFSET)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output
    lines = output.splitlines()
    assert lines
    entries = [json.loads(line) for line in lines]  # every line, stdout and stderr alike, is one JSON object
    for entry in entries:
        assert ISO_TIME.match(entry["time"]), entry
        assert entry["node"] == "gd", entry
        assert entry["level"] in {"INFO", "WARNING", "ERROR"}, entry
        assert entry["logger"] and isinstance(entry["message"], str)
        assert not entry["logger"].startswith("alembic"), entry
    messages = [entry["message"] for entry in entries]
    assert any("serving on" in message and "over mutual TLS" in message for message in messages)
    assert any("Prometheus metrics on http://" in message for message in messages)
    assert messages[-1] == "node gd stopped cleanly"
    # The node's clock: the times run forward and lie around now. A record is stamped when a thread makes it and
    # written when that thread takes the handler's lock, so two threads' lines may be a few milliseconds out of order
    # (seen under load: 13 ms); a line a second behind the one before it would be a wrong clock.
    times = [datetime.fromisoformat(entry["time"]) for entry in entries]
    assert all((later - earlier).total_seconds() > -1 for earlier, later in itertools.pairwise(times))
    assert abs((times[-1] - datetime.now(times[-1].tzinfo)).total_seconds()) < 120


def test_the_command_line_format_wins_over_the_configured_one(tmp_path: Path) -> None:
    data_dir = _node(tmp_path, "gd.x", format="json")
    configured = _supnet("scan", "--data-dir", str(data_dir), SUPNET_LOG_LEVEL="INFO")
    assert configured.returncode == 0, configured.stderr
    entries = [json.loads(line) for line in configured.stderr.splitlines()]
    assert any(entry["message"].startswith("scan as of") for entry in entries)
    assert all(entry["node"] == "gd.x" and ISO_TIME.match(entry["time"]) for entry in entries)

    text = _supnet("--log-format", "text", "scan", "--data-dir", str(data_dir), SUPNET_LOG_LEVEL="INFO")
    assert text.returncode == 0, text.stderr
    lines = text.stderr.splitlines()
    assert lines
    for line in lines:
        match = TEXT_LINE.match(line)
        assert match is not None, line
        assert match.group(1).endswith(OFFSET) and match.group(3) == "gd.x"
    # The environment variable is the command line's too (containers set it).
    env = _supnet("scan", "--data-dir", str(data_dir), SUPNET_LOG_LEVEL="INFO", SUPNET_LOG_FORMAT="text")
    assert all(TEXT_LINE.match(line) for line in env.stderr.splitlines()), env.stderr


def _loggers(stderr: str) -> set[str]:
    return {match.group(4) for line in stderr.splitlines() if (match := TEXT_LINE.match(line))}


def test_alembic_speaks_only_at_debug(tmp_path: Path) -> None:
    quiet = _supnet("init", "--data-dir", str(tmp_path / "a"), "--id", "gd", SUPNET_LOG_LEVEL="INFO")
    assert quiet.returncode == 0, quiet.stderr
    assert _loggers(quiet.stderr) and not {name for name in _loggers(quiet.stderr) if name.startswith("alembic")}
    debug = _supnet("init", "--data-dir", str(tmp_path / "b"), "--id", "gd", SUPNET_LOG_LEVEL="DEBUG")
    assert debug.returncode == 0, debug.stderr
    assert "alembic.runtime.migration" in _loggers(debug.stderr)
    assert "Running upgrade" in debug.stderr

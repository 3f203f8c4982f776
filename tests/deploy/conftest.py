"""Tests of what the project ships for deployment: docs/deploy.md run as written, the systemd unit, the locked
dependency set, and the compose tree under a real Docker engine (docker-compose.yml, Dockerfile, config/compose/).

Fixtures here: ``docker_engine``, a Docker engine for the session — the one already running, or else one of this
test's own (its socket, data root and exec root under a temporary directory; no bridge, no iptables), stopped by
its pid at the end. Tools a test needs and lacks make it skip, except under CI=true (.ci/run installs them), where
a skip would hide a gap: they fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def require_tools(*tools: str, why: str) -> None:
    """Skip without these programs — but fail under CI, where .ci/run must have installed them."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if not missing:
        return
    message = f"{', '.join(missing)} not installed ({why})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}: .ci/run installs it on a fresh machine")
    pytest.skip(message)


@dataclass(frozen=True)
class DockerEngine:
    """A reachable Docker engine: the environment its clients (docker, docker-compose, make) need."""

    env: dict[str, str]
    own_daemon: bool

    def run(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a client command against this engine; on failure the assertion shows its output."""
        result = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=timeout, check=False)
        if check:
            assert result.returncode == 0, (
                f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result


def _engine_answers(env: dict[str, str]) -> bool:
    try:
        probe = subprocess.run(["docker", "info"], env=env, capture_output=True, timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return False
    return probe.returncode == 0


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """The running Docker engine, or a daemon of our own for the session (stopped by its pid afterwards)."""
    require_tools("docker", "docker-compose", why="the compose tree runs under a real Docker engine")
    env = dict(os.environ)
    if _engine_answers(env):
        yield DockerEngine(env=env, own_daemon=False)
        return
    require_tools("dockerd", why="no Docker engine runs, so the test starts one")
    if os.geteuid() != 0:
        message = "no Docker engine runs and only root can start one"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    # A short path: the daemon's and containerd's unix sockets live under it (108-byte limit).
    root = Path(tempfile.mkdtemp(prefix="supnet-dockerd-", dir="/tmp"))
    # Images and containers in memory when possible: the layers are written once and thrown away, and on a busy
    # disk writing and deleting a gigabyte of small files is most of the time the test takes.
    (root / "data").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8g,mode=0711", "tmpfs", str(root / "data")], check=False)
    env["DOCKER_HOST"] = f"unix://{root}/docker.sock"
    log = (root / "dockerd.log").open("wb")
    daemon = subprocess.Popen(
        [
            "dockerd",
            "--host", env["DOCKER_HOST"],
            "--data-root", str(root / "data"),
            "--exec-root", str(root / "exec"),
            "--pidfile", str(root / "dockerd.pid"),
            "--bridge=none",
            "--iptables=false",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not _engine_answers(env):
            assert daemon.poll() is None, f"dockerd exited {daemon.returncode}:\n{_tail(root / 'dockerd.log')}"
            assert time.monotonic() < deadline, f"dockerd did not answer in 60 s:\n{_tail(root / 'dockerd.log')}"
            time.sleep(0.5)
        yield DockerEngine(env=env, own_daemon=True)
    finally:
        daemon.send_signal(signal.SIGTERM)  # our daemon, by its pid; it stops its own containerd
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(timeout=30)
        log.close()
        _unmount_below(root)
        shutil.rmtree(root, ignore_errors=True)


def _unmount_below(root: Path) -> None:
    """Unmount what the daemon left mounted under its own directories (its network namespace handle)."""
    mounts = Path("/proc/self/mounts").read_text(encoding="utf-8").splitlines()
    points = [line.split()[1] for line in mounts if len(line.split()) > 1]
    for point in sorted((p for p in points if p.startswith(f"{root}/")), key=len, reverse=True):
        subprocess.run(["umount", point], capture_output=True, check=False)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"

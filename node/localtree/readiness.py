"""Whether a launched node is up: its gRPC health check, and the wait until every node of a tree serves.

``wait_until_serving`` asks a node only once the process started for it announced it in ``serve.json`` (written by
``supnet serve`` after its servers started): before that its port is closed, and asking a tree of hundreds of
nodes again and again would keep one core busy with TLS handshakes while the nodes start.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from federation import InvalidArgumentError, SupnetError
from node.localtree.state import LaunchedNode
from node.run_state import read_state_file, serve_state_path
from node.trust import PkiDirectory, node_channel

HEALTH_POLL_SECONDS = 0.1


class LaunchError(SupnetError):
    """A node of the tree could not be set up or started; the message names it and quotes its log."""

    code = "LAUNCH"


def health_status(address: str, timeout: float = 1.0, *, pki: PkiDirectory | None = None, node_id: str = "") -> str:
    """SERVING / NOT_SERVING / UNKNOWN / UNREACHABLE for a node's overall health, within a deadline.

    With ``pki`` (the node's own directory) the check runs over mutual TLS and accepts only ``node_id``'s
    certificate; without, over plaintext (a tree in the insecure plaintext mode).
    """
    if pki is not None and not node_id:
        raise InvalidArgumentError("a health check over mutual TLS needs the node id to expect")
    with node_channel(pki, address, node_id or "unknown") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return "UNREACHABLE"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _announced(node: LaunchedNode, process: subprocess.Popen[bytes] | None) -> bool:
    """True once the process we started for ``node`` says in its serve.json that it serves it (or none was started).

    ``supnet serve`` writes serve.json after its server(s) started, so before that a health check can only fail:
    skipping it keeps the launcher from spending a core on TLS handshakes with ports that are not open yet.
    """
    if process is None:
        return True
    path = serve_state_path(Path(node.data_dir))
    if not path.exists():  # a stat: cheap enough for every waiting node on every round
        return False
    state = read_state_file(path) or {}
    return state.get("pid") == process.pid


def wait_until_serving(
    nodes: Sequence[LaunchedNode],
    processes: Mapping[str, subprocess.Popen[bytes]],
    timeout: float,
    *,
    insecure_plaintext: bool = False,
) -> None:
    """Poll health until every node answers SERVING; LaunchError naming a node that died or never came up.

    A node is asked (over mutual TLS, its own certificate expected) once its process announced it in serve.json.
    """
    deadline = time.monotonic() + timeout
    waiting = {node.id: node for node in nodes}
    while waiting:
        for node_id, node in list(waiting.items()):
            process = processes.get(node_id)
            if process is not None and process.poll() is not None:
                raise LaunchError(
                    f"node {node_id} exited with code {process.returncode} while starting; "
                    f"its log {node.log_file} ends with:\n{log_tail(Path(node.log_file))}"
                )
            if not _announced(node, process):
                continue
            remaining = deadline - time.monotonic()
            check = health_status(
                node.address,
                timeout=max(min(remaining, 1.0), 0.05),
                pki=node.pki(insecure_plaintext),
                node_id=node.id,
            )
            if check == "SERVING":
                del waiting[node_id]
        if not waiting:
            return
        if time.monotonic() > deadline:
            names = ", ".join(sorted(waiting))
            raise LaunchError(f"node(s) {names} not serving after {timeout:.0f} s; see their serve.log")
        time.sleep(HEALTH_POLL_SECONDS)

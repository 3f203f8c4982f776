"""Multi-node launcher: a topology TOML becomes a tree of ``supnet serve`` processes on loopback.

``up`` (``supnet federation up TOPOLOGY.toml --dir DIR``):

1. reads the topology (node ids, levels, names, cases to generate; config overrides for every node);
2. picks a free loopback port per node and provisions the PKI of the whole tree (node.trust.provisioning:
   a root CA at the root node, then every node enrolled by its parent through the real one-time token + CSR
   flow, in-process), writing each node's ``DIR/<id>/pki``, plus one ingest credential per node
   (``pki/ingest/local-ingest.*``), while the workers of step 3 run (they never read ``pki/``); every node then
   serves and calls over mutual TLS. With
   ``insecure_plaintext`` it instead creates each node's Ed25519 key (``DIR/<id>/keys``) so every config can
   name its parent's and children's public keys, and sets ``federation.insecure_plaintext`` everywhere;
3. runs ``supnet federation setup-node`` in a few worker processes (init, config, ``supnet generate``-style
   synthetic data, import), since one process per node would spend most of its time starting Python;
4. starts ``supnet serve`` for each node, top-down (with ``hosts``: one process per group of nodes, each a
   host of several nodes, node.server.hosting; ``host_groups`` makes groups of whole subtrees), and waits
   until every one answers the gRPC health check (asked once the node's serve.json names the process started
   for it; each check with a deadline, over mutual TLS with the node's own certificate; a child whose parent is
   not listening yet retries from its outbox);
5. writes ``DIR/federation.json`` (pids, addresses, data directories) for ``status`` and ``down``.

``status`` and ``down`` look for the process serving each node NOW: the one its own ``DATA_DIR/serve.json``
names (written by every ``supnet serve``, so also a node restarted by hand), else the one ``up`` started. A pid
counts only while its command line is a ``serve`` of that very data directory (one of its ``--data-dir``, or of
its ``--host-config``'s ``data_dirs``; a relative one is resolved against the process's working directory), so
a reused pid is never signalled. ``down`` sends SIGTERM
(clean shutdown: health NOT_SERVING, in-flight calls finish) and SIGKILL after a timeout.

The launcher imports no CLI module: it runs the ``supnet`` program (``python -m node``) in subprocesses.
Topologies and the plan are in ``topology.py``, the state file in ``state.py``, health checks and the wait
until a tree serves in ``readiness.py``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from federation import (
    NotFoundError,
    SupnetError,
    generate_keypair,
    load_private_key,
    public_key_b64,
    save_private_key,
    save_public_key,
)
from node.bootstrap import REPORT_KEY_FILE
from node.config import load_host_config
from node.localtree.readiness import LaunchError, health_status, log_tail, wait_until_serving
from node.localtree.state import INGEST_SYSTEM, FederationState, LaunchedNode
from node.localtree.topology import Topology, TopologyNode, build_plan
from node.run_state import read_state_file, serve_state_path
from node.trust import PKI_DIR_NAME, provision_ingest_credential, provision_tree, tree_is_provisioned

log = logging.getLogger(__name__)

PLAN_FILE = "plan.json"
# The supnet program (node/__main__.py) as this interpreter runs it; the launcher starts nodes, it imports no CLI.
PROGRAM_MODULE = "node"
Progress = Callable[[str], None]


# --- processes ------------------------------------------------------------------------------------


# Ports handed out for processes that bind later come from BELOW the kernel's ephemeral range: a port-0 bind
# anywhere else on the machine (a test server, an outgoing connection) can then never take one of them in the
# window between picking and binding. Linux's range is read from /proc; elsewhere the usual default is assumed.
_EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST_PICKED_PORT = 10_000


def ephemeral_port_floor() -> int:
    """The lowest port of the kernel's ephemeral range (32768 when it cannot be read): our ports stay below it."""
    try:
        return int(_EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports free right now, outside the ephemeral range (held open together so none repeats)."""
    rng = random.SystemRandom()
    high = ephemeral_port_floor()
    sockets: list[socket.socket] = []
    try:
        for _ in range(count * 50):
            if len(sockets) == count:
                break
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind((host, rng.randrange(_LOWEST_PICKED_PORT, high)))
            except OSError:
                sock.close()  # taken: try another
                continue
            sockets.append(sock)
        if len(sockets) < count:
            raise LaunchError(f"found only {len(sockets)} of {count} free ports below {high} on {host}")
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def cli_command(*args: str) -> list[str]:
    """The ``supnet`` program as a subprocess command line of this interpreter."""
    return [sys.executable, "-m", PROGRAM_MODULE, *args]


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def _served_data_dirs(pid: int, command: Sequence[str]) -> set[Path]:
    """The data directories a ``supnet serve`` command line serves, resolved as that process sees them.

    Every ``--data-dir`` (a host serves several), the ``data_dirs`` of its ``--host-config``, else the envvar.
    """
    if "serve" not in command:
        return set()
    values: list[str] = []
    host_files: list[str] = []
    for index, part in enumerate(command):
        if part in ("--data-dir", "-d") and index + 1 < len(command):
            values.append(command[index + 1])
        elif part.startswith("--data-dir="):
            values.append(part.partition("=")[2])
        elif part == "--host-config" and index + 1 < len(command):
            host_files.append(command[index + 1])
    if not values and not host_files:
        with contextlib.suppress(OSError):  # the option's envvar (serve's --data-dir)
            for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                if entry.startswith(b"SUPNET_DATA_DIR="):
                    values.append(entry.partition(b"=")[2].decode("utf-8", "replace"))
    try:
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        cwd = None
    resolved: set[Path] = set()
    for value in [*values, *host_files]:
        path = Path(value)
        if not path.is_absolute():
            if cwd is None:
                continue
            path = cwd / path
        if value in host_files:
            with contextlib.suppress(SupnetError):
                resolved.update(load_host_config(path.resolve()).data_dirs)
        elif value:
            resolved.add(path.resolve())
    return resolved


def serves(pid: int, data_dir: str | Path) -> bool:
    """True if ``pid`` is alive and is a ``supnet serve`` of ``data_dir`` (not a reused pid, not another node)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    command = _cmdline(pid)
    if not command:
        # An empty command line under /proc is a zombie (exited, not yet reaped); without /proc (not Linux)
        # trust the pid, the state file is ours.
        return not Path("/proc").is_dir()
    return Path(data_dir).resolve() in _served_dirs_of(pid, command)


# What a serving process serves, by process: its command line is read on every call (a reused pid is caught), the
# directories it names are resolved once. `down` and `status` ask about every node of a host, and resolving all
# 85 data directories of a city's host for each of its 85 nodes, on every pass, made `down` of 256 nodes take
# seconds. The key holds the process's start time (/proc/PID/stat), so a reused pid never hits an old entry.
_SERVED_CACHE: dict[tuple[int, str, tuple[str, ...]], frozenset[Path]] = {}
_SERVED_CACHE_LIMIT = 4096


def _start_time(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _served_dirs_of(pid: int, command: Sequence[str]) -> frozenset[Path]:
    started = _start_time(pid)
    if not started:
        return frozenset(_served_data_dirs(pid, command))  # no /proc: nothing to key a cache entry on
    key = (pid, started, tuple(command))
    served = _SERVED_CACHE.get(key)
    if served is None:
        if len(_SERVED_CACHE) >= _SERVED_CACHE_LIMIT:
            _SERVED_CACHE.clear()
        served = _SERVED_CACHE[key] = frozenset(_served_data_dirs(pid, command))
    return served


def serving_pids(node: LaunchedNode) -> list[int]:
    """The processes serving node's data directory now: the one its serve.json names, and the one ``up`` started.

    Usually one; both when the node was restarted (by hand, or by ``supnet serve``) while the first still runs.
    """
    state = read_state_file(serve_state_path(Path(node.data_dir))) or {}
    named = state.get("pid")
    candidates = [named if isinstance(named, int) and state.get("node_id", node.id) == node.id else 0, node.pid]
    return [pid for pid in dict.fromkeys(candidates) if serves(pid, node.data_dir)]


def serving_address(node: LaunchedNode, pid: int) -> str:
    """Where the process ``pid`` serving node listens: its serve.json says so (a restart may bind elsewhere)."""
    state = read_state_file(serve_state_path(Path(node.data_dir))) or {}
    address = state.get("address")
    return address if state.get("pid") == pid and isinstance(address, str) and address else node.address


def is_our_server(node: LaunchedNode) -> bool:
    """True if a process serves node.data_dir now (the one ``up`` started, or one restarted since)."""
    return bool(serving_pids(node))


def _reap(pid: int) -> None:
    # Our own children become zombies until waited for; other processes are not ours to wait on.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _wait_exited(pid: int, timeout: float = 2.0) -> None:
    """Reap a child of ours once it has really exited (its command line empties a moment before it does)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            reaped, _status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return  # not our child (or already reaped): nothing to wait for
        if reaped == pid:
            return
        time.sleep(0.01)


# --- up / status / down ---------------------------------------------------------------------------


def _ensure_key(data_dir: Path) -> str:
    private_path = data_dir / REPORT_KEY_FILE
    if private_path.exists():
        return public_key_b64(load_private_key(private_path).public_key())
    private_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    private_key, public_key = generate_keypair()
    save_private_key(private_path, private_key)
    save_public_key(private_path.with_suffix(".pub"), public_key)
    return public_key_b64(public_key)


SetupWorker = tuple[subprocess.Popen[bytes], Path, list[str]]


def _start_setup(plan_path: Path, groups: list[list[str]], base_dir: Path) -> list[SetupWorker]:
    """Start one ``supnet federation setup-node`` process per group of nodes (they run while the PKI is made)."""
    workers: list[SetupWorker] = []
    try:
        for index, group in enumerate(groups):
            log_path = base_dir / f"setup-{index}.log"
            args = ["federation", "setup-node", str(plan_path)]
            for node_id in group:
                args += ["--node", node_id]
            with log_path.open("wb") as log_file:
                process = subprocess.Popen(cli_command(*args), stdout=log_file, stderr=subprocess.STDOUT)  # noqa: S603
            workers.append((process, log_path, group))
    except BaseException:
        _kill_setup(workers)
        raise
    return workers


def _kill_setup(workers: Sequence[SetupWorker]) -> None:
    # Interrupted (Ctrl-C, SIGTERM), failed or timed out: no setup worker may outlive the launcher.
    for process, _log_path, _group in workers:
        if process.poll() is None:
            process.kill()
            process.wait()


def _finish_setup(workers: Sequence[SetupWorker], timeout: float) -> None:
    """Wait for the setup workers; LaunchError quoting the log of every one that failed or timed out."""
    deadline = time.monotonic() + timeout
    try:
        codes = []
        for process, _log_path, _group in workers:
            try:
                codes.append(process.wait(timeout=max(deadline - time.monotonic(), 0.1)))
            except subprocess.TimeoutExpired:
                codes.append(-1)
    finally:
        _kill_setup(workers)
    failures = [
        f"setup of {', '.join(group)} failed (exit {code}); {log_path} ends with:\n{log_tail(log_path)}"
        for (_process, log_path, group), code in zip(workers, codes, strict=True)
        if code != 0
    ]
    if failures:
        raise LaunchError("\n".join(failures))


def provision_pki(topology: Topology, base_dir: Path) -> bool:
    """Give every node of the topology its ``pki/`` (and an ingest credential); False if a valid one was kept."""
    pki_dirs = {node.id: base_dir / node.id / PKI_DIR_NAME for node in topology.nodes}
    if tree_is_provisioned(pki_dirs):
        return False
    provisioned = provision_tree(pki_dirs)
    for entry in provisioned.values():
        provision_ingest_credential(entry.pki, INGEST_SYSTEM)
    return True


def _start_server(group: Sequence[LaunchedNode], extra_env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """One ``supnet serve`` process for the group: a standalone node, or a host of several (one --data-dir each)."""
    first = group[0]
    # A host's log is one file for all its nodes, in its first node's directory.
    log_path = Path(first.data_dir) / ("serve.log" if len(group) == 1 else "host.log")
    env = {**os.environ, "SUPNET_LOG_LEVEL": os.environ.get("SUPNET_LOG_LEVEL", "INFO"), **extra_env}
    args = ["serve"]
    for node in group:
        node.log_file = str(log_path)
        args += ["--data-dir", node.data_dir]
    with log_path.open("ab") as log_file:
        # A session of its own: a Ctrl-C in the launcher's terminal is handled by the launcher (clean `down`),
        # not delivered to every node at once.
        process = subprocess.Popen(  # noqa: S603
            cli_command(*args),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    for node in group:
        node.pid = process.pid
    return process


def up(
    topology: Topology,
    base_dir: Path,
    *,
    workers: int = 2,
    ready_timeout: float = 60.0,
    setup_timeout: float = 600.0,
    progress: Progress | None = None,
    extra_env: Mapping[str, str] | None = None,
    insecure_plaintext: bool = False,
    hosts: Sequence[Sequence[str]] | None = None,
    timings: dict[str, float] | None = None,
) -> FederationState:
    """Set up and start every node of the topology under base_dir; returns the saved state.

    By default the tree gets its PKI and runs over mutual TLS; ``insecure_plaintext`` runs it without TLS
    (local experiments only; refused if the directory already holds a tree with a PKI). ``hosts`` groups node
    ids into ``supnet serve`` processes hosting several nodes each (see ``host_groups``); a node in no group
    runs standalone. ``timings``, if given, receives the seconds of each phase: ``pki_seconds`` (made while the
    data is set up), ``data_seconds`` (set-up workers, PKI included) and ``start_seconds`` (until all serve).
    """
    say = progress or (lambda _message: None)
    phases = timings if timings is not None else {}
    base_dir = base_dir.resolve()
    base_dir.mkdir(parents=True, exist_ok=True)
    try:
        previous = FederationState.load(base_dir)
    except NotFoundError:
        previous = None
    if previous is not None and any(is_our_server(node) for node in previous.nodes):
        raise LaunchError(f"a federation is already running in {base_dir}; run 'supnet federation down' first")
    ports = free_ports(len(topology.nodes))
    addresses = {node.id: f"127.0.0.1:{port}" for node, port in zip(topology.nodes, ports, strict=True)}
    keys: dict[str, str] = {}
    if insecure_plaintext:
        with_pki = [node.id for node in topology.nodes if (base_dir / node.id / PKI_DIR_NAME).exists()]
        if with_pki:
            raise LaunchError(
                f"{base_dir} holds a tree set up with a PKI ({', '.join(with_pki)} have pki/); its nodes would keep "
                "using mutual TLS. Use another --dir for the insecure plaintext mode."
            )
        keys = {node.id: _ensure_key(base_dir / node.id) for node in topology.nodes}
        say("INSECURE PLAINTEXT mode: no TLS, no certificates (local experiments only)")
    plan_path = base_dir / PLAN_FILE
    plan = build_plan(topology, base_dir, addresses, keys, insecure_plaintext=insecure_plaintext)
    plan_path.write_text(json.dumps(plan, ensure_ascii=False, indent=2), encoding="utf-8")
    total_cases = sum(node.cases for node in topology.nodes)
    groups = [group for group in _balanced_groups(topology.nodes, max(workers, 1)) if group]
    say(f"setting up {len(topology.nodes)} nodes ({total_cases:,} synthetic cases) in {len(groups)} worker process(es)")
    started = time.monotonic()
    # The workers never read pki/ (init, config, synthetic data, import): the PKI is made meanwhile, here, so its
    # file syncs overlap their CPU work instead of adding to the set-up time.
    setup_workers = _start_setup(plan_path, groups, base_dir)
    try:
        if not insecure_plaintext:
            created = provision_pki(topology, base_dir)
            phases["pki_seconds"] = time.monotonic() - started
            say(
                f"PKI {'provisioned' if created else 'kept'}: root CA at {topology.root.id}, every node enrolled by "
                f"its parent (one-time token + CSRs) in {phases['pki_seconds']:.2f} s; all calls use mutual TLS"
            )
    except BaseException:
        _kill_setup(setup_workers)
        raise
    _finish_setup(setup_workers, max(setup_timeout - (time.monotonic() - started), 0.1))
    phases["data_seconds"] = time.monotonic() - started
    say(f"nodes set up in {phases['data_seconds']:.1f} s")
    state = FederationState(
        topology=topology.name,
        base_dir=str(base_dir),
        nodes=[
            LaunchedNode(node.id, node.level, node.name, str(base_dir / node.id), addresses[node.id])
            for node in topology.nodes
        ],
        started_at=time.time(),
        insecure_plaintext=insecure_plaintext,
    )
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        # Started top-down without waiting tier by tier: on a small machine the start-up is CPU bound, so a
        # pause per tier only adds idle time. A child whose parent is still starting keeps its first report
        # in its outbox and retries (federation.retry_base_seconds), so nothing depends on the order.
        started = time.monotonic()
        groups_by_first = _process_groups(topology, hosts)
        for tier in topology.tiers():
            for node in tier:
                group = groups_by_first.get(node.id)
                if group is None:
                    continue  # hosted by a process started with an earlier node
                process = _start_server([state.node(member) for member in group], extra_env or {})
                for member in group:
                    processes[member] = process
        state.save()
        say(
            f"started {len(groups_by_first)} processes for {len(processes)} nodes top-down; waiting until each "
            "node answers its health check"
        )
        wait_until_serving(state.nodes, processes, ready_timeout, insecure_plaintext=insecure_plaintext)
        phases["start_seconds"] = time.monotonic() - started
        say(f"all {len(processes)} nodes serving after {phases['start_seconds']:.1f} s")
    except BaseException:
        # Never leave half a tree running: stop what was started, then report the failure.
        down(base_dir, state=state)
        raise
    state.save()
    return state


def host_groups(topology: Topology, depth: int) -> list[list[str]]:
    """Processes hosting whole subtrees: each node at ``depth`` with everything below it; shallower nodes alone.

    ``depth`` 0 puts the whole tree in one process; a depth below the leaves gives one process per node there.
    """
    groups: dict[str, list[str]] = {}
    for node in topology.nodes:
        if node.depth < depth:
            groups[node.id] = [node.id]
        else:
            anchor = ".".join(node.id.split(".")[: depth + 1])
            groups.setdefault(anchor, []).append(node.id)
    return list(groups.values())


def _process_groups(topology: Topology, hosts: Sequence[Sequence[str]] | None) -> dict[str, list[str]]:
    """First node id of each process (top-down order) -> the node ids it serves."""
    order = {node.id: index for index, node in enumerate(topology.nodes)}
    claimed: dict[str, int] = {}
    groups: list[list[str]] = []
    for group in hosts or []:
        members = sorted(dict.fromkeys(group), key=lambda node_id: order.get(node_id, -1))
        for node_id in members:
            if node_id not in order:
                raise LaunchError(f"hosted node {node_id} is not part of the topology {topology.name}")
            if node_id in claimed:
                raise LaunchError(f"node {node_id} is listed for two host processes")
            claimed[node_id] = len(groups)
        if members:
            groups.append(members)
    groups += [[node.id] for node in topology.nodes if node.id not in claimed]
    return {group[0]: group for group in groups}


def _balanced_groups(nodes: Iterable[TopologyNode], count: int) -> list[list[str]]:
    # Largest first into the lightest group: the workers finish at about the same time.
    groups: list[list[str]] = [[] for _ in range(count)]
    loads = [0] * count
    for node in sorted(nodes, key=lambda n: (-n.cases, n.id)):
        index = loads.index(min(loads))
        groups[index].append(node.id)
        loads[index] += node.cases + 50  # every node costs something even without data
    return groups


@dataclass(frozen=True)
class NodeStatus:
    """One node as ``status`` sees it."""

    id: str
    level: str
    address: str
    pid: int
    running: bool
    health: str
    data_dir: str


def status(base_dir: Path, *, timeout: float = 1.0) -> list[NodeStatus]:
    """Process and health status of every node of the federation in base_dir."""
    state = FederationState.load(base_dir.resolve())
    result = []
    for node in state.nodes:
        pids = serving_pids(node)
        pid = pids[0] if pids else 0
        address = serving_address(node, pid) if pids else node.address
        health = (
            health_status(address, timeout, pki=node.pki(state.insecure_plaintext), node_id=node.id)
            if pids
            else "STOPPED"
        )
        result.append(NodeStatus(node.id, node.level, address, pid, bool(pids), health, node.data_dir))
    return result


def down(base_dir: Path, *, timeout: float = 10.0, state: FederationState | None = None) -> list[str]:
    """SIGTERM every node (clean shutdown), SIGKILL any still running after ``timeout``; returns the ids stopped."""
    current = state or FederationState.load(base_dir.resolve())
    # (node, pid) of every process serving a node now: restarted ones included, each checked before it is signalled.
    running = [(node, pid) for node in current.nodes for pid in serving_pids(node)]
    # A host serves several nodes: its process gets one SIGTERM, not one per node.
    for pid in dict.fromkeys(pid for _node, pid in running):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    remaining = list(running)
    while remaining and time.monotonic() < deadline:
        for node, pid in list(remaining):
            _reap(pid)
            if not serves(pid, node.data_dir):
                remaining.remove((node, pid))
        if remaining:
            time.sleep(0.05)
    killed: set[int] = set()
    for node, pid in remaining:
        log.warning("node %s (pid %s) did not stop within %.0f s; killing it", node.id, pid, timeout)
        if pid not in killed:
            killed.add(pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        for _ in range(100):
            _reap(pid)
            if not serves(pid, node.data_dir):
                break
            time.sleep(0.02)
    for pid in dict.fromkeys(pid for _node, pid in running):
        _wait_exited(pid)  # an exited child of ours stays a zombie until waited for
    for node in current.nodes:
        node.pid = 0
    if Path(current.base_dir).exists():
        current.save()
    return list(dict.fromkeys(node.id for node, _pid in running))

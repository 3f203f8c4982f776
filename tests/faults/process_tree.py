"""A tree of real ``supnet serve`` processes (PKI, mutual TLS) for the fault harness: kill, restart, import.

Set up by the launcher of ``supnet federation up`` (each node enrolled by its parent), then driven node by node:
``kill`` (SIGKILL), ``start`` (optionally with ``SUPNET_CRASH_AT``, see federation.crash_points), ``import_chunk``
(a real ``supnet import`` process beside the node's server). ``converged`` and ``invariants`` are the checks every
run ends with: the province's totals equal the sum of every node's own records, exactly; every report acknowledged
once; chains, audit logs and buckets verify.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from federation import COUNTER_FIELDS
from node.app import open_node
from node.audit_log import AuditLog
from node.config import load_config, parse_config, save_config
from node.errors import ValidationError
from node.localtree import FederationState, cli_command, down, health_status, parse_topology, up
from node.reporting import child_figures_differences
from node.supervision import check_buckets
from node.synthetic import generate

GAUGES = frozenset({"open_cases", "open_overdue_promised", "open_overdue_legal"})
COMPARED = tuple(name for name in COUNTER_FIELDS if name not in GAUGES)
TIMING = {
    "report_interval_seconds": 30,
    "report_on_change": True,
    "report_debounce_seconds": 0.1,
    "full_report_interval_seconds": 3600,
    "retry_base_seconds": 0.2,
    "retry_max_seconds": 1.0,
}


@dataclass
class Chunk:
    """A few days of a node's synthetic files, imported as one ``supnet import`` run."""

    node_id: str
    paths: list[Path]
    imported: bool = False


@dataclass
class ProcessTree:
    """The running tree; ``processes`` holds the serve processes this harness started (by node id)."""

    base_dir: Path
    state: FederationState
    chunks: dict[str, list[Chunk]] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    # -- set-up and teardown -------------------------------------------------------------------------------------
    @classmethod
    def start_tree(
        cls,
        base_dir: Path,
        nodes: Sequence[tuple[str, str]],
        windows: Sequence[tuple[date, date]],
        cases_per_window: int,
        importers: Sequence[str] | None = None,
    ) -> ProcessTree:
        """Set up and start ``nodes`` ((id, level)); generate a chunk of data per window (first day, last day) for
        each of ``importers`` (default: every node)."""
        topology = parse_topology(
            {
                "name": "faults",
                "generate": {"cases": 0, "seed": 7},
                "config": {"federation": TIMING},
                "nodes": [{"id": node_id, "level": level} for node_id, level in nodes],
            }
        )
        state = up(topology, base_dir, workers=2, ready_timeout=90)
        tree = cls(base_dir, state)
        for node_id in importers if importers is not None else [node_id for node_id, _ in nodes]:
            tree.chunks[node_id] = []
            for first, last in windows:
                out = base_dir / "chunks" / node_id / f"{first:%Y-%m-%d}"
                try:
                    summary = generate(node_id, cases_per_window, 7, out, date_from=first, date_to=last)
                except ValidationError:
                    continue  # a window inside a long holiday (春节, 国庆): no working day to accept cases on
                tree.chunks[node_id].append(Chunk(node_id, list(summary.paths)))
        return tree

    def stop_tree(self) -> None:
        for node_id in list(self.processes):
            self.kill(node_id)
        down(self.base_dir, state=self.state)

    # -- nodes ----------------------------------------------------------------------------------------------------
    def data_dir(self, node_id: str) -> Path:
        return Path(self.state.node(node_id).data_dir)

    def kill(self, node_id: str) -> None:
        """SIGKILL the node's server (whichever process serves it now) and reap it."""
        launched = self.state.node(node_id)
        process = self.processes.pop(node_id, None)
        pid = process.pid if process is not None else launched.pid
        if not pid:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if process is not None:
            process.wait(timeout=10)
        else:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                time.sleep(0.2)  # not our child (started by the launcher's setup): gone once killed

    def start(self, node_id: str, crash_at: str = "") -> subprocess.Popen[bytes]:
        """Start the node's server, with ``SUPNET_CRASH_AT=crash_at`` when given."""
        launched = self.state.node(node_id)
        env = {**os.environ, "SUPNET_LOG_LEVEL": "INFO"}
        env.pop("SUPNET_CRASH_AT", None)
        if crash_at:
            env["SUPNET_CRASH_AT"] = crash_at
        with (self.data_dir(node_id) / "serve.log").open("ab") as log_file:
            process = subprocess.Popen(
                cli_command("serve", "--data-dir", str(self.data_dir(node_id))),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        self.processes[node_id] = process
        launched.pid = process.pid
        self.state.save()
        return process

    def wait_serving(self, node_id: str, timeout: float = 30.0) -> bool:
        """True once the node answers SERVING; False if its process exited first (e.g. at a crash point)."""
        launched = self.state.node(node_id)
        process = self.processes.get(node_id)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                return False
            status = health_status(launched.address, pki=self.state.pki(node_id), node_id=node_id)
            if status == "SERVING":
                return True
            time.sleep(0.1)
        raise AssertionError(f"{node_id} did not become SERVING within {timeout} s")

    def restart(self, node_id: str, crash_at: str = "") -> subprocess.Popen[bytes]:
        self.kill(node_id)
        process = self.start(node_id, crash_at)
        self.wait_serving(node_id)
        return process

    def edit_config(self, node_id: str, change: Callable[[dict[str, Any]], None]) -> None:
        """Change the node's config file (validated as ``supnet`` would); takes effect at its next start."""
        data_dir = self.data_dir(node_id)
        values = load_config(data_dir).model_dump(mode="json")
        change(values)
        save_config(data_dir, parse_config(values, f"fault harness edit of {node_id}"))

    # -- data -----------------------------------------------------------------------------------------------------
    def next_chunk(self, node_id: str) -> Chunk | None:
        return next((chunk for chunk in self.chunks[node_id] if not chunk.imported), None)

    def import_chunk(self, chunk: Chunk, crash_at: str = "", timeout: float = 120.0) -> int:
        """``supnet import`` of the chunk as a process of its own; its return code (-9: killed at the point)."""
        env = {**os.environ}
        env.pop("SUPNET_CRASH_AT", None)
        if crash_at:
            env["SUPNET_CRASH_AT"] = crash_at
        done = subprocess.run(
            cli_command("import", "--data-dir", str(self.data_dir(chunk.node_id)), *map(str, chunk.paths)),
            env=env,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode == 0:
            chunk.imported = True
        elif done.returncode != -signal.SIGKILL:
            raise AssertionError(f"import into {chunk.node_id} failed ({done.returncode}): {done.stderr.decode()}")
        return done.returncode

    # -- checks ---------------------------------------------------------------------------------------------------
    def _db(self, node_id: str) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.data_dir(node_id) / 'node.db'}?mode=ro", uri=True, timeout=30)

    def _sums(self, node_id: str, table: str) -> dict[str, int]:
        with self._db(node_id) as conn:
            row = conn.execute(
                f"SELECT {', '.join(f'coalesce(sum({n}), 0)' for n in COMPARED)} FROM {table}"
            ).fetchone()
        return dict(zip(COMPARED, (int(value) for value in row), strict=True))

    def expected_totals(self) -> dict[str, int]:
        """Σ over every node of its own buckets (each checked against its records by ``invariants``)."""
        total = dict.fromkeys(COMPARED, 0)
        for launched in self.state.nodes:
            for name, value in self._sums(launched.id, "metric_buckets").items():
                total[name] += value
        return total

    def root_totals(self) -> dict[str, int]:
        root = self.state.nodes[0].id
        own, children = self._sums(root, "metric_buckets"), self._sums(root, "child_buckets")
        return {name: own[name] + children[name] for name in COMPARED}

    def pending_reports(self) -> dict[str, int]:
        pending: dict[str, int] = {}
        for launched in self.state.nodes[1:]:
            with self._db(launched.id) as conn:
                count = conn.execute("SELECT count(*) FROM federation_outbox WHERE status = 'pending'").fetchone()[0]
            if count:
                pending[launched.id] = int(count)
        return pending

    def converged(self, timeout: float = 90.0) -> tuple[bool, dict[str, tuple[int, int]]]:
        """Wait until the root's totals equal Σ own buckets and no report is pending; (ok, differing counters)."""
        deadline = time.monotonic() + timeout
        differing: dict[str, tuple[int, int]] = {}
        while time.monotonic() < deadline:
            expected, root = self.expected_totals(), self.root_totals()
            differing = {name: (root[name], expected[name]) for name in COMPARED if root[name] != expected[name]}
            if not differing and not self.pending_reports():
                return True, {}
            time.sleep(0.25)
        return False, differing

    def chain_problems(self) -> list[str]:
        """Each parent holds every report of its child exactly once, from #1 without a gap, up to at least the
        child's last acknowledged one (a report just built, or acknowledged but not yet marked, may be ahead)."""
        problems: list[str] = []
        for launched in self.state.nodes[1:]:
            parent = launched.id.rsplit(".", 1)[0]
            with self._db(launched.id) as conn:
                acked = conn.execute(
                    "SELECT coalesce(max(sequence), 0) FROM federation_outbox WHERE status = 'acked'"
                ).fetchone()[0]
                built = conn.execute("SELECT coalesce(max(sequence), 0) FROM federation_outbox").fetchone()[0]
            with self._db(parent) as conn:
                held = [
                    row[0]
                    for row in conn.execute(
                        "SELECT sequence FROM federation_received_reports WHERE child_id = ? ORDER BY sequence",
                        (launched.id,),
                    )
                ]
            if held != list(range(1, len(held) + 1)) or not acked <= len(held) <= built:
                shown = f"#{held[:3]}…#{held[-3:]}" if held else "none"
                problems.append(f"{parent} holds {launched.id} {shown}; its outbox: acked to #{acked}, built #{built}")
        return problems

    def invariants(self) -> list[str]:
        """Everything the harness promises after every run ([] = all hold); opens each node's database."""
        problems = self.chain_problems()
        for launched in self.state.nodes:
            node = open_node(Path(launched.data_dir))
            try:
                problems += [f"{launched.id}: {line}" for line in check_buckets(node)]
                problems += [f"{launched.id}: {line}" for line in child_figures_differences(node).differences]
                audit = AuditLog(node.engine).verify()
                if not audit.ok:
                    problems.append(f"{launched.id}: audit log broken at #{audit.first_broken_seq}: {audit.reason}")
            finally:
                node.close()
        return problems


def windows(count: int, days: int, start: date = date(2025, 1, 2)) -> list[tuple[date, date]]:
    """``count`` consecutive windows of ``days`` days (case numbers carry the day, so chunks never collide)."""
    first = start.toordinal()
    return [
        (date.fromordinal(first + index * days), date.fromordinal(first + (index + 1) * days - 1))
        for index in range(count)
    ]


def summary_line(run: int, fault: str, operations: Mapping[str, int], problems: Sequence[str], lost: Any) -> str:
    """A Jepsen-style line: operations, the fault injected, lost / duplicated / unexpected."""
    ops = ", ".join(f"{count} {name}" for name, count in operations.items())
    losses = {name: expected - got for name, (got, expected) in lost.items() if got < expected}
    extra = {name: got - expected for name, (got, expected) in lost.items() if got > expected}
    return (
        f"run {run:3d}: {fault}; ops: {ops}; lost = {losses or '∅'}, duplicated = {extra or '∅'}, "
        f"unexpected = {list(problems) or '∅'}"
    )

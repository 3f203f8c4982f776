"""``supnet simulate province``: a whole province on this machine, and the figures the issue's targets ask for.

The run, in order:

1. set-up (``node.localtree.up``): every node's data directory (a migrated database copied from one template,
   config, synthetic history at every street) and, meanwhile, the PKI of the whole tree through the real enrolment
   flow; then the ``supnet serve`` processes: each hosts a whole subtree (``host_depth`` 1: one process per city with
   its districts and streets; the province alone), all over mutual TLS;
2. roll-up: until the province's signed total of received cases equals the sum of the leaves' stored cases;
3. freshness: every street ingests a new day at once (gRPC IngestService, its own ingest credential); seconds
   until the province's signed totals equal the new sum of all leaves;
4. reachability and drill-down: the province asks every node for its summary (a signed answer each, routed hop
   by hop); p50 / p99 over the streets;
5. ``supnet verify gd`` (deep: every node's chain and totals) through the province's server: wall seconds, and
   the CPU seconds it cost the tree's processes and the verifier together (per node checked);
6. idle CPU and memory (RSS summed over the tree's processes) after it settles; report sizes.

7. province-wide search: every red card in the whole tree (``QuerySubtree``), then the same with one city's host
   process killed (about 5% of the nodes at the default shape): partial, naming the city.
The closing JSON line is built by ``figures_line``.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from federation.proto.v1 import drilldown_pb2 as dd
from federation.proto.v1.ingest_pb2 import IngestOutcome, IngestRecord
from federation.proto.v1.ingest_pb2_grpc import IngestServiceStub
from node.app import Node, open_node
from node.drilldown import SUBTREE_MAX_LIMIT, DrilldownClient, rows_of, search_subtree, verify_target
from node.errors import SupnetError
from node.localtree import FederationState, down, host_groups, up
from node.simulate.shape import NEW_DAY, Shape, province_topology
from node.store import make_engine, migrate
from node.trust import ingest_channel

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
ROOT_ID = "gd"
# What every simulated node runs with (besides the launcher's addresses): reports follow changes within a
# second, the idle polls that do not matter for the figures run less often, and no node serves a web console
# (each is an event loop of its own; supervisors use the province's, started by hand when wanted). Notifications are
# dispatched once a day: the generated history's alerts (a few dozen per street) would otherwise all be sent (to the
# log, the default channel) while the tree starts, ~10,000 per host process in the first full run. Notifying is each
# node's own work, the same at any tree size (tests/notify).
SIMULATION_CONFIG: dict[str, Any] = {
    "federation": {"report_on_change": True, "report_debounce_seconds": 0.5, "rpc_timeout_seconds": 30.0},
    "notifications": {"dispatch_interval_seconds": 86400.0},
    "directives": {"poll_seconds": 10.0},
    "web": {"enabled": False},
}
# The targets (seconds / bytes / fractions); a figure over its target is named in "missed".
TARGETS: dict[str, float] = {
    "setup_seconds": 600.0,
    "fresh_seconds": 30.0,
    "drilldown_p50_ms": 50.0,
    "drilldown_p99_ms": 250.0,
    "verify_seconds": 60.0,
    "idle_cpu_percent_of_one_core": 10.0,
    "memory_rss_gb": 12.0,
    "search_seconds": 5.0,
    "search_killed_seconds": 6.0,  # SEARCH_DEADLINE_SECONDS + 1
}
# The deadline of a province-wide search (the issue: with nodes killed, an answer within deadline + 1 s).
SEARCH_DEADLINE_SECONDS = 5.0


@dataclass
class SimulationOptions:
    """How to run the simulation."""

    shape: Shape = field(default_factory=Shape)
    base_dir: Path = Path(".supnet-province")
    host_depth: int = 1
    workers: int = 2
    new_day_cases: int = 5
    idle_seconds: float = 30.0
    settle_seconds: float = 10.0
    ready_timeout: float = 1800.0
    rollup_timeout: float = 900.0
    keep_running: bool = False


def _seed_databases(state_ids: list[str], base_dir: Path) -> None:
    """Copy one migrated SQLite file into every node's data directory (init then only confirms the schema)."""
    folder = Path(tempfile.mkdtemp(prefix="supnet-simulate-"))
    try:
        template = folder / "node.db"
        engine = make_engine(f"sqlite:///{template}")
        try:
            migrate(engine)
        finally:
            engine.dispose()
        for node_id in state_ids:
            target = base_dir / node_id / "node.db"
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(template, target)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def stored_cases(data_dir: Path) -> int:
    """Cases a node stores, counted straight from its SQLite file (read-only)."""
    with sqlite3.connect(f"file:{data_dir / 'node.db'}?mode=ro", uri=True, timeout=30) as conn:
        return int(conn.execute("SELECT count(*) FROM cases").fetchone()[0])


def leaves_total(state: FederationState) -> int:
    """The sum over all leaves of their stored cases."""
    return sum(stored_cases(Path(node.data_dir)) for node in state.nodes if node.level == "street")


def province_received(client: DrilldownClient) -> int:
    """The province's signed subtree total of received cases (its own signed summary answer)."""
    answer = client.ask(ROOT_ID, summary=dd.SummaryRequest(group_by=dd.SUMMARY_GROUP_BY_CHILD))
    return int(answer.body.summary.total.received)


def _wait_for_total(client: DrilldownClient, expected: int, timeout: float) -> tuple[float, int]:
    """(seconds, last total) until the province's signed total equals ``expected`` (or the timeout)."""
    started = time.perf_counter()
    total = -1
    while time.perf_counter() - started < timeout:
        try:
            total = province_received(client)
        except SupnetError as error:
            log.info("province not answering yet: %s", error.message)
        if total == expected:
            break
        time.sleep(0.2)
    return time.perf_counter() - started, total


def _street_item(data_dir: Path) -> tuple[str, str]:
    with sqlite3.connect(f"file:{data_dir / 'node.db'}?mode=ro", uri=True, timeout=30) as conn:
        row = conn.execute("SELECT implementation_code, department FROM items ORDER BY implementation_code").fetchone()
    return str(row[0]), str(row[1])


def _ingest_new_day(state: FederationState, street_id: str, cases: int, stamp: int) -> int:
    """A new day's acceptances at one street through its IngestService; returns the records accepted."""
    street = state.node(street_id)
    code, department = _street_item(Path(street.data_dir))
    key, chain, root = state.ingest_credential(street_id)
    records = [
        IngestRecord(
            seq=index,
            kind="acceptance",
            fields={
                "case_no": f"SIM-{stamp}-{street_id}-{index}",
                "implementation_code": code,
                "department": department,
                "accepted_at": NEW_DAY,
            },
        )
        for index in range(cases)
    ]
    with ingest_channel(key, chain, root, street.address, street_id) as channel:
        replies = list(IngestServiceStub(channel).Ingest(iter(records), timeout=120))
    return sum(1 for reply in replies if reply.outcome == IngestOutcome.INGEST_OUTCOME_ACCEPTED)


def _tree_pids(state: FederationState) -> list[int]:
    return sorted({node.pid for node in state.nodes if node.pid})


def _cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def _rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def _drill_everywhere(client: DrilldownClient, state: FederationState) -> tuple[dict[str, float], list[str]]:
    """Ask every node for its summary from the province; street latencies and the nodes that did not answer."""
    order = [node.id for node in state.nodes]
    random.Random(17).shuffle(order)
    street_ms: list[float] = []
    unreachable: list[str] = []
    levels = {node.id: node.level for node in state.nodes}
    for node_id in order:
        started = time.perf_counter()
        try:
            answer = client.ask(node_id, summary=dd.SummaryRequest(group_by=dd.SUMMARY_GROUP_BY_DAY))
        except SupnetError as error:
            log.warning("drill-down to %s failed: %s", node_id, error.message)
            unreachable.append(node_id)
            continue
        elapsed = (time.perf_counter() - started) * 1000
        if answer.envelope.signer_id != node_id:
            unreachable.append(node_id)
        elif levels[node_id] == "street":
            street_ms.append(elapsed)
    stats = {
        "drilldown_p50_ms": round(statistics.median(street_ms), 1) if street_ms else 0.0,
        "drilldown_p99_ms": round(_percentile(street_ms, 0.99), 1),
        "drilldown_samples": float(len(street_ms)),
    }
    return stats, sorted(unreachable)


def _report_sizes(client: DrilldownClient, state: FederationState) -> dict[str, int]:
    """Bytes of the province's signed summary answer and of the largest latest report a city sent it."""
    summary = client.ask(ROOT_ID, summary=dd.SummaryRequest(group_by=dd.SUMMARY_GROUP_BY_CHILD))
    city_reports = [
        client.ask(ROOT_ID, report=dd.ReportRequest(node_id=node.id)).body.report.report.ByteSize()
        for node in state.nodes
        if node.level == "city"
    ]
    return {
        "province_summary_bytes": summary.envelope.ByteSize(),
        "city_report_bytes_max": max(city_reports, default=0),
    }


def simulate_province(options: SimulationOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Build, run and measure the province; returns the figures (the tree is taken down unless keep_running)."""
    say = progress or (lambda _message: None)
    shape = options.shape
    base_dir = options.base_dir.resolve()
    topology = province_topology(shape, SIMULATION_CONFIG)
    figures: dict[str, Any] = {
        "benchmark": "simulate_province",
        "shape": shape.label(),
        "nodes": shape.node_count,
        "streets": shape.street_count,
        "cases_per_street": shape.cases_per_street,
        "host_depth": options.host_depth,
        "cpus": os.cpu_count(),
    }
    started = time.perf_counter()
    _seed_databases([node.id for node in topology.nodes], base_dir)
    hosts = host_groups(topology, options.host_depth)
    phases: dict[str, float] = {}
    state = up(
        topology,
        base_dir,
        workers=options.workers,
        ready_timeout=options.ready_timeout,
        setup_timeout=max(options.ready_timeout, 3600.0),
        progress=say,
        hosts=hosts,
        timings=phases,
    )
    # The PKI is made while the set-up workers import (its seconds are part of data_seconds); start_seconds runs
    # until every node answered its health check; setup_seconds (below) also holds the template copies.
    figures["pki_seconds"] = round(phases.get("pki_seconds", 0.0), 1)
    figures["data_seconds"] = round(phases.get("data_seconds", 0.0), 1)
    figures["start_seconds"] = round(phases.get("start_seconds", 0.0), 1)
    try:
        figures["processes"] = len(_tree_pids(state))
        figures["setup_seconds"] = round(time.perf_counter() - started, 1)
        say(
            f"全省已启动 tree up: {shape.node_count} nodes in {figures['processes']} processes, "
            f"{figures['setup_seconds']} s"
        )
        province = open_node(Path(state.node(ROOT_ID).data_dir), migrate_schema=False)
        try:
            with DrilldownClient.for_node(province, state.node(ROOT_ID).address, timeout=60.0) as client:
                _measure(options, state=state, province=province, client=client, figures=figures, say=say)
        finally:
            province.close()
    finally:
        if not options.keep_running:
            down(base_dir, timeout=60)
    figures["missed"] = missed_targets(figures)
    return figures


def _measure(
    options: SimulationOptions,
    *,
    state: FederationState,
    province: Node,
    client: DrilldownClient,
    figures: dict[str, Any],
    say: Progress,
) -> None:
    expected = leaves_total(state)
    seconds, total = _wait_for_total(client, expected, options.rollup_timeout)
    figures["initial_rollup_seconds"] = round(seconds, 1)
    figures["leaves_cases"] = expected
    figures["province_received"] = total
    if total != expected:
        raise SupnetError(f"the province's signed total {total} never reached the leaves' {expected} cases")
    say(f"汇总一致 totals equal: {total} cases at the province = sum of all leaves ({seconds:.1f} s after start)")

    streets = [node.id for node in state.nodes if node.level == "street"]
    stamp = time.time_ns()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=16) as pool:
        accepted = sum(pool.map(lambda sid: _ingest_new_day(state, sid, options.new_day_cases, stamp), streets))
    ingested = time.perf_counter()
    figures["new_day_ingest_seconds"] = round(ingested - started, 1)
    figures["new_day_records"] = accepted
    expected = leaves_total(state)
    if expected != figures["leaves_cases"] + accepted:
        raise SupnetError(f"leaves hold {expected} cases, expected {figures['leaves_cases']} + {accepted}")
    seconds, total = _wait_for_total(client, expected, options.rollup_timeout)
    figures["fresh_seconds"] = round(time.perf_counter() - started, 1)
    # The part after the last street acknowledged its records: the roll-up alone, ingest excluded.
    figures["fresh_after_last_ingest_seconds"] = round(time.perf_counter() - ingested, 1)
    figures["fresh_totals_equal"] = total == expected
    if total != expected:
        raise SupnetError(f"after the new day the province signs {total} received cases, the leaves hold {expected}")
    say(
        f"新一天数据 new day: {accepted} records at {len(streets)} streets; "
        f"province equal after {figures['fresh_seconds']} s"
    )

    started = time.perf_counter()
    stats, unreachable = _drill_everywhere(client, state)
    figures.update(stats)
    figures["drilldown_all_seconds"] = round(time.perf_counter() - started, 1)
    figures["reachable"] = len(state.nodes) - len(unreachable)
    figures["unreachable"] = unreachable
    say(
        f"逐级查询 drill-down: {figures['reachable']}/{len(state.nodes)} nodes answered; "
        f"streets p50 {stats['drilldown_p50_ms']} ms"
    )

    # CPU as well as wall time: on a shared machine the wall time moves with the load, the CPU spent much less;
    # CPU seconds / 2 cores is the least wall time this verification can take on an idle machine.
    pids = _tree_pids(state)
    tree_cpu, own_cpu = _cpu_seconds(pids), time.process_time()
    started = time.perf_counter()
    result = verify_target(province, ROOT_ID, state.node(ROOT_ID).address)
    figures["verify_seconds"] = round(time.perf_counter() - started, 1)
    verify_cpu = _cpu_seconds(pids) - tree_cpu + time.process_time() - own_cpu
    figures["verify_cpu_seconds"] = round(verify_cpu, 1)
    figures["verify_cpu_ms_per_node"] = round(1000 * verify_cpu / max(1, len(result.nodes_checked)), 1)
    figures["verify_ok"] = result.ok
    figures["verify_nodes_checked"] = len(result.nodes_checked)
    failed = [finding for finding in result.findings if not finding.ok and not finding.warning]
    figures["verify_failures"] = [f"{item.node_id} {item.check}: {item.detail}"[:300] for item in failed[:5]]
    say(
        f"校验 verify gd: ok={result.ok}, {len(result.nodes_checked)} nodes, {figures['verify_seconds']} s "
        f"({figures['verify_cpu_seconds']} CPU s, {figures['verify_cpu_ms_per_node']} ms per node)"
    )

    figures.update(_report_sizes(client, state))
    figures.update(_red_card_search(state, province, "search"))
    say(
        f"全省红牌查询 red-card search: {figures['search_rows']} rows from {figures['search_nodes_answered']} nodes "
        f"in {figures['search_seconds']} s, complete={figures['search_complete']}"
    )

    time.sleep(options.settle_seconds)
    pids = _tree_pids(state)
    before = _cpu_seconds(pids)
    time.sleep(options.idle_seconds)
    used = _cpu_seconds(pids) - before
    figures["idle_cpu_percent_of_one_core"] = round(100 * used / options.idle_seconds, 1)
    figures["memory_rss_gb"] = round(_rss_bytes(pids) / 1e9, 2)
    figures["memory_rss_mb_per_node"] = round(_rss_bytes(pids) / 1e6 / len(state.nodes), 1)
    say(f"空闲 idle: {figures['idle_cpu_percent_of_one_core']}% of one core; RSS {figures['memory_rss_gb']} GB")

    # Last, as it breaks the tree: one city's host process killed, the search again.
    city = _kill_last_city(state)
    figures["killed_city"] = city
    figures.update(_red_card_search(state, province, "search_killed"))
    say(
        f"杀掉一个市 killed {city}: search in {figures['search_killed_seconds']} s, "
        f"missing {figures['search_killed_missing']}"
    )


def _red_card_search(state: FederationState, province: Node, prefix: str) -> dict[str, Any]:
    """Every red-card case in the whole province, one subtree search from the province's own server."""
    started = time.perf_counter()
    search = search_subtree(
        province,
        ROOT_ID,
        address=state.node(ROOT_ID).address,
        deadline_seconds=SEARCH_DEADLINE_SECONDS,
        # Every red card of the province in one answer: the default limit (10,000 rows) cut the default shape's
        # ~47,000 at a fraction of the tree, so the search could never be complete.
        limit=SUBTREE_MAX_LIMIT,
        cases=dd.CasesRequest(red_card_only=True),
    )
    rows = sum(len(rows_of(verified.part)) for verified in search.parts())
    outcome = search.outcome
    assert outcome is not None  # set when the parts have been read
    return {
        f"{prefix}_seconds": round(time.perf_counter() - started, 3),
        f"{prefix}_rows": rows,
        f"{prefix}_nodes_answered": outcome.nodes_answered,
        f"{prefix}_complete": outcome.complete,
        f"{prefix}_missing": sorted(missing.node_id for missing in outcome.missing),
    }


def _kill_last_city(state: FederationState) -> str:
    """SIGKILL the process serving the last city (with its subtree when hosted); its id."""
    city = max(node.id for node in state.nodes if node.level == "city")
    pid = state.node(city).pid
    if pid:
        os.kill(pid, signal.SIGKILL)
        for _ in range(100):  # reaped by the launcher's parent or gone
            if not Path(f"/proc/{pid}").exists() or "Z" in _process_state(pid):
                break
            time.sleep(0.05)
    return city


def _process_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "X"


def missed_targets(figures: dict[str, Any]) -> list[str]:
    """The targets a figure missed, as 'name: figure > target'."""
    missed = []
    for name, target in TARGETS.items():
        value = figures.get(name)
        if isinstance(value, (int, float)) and value > target:
            missed.append(f"{name}: {value} > {target}")
    return missed

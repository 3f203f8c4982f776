"""The federation demo (``supnet demo``): a 15-node tree on this machine, its roll-up and one drill-down.

Steps, each announced on screen for a newcomer:
1. set up the PKI (a root CA at the province; every node enrolled by its parent with a one-time token and
   certificate requests) and start the tree of config/topologies/demo-15.toml (1 province, 2 cities,
   4 districts, 8 streets), every node a ``supnet serve`` process with its own database of synthetic approval
   data, every call between them over mutual TLS;
2. wait until the province's subtree totals cover every case of every node (counted straight from the 15
   databases) and all 15 nodes count as reported;
3. show the province's view: totals per city with derived rates (退件率, 受理率, 办结率 among them, one definition each:
   docs/domain.md §6), the cities ranked by efficiency score, completeness, red cards;
4. drill down where a figure looks worst: province → city → district → street → that street's overdue cases;
5. act on it: the province issues a 督办 to that street about the case shown; it goes down hop by hop, the street
   acknowledges and responds, the response comes back up and the province closes it (node.cli.demo_directive);
6. print the province's supervisor console (every ``supnet serve`` serves one) with a ready account;
7. stop every node cleanly (also on Ctrl-C or SIGTERM), unless ``--keep`` leaves the tree running to browse.
"""

from __future__ import annotations

import secrets
import signal
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.panel import Panel

from federation.proto.v1 import drilldown_pb2 as dd
from node.cli.demo_directive import show_directive_round_trip
from node.cli.render import (
    activity_table,
    cases_table,
    percent,
    print_case_detail,
    ranking_table,
    rates_of,
    registers_table,
    summary_table,
)
from node.drilldown import DrilldownClient
from node.localtree import FederationState, Topology, down, load_topology, up
from node.run_state import read_state_file, serve_state_path

DEFAULT_TOPOLOGY = Path(__file__).resolve().parents[2] / "config" / "topologies" / "demo-15.toml"
ROLLUP_TIMEOUT_SECONDS = 45.0
MIN_WIDTH = 130
CONSOLE_ACCOUNT = "demo"


def _count_cases(data_dir: Path) -> int:
    """Cases in a node's own SQLite database, read directly (an independent count, not through supnet)."""
    path = data_dir / "node.db"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as conn:
        row = conn.execute("SELECT count(*) FROM cases").fetchone()
    return int(row[0])


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C so the tree is always taken down by the finally clause."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _client(state: FederationState, node_id: str) -> DrilldownClient:
    from node.app import open_node

    node = open_node(Path(state.node(node_id).data_dir), migrate_schema=False)
    try:
        return DrilldownClient.for_node(node, state.node(node_id).address)
    finally:
        node.close()


def _wait_for_rollup(
    console: Console, client: DrilldownClient, root_id: str, *, expected_cases: int, nodes: int, timeout: float
) -> float:
    started = time.monotonic()
    last_line = ""
    while True:
        summary = client.ask(root_id, summary=dd.SummaryRequest(group_by=dd.SUMMARY_GROUP_BY_CHILD)).body.summary
        received = summary.total.received
        reported = summary.completeness.nodes_reported_in_window
        line = f"  province sees {received:,} of {expected_cases:,} cases; {reported}/{nodes} nodes reported"
        if line != last_line:
            console.print(line)
            last_line = line
        if received == expected_cases and reported == summary.completeness.nodes_in_subtree == nodes:
            _wait_until_stable(client, root_id, summary)
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"no full roll-up after {timeout:.0f} s ({line.strip()})")
        time.sleep(0.25)


def _wait_until_stable(client: DrilldownClient, root_id: str, last: dd.SummaryAnswer, quiet: float = 1.0) -> None:
    """Wait until the province's totals stop moving (the nodes' first rule scans roll up right after the data)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        time.sleep(quiet)
        current = client.ask(root_id, summary=dd.SummaryRequest(group_by=dd.SUMMARY_GROUP_BY_CHILD)).body.summary
        if current.total == last.total:
            return
        last = current


def _worst_child(client: DrilldownClient, node_id: str) -> dd.RankingRow | None:
    ranking = client.ask(
        node_id, ranking=dd.RankingRequest(metric=dd.RANKING_METRIC_OPEN_OVERDUE_PROMISED, worst_first=True)
    ).body.ranking
    children = [row for row in ranking.rows if row.node_id != node_id]
    return children[0] if children else None


def run_demo(
    console: Console,
    *,
    topology_path: Path = DEFAULT_TOPOLOGY,
    base_dir: Path | None = None,
    workers: int = 2,
    keep: bool = False,
    insecure_plaintext: bool = False,
) -> int:
    """Run the whole demo; returns the process exit code (0 on success)."""
    started = time.monotonic()
    if not console.is_terminal and console.width < MIN_WIDTH:
        # Piped output (a log, CI) would be squeezed to 80 columns; the tables need a little more.
        console = Console(width=MIN_WIDTH, highlight=False)
    topology = load_topology(topology_path)
    temporary = None if base_dir is not None else tempfile.TemporaryDirectory(prefix="supnet-demo-")
    directory = base_dir or Path(temporary.name)  # type: ignore[union-attr]
    state: FederationState | None = None
    console.print(
        Panel.fit(
            f"[bold]supnet demo[/]: {len(topology.nodes)} supervision nodes on this machine — "
            f"province → cities → districts → streets.\nEach node is its own process with its own database of "
            f"synthetic approval cases; each reports signed totals to its parent, and any ancestor can drill down.\n"
            + (
                "[bold red]INSECURE PLAINTEXT mode[/]: no certificates, no TLS (--insecure-plaintext)."
                if insecure_plaintext
                else "The province holds the root CA; every node is enrolled by its parent, and every call between "
                "nodes runs over mutual TLS, the caller identified by its certificate."
            ),
            title="what happens",
        )
    )
    try:
        with _terminate_as_interrupt():
            console.rule("1. start the tree")
            state = up(
                topology,
                directory,
                workers=workers,
                progress=lambda m: console.print(f"  {m}"),
                insecure_plaintext=insecure_plaintext,
            )
            transport = "INSECURE PLAINTEXT" if insecure_plaintext else "mutual TLS"
            console.print(
                f"  {len(state.nodes)} nodes serving under {directory} over {transport} "
                f"({time.monotonic() - started:.1f} s)"
            )
            street, case_no = _show(console, topology, state)
            console.rule(f"6. act downward: the province issues a 督办 to {street}, which answers")
            if insecure_plaintext:
                console.print("  skipped: directives are signed and verified through certificates (no PKI here)")
            else:
                show_directive_round_trip(console, state, topology.root.id, street, case_no)
            _console_account(console, state, topology.root.id, keep=keep)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: stopping every node")
        return 130
    finally:
        if state is not None and not keep:
            stopped = down(Path(state.base_dir))
            console.rule("8. shut down")
            console.print(
                f"  {len(stopped)} node processes stopped cleanly (SIGTERM: health NOT_SERVING, calls drained)"
            )
        if temporary is not None and not keep:
            temporary.cleanup()
    transport = (
        "[bold red]without TLS[/] (insecure plaintext mode)"
        if insecure_plaintext
        else "over mutual TLS: every report, query and answer between nodes authenticated by certificates"
    )
    console.print(f"[bold green]demo finished[/] in {time.monotonic() - started:.1f} s; everything ran {transport}")
    return 0


def _console_account(console: Console, state: FederationState, root: str, *, keep: bool) -> None:
    """Give the province's console a supervisor account with a fresh password and say where to open it."""
    from node.app import open_node
    from node.audit_log import operator_actor
    from node.errors import ConflictError
    from node.web import add_user, set_password

    data_dir = Path(state.node(root).data_dir)
    password = secrets.token_urlsafe(9)
    node = open_node(data_dir, migrate_schema=False)
    try:
        actor = operator_actor(node.config.id)
        try:
            add_user(node.engine, CONSOLE_ACCOUNT, "supervisor", password, actor=actor)
        except ConflictError:  # a kept tree shown again: a new password for the same account
            set_password(node.engine, CONSOLE_ACCOUNT, password, actor=actor)
    finally:
        node.close()
    url = (read_state_file(serve_state_path(data_dir)) or {}).get("web_url", "")
    console.rule("7. the province's supervisor console (监察控制台)")
    if not url:
        console.print("  the province serves no console (web.enabled = false)")
        return
    console.print(
        f"  open [bold]{url}[/]  account [bold]{CONSOLE_ACCOUNT}[/] (监察员 supervisor), password [bold]{password}[/]"
    )
    if keep:
        console.print(
            f"  the tree keeps running (--keep): browse it, then stop it with "
            f"'supnet federation down --dir {state.base_dir}'"
        )
    else:
        console.print("  (the tree stops now; 'supnet demo --keep' leaves it running to browse)")


def _show(console: Console, topology: Topology, state: FederationState) -> tuple[str, str]:
    """Steps 2-5; returns the street the drill-down ended at and the case it showed ('' if none)."""
    root = topology.root.id
    tz = ZoneInfo("Asia/Shanghai")
    expected = sum(_count_cases(Path(node.data_dir)) for node in state.nodes)
    with _client(state, root) as client:
        console.rule("2. roll-up: every node reports its subtree totals upward")
        seconds = _wait_for_rollup(
            console, client, root, expected_cases=expected, nodes=len(state.nodes), timeout=ROLLUP_TIMEOUT_SECONDS
        )
        console.print(f"  full roll-up: the province's totals include all {expected:,} cases ({seconds:.1f} s)")

        console.rule(f"3. the province's view ({root})")
        summary = client.ask(root, summary=dd.SummaryRequest(group_by=dd.SUMMARY_GROUP_BY_CHILD)).body.summary
        # Every rate per city (退件率, 受理率, 办结率 among them), however narrow the terminal: wrapped, never hidden.
        title = f"{root}: totals of each city's subtree (own = the province's own cases)"
        console.print(summary_table(summary, title, wide=True))
        rates = rates_of(summary.total)
        completeness = summary.completeness
        console.print(
            f"  early-completion rate {percent(rates['early_rate'])}, on-time {percent(rates['on_time_rate'])}, "
            f"return rate (退件率) {percent(rates['return_rate'])}; red cards {summary.total.red_cards:,}, "
            f"yellow cards {summary.total.yellow_cards:,}; open cases past their promised limit "
            f"{summary.total.open_overdue_promised:,}"
        )
        console.print(
            f"  complaints: {summary.total.complaints_received:,} received, {summary.total.complaints_accepted:,} "
            f"accepted (受理率 {percent(rates['complaint_acceptance_rate'])}), "
            f"{summary.total.complaints_concluded:,} concluded (办结率 {percent(rates['complaint_closure_rate'])})"
        )
        console.print(
            registers_table(
                summary,
                f"{root}: case records reported (上报数据) and item registers of each city's subtree "
                "(compression = promised ÷ legal; flagged = promised over half the legal limit, unexplained)",
            )
        )
        console.print(
            activity_table(
                summary,
                f"{root}: directives (督办, 告诫书, 整改, 通报) and accountability measures (问责) per city",
            )
        )
        console.print(
            f"  reporting completeness: {completeness.nodes_reported_in_window}/{completeness.nodes_in_subtree} "
            "nodes reported within the window"
        )
        ranking = client.ask(root, ranking=dd.RankingRequest(metric=dd.RANKING_METRIC_SCORE))
        console.print(ranking_table(ranking.body.ranking, f"{root}: cities ranked by efficiency score (效能考评)"))

        console.rule("4. drill down where it looks worst (most open cases past their promised limit)")
        current = root
        path = [root]
        while True:
            worst = _worst_child(client, current)
            if worst is None:
                break
            console.print(
                f"  {current} → [bold]{worst.node_id}[/]: {worst.numerator:,} open overdue cases in its subtree"
            )
            current = worst.node_id
            path.append(current)
            if current.count(".") < root.count(".") + 3:
                detail = client.ask(current, summary=dd.SummaryRequest(group_by=dd.SUMMARY_GROUP_BY_CHILD))
                console.print(summary_table(detail.body.summary, f"{current}: its children"))
        console.rule(
            f"5. the street {current}: its own overdue cases (answer signed by {current}, relayed via "
            f"{' → '.join(path[:-1])})"
        )
        answer = client.ask(
            current, page_size=10, cases=dd.CasesRequest(overdue_only=True, status=dd.CASE_STATUS_FILTER_OPEN)
        )
        rows = list(answer.body.cases.cases)
        if not rows:
            answer = client.ask(current, page_size=10, cases=dd.CasesRequest(overdue_only=True))
            rows = list(answer.body.cases.cases)
        console.print(cases_table(rows, f"{current}: overdue cases (first {len(rows)}; applicants masked)", tz))
        console.print(f"  [dim]{answer.verified_by}[/]")
        if rows:
            detail_answer = client.ask(current, case_detail=dd.CaseDetailRequest(case_no=rows[0].case_no))
            print_case_detail(detail_answer.body.case_detail, tz, console)
        return current, rows[0].case_no if rows else ""

"""``supnet federation up|status|down``: run a whole tree of nodes on loopback; ``setup-node`` prepares nodes."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from node.cli.common import JsonFlag, console, handle_errors, print_json
from node.cli.render import Col, fitted_table, print_table
from node.cli.tabular import EncodingOption, FormatOption, OutOption, WideFlag, emit_rows
from node.errors import ConfigError
from node.observability import software_version

log = logging.getLogger(__name__)

DEFAULT_DIR = Path(".supnet-federation")
IMPORT_MARKER = "generated/.imported.json"

FederationDir = Annotated[
    Path, typer.Option("--dir", help="Directory holding the nodes' data directories and federation.json.")
]


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge config overrides (sections are dicts) into a config mapping."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def setup_node(plan_node: dict[str, Any]) -> dict[str, Any]:
    """Init a node (keeping an existing key), write its config from the plan, generate and import its data.

    The node's office then works through the generated complaints (node.cli.demo_complaints).
    """
    from datetime import date

    from node.app import open_node
    from node.bootstrap import init_node
    from node.cli.demo_complaints import work_through_complaints
    from node.config import config_path, load_config, parse_config, save_config
    from node.ingest import Importer
    from node.supervision import default_listeners
    from node.synthetic import generate

    data_dir = Path(plan_node["data_dir"])
    node_id = str(plan_node["id"])
    if not config_path(data_dir).exists():
        init_node(data_dir, node_id, level=plan_node["level"], name=plan_node.get("name", ""))
    current = load_config(data_dir).model_dump(mode="json")
    merged = _merge(current, {"id": node_id, "level": plan_node["level"], "name": plan_node.get("name", "")})
    merged = _merge(merged, plan_node.get("config", {}))
    merged["federation"]["children"] = plan_node.get("config", {}).get("federation", {}).get("children", [])
    save_config(data_dir, parse_config(merged, f"plan for {node_id}"))
    result: dict[str, Any] = {"id": node_id, "cases": 0, "accepted": 0, "rejected": 0}
    cases = int(plan_node.get("cases", 0))
    if cases <= 0:
        return result
    wanted = {"cases": cases, "seed": plan_node.get("seed", 1), "from": plan_node.get("date_from", "")}
    wanted["to"] = plan_node.get("date_to", "")
    marker = data_dir / IMPORT_MARKER
    if marker.exists() and json.loads(marker.read_text(encoding="utf-8")).get("wanted") == wanted:
        return {**result, "cases": cases, "already_imported": True}
    options: dict[str, Any] = {}
    if wanted["from"]:
        options["date_from"] = date.fromisoformat(str(wanted["from"]))
    if wanted["to"]:
        options["date_to"] = date.fromisoformat(str(wanted["to"]))
    generated = generate(node_id, cases, int(wanted["seed"]), data_dir / "generated", **options)
    node = open_node(data_dir)
    try:
        summary = Importer(node, listeners=default_listeners(node)).import_files(generated.paths)
        work = work_through_complaints(node, int(wanted["seed"]))
    finally:
        node.close()
    if summary.rejected:
        log.warning("node %s: %s generated records rejected: %s", node_id, summary.rejected, summary.errors[:3])
    marker.write_text(json.dumps({"wanted": wanted, "accepted": summary.accepted}), encoding="utf-8")
    return {
        **result,
        "cases": cases,
        "accepted": summary.accepted,
        "rejected": summary.rejected,
        "complaints": {"accepted": work.accepted, "declined": work.declined, "concluded": work.concluded},
    }


def register(app: typer.Typer) -> None:
    """Add ``supnet federation ...``."""
    group = typer.Typer(help="Run a tree of nodes on this machine (loopback): up, status, down.", no_args_is_help=True)
    app.add_typer(group, name="federation")

    @group.command("up")
    @handle_errors
    def up_command(
        topology: Annotated[Path, typer.Argument(help="Topology TOML, e.g. config/topologies/small-3.toml.")],
        *,
        directory: FederationDir = DEFAULT_DIR,
        workers: Annotated[int, typer.Option(help="Processes preparing node data in parallel.")] = 2,
        timeout: Annotated[float, typer.Option(help="Seconds each tier may take to become healthy.")] = 60.0,
        insecure_plaintext: Annotated[
            bool,
            typer.Option(
                "--insecure-plaintext",
                help="No PKI, no TLS: nodes trust configured keys and anyone reaching a port (experiments only).",
            ),
        ] = False,
        json_output: JsonFlag = False,
    ) -> None:
        """Set up every node of TOPOLOGY (PKI, data dir, config, synthetic data) and start them, top-down.

        Every node is enrolled by its parent and every call runs over mutual TLS, unless --insecure-plaintext.
        """
        from node.localtree import load_topology, up

        tree = load_topology(topology)
        state = up(
            tree,
            directory,
            workers=workers,
            ready_timeout=timeout,
            progress=None if json_output else console.print,
            insecure_plaintext=insecure_plaintext,
        )
        if json_output:
            print_json(
                {
                    "base_dir": state.base_dir,
                    "mutual_tls": not state.insecure_plaintext,
                    "nodes": [vars(node) for node in state.nodes],
                }
            )
            return
        _print_nodes([(n.id, n.level, n.address, str(n.pid), "SERVING", n.data_dir) for n in state.nodes])
        console.print(f"stop with: supnet federation down --dir {directory}")

    @group.command("status")
    @handle_errors
    def status_command(
        *,
        directory: FederationDir = DEFAULT_DIR,
        json_output: JsonFlag = False,
        fmt: FormatOption = None,
        out: OutOption = None,
        encoding: EncodingOption = "utf-8",
        wide: WideFlag = False,
    ) -> None:
        """Show each node's process and health."""
        from node.localtree import status

        statuses = status(directory)
        records = [vars(s) for s in statuses]
        if emit_rows(fmt, out, records, title="federation status", encoding=encoding, as_json=json_output):
            return
        if json_output:
            print_json(records)
            return
        _print_nodes([(s.id, s.level, s.address, str(s.pid or "-"), s.health, s.data_dir) for s in statuses], wide)
        console.print(f"supnet {software_version()}", highlight=False)

    @group.command("down")
    @handle_errors
    def down_command(
        directory: FederationDir = DEFAULT_DIR,
        timeout: Annotated[float, typer.Option(help="Seconds to wait after SIGTERM before SIGKILL.")] = 10.0,
        json_output: JsonFlag = False,
    ) -> None:
        """Stop every node cleanly (SIGTERM, then SIGKILL after the timeout)."""
        from node.localtree import down

        stopped = down(directory, timeout=timeout)
        if json_output:
            print_json({"stopped": stopped})
        else:
            console.print(f"stopped {len(stopped)} node(s): {', '.join(stopped) or '-'}")

    @group.command("setup-node", hidden=True)
    @handle_errors
    def setup_node_command(
        plan: Annotated[Path, typer.Argument(help="plan.json written by 'federation up'.")],
        node_ids: Annotated[
            list[str] | None, typer.Option("--node", help="Node id(s) to set up (default: all).")
        ] = None,
    ) -> None:
        """Prepare nodes from a launcher plan (used by 'federation up'; one process sets up several nodes)."""
        try:
            data = json.loads(plan.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{plan}: cannot read the launcher plan: {exc}") from exc
        wanted = set(node_ids or [])
        for plan_node in data["nodes"]:
            if wanted and plan_node["id"] not in wanted:
                continue
            print_json(setup_node(plan_node))


def _print_nodes(rows: list[tuple[str, str, str, str, str, str]], wide: bool = False) -> None:
    columns = (
        Col("node", key=True),
        Col("level", key=True, drop=2),
        Col("address", key=True),
        Col("pid", key=True, drop=3),
        Col("health", key=True),
        Col("data dir", drop=1),
    )
    lines = [tuple(escape(cell) for cell in row) for row in rows]
    print_table(fitted_table("federation nodes", columns, lines, width=console.width, wide=wide))

"""``supnet demo`` (what ``make demo`` runs): a 15-node federation on this machine, rolled up and drilled into.

The federation demo lives in node.cli.federation_demo (launcher, roll-up, province view, drill-down, clean shutdown).
``supnet demo --single`` keeps the first demo: one node end to end — create it, generate data, import it, show
stats — through the Python APIs the commands use (no subprocesses), so it exercises the real code.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from datetime import date, datetime
from datetime import time as clock_time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.rule import Rule
from rich.table import Table

from node.app import open_node
from node.bootstrap import init_node
from node.cli.common import JsonFlag, console, handle_errors, print_json
from node.cli.generate_cmd import print_generate_summary
from node.config import LEVELS, Level, config_path
from node.ingest import Importer, ImportSummary
from node.supervision import COUNT_LABELS, RATE_LABELS, default_listeners, node_stats
from node.synthetic import DEFAULT_FROM, DEFAULT_TO, GenerateSummary, generate, node_profile

DEMO_NODE_ID = "gd.gz.py"
DEMO_CASES = 20_000


@dataclass(frozen=True)
class DemoResult:
    """What the demo did: where, what it generated, what the import said, the node's statistics."""

    directory: Path
    node_dir: Path
    generated: GenerateSummary
    imported: ImportSummary
    stats: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready account of the run."""
        return {
            "directory": str(self.directory),
            "node_dir": str(self.node_dir),
            "generated": self.generated.to_dict(),
            "imported": {
                "accepted": self.imported.accepted,
                "duplicates": self.imported.duplicates,
                "rejected": self.imported.rejected,
                "seconds": round(self.imported.seconds, 2),
            },
            "stats": self.stats,
        }


def level_of(node_id: str) -> Level:
    """The administrative level a node id's depth stands for (gd province … gd.gz.py.sq street)."""
    return LEVELS[min(node_id.count(".") + 1, len(LEVELS)) - 1]


def run_demo(
    directory: Path,
    *,
    node_id: str = DEMO_NODE_ID,
    cases: int = DEMO_CASES,
    seed: int = 1,
    date_from: date = DEFAULT_FROM,
    date_to: date = DEFAULT_TO,
    show_progress: bool = True,
) -> DemoResult:
    """Create (or reuse) a node in ``directory``/node, generate cases into ``directory``/data, import, compute stats.

    Re-running on the same directory changes nothing: the node is reused and the import finds only duplicates.
    """
    node_dir = directory / "node"
    if not config_path(node_dir).exists():
        init_node(node_dir, node_id, level=level_of(node_id), name=node_profile(node_id).place)
    generated = generate(node_id, cases, seed, directory / "data", date_from=date_from, date_to=date_to)
    # Statistics are read as of the end of the generated period, so "open past its limit" means what it says.
    as_of = datetime.combine(date_to, clock_time(23, 59, 59))
    node = open_node(node_dir, clock=lambda: as_of)
    try:
        importer = Importer(node, listeners=default_listeners(node))
        if show_progress:
            columns = (TextColumn("importing"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
            with Progress(*columns, console=console, transient=True) as progress:
                task = progress.add_task("import", total=None)

                def advance(done: int, total: int) -> None:
                    progress.update(task, completed=done, total=total)

                imported = importer.import_files(generated.paths, progress=advance)
        else:
            imported = importer.import_files(generated.paths)
        stats = node_stats(node)
    finally:
        node.close()
    return DemoResult(directory, node_dir, generated, imported, stats)


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _print_stats(stats: dict[str, Any]) -> None:
    counts = Table(title="what the node holds", title_justify="left")
    counts.add_column("count")
    counts.add_column("value", justify="right")
    for key, label in COUNT_LABELS:
        if key in stats["counts"]:
            counts.add_row(label, f"{stats['counts'][key]:,}")
    counts.add_row("fees collected (元)", str(stats["fees_yuan"]))
    console.print(counts)
    rates = Table(title="rates (derived from the counts)", title_justify="left")
    rates.add_column("rate")
    rates.add_column("value", justify="right")
    for key, label in RATE_LABELS:
        if key in stats["rates"]:
            rates.add_row(label, _percent(stats["rates"][key]))
    console.print(rates)


def register(app: typer.Typer) -> None:
    """Add ``supnet demo``."""

    @app.command("demo")
    @handle_errors
    def demo_command(
        *,
        single: Annotated[
            bool, typer.Option("--single", help="The one-node demo instead: generate, import, statistics.")
        ] = False,
        directory: Annotated[
            Path | None, typer.Option("--dir", help="Where to put the node(s) and data (default: a new temp dir).")
        ] = None,
        keep: Annotated[
            bool, typer.Option("--keep", help="Federation demo: leave the nodes running (stop with federation down).")
        ] = False,
        node_id: Annotated[str, typer.Option("--id", help="--single: the node to create.")] = DEMO_NODE_ID,
        cases: Annotated[int, typer.Option("--cases", help="--single: how many cases to generate.")] = DEMO_CASES,
        seed: Annotated[int, typer.Option("--seed", help="--single: random seed of the generated data.")] = 1,
        insecure_plaintext: Annotated[
            bool,
            typer.Option("--insecure-plaintext", help="Federation demo WITHOUT PKI and TLS (experiments only)."),
        ] = False,
        as_json: JsonFlag = False,
    ) -> None:
        """Start a 15-node tree (province → streets), wait for the roll-up, show the province's view, drill down.

        Every node is enrolled in the tree's PKI and all calls run over mutual TLS unless --insecure-plaintext.
        """
        if not single:
            from node.cli.federation_demo import run_demo as run_federation_demo

            code = run_federation_demo(console, base_dir=directory, keep=keep, insecure_plaintext=insecure_plaintext)
            raise typer.Exit(code)
        _single_node_demo(directory, node_id, cases, seed, as_json)


def _single_node_demo(directory: Path | None, node_id: str, cases: int, seed: int, as_json: bool) -> None:
    """The one-node demo: create a node, generate a year's synthetic cases, import them, show the statistics."""
    target = directory if directory is not None else Path(tempfile.mkdtemp(prefix="supnet-demo-"))
    if as_json:
        print_json(run_demo(target, node_id=node_id, cases=cases, seed=seed, show_progress=False).to_dict())
        return
    profile = node_profile(node_id)
    console.print(Rule(f"supnet demo: one {profile.level} node, {profile.place} ({node_id})"))
    console.print(
        "A node stores the approval cases of its departments, computes their deadlines in working days "
        "and watches them. Here it gets synthetic cases shaped like the Guangzhou reports.",
        highlight=False,
    )
    started = time.perf_counter()
    result = run_demo(target, node_id=node_id, cases=cases, seed=seed)
    console.print(f"\n[bold]1. the node[/]  data directory {result.node_dir}", highlight=False)
    console.print(f"\n[bold]2. generated data[/]  {cases:,} cases with their steps, fees, ratings, complaints")
    print_generate_summary(result.generated)
    imported = result.imported
    console.print(
        f"\n[bold]3. import[/]  {imported.accepted:,} records accepted, {imported.duplicates:,} already there, "
        f"{imported.rejected:,} rejected, in {imported.seconds:.1f} s",
        highlight=False,
    )
    console.print(f"\n[bold]4. statistics[/]  as of {result.stats['as_of']}, the end of the generated period")
    _print_stats(result.stats)
    console.print(f"\ndone in {time.perf_counter() - started:.1f} s. Look further with:", highlight=False)
    console.print(f"  supnet stats --data-dir {result.node_dir}", highlight=False, soft_wrap=True)
    console.print(f"  supnet import --data-dir {result.node_dir} FILE...", highlight=False, soft_wrap=True)

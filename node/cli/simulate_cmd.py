"""``supnet simulate province``: build a whole province on this machine, measure it, print one closing JSON line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from node.cli.common import console, handle_errors


def register(app: typer.Typer) -> None:
    """Add ``supnet simulate ...``."""
    group = typer.Typer(help="在本机模拟整省 Simulate a whole province on this machine.", no_args_is_help=True)
    app.add_typer(group, name="simulate")

    @group.command("province")
    @handle_errors
    def province(
        *,
        cities: Annotated[int, typer.Option(help="Cities under the province.")] = 21,
        districts: Annotated[int, typer.Option(help="Districts per city.")] = 6,
        streets: Annotated[int, typer.Option(help="Streets per district.")] = 13,
        cases_per_street: Annotated[int, typer.Option(help="Synthetic cases every street starts with.")] = 200,
        directory: Annotated[
            Path, typer.Option("--dir", help="Directory for the nodes' data (reused: the PKI and data are kept).")
        ] = Path(".supnet-province"),
        host_depth: Annotated[
            int,
            typer.Option(help="Nodes at this depth host their whole subtree in one process (1: one per city)."),
        ] = 1,
        workers: Annotated[int, typer.Option(help="Processes preparing node data in parallel.")] = 2,
        new_day_cases: Annotated[int, typer.Option(help="Records every street ingests as its new day.")] = 5,
        idle_seconds: Annotated[float, typer.Option(help="Seconds over which idle CPU is measured.")] = 30.0,
        keep_running: Annotated[
            bool, typer.Option(help="Leave the tree running (supnet federation down --dir).")
        ] = False,
        results: Annotated[Path | None, typer.Option(help="Also write the JSON figures to this file.")] = None,
    ) -> None:
        """Build the tree over mutual TLS (hosted nodes), import data at every street, measure, print the figures.

        The last line is one JSON object: set-up, freshness, drill-down, verify, idle CPU, memory, report sizes,
        and the targets missed.
        """
        from node.simulate import Shape, SimulationOptions, simulate_province

        shape = Shape(cities=cities, districts=districts, streets=streets, cases_per_street=cases_per_street)
        options = SimulationOptions(
            shape=shape,
            base_dir=directory,
            host_depth=host_depth,
            workers=workers,
            new_day_cases=new_day_cases,
            idle_seconds=idle_seconds,
            keep_running=keep_running,
        )
        console.print(f"模拟全省 simulating a province of {shape.node_count} nodes ({shape.label()}) in {directory}")
        figures = simulate_province(options, progress=console.print)
        line = json.dumps(figures, ensure_ascii=False, sort_keys=True)
        if results is not None:
            results.parent.mkdir(parents=True, exist_ok=True)
            results.write_text(line + "\n", encoding="utf-8")
        if figures["missed"]:
            console.print(f"[yellow]未达标 targets missed[/]: {'; '.join(figures['missed'])}")
        typer.echo(line)

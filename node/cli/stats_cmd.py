"""``supnet stats``: counts and derived rates of a node's data, as a table or JSON."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from node.cli.common import DataDir, JsonFlag, console, handle_errors, open_working_node, print_json
from node.supervision import COUNT_LABELS, RATE_LABELS, node_stats


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def register(app: typer.Typer) -> None:
    """Add ``supnet stats``."""

    @app.command("stats")
    @handle_errors
    def stats_command(
        *,
        data_dir: DataDir,
        as_json: JsonFlag = False,
        by: Annotated[
            str | None, typer.Option("--by", help="Group the metric buckets by dept, item, day or month.")
        ] = None,
        date_from: Annotated[str | None, typer.Option("--from", help="First day (YYYY-MM-DD), with --by.")] = None,
        date_to: Annotated[str | None, typer.Option("--to", help="Last day (YYYY-MM-DD), with --by.")] = None,
        subtree: Annotated[
            bool,
            typer.Option("--subtree", help="Totals of the whole subtree (own + children's reports); see 'subtree'."),
        ] = False,
    ) -> None:
        """Print counts (items, cases, steps, procedures, payments, evaluations, complaints) and derived rates."""
        node = open_working_node(data_dir)
        if subtree:
            from node.cli.subtree_cmd import print_subtree

            try:
                print_subtree(node, by=by, date_from=date_from, date_to=date_to, as_json=as_json)
            finally:
                node.close()
            return
        if by is not None:
            # Grouped figures come from the additive metric buckets; rates derived when shown.
            from node.cli.metrics_cmd import print_grouped_stats

            try:
                print_grouped_stats(node, by, date_from, date_to, as_json)
            finally:
                node.close()
            return
        try:
            stats = node_stats(node)
        finally:
            node.close()
        if as_json:
            print_json(stats)
            return
        counts = Table(title=f"node {node.config.id} — as of {stats['as_of']}")
        counts.add_column("count")
        counts.add_column("value", justify="right")
        for key, label in COUNT_LABELS:
            counts.add_row(label, f"{stats['counts'][key]:,}")
        counts.add_row("fees collected (元)", stats["fees_yuan"])
        console.print(counts)
        rates = Table(title="rates (derived from counts)")
        rates.add_column("rate")
        rates.add_column("value", justify="right")
        for key, label in RATE_LABELS:
            rates.add_row(label, _percent(stats["rates"][key]))
        console.print(rates)

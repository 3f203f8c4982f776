"""``supnet stats``: counts and derived rates of a node's data, as a table or JSON.

``--by post|handler`` groups the raw steps by post (岗位) or handler (环节处理人): cases and steps handled, overdue
steps, return steps, and the return rate = cases that post/handler returned at least once ÷ cases whose steps it
handled (docs/domain.md §6). Per-person rows stay at the node: they are in no report and not with ``--subtree``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from node.cli.common import DataDir, JsonFlag, console, handle_errors, open_reading_node, print_json
from node.cli.render import Col, fitted_table, print_table
from node.cli.tabular import EncodingOption, FormatOption, OutOption, TableOutput, WideFlag
from node.domain import to_iso
from node.errors import InvalidArgumentError
from node.supervision import COUNT_LABELS, RATE_LABELS, STAFF_COUNT_LABELS, STAFF_GROUPINGS, node_stats, staff_stats

if TYPE_CHECKING:
    from node.app import Node


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _print_staff(
    node: Node, by: str, date_from: str | None, date_to: str | None, as_json: bool, *, output: TableOutput
) -> None:
    """``supnet stats --by post|handler``: the raw steps grouped, rates derived here."""
    from node.cli.metrics_cmd import parse_day_option

    first, last = parse_day_option("--from", date_from), parse_day_option("--to", date_to)
    now = node.now()
    with node.engine.connect() as conn:
        rows = staff_stats(conn, "post" if by == "post" else "handler", now, first, last)
    if output.emit([row.to_dict() for row in rows], title=f"统计 stats by {by}", as_json=as_json):
        return
    if as_json:
        print_json(
            {
                "by": by,
                "as_of": to_iso(now, node.tz),
                "from": first.isoformat() if first else None,
                "to": last.isoformat() if last else None,
                "groups": [row.to_dict() for row in rows],
            }
        )
        return
    span = f"{first.isoformat() if first else '…'} – {last.isoformat() if last else '…'}"
    label = "post 岗位" if by == "post" else "handler 经办人"
    title = f"node {node.config.id} by {by}, steps started {span} (per person: stays at this node)"
    columns = (
        Col(label, key=True),
        *(Col(header, key=True, drop=index, justify="right") for index, (_, header) in enumerate(STAFF_COUNT_LABELS)),
        Col("return rate 退件率", key=True, justify="right"),
    )
    table_rows = [
        (
            escape(row.key) or "-",
            *(f"{getattr(row, key):,}" for key, _ in STAFF_COUNT_LABELS),
            _percent(row.return_rate),
        )
        for row in rows
    ]
    print_table(fitted_table(title, columns, table_rows, width=console.width, wide=output.wide))


def register(app: typer.Typer) -> None:
    """Add ``supnet stats``."""

    @app.command("stats")
    @handle_errors
    def stats_command(
        *,
        data_dir: DataDir,
        as_json: JsonFlag = False,
        by: Annotated[
            str | None,
            typer.Option(
                "--by",
                help=(
                    "Group the metric buckets by dept, item, day or month; or the raw steps by post (岗位) or "
                    "handler (经办人): cases/steps handled, overdue steps, and return rate = cases that post/handler "
                    "returned at least once ÷ cases whose steps it handled (stays at this node)."
                ),
            ),
        ] = None,
        date_from: Annotated[str | None, typer.Option("--from", help="First day (YYYY-MM-DD), with --by.")] = None,
        date_to: Annotated[str | None, typer.Option("--to", help="Last day (YYYY-MM-DD), with --by.")] = None,
        subtree: Annotated[
            bool,
            typer.Option("--subtree", help="Totals of the whole subtree (own + children's reports); see 'subtree'."),
        ] = False,
        fmt: FormatOption = None,
        out: OutOption = None,
        encoding: EncodingOption = "utf-8",
        wide: WideFlag = False,
    ) -> None:
        """Print counts (items, cases, steps, procedures, payments, evaluations, complaints) and derived rates."""
        output = TableOutput(fmt, out, encoding, wide)
        node = open_reading_node(data_dir)
        if by in STAFF_GROUPINGS:
            try:
                if subtree:
                    raise InvalidArgumentError(f"--by {by} is per-person data of this node: not with --subtree")
                _print_staff(node, by, date_from, date_to, as_json, output=output)
            finally:
                node.close()
            return
        if subtree:
            from node.cli.subtree_cmd import print_subtree

            try:
                print_subtree(node, by=by, date_from=date_from, date_to=date_to, as_json=as_json, output=output)
            finally:
                node.close()
            return
        if by is not None:
            # Grouped figures come from the additive metric buckets; rates derived when shown.
            from node.cli.metrics_cmd import print_grouped_stats

            try:
                print_grouped_stats(node, by, date_from, date_to, as_json, output=output)
            finally:
                node.close()
            return
        try:
            stats = node_stats(node)
        finally:
            node.close()
        if output.emit([stats], title="统计 stats", as_json=as_json):
            return
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

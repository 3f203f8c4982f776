"""``supnet metrics check``: buckets against the raw records, child figures against the children's signed reports."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import typer
from rich.markup import escape

from node.app import Node
from node.cli.common import (
    DataDir,
    JsonFlag,
    console,
    err_console,
    handle_errors,
    open_reading_node,
    print_json,
)
from node.cli.render import Col, fitted_table, print_table, short_departments
from node.cli.tabular import TableOutput
from node.domain import parse_date
from node.errors import ExitCode, ValidationError
from node.reporting import child_figures_differences
from node.supervision import check_buckets, grouped_stats

# Columns of the grouped statistics table: (counter or rate key, header). Rates are derived at display time.
GROUPED_COUNT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("received", "received"),
    ("completed", "completed"),
    ("cases_returned", "退件 returned"),
    ("return_steps", "退回环节 return steps"),
    ("open_cases", "open"),
    ("open_overdue_promised", "open > promised"),
    ("open_overdue_legal", "open > legal"),
    ("yellow_cards", "yellow"),
    ("red_cards", "red"),
)
GROUPED_RATE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("early_rate", "early %"),
    ("on_time_rate", "on time %"),
    ("return_rate", "退件率 return %"),
    ("satisfaction_rate", "satisfied %"),
    ("complaint_acceptance_rate", "受理率 complaints accepted %"),
    ("complaint_closure_rate", "办结率 complaints closed %"),
)
# Which columns move out first when the table does not fit the terminal (highest first; 0: always shown).
GROUPED_DROP: dict[str, int] = {
    "cases_returned": 9,
    "return_steps": 12,
    "open_cases": 10,
    "open_overdue_legal": 8,
    "early_rate": 5,
    "on_time_rate": 4,
    "return_rate": 3,
    "satisfaction_rate": 6,
    "complaint_acceptance_rate": 11,
    "complaint_closure_rate": 7,
    "completed": 2,
    "yellow_cards": 1,
}

metrics_app = typer.Typer(
    help="Additive metric buckets (definitions: node/supervision/metrics.py).", no_args_is_help=True
)


@metrics_app.command("check")
@handle_errors
def check(
    *,
    data_dir: DataDir,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Print at most this many differences.")] = 100,
    as_json: JsonFlag = False,
) -> None:
    """Compare buckets with the records and child figures with the children's signed reports; exit 7 on a difference."""
    node = open_reading_node(data_dir)
    try:
        differences = check_buckets(node)
        children = child_figures_differences(node)
    finally:
        node.close()
    differences = [*differences, *children.differences]
    if as_json:
        print_json({"consistent": not differences, "differences": differences})
    elif differences:
        for line in differences[:limit]:
            err_console.print(line, highlight=False, markup=False)
        if len(differences) > limit:
            err_console.print(f"... and {len(differences) - limit} more", highlight=False)
        err_console.print(
            f"[bold red]{len(differences)} differences[/] between stored figures and what the records and the "
            "children's signed reports say"
        )
    else:
        console.print("metric buckets consistent with the records")
        if children.children:
            console.print(
                f"child figures consistent with the signed reports of {children.children} children "
                f"({children.reports} reports replayed, signatures and hash chains checked)"
            )
    if differences:
        raise typer.Exit(ExitCode.VERIFICATION_FAILED)


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}"


def parse_day_option(option: str, value: str | None) -> date | None:
    """A --from/--to value (YYYY-MM-DD, YYYYMMDD or a date-time) as a date; ValidationError naming the option."""
    if value is None:
        return None
    try:
        return parse_date(value)
    except ValueError as exc:
        raise ValidationError(f"{option} '{value}': {exc}", field=option.lstrip("-"), reason="bad_datetime") from None


def print_grouped_stats(
    node: Node, by: str, date_from: str | None, date_to: str | None, as_json: bool, *, output: TableOutput | None = None
) -> None:
    """``supnet stats --by dept|item|day|month [--from D] [--to D]``: summed buckets with rates derived here."""
    first, last = parse_day_option("--from", date_from), parse_day_option("--to", date_to)
    with node.engine.connect() as conn:
        rows = grouped_stats(conn, by, first, last)
    output = output or TableOutput()
    if output.emit([row.to_dict() for row in rows], title=f"统计 stats by {by}", as_json=as_json):
        return
    if as_json:
        print_json(
            {
                "by": by,
                "from": first.isoformat() if first else None,
                "to": last.isoformat() if last else None,
                "groups": [row.to_dict() for row in rows],
            }
        )
        return
    span = f"{first.isoformat() if first else '…'} – {last.isoformat() if last else '…'}"
    title = f"node {node.config.id} by {by}, {span} (rates derived from summed counts)"
    columns = (
        Col(by, key=True),
        *(
            Col(header, key=True, drop=GROUPED_DROP.get(key, 0), justify="right")
            for key, header in GROUPED_COUNT_COLUMNS
        ),
        *(
            Col(header, key=True, drop=GROUPED_DROP.get(key, 0), justify="right")
            for key, header in GROUPED_RATE_COLUMNS
        ),
    )
    names = short_departments((row.key for row in rows), "" if output.wide or by != "dept" else node.config.name)
    table_rows = []
    for row in rows:
        counts = [f"{row.counters[key]:,}" for key, _ in GROUPED_COUNT_COLUMNS]
        rates = [_percent(row.rates[key]) for key, _ in GROUPED_RATE_COLUMNS]
        table_rows.append((escape(names.get(row.key, row.key)) or "-", *counts, *rates))
    print_table(fitted_table(title, columns, table_rows, width=console.width, wide=output.wide))


def register(app: typer.Typer) -> None:
    """Add ``supnet metrics``."""
    app.add_typer(metrics_app, name="metrics")

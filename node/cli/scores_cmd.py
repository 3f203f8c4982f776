"""`supnet scores`: the efficiency-score ranking of departments for a month, quarter, half-year or year, by part."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from node.app import open_node
from node.cli.common import DataDir, JsonFlag, console, handle_errors
from node.cli.render import Col, fitted_table, print_table, short_departments
from node.cli.tabular import EncodingOption, FormatOption, OutOption, WideFlag, emit_listing
from node.errors import InvalidArgumentError
from node.supervision import PART_LABELS, RankedScore, parse_period, scores_ranking

SCORED_PARTS = ("supervision", "satisfaction", "complaints")


def _period_text(month: str | None, quarter: str | None, half: str | None, year: str | None) -> str:
    given = [value for value in (month, quarter, half, year) if value is not None]
    if len(given) != 1:
        raise InvalidArgumentError(
            "give exactly one of --month YYYY-MM, --quarter YYYY-Q1…Q4, --half YYYY-H1|YYYY-H2, --year YYYY"
        )
    return given[0]


def _why(ranked: RankedScore) -> str:
    """The lines behind a score: a month's components, or each month's score and weight for a longer period."""
    months = ranked.score.months
    if len(months) == 1:
        lines = [
            f"{PART_LABELS[part.part]}: {c.detail} → {c.points:+.2f}"
            for part in months[0].parts
            for c in part.components
        ]
        return "\n".join(lines) or "no deductions or bonuses"
    return "\n".join(f"{m.month}: {m.score:.2f} × {m.weight} cases" for m in months)


@handle_errors
def scores(
    data_dir: DataDir,
    *,
    month: Annotated[str | None, typer.Option("--month", help="A month, YYYY-MM.")] = None,
    quarter: Annotated[str | None, typer.Option("--quarter", help="A quarter, YYYY-Q1 … YYYY-Q4.")] = None,
    half: Annotated[str | None, typer.Option("--half", help="A half-year, YYYY-H1 or YYYY-H2.")] = None,
    year: Annotated[str | None, typer.Option("--year", help="A year, YYYY.")] = None,
    as_json: JsonFlag = False,
    fmt: FormatOption = None,
    out: OutOption = None,
    encoding: EncodingOption = "utf-8",
    wide: WideFlag = False,
) -> None:
    """Rank departments by efficiency score (效能考评, 0–100) with its parts; longer periods weight months by cases."""
    period = parse_period(_period_text(month, quarter, half, year))
    node = open_node(Path(data_dir), migrate_schema=False)
    try:
        ranking = scores_ranking(node, period)
        weights = node.config.scores.weights
        node_name = "" if wide else node.config.name
    finally:
        node.close()
    records = [r.as_dict() for r in ranking]
    document = {"period": period.label, "kind": period.kind, "weights": weights.model_dump(), "ranking": records}
    if emit_listing(
        records, document, title=f"效能考评 {period.label}", fmt=fmt, out=out, encoding=encoding, as_json=as_json
    ):
        return
    shares = ", ".join(f"{PART_LABELS[p]} {getattr(weights, p):g}" for p in SCORED_PARTS)
    columns = (
        Col("rank", key=True, justify="right"),
        Col("department 部门", key=True),
        Col("score 得分", key=True, justify="right"),
        Col("cases 办件量", key=True, justify="right"),
        *(Col(PART_LABELS[p], key=True, drop=2, justify="right") for p in SCORED_PARTS),
        Col("why", drop=1),
    )
    departments = short_departments((r.score.unit for r in ranking), node_name)
    rows = []
    for r in ranking:
        parts = [f"{r.score.parts[p]:.2f}" if p in r.score.parts else "-" for p in SCORED_PARTS]
        unit = escape(departments.get(r.score.unit, r.score.unit))
        rows.append((str(r.rank), unit, f"{r.score.score:.2f}", f"{r.score.cases_handled:,}", *parts, escape(_why(r))))
    title = f"Efficiency scores 效能考评 {period.label} (weights: {shares})"
    table = fitted_table(title, columns, rows, width=console.width, wide=wide)
    table.show_lines = True
    print_table(table)
    if not ranking:
        console.print(f"no department had activity in {period.label}")


def register(app: typer.Typer) -> None:
    """Add `supnet scores` to the CLI."""
    app.command("scores")(scores)

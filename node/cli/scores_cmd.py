"""`supnet scores`: the efficiency-score ranking of departments for a month, half-year or year, with the reasons."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from node.app import open_node
from node.cli.common import DataDir, JsonFlag, console, handle_errors, print_json
from node.errors import InvalidArgumentError
from node.supervision import RankedScore, parse_period, scores_ranking


def _period_text(month: str | None, half: str | None, year: str | None) -> str:
    given = [value for value in (month, half, year) if value is not None]
    if len(given) != 1:
        raise InvalidArgumentError("give exactly one of --month YYYY-MM, --half YYYY-H1|YYYY-H2, --year YYYY")
    return given[0]


def _why(ranked: RankedScore) -> str:
    lines = [f"{c.area}: {c.detail} → {c.points:+.2f}" for c in ranked.score.components]
    return "\n".join(lines) or "no deductions or bonuses"


@handle_errors
def scores(
    data_dir: DataDir,
    month: Annotated[str | None, typer.Option("--month", help="A month, YYYY-MM.")] = None,
    half: Annotated[
        str | None, typer.Option("--half", help="A half-year, YYYY-H1 or YYYY-H2 (mean of months).")
    ] = None,
    year: Annotated[str | None, typer.Option("--year", help="A year, YYYY (mean of months).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Rank departments by efficiency score (效能考评): base, deductions and bonuses per area."""
    period = parse_period(_period_text(month, half, year))
    node = open_node(Path(data_dir))
    try:
        ranking = scores_ranking(node, period)
        scheme = node.config.scores
    finally:
        node.close()
    if as_json:
        print_json({"period": period.label, "kind": period.kind, "ranking": [r.as_dict() for r in ranking]})
        return
    table = Table(title=f"Efficiency scores 效能考评 {period.label} (base {scheme.base:g})", show_lines=True)
    for column in ("rank", "department", "score", "months", "deductions", "bonuses", "why"):
        table.add_column(column, justify="right" if column in {"rank", "score", "months"} else "left")
    for r in ranking:
        deductions = sum(c.points for c in r.score.components if c.points < 0)
        bonuses = sum(c.points for c in r.score.components if c.points > 0)
        table.add_row(
            str(r.rank),
            r.score.department,
            f"{r.score.score:.2f}",
            str(len(r.score.months)),
            f"{deductions:+.2f}",
            f"{bonuses:+.2f}",
            _why(r),
        )
    console.print(table)
    if not ranking:
        console.print(f"no department had activity in {period.label}")


def register(app: typer.Typer) -> None:
    """Add `supnet scores` to the CLI."""
    app.command("scores")(scores)

"""`supnet evaluations`: list ratings and open follow-ups; `supnet evaluations close ID --note` closes a follow-up.

A follow-up is due ``supervision.evaluation_followup_workdays`` working days after the rating; still open past that,
the scan raises R13 (差评回访超时), and closing the follow-up corrects that card. Times in ``--json`` carry the node's
UTC offset.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer
from rich.markup import escape

from node.cli.common import (
    JsonFlag,
    OptionalDataDir,
    console,
    handle_errors,
    local_text,
    opened_node,
    print_json,
    subcommand_invoked,
)
from node.cli.render import Col, fitted_table, print_table, short_departments
from node.cli.tabular import EncodingOption, FormatOption, OutOption, WideFlag, emit_listing
from node.domain import to_iso
from node.supervision import EvaluationView, close_followup, evaluation_figures, list_evaluations

evaluations_app = typer.Typer(help="Applicant evaluations (好差评) and the follow-ups of ratings 4–5.")

RATING_LABELS = {1: "1 非常满意", 2: "2 满意", 3: "3 基本满意", 4: "4 不满意", 5: "5 非常不满意"}


def evaluation_json(view: EvaluationView, tz: ZoneInfo) -> dict[str, Any]:
    """An evaluation as JSON: times ISO 8601 with the node's UTC offset."""
    return {key: to_iso(value, tz) if isinstance(value, datetime) else value for key, value in asdict(view).items()}


@evaluations_app.callback(invoke_without_command=True)
@handle_errors
def evaluations(
    ctx: typer.Context,
    *,
    data_dir: OptionalDataDir = None,
    open_followups: Annotated[
        bool, typer.Option("--open-followups", help="Only ratings 4–5 whose follow-up is still open.")
    ] = False,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 500,
    as_json: JsonFlag = False,
    fmt: FormatOption = None,
    out: OutOption = None,
    encoding: EncodingOption = "utf-8",
    wide: WideFlag = False,
) -> None:
    """List evaluations (newest first) with the satisfaction rate and open follow-ups."""
    if subcommand_invoked(ctx, data_dir):
        return
    with opened_node(ctx, data_dir, writes=False) as node:
        views = list_evaluations(node, open_followups=open_followups, limit=limit)
        figures = evaluation_figures(node)
        node_name = "" if wide else node.config.name
    records = [evaluation_json(v, node.tz) for v in views]
    document = {"figures": figures.as_dict(), "evaluations": records}
    if emit_listing(
        records, document, title="好差评 evaluations", fmt=fmt, out=out, encoding=encoding, as_json=as_json
    ):
        return
    columns = (
        Col("id", key=True),
        Col("case", key=True),
        Col("department", key=True),
        Col("rating", key=True, drop=1),
        Col("evaluated", key=True, drop=3),
        Col("channel", drop=5),
        Col("follow-up", key=True, drop=2),
        Col("回访期限 due", key=True, drop=4),
        Col("note", drop=6),
    )
    departments = short_departments((v.department for v in views), node_name)
    rows = []
    for v in views:
        status = f"[red]{v.followup_status}[/]" if v.followup_status == "open" else v.followup_status
        rows.append(
            (
                str(v.id),
                escape(v.case_no),
                escape(departments.get(v.department, v.department)),
                RATING_LABELS.get(v.satisfaction_code, str(v.satisfaction_code)),
                local_text(v.evaluated_at),
                escape(v.channel),
                status,
                local_text(v.followup_due_at),
                escape(v.followup_note),
            )
        )
    title = "Open follow-ups" if open_followups else "Evaluations"
    print_table(fitted_table(title, columns, rows, width=console.width, wide=wide))
    rate = f"{figures.satisfaction_rate:.1%}" if figures.satisfaction_rate is not None else "-"
    console.print(
        f"ratings {figures.total} · satisfaction rate 满意率 {rate} · follow-ups open {figures.followups_open} · "
        f"closed {figures.followups_closed}",
        highlight=False,
    )


@evaluations_app.command("close")
@handle_errors
def close(
    ctx: typer.Context,
    evaluation_id: Annotated[int, typer.Argument(help="The evaluation id (first column of the list).")],
    note: Annotated[str, typer.Option("--note", help="What was done to follow up (required).")] = "",
    data_dir: OptionalDataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Close the open follow-up of a rating 4–5 with a note."""
    with opened_node(ctx, data_dir) as node:
        view = close_followup(node, evaluation_id, note)
    if as_json:
        print_json(evaluation_json(view, node.tz))
    else:
        console.print(
            f"evaluation {view.id} (case {view.case_no}): follow-up closed at {local_text(view.followup_closed_at)}"
        )


def register(app: typer.Typer) -> None:
    """Add `supnet evaluations` to the CLI."""
    app.add_typer(evaluations_app, name="evaluations")

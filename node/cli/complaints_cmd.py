"""`supnet complaints`: list complaints with closure and overdue figures; accept, decline, handle, conclude one."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from node.app import Node
from node.cli.common import (
    JsonFlag,
    OptionalDataDir,
    console,
    handle_errors,
    local_text,
    opened_node,
    print_json,
    subcommand_invoked,
    view_json,
)
from node.cli.render import Col, fitted_table, print_table, short_departments
from node.cli.tabular import EncodingOption, FormatOption, OutOption, WideFlag, emit_listing
from node.domain import parse_datetime
from node.errors import ValidationError
from node.supervision import (
    FINDINGS,
    STATUSES,
    ComplaintFigures,
    ComplaintView,
    accept_complaint,
    complaint_figures,
    conclude_complaint,
    decline_complaint,
    get_complaint,
    handle_complaint,
    list_complaints,
)

complaints_app = typer.Typer(help="Efficiency complaints (效能投诉): list, accept, decline, handle, conclude.")

AtOption = Annotated[
    str | None, typer.Option("--at", help="When it happened (YYYYMMDDThhmmss or ISO 8601, node local); default now.")
]
ByOption = Annotated[str, typer.Option("--by", help="Who did it (recorded as the handler).")]
ComplaintNo = Annotated[str, typer.Argument(help="投诉编号")]


def _when(node: Node, at: str | None) -> datetime | None:
    if at is None:
        return None
    try:
        return parse_datetime(at, node.tz)
    except ValueError as exc:
        raise ValidationError(f"--at '{at}': {exc}", field="at", reason="bad_datetime") from None


def _figures_line(figures: ComplaintFigures) -> str:
    accepted = f"{figures.acceptance_rate:.1%}" if figures.acceptance_rate is not None else "-"
    rate = f"{figures.closure_rate:.1%}" if figures.closure_rate is not None else "-"
    return (
        f"received {figures.received} · accepted {figures.accepted} · acceptance rate 受理率 {accepted} · "
        f"concluded {figures.concluded} · closure rate 办结率 {rate} · "
        f"substantiated {figures.substantiated} · accountability {figures.with_accountability} · "
        f"decision overdue {figures.decision_overdue} · handling overdue {figures.handling_overdue}"
        + (f" · no deadline (calendar) {figures.no_deadline}" if figures.no_deadline else "")
    )


def _print_one(view: ComplaintView, as_json: bool) -> None:
    if as_json:
        print_json(view_json(view))
        return
    table = Table(title=f"Complaint {view.complaint_no}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in view_json(view).items():
        table.add_row(key, "-" if value in (None, "") else str(value))
    console.print(table)


@complaints_app.callback(invoke_without_command=True)
@handle_errors
def complaints(
    ctx: typer.Context,
    *,
    data_dir: OptionalDataDir = None,
    status: Annotated[str | None, typer.Option("--status", help=f"Only this status: {', '.join(STATUSES)}.")] = None,
    overdue: Annotated[
        bool, typer.Option("--overdue", help="Only complaints past a decision/handling deadline.")
    ] = False,
    now: Annotated[str | None, typer.Option("--now", help="List as of this time (default now).")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 500,
    as_json: JsonFlag = False,
    fmt: FormatOption = None,
    out: OutOption = None,
    encoding: EncodingOption = "utf-8",
    wide: WideFlag = False,
) -> None:
    """List complaints with their deadlines, and the closure and overdue figures."""
    if subcommand_invoked(ctx, data_dir):
        return
    with opened_node(ctx, data_dir, writes=False) as node:
        as_of = _when(node, now) or node.now()
        views = list_complaints(node, status=status, overdue_only=overdue, now=as_of, limit=limit)
        figures = complaint_figures(node, now=as_of)
        node_name = "" if wide else node.config.name
    records = [view_json(v) for v in views]
    document = {"as_of": as_of.isoformat(sep=" "), "figures": figures.as_dict(), "complaints": records}
    if emit_listing(
        records, document, title="效能投诉 complaints", fmt=fmt, out=out, encoding=encoding, as_json=as_json
    ):
        return
    columns = (
        Col("no", key=True),
        Col("title", drop=2),
        Col("respondent", key=True),
        Col("status", key=True),
        Col("received", key=True, drop=3),
        Col("decision due", key=True, drop=5),
        Col("handling due", key=True, drop=4),
        Col("overdue", key=True, drop=1),
        Col("finding", drop=6),
    )
    units = short_departments((v.respondent_unit for v in views), node_name)
    rows = [
        (
            escape(v.complaint_no),
            escape(v.title),
            escape(units.get(v.respondent_unit, v.respondent_unit)),
            v.status,
            local_text(v.received_at),
            local_text(v.decision_due_at),
            local_text(v.handling_due_at),
            f"[red]{v.overdue}[/]" if v.overdue else "",
            escape(v.finding or "-"),
        )
        for v in views
    ]
    title = f"Complaints (as of {local_text(as_of)})"
    print_table(fitted_table(title, columns, rows, width=console.width, wide=wide))
    console.print(_figures_line(figures), highlight=False)


@complaints_app.command("show")
@handle_errors
def show(
    ctx: typer.Context,
    complaint_no: ComplaintNo,
    *,
    data_dir: OptionalDataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Show one complaint."""
    with opened_node(ctx, data_dir, writes=False) as node:
        _print_one(get_complaint(node, complaint_no), as_json)


@complaints_app.command("accept")
@handle_errors
def accept(
    ctx: typer.Context,
    complaint_no: ComplaintNo,
    *,
    data_dir: OptionalDataDir = None,
    by: ByOption = "",
    note: Annotated[str, typer.Option("--note", help="Decision remark.")] = "",
    at: AtOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Accept a received complaint (受理)."""
    with opened_node(ctx, data_dir) as node:
        _print_one(accept_complaint(node, complaint_no, by=by, now=_when(node, at), note=note), as_json)


@complaints_app.command("decline")
@handle_errors
def decline(
    ctx: typer.Context,
    complaint_no: ComplaintNo,
    *,
    reason: Annotated[str, typer.Option("--reason", help="Why it is declined (required).")] = "",
    data_dir: OptionalDataDir = None,
    by: ByOption = "",
    at: AtOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Decline a received complaint (不予受理) with a reason."""
    with opened_node(ctx, data_dir) as node:
        _print_one(decline_complaint(node, complaint_no, reason, by=by, now=_when(node, at)), as_json)


@complaints_app.command("handle")
@handle_errors
def handle(
    ctx: typer.Context,
    complaint_no: ComplaintNo,
    *,
    feedback: Annotated[str, typer.Option("--feedback", help="The answer given to the complainant (required).")] = "",
    data_dir: OptionalDataDir = None,
    by: ByOption = "",
    at: AtOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Record that an accepted complaint was handled (办理), with the feedback given."""
    with opened_node(ctx, data_dir) as node:
        _print_one(handle_complaint(node, complaint_no, feedback, by=by, now=_when(node, at)), as_json)


@complaints_app.command("conclude")
@handle_errors
def conclude(
    ctx: typer.Context,
    complaint_no: ComplaintNo,
    *,
    finding: Annotated[str, typer.Option("--finding", help=f"One of: {', '.join(FINDINGS)}.")] = "",
    measure: Annotated[str, typer.Option("--measure", help="Accountability measure taken (问责措施), if any.")] = "",
    data_dir: OptionalDataDir = None,
    at: AtOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Conclude a handled complaint (办结) with a finding and any accountability measure."""
    with opened_node(ctx, data_dir) as node:
        _print_one(conclude_complaint(node, complaint_no, finding, measure, now=_when(node, at)), as_json)


def register(app: typer.Typer) -> None:
    """Add `supnet complaints` to the CLI."""
    app.add_typer(complaints_app, name="complaints")

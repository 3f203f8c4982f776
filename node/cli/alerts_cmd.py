"""``supnet alerts``: list warnings (filters: open, severity, rule, department), acknowledge, correct, escalate.

Each alert shows when its rule was broken (违规时间 breached, what monthly figures use) and when supnet noticed it
(发现时间 raised); ``--json`` writes times in ISO 8601 with the node's UTC offset.
"""

from __future__ import annotations

import getpass
from typing import Annotated
from zoneinfo import ZoneInfo

import typer
from rich.markup import escape
from rich.table import Table

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
from node.supervision import AlertView, acknowledge_alert, correct_alert, escalate_alert, list_alerts

alerts_app = typer.Typer(help="Supervision warnings (电子监察预警): list, acknowledge, correct, escalate.")

AlertId = Annotated[int, typer.Argument(help="The alert id (监察编号).")]
_SEVERITY_STYLE = {"reminder": "cyan", "yellow": "yellow", "red": "bold red"}


def _print_one(view: AlertView, as_json: bool, tz: ZoneInfo) -> None:
    if as_json:
        print_json(view.to_dict(tz))
        return
    table = Table(title=f"Alert {view.id} ({view.rule_id} {view.rule_name})", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in view.to_dict(tz).items():
        table.add_row(key, "-" if value in (None, "") else str(value))
    console.print(table)


@alerts_app.callback(invoke_without_command=True)
@handle_errors
def alerts(
    ctx: typer.Context,
    *,
    data_dir: OptionalDataDir = None,
    open_only: Annotated[bool, typer.Option("--open", help="Only alerts not yet corrected or escalated.")] = False,
    severity: Annotated[str | None, typer.Option("--severity", help="reminder, yellow or red.")] = None,
    rule: Annotated[str | None, typer.Option("--rule", help="Rule id, e.g. R02.")] = None,
    department: Annotated[str | None, typer.Option("--department", help="Responsible department.")] = None,
    case_no: Annotated[str | None, typer.Option("--case", help="Only alerts about this case.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many, newest first.")] = 200,
    as_json: JsonFlag = False,
    fmt: FormatOption = None,
    out: OutOption = None,
    encoding: EncodingOption = "utf-8",
    wide: WideFlag = False,
) -> None:
    """List alerts, newest first."""
    if subcommand_invoked(ctx, data_dir):
        return
    with opened_node(ctx, data_dir, writes=False) as node, node.engine.connect() as conn:
        tz = node.tz
        node_name = node.config.name
        views = list_alerts(
            conn,
            open_only=open_only,
            severity=severity,
            rule_id=rule,
            department=department,
            case_no=case_no,
            limit=limit,
        )
    records = [view.to_dict(tz) for view in views]
    document = {"alerts": records}
    if emit_listing(records, document, title="监察预警 alerts", fmt=fmt, out=out, encoding=encoding, as_json=as_json):
        return
    columns = (
        Col("id", key=True),
        Col("rule", key=True),
        Col("severity", key=True, drop=1),
        Col("status", key=True, drop=3),
        Col("subject", key=True),
        Col("department", key=True),
        Col("post", drop=6),
        Col("违规时间 breached", key=True, drop=2),
        Col("发现时间 raised", key=True, drop=5),
        Col("correct by", key=True, drop=4),
    )
    departments = short_departments((view.department for view in views), "" if wide else node_name)
    rows = []
    for view in views:
        style = _SEVERITY_STYLE.get(view.severity, "")
        rows.append(
            (
                str(view.id),
                view.rule_id,
                f"[{style}]{view.severity}[/]" if style else view.severity,
                view.status,
                escape(view.subject),
                escape(departments.get(view.department, view.department)),
                escape(view.post) or "-",
                local_text(view.breached_at),
                local_text(view.raised_at),
                local_text(view.correct_by),
            )
        )
    title = f"Alerts ({len(views)} shown)"
    print_table(fitted_table(title, columns, rows, width=console.width, wide=wide))


@alerts_app.command("ack")
@handle_errors
def ack(
    ctx: typer.Context,
    alert_id: AlertId,
    *,
    data_dir: OptionalDataDir = None,
    by: Annotated[str | None, typer.Option("--by", help="Who acknowledges (default: the OS user).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Acknowledge an alert (raised or notified → acknowledged)."""
    with opened_node(ctx, data_dir) as node:
        _print_one(acknowledge_alert(node, alert_id, by=by if by is not None else getpass.getuser()), as_json, node.tz)


@alerts_app.command("correct")
@handle_errors
def correct(
    ctx: typer.Context,
    alert_id: AlertId,
    *,
    note: Annotated[str, typer.Option("--note", help="What was corrected (纠错说明); required.")] = "",
    data_dir: OptionalDataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Record the correction of an alert (→ corrected); a note is required."""
    with opened_node(ctx, data_dir) as node:
        _print_one(correct_alert(node, alert_id, note), as_json, node.tz)


@alerts_app.command("escalate")
@handle_errors
def escalate(
    ctx: typer.Context,
    alert_id: AlertId,
    *,
    data_dir: OptionalDataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Escalate an open yellow card to a red card (R04) now, without waiting for its supervision deadline."""
    with opened_node(ctx, data_dir) as node:
        _print_one(escalate_alert(node, alert_id), as_json, node.tz)


def register(app: typer.Typer) -> None:
    """Add ``supnet alerts``."""
    app.add_typer(alerts_app, name="alerts")

"""``supnet scan``: run one supervision scan by hand (optionally as of another time) and show what it raised.

It prints the alerts raised per rule; ``--list`` lists them too (at most ``--limit``), ``--json`` both.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from node.app import open_node
from node.cli.common import DataDir, JsonFlag, console, err_console, handle_errors, print_json
from node.cli.render import Col, fitted_table, print_table
from node.cli.tabular import WideFlag
from node.domain import parse_datetime
from node.errors import ValidationError
from node.supervision import RULES, run_scan


def register(app: typer.Typer) -> None:
    """Add ``supnet scan``."""

    @app.command("scan")
    @handle_errors
    def scan_command(
        *,
        data_dir: DataDir,
        now: Annotated[
            str | None, typer.Option("--now", help="Scan as of this time (YYYYMMDDThhmmss or ISO 8601, node local).")
        ] = None,
        full: Annotated[bool, typer.Option("--full", help="Examine every open case, not only new deadlines.")] = False,
        limit: Annotated[int, typer.Option("--limit", min=0, help="List at most this many raised alerts.")] = 200,
        list_alerts: Annotated[
            bool, typer.Option("--list", help="List the alerts raised, not only their count per rule.")
        ] = False,
        as_json: JsonFlag = False,
        wide: WideFlag = False,
    ) -> None:
        """Run the periodic rule scan once: reminders, yellow/red cards, escalations, overdue complaints."""
        node = open_node(data_dir)
        try:
            as_of = None
            if now is not None:
                try:
                    as_of = parse_datetime(now, node.tz)
                except ValueError as exc:
                    raise ValidationError(f"--now '{now}': {exc}", field="now", reason="bad_datetime") from None
            result = run_scan(node, as_of, full=full)
        finally:
            node.close()
        if as_json:
            print_json(result.to_dict(max_alerts=limit))
            return
        for warning in result.warnings:
            err_console.print(f"[bold yellow]warning[/] {warning}", highlight=False)
        kind = "full" if result.full else "incremental"
        console.print(
            f"scan as of {result.now:%Y-%m-%d %H:%M:%S} ({kind}): {len(result.raised)} alerts raised "
            f"in {result.seconds:.3f} s",
            highlight=False,
        )
        if not result.raised:
            return
        severities = {alert.draft.rule_id: alert.draft.severity for alert in result.raised}
        summary = Table(title="raised per rule 各规则新增预警")
        for column in ("rule", "name", "severity"):
            summary.add_column(column, no_wrap=True)
        summary.add_column("alerts", justify="right", no_wrap=True)
        for rule_id, count in result.by_rule.items():
            rule = RULES.get(rule_id)
            summary.add_row(rule_id, rule.name if rule else "", severities.get(rule_id, ""), f"{count:,}")
        console.print(summary)
        if not list_alerts:
            console.print("[dim]the alerts themselves: --list (or supnet alerts)[/]")
            return
        columns = (
            Col("id", key=True),
            Col("rule", key=True),
            Col("severity", key=True, drop=1),
            Col("subject", key=True),
            Col("department", key=True),
            Col("message", drop=2),
        )
        rows = [
            (
                str(alert.id),
                alert.draft.rule_id,
                alert.draft.severity,
                escape(alert.draft.subject),
                escape(alert.draft.department),
                escape(alert.draft.message),
            )
            for alert in result.raised[:limit]
        ]
        title = f"alerts raised (first {min(limit, len(result.raised))})"
        print_table(fitted_table(title, columns, rows, width=console.width, wide=wide))

"""``supnet scan``: run one supervision scan by hand (optionally as of another time) and show what it raised."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from node.app import open_node
from node.cli.common import DataDir, JsonFlag, console, err_console, handle_errors, print_json
from node.domain import parse_datetime
from node.errors import ValidationError
from node.supervision import run_scan


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
        as_json: JsonFlag = False,
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
        summary = Table(title="raised per rule")
        summary.add_column("rule")
        summary.add_column("alerts", justify="right")
        for rule_id, count in result.by_rule.items():
            summary.add_row(rule_id, str(count))
        console.print(summary)
        table = Table(title=f"alerts raised (first {min(limit, len(result.raised))})")
        for column in ("id", "rule", "severity", "subject", "department", "message"):
            table.add_column(column)
        for alert in result.raised[:limit]:
            draft = alert.draft
            table.add_row(str(alert.id), draft.rule_id, draft.severity, draft.subject, draft.department, draft.message)
        console.print(table)

"""``supnet reports resync``: after a restore from a backup, continue the report chain from the parent's head."""

from __future__ import annotations

import typer

from node.audit_log import operator_actor
from node.cli.common import JsonFlag, OptionalDataDir, console, err_console, handle_errors, opened_node, print_json
from node.reporting import resync_reports

reports_app = typer.Typer(help="Reports to the parent: recovery of a refused report chain.")


@reports_app.callback()
def reports(ctx: typer.Context, data_dir: OptionalDataDir = None) -> None:
    """Reports to the parent (subcommand: resync)."""
    ctx.obj = data_dir


@reports_app.command("resync")
@handle_errors
def resync(ctx: typer.Context, data_dir: OptionalDataDir = None, as_json: JsonFlag = False) -> None:
    """After a restore from a backup (the parent refuses a rewritten history): continue from the parent's head.

    Asks the parent which report of this node it holds, drops the reports it does not hold (their data stays
    in the buckets), and sends a FULL report of everything this node has: the parent's figures of this node
    become this node's. Audited. Re-import the records lost since the backup afterwards.
    """
    with opened_node(ctx, data_dir) as node:
        result = resync_reports(node, actor=operator_actor(node.config.id))
    if as_json:
        print_json(result.as_dict())
        return
    full = ", ".join(f"#{sequence}" for sequence in result.full_sequences)
    console.print(
        f"{result.parent_id} holds this node's reports up to #{result.parent_sequence} (here: up to "
        f"#{result.local_sequence_before}); dropped {result.dropped} report(s) it does not hold; full report {full}",
        highlight=False,
    )
    if result.delivered.failed:
        err_console.print(
            f"[bold yellow]full report not delivered yet[/] {result.delivered.error}; it stays in the outbox and "
            "is retried",
            highlight=False,
        )
        raise typer.Exit(1)
    console.print(
        f"{result.parent_id} acknowledged {result.delivered.acked} report(s). Re-import the records lost since the "
        "backup; they go up with the next reports.",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add `supnet reports` to the CLI."""
    app.add_typer(reports_app, name="reports")

"""`supnet notifications`: list notifications (pending/failed stay visible), send now, requeue failed ones.

``test`` sends one test message to every configured address at once, to check a mail or group robot set-up.
"""

from __future__ import annotations

from typing import Annotated

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
    view_json,
)
from node.cli.render import Col, fitted_table, print_table
from node.cli.tabular import EncodingOption, FormatOption, OutOption, WideFlag, emit_listing
from node.errors import ExitCode
from node.notify import (
    NotificationDispatcher,
    list_notifications,
    notification_counts,
    requeue_failed,
    send_test_messages,
)

notifications_app = typer.Typer(
    help="告警通知 Warning notifications: log, webhook, mail (SMTP), SMS gateway, DingTalk / WeCom group robots."
)

STATUS_STYLE = {"pending": "yellow", "failed": "bold red", "delivered": "green"}


@notifications_app.callback(invoke_without_command=True)
@handle_errors
def notifications(
    ctx: typer.Context,
    *,
    data_dir: OptionalDataDir = None,
    pending: Annotated[
        bool, typer.Option("--pending", help="Only what is not delivered (pending and failed).")
    ] = False,
    status: Annotated[str | None, typer.Option("--status", help="Only pending, delivered or failed.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 200,
    as_json: JsonFlag = False,
    fmt: FormatOption = None,
    out: OutOption = None,
    encoding: EncodingOption = "utf-8",
    wide: WideFlag = False,
) -> None:
    """List notifications, newest first, with the count per status."""
    if subcommand_invoked(ctx, data_dir):
        return
    with opened_node(ctx, data_dir, writes=False) as node:
        views = list_notifications(node, pending_only=pending, status=status, limit=limit)
        counts = notification_counts(node)
    records = [view_json(v) for v in views]
    document = {"counts": counts, "notifications": records}
    if emit_listing(
        records, document, title="通知 notifications", fmt=fmt, out=out, encoding=encoding, as_json=as_json
    ):
        return
    columns = (
        Col("id", key=True),
        Col("alert", key=True),
        Col("channel", key=True, drop=3),
        Col("recipient", key=True),
        Col("status", key=True),
        Col("attempts", key=True, drop=4),
        Col("next attempt", key=True, drop=5),
        Col("last error", drop=2),
        Col("subject", drop=1),
    )
    rows = []
    for v in views:
        style = STATUS_STYLE.get(v.status, "")
        rows.append(
            (
                str(v.id),
                str(v.alert_id) if v.alert_id is not None else "-",
                v.channel,
                escape(v.recipient),
                f"[{style}]{v.status}[/]" if style else v.status,
                str(v.attempts),
                local_text(v.next_attempt_at, seconds=True) if v.status == "pending" else "-",
                escape(v.last_error),
                escape(v.subject),
            )
        )
    print_table(fitted_table("Notifications", columns, rows, width=console.width, wide=wide))
    console.print(" · ".join(f"{s} {counts.get(s, 0)}" for s in ("pending", "delivered", "failed")), highlight=False)


@notifications_app.command("send")
@handle_errors
def send(ctx: typer.Context, data_dir: OptionalDataDir = None, as_json: JsonFlag = False) -> None:
    """Run one dispatch now: notify raised alerts and deliver (or retry) what is due."""
    with opened_node(ctx, data_dir) as node:
        result = NotificationDispatcher(node).run_once()
    if as_json:
        print_json(result.as_dict())
        return
    console.print(
        f"enqueued {result.enqueued} · attempted {result.attempted} · delivered {result.delivered} · "
        f"retry scheduled {result.retry_scheduled} · gave up {result.failed_now} · alerts notified "
        f"{result.alerts_notified} · still pending {result.pending} · failed {result.failed}",
        highlight=False,
    )


@notifications_app.command("retry")
@handle_errors
def retry(
    ctx: typer.Context,
    ids: Annotated[list[int] | None, typer.Argument(help="Notification ids; none means every failed one.")] = None,
    data_dir: OptionalDataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Put failed notifications back to pending with a fresh attempt budget (the next dispatch sends them)."""
    with opened_node(ctx, data_dir) as node:
        requeued = requeue_failed(node, ids or None)
    if as_json:
        print_json({"requeued": requeued})
    else:
        console.print(f"requeued {requeued} failed notifications")


@notifications_app.command("test")
@handle_errors
def test(
    ctx: typer.Context,
    channel: Annotated[str | None, typer.Option("--channel", help="Only this channel (e.g. smtp, dingtalk).")] = None,
    data_dir: OptionalDataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """发送测试通知：每个已配置的地址一条 — send one test message to every configured address now.

    Exits 3 (unavailable) when any was not taken; nothing is stored or retried.
    """
    with opened_node(ctx, data_dir, writes=False) as node:
        results = send_test_messages(node, channel)
    failed = [result for result in results if not result.delivered]
    if as_json:
        print_json(
            {
                "results": [
                    {"channel": r.channel, "recipient": r.recipient, "name": r.name, "error": r.error} for r in results
                ]
            }
        )
    else:
        for r in results:
            outcome = (
                "[green]成功 delivered[/]" if r.delivered else f"[bold red]失败 failed[/]: {escape(r.error or '')}"
            )
            console.print(f"{r.channel} → {escape(r.recipient)}: {outcome}", highlight=False, soft_wrap=True)
        if not results:
            console.print("没有已配置的通知地址 (no address configured for this channel)", highlight=False)
    if failed:
        raise typer.Exit(ExitCode.UNAVAILABLE)


def register(app: typer.Typer) -> None:
    """Add `supnet notifications` to the CLI."""
    app.add_typer(notifications_app, name="notifications")

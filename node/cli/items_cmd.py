"""`supnet items`: the versioned item catalogue (docs/domain.md §9): list, show, history, retire, reactivate, explain.

Every command takes ``--json``; times there carry their UTC offset, labels are Chinese with the English name.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any
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
from node.domain import parse_datetime, to_iso
from node.errors import InvalidArgumentError
from node.supervision import (
    ITEM_STATUS_LABELS,
    ItemHistory,
    ItemView,
    explain_item,
    get_item,
    item_history,
    list_items,
    reactivate_item,
    retire_item,
)

items_app = typer.Typer(help="The item catalogue (事项目录): versions, retirement, explanations (R14).")

ItemCode = Annotated[str, typer.Argument(help="The item's implementation code (实施编码).")]
UNIT_LABELS = {"1": "工作日", "2": "自然日"}
# Chinese label with the English name, for tables and --json.
FIELD_LABELS = {
    "implementation_code": "实施编码 implementation code",
    "basic_code": "基本编码 basic code",
    "name": "事项名称 name",
    "department": "责任部门 department",
    "status": "状态 status",
    "version": "版本 version",
    "effective_from": "生效时间 effective from",
    "promised_limit": "承诺时限 promised limit",
    "legal_limit": "法定时限 legal limit",
    "compression": "压缩比 promised ÷ legal",
    "flagged": "需说明 needs explanation (R14)",
    "explanation": "说明 explanation",
    "retired_at": "取消时间 retired at",
    "retire_reason": "取消原因 retire reason",
}


def _time(value: datetime | None, tz: ZoneInfo) -> str | None:
    return None if value is None else to_iso(value, tz)


def _item_json(view: ItemView, tz: ZoneInfo) -> dict[str, Any]:
    values = asdict(view)
    for name in ("effective_from", "retired_at"):
        values[name] = _time(values[name], tz)
    values["status_label"] = ITEM_STATUS_LABELS.get(view.status, view.status)
    values["compression"] = view.compression
    values["flagged"] = view.flagged
    return values


def _limit(value: int, unit: str) -> str:
    return f"{value} {UNIT_LABELS.get(unit, unit)}"


def _print_item(view: ItemView) -> None:
    compression = f"{view.compression:.0%}" if view.compression is not None else "-"
    rows = {
        "implementation_code": view.implementation_code,
        "basic_code": view.basic_code,
        "name": view.name,
        "department": view.department,
        "status": ITEM_STATUS_LABELS.get(view.status, view.status),
        "version": str(view.version),
        "effective_from": local_text(view.effective_from) if view.effective_from else "始终 from the beginning",
        "promised_limit": _limit(view.promised_limit, view.promised_limit_unit),
        "legal_limit": _limit(view.legal_limit, view.legal_limit_unit),
        "compression": compression,
        "flagged": "是 yes" if view.flagged else "否 no",
        "explanation": view.explanation or "-",
        "retired_at": local_text(view.retired_at),
        "retire_reason": view.retire_reason or "-",
    }
    for key, value in rows.items():
        console.print(f"{FIELD_LABELS[key]}: {value}", highlight=False)


@items_app.callback(invoke_without_command=True)
def items(ctx: typer.Context, *, data_dir: OptionalDataDir = None) -> None:
    """The item catalogue; see the subcommands."""
    if not subcommand_invoked(ctx, data_dir):
        console.print(ctx.get_help())


@items_app.command("list")
@handle_errors
def list_command(
    ctx: typer.Context,
    *,
    status: Annotated[str | None, typer.Option("--status", help="in_force (在用) or retired (已取消).")] = None,
    flagged: Annotated[bool, typer.Option("--flagged", help="Only items needing an explanation (R14).")] = False,
    data_dir: OptionalDataDir = None,
    as_json: JsonFlag = False,
    fmt: FormatOption = None,
    out: OutOption = None,
    encoding: EncodingOption = "utf-8",
    wide: WideFlag = False,
) -> None:
    """List the catalogue's items (latest versions)."""
    if status is not None and status not in ITEM_STATUS_LABELS:
        raise typer.BadParameter(f"--status must be one of {', '.join(ITEM_STATUS_LABELS)}")
    with opened_node(ctx, data_dir, writes=False) as node:
        views = list_items(node, status=status, flagged_only=flagged)
        tz = node.tz
        node_name = "" if wide else node.config.name
    records = [_item_json(v, tz) for v in views]
    document = {"labels": FIELD_LABELS, "items": records}
    if emit_listing(records, document, title="事项目录 items", fmt=fmt, out=out, encoding=encoding, as_json=as_json):
        return
    columns = (
        Col(FIELD_LABELS["implementation_code"], key=True),
        Col(FIELD_LABELS["name"]),
        Col(FIELD_LABELS["department"], key=True),
        Col(FIELD_LABELS["status"], key=True, drop=2),
        Col(FIELD_LABELS["version"], key=True, drop=4),
        Col(FIELD_LABELS["promised_limit"], key=True, drop=3),
        Col(FIELD_LABELS["legal_limit"], key=True, drop=3),
        Col(FIELD_LABELS["flagged"], key=True, drop=1),
    )
    departments = short_departments((v.department for v in views), node_name)
    rows = [
        (
            escape(v.implementation_code),
            escape(v.name),
            escape(departments.get(v.department, v.department)),
            ITEM_STATUS_LABELS.get(v.status, v.status),
            str(v.version),
            _limit(v.promised_limit, v.promised_limit_unit),
            _limit(v.legal_limit, v.legal_limit_unit),
            "[red]是 yes[/]" if v.flagged else "",
        )
        for v in views
    ]
    print_table(fitted_table("事项目录 Item catalogue", columns, rows, width=console.width, wide=wide))
    in_force = sum(1 for v in views if v.status == "in_force")
    console.print(
        f"事项 items {len(views)} · 在用 in force {in_force} · 已取消 retired {len(views) - in_force} · "
        f"需说明 flagged {sum(1 for v in views if v.flagged)}",
        highlight=False,
    )


@items_app.command("show")
@handle_errors
def show(
    ctx: typer.Context,
    code: ItemCode,
    data_dir: OptionalDataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """One item: its latest version, status and explanation."""
    with opened_node(ctx, data_dir, writes=False) as node:
        view = get_item(node, code)
        tz = node.tz
    if as_json:
        print_json(_item_json(view, tz))
    else:
        _print_item(view)


def _history_json(history: ItemHistory, tz: ZoneInfo) -> dict[str, Any]:
    versions = []
    for version in history.versions:
        values = asdict(version)
        for name in ("effective_from", "explained_at", "recorded_at"):
            values[name] = _time(values[name], tz)
        versions.append(values)
    changes = []
    for change in history.changes:
        values = asdict(change)
        values["action_label"] = "取消 retire" if change.action == "retire" else "恢复 reactivate"
        for name in ("at", "recorded_at"):
            values[name] = _time(values[name], tz)
        changes.append(values)
    return {"item": _item_json(history.item, tz), "versions": versions, "status_changes": changes}


@items_app.command("history")
@handle_errors
def history(
    ctx: typer.Context,
    code: ItemCode,
    data_dir: OptionalDataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Every version of an item (with its effective time) and every retirement / re-activation."""
    with opened_node(ctx, data_dir, writes=False) as node:
        found = item_history(node, code)
        tz = node.tz
    if as_json:
        print_json(_history_json(found, tz))
        return
    table = Table(title=f"{code} 版本 versions")
    for column in (
        "版本 version",
        "生效时间 effective from",
        "承诺时限 promised",
        "法定时限 legal",
        "说明 explanation",
    ):
        table.add_column(column)
    for v in found.versions:
        table.add_row(
            str(v.version),
            local_text(v.effective_from) if v.effective_from else "始终 from the beginning",
            _limit(v.promised_limit, v.promised_limit_unit),
            _limit(v.legal_limit, v.legal_limit_unit),
            v.explanation or "-",
        )
    console.print(table)
    for change in found.changes:
        action = "取消 retired" if change.action == "retire" else "恢复 reactivated"
        console.print(f"{local_text(change.at)} {action} {change.reason}", highlight=False)


def _show_change(view: ItemView, tz: ZoneInfo, as_json: bool, message: str) -> None:
    """An item after a change: its JSON form, or one line for people."""
    if as_json:
        print_json(_item_json(view, tz))
    else:
        console.print(message)


@items_app.command("retire")
@handle_errors
def retire(
    ctx: typer.Context,
    code: ItemCode,
    *,
    reason: Annotated[str, typer.Option("--reason", help="Why the item is retired (required).")] = "",
    at: Annotated[str | None, typer.Option("--at", help="When it is retired (default now), node-local or ISO.")] = None,
    data_dir: OptionalDataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Retire (取消) an item in force."""
    with opened_node(ctx, data_dir) as node:
        try:
            when = parse_datetime(at, node.tz) if at else None
        except ValueError as exc:
            raise InvalidArgumentError(f"--at: {exc}") from exc
        view = retire_item(node, code, reason, at=when)
        tz = node.tz
    _show_change(
        view, tz, as_json, f"item {code}: 已取消 retired at {local_text(view.retired_at)} ({view.retire_reason})"
    )


@items_app.command("reactivate")
@handle_errors
def reactivate(
    ctx: typer.Context,
    code: ItemCode,
    reason: Annotated[str, typer.Option("--reason", help="Why it is back in force (optional).")] = "",
    data_dir: OptionalDataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Put a retired item back in force (恢复)."""
    with opened_node(ctx, data_dir) as node:
        view = reactivate_item(node, code, reason)
        tz = node.tz
    _show_change(view, tz, as_json, f"item {code}: 在用 in force again (version {view.version})")


@items_app.command("explain")
@handle_errors
def explain(
    ctx: typer.Context,
    code: ItemCode,
    text: Annotated[str, typer.Option("--text", help="The written explanation (说明) of the promised limit.")] = "",
    data_dir: OptionalDataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Record the written explanation of a promised limit above half the legal one (closes its R14 flag)."""
    with opened_node(ctx, data_dir) as node:
        view = explain_item(node, code, text)
        tz = node.tz
    _show_change(view, tz, as_json, f"item {code}: 说明 explanation recorded on version {view.version}")


def register(app: typer.Typer) -> None:
    """Add `supnet items` to the CLI."""
    app.add_typer(items_app, name="items")

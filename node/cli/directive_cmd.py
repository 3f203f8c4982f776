"""``supnet directive``: issue 督办 / 效能告诫书 / 整改通知 / 通报; list, show, ack, respond, close, reopen.

Every step is signed with the node's report key and queued for the next hop; the command hands it over at once when
the hop answers, else ``supnet serve`` delivers it (at least once, retried). ``show`` verifies the whole signed
history again and exits 1 if any step does not verify. ``--json`` writes times in ISO 8601 with the node's UTC offset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from node.app import Node
from node.cli.common import (
    JsonFlag,
    OptionalDataDir,
    console,
    err_console,
    handle_errors,
    local_text,
    opened_node,
    print_json,
    subcommand_invoked,
)
from node.directives import (
    KIND_LABELS,
    KINDS,
    ROLE_LABELS,
    DirectiveHistory,
    DirectiveSender,
    DirectiveView,
    FindingDraft,
    IssueRequest,
    acknowledge,
    attachment_digest,
    close,
    directive_history,
    directives,
    issue,
    reopen,
    respond,
)
from node.errors import InvalidArgumentError

directive_app = typer.Typer(
    help="Directives downward (督办, 效能告诫书, 整改通知, 通报): issue, list, show, answer, close."
)

DirectiveId = Annotated[str, typer.Argument(help="The directive id, e.g. gd/20260306-3f9a2c1b.")]
ByOption = Annotated[str, typer.Option("--by", help="Who acts (recorded and signed; default: the OS user).")]
_STATUS_STYLE = {"closed": "green", "responded": "cyan", "reopened": "yellow", "escalated": "bold red"}


def _hand_over(node: Node, directive_id: str) -> bool:
    """Try to hand the new message to the next hop now (True if it took it); else ``supnet serve`` delivers it."""
    sender = DirectiveSender(node)
    try:
        result = sender.send_pending(directive_id)
    finally:
        sender.close()
    return result.acked > 0 and not (result.failed or result.refused)


def _handed_text(handed: bool) -> str:
    if handed:
        return "  handed to the next hop (已送出)"
    return "  [yellow]the next hop did not take it now[/]: it stays queued and 'supnet serve' delivers it (待发送)"


def _status_text(view: DirectiveView) -> str:
    style = _STATUS_STYLE.get(view.status, "")
    text = f"{view.status_label} {view.status}"
    if view.overdue:
        text += " · 逾期 overdue"
        style = "bold red"
    return f"[{style}]{text}[/]" if style else text


def _subject(view: DirectiveView) -> str:
    labels = {"case": "办件", "department": "部门", "item": "事项"}
    return f"{labels[view.subject_kind]} {view.subject}" if view.subject_kind else "-"


def _print_view(view: DirectiveView, node: Node, as_json: bool, handed: bool) -> None:
    if as_json:
        print_json({**view.to_dict(node.tz), "handed_over": handed})
        return
    console.print(
        f"{view.kind_label} [bold]{view.id}[/] {view.issuer_id} → {view.target_id}: {_status_text(view)}"
        + (f"; 答复期限 due {local_text(view.due_at)}" if view.due_at else "")
    )
    console.print(_handed_text(handed))


@directive_app.callback(invoke_without_command=True)
@handle_errors
def directive(ctx: typer.Context, *, data_dir: OptionalDataDir = None) -> None:
    """Directives downward: see the subcommands."""
    if subcommand_invoked(ctx, data_dir):
        return
    console.print(ctx.get_help())


@directive_app.command("issue")
@handle_errors
def issue_command(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="The descendant it goes to (any level below this node).")],
    *,
    kind: Annotated[
        str, typer.Option("--kind", help=f"One of: {', '.join(f'{k} ({v})' for k, v in KIND_LABELS.items())}.")
    ],
    text: Annotated[str, typer.Option("--text", help="What is ordered, warned or announced.")],
    case_no: Annotated[str, typer.Option("--case", help="About one case (办件编号).")] = "",
    department: Annotated[str, typer.Option("--department", help="About one department (部门).")] = "",
    item: Annotated[str, typer.Option("--item", help="About one item (实施编码).")] = "",
    finding: Annotated[list[str] | None, typer.Option("--finding", help="整改: a finding (repeat).")] = None,
    owner: Annotated[
        list[str] | None,
        typer.Option(
            "--owner", help="整改: who must put each --finding right, DEPT or DEPT/POST, one per --finding in order."
        ),
    ] = None,
    respond_within: Annotated[
        int | None,
        typer.Option(
            "--respond-within",
            min=0,
            max=120,
            help="Working days to respond, by the target's calendar (default: directives.default_respond_within_"
            "workdays; a bulletin: 0, none due).",
        ),
    ] = None,
    whole_subtree: Annotated[
        bool, typer.Option("--whole-subtree", help="通报 only: every node of the target's subtree receives it.")
    ] = False,
    attach: Annotated[
        list[Path] | None, typer.Option("--attach", help="An attachment: only its SHA-256 travels (repeat).")
    ] = None,
    by: ByOption = "",
    data_dir: OptionalDataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Issue a directive to a descendant: signed here, relayed hop by hop, answered back."""
    if kind not in KINDS:
        raise InvalidArgumentError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    findings, owners = finding or [], owner or []
    if owners and len(owners) != len(findings):
        raise InvalidArgumentError(
            f"{len(findings)} --finding and {len(owners)} --owner: give one --owner per --finding, in order "
            "(DEPT or DEPT/POST), or none"
        )
    drafts = []
    for index, finding_text in enumerate(findings):
        owner_department, _slash, owner_post = (owners[index] if owners else "").partition("/")
        drafts.append(FindingDraft(finding_text, owner_department.strip(), owner_post.strip()))
    with opened_node(ctx, data_dir) as node:
        view = issue(
            node,
            IssueRequest(
                target_id=target,
                kind=kind,
                text=text,
                case_no=case_no,
                department=department,
                item_code=item,
                findings=drafts,
                respond_within_workdays=respond_within,
                whole_subtree=whole_subtree,
                attachments=[attachment_digest(path) for path in attach or []],
                issued_by=by,
            ),
        )
        handed = _hand_over(node, view.id)
        if as_json:
            print_json({**view.to_dict(node.tz), "handed_over": handed})
        else:
            console.print(f"{view.kind_label} [bold]{view.id}[/] issued to {view.target_id} (已下发)")
            console.print(_handed_text(handed))


@directive_app.command("list")
@handle_errors
def list_command(
    ctx: typer.Context,
    *,
    inbox: Annotated[bool, typer.Option("--inbox", help="Only directives received here (收到).")] = False,
    outbox: Annotated[bool, typer.Option("--outbox", help="Only directives issued here (发出).")] = False,
    open_only: Annotated[bool, typer.Option("--open", help="Only those not closed.")] = False,
    overdue: Annotated[bool, typer.Option("--overdue", help="Only those whose response is late.")] = False,
    data_dir: OptionalDataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Directives held here, newest first (received, issued, relayed, escalated to this node)."""
    if inbox and outbox:
        raise InvalidArgumentError("--inbox and --outbox exclude each other (neither: all)")
    role = "received" if inbox else "issued" if outbox else None
    with opened_node(ctx, data_dir) as node:
        views = directives(node, role=role, open_only=open_only, overdue_only=overdue)
        tz = node.tz
    if as_json:
        print_json({"directives": [view.to_dict(tz) for view in views]})
        return
    table = Table(title=f"督查督办 directives ({len(views)})")
    for column in (
        "编号 id",
        "类型 kind",
        "方向",
        "发文 issuer",
        "接收 target",
        "事由 subject",
        "状态 status",
        "答复期限 due",
    ):
        table.add_column(column)
    for view in views:
        table.add_row(
            view.id,
            view.kind_label,
            ROLE_LABELS.get(view.role, view.role),
            view.issuer_id,
            view.target_id + (" (全辖区)" if view.whole_subtree else ""),
            _subject(view),
            _status_text(view),
            local_text(view.due_at),
        )
    console.print(table)


def _print_history(history: DirectiveHistory) -> None:
    view = history.view
    fields = Table(title=f"{view.kind_label} {view.id}", show_header=False)
    fields.add_column("field", style="bold")
    fields.add_column("value")
    rows: list[tuple[str, Any]] = [
        ("类型 kind", f"{view.kind_label} ({view.kind})"),
        ("发文 issuer", f"{view.issuer_id} · {view.issued_by}"),
        ("接收 target", view.target_id + (" and its whole subtree (全辖区)" if view.whole_subtree else "")),
        ("事由 subject", _subject(view)),
        ("内容 text", view.text),
        ("状态 status", _status_text(view)),
        (
            "本节点 here",
            ROLE_LABELS.get(view.role, view.role) + (f" from {view.received_from}" if view.received_from else ""),
        ),
        ("下发 issued", local_text(view.issued_at)),
        ("答复期限 due", local_text(view.due_at) if view.due_at else "无 none"),
        ("升级 escalates", local_text(view.escalate_at)),
        ("附件 attachments", "\n".join(view.attachments) or "-"),
    ]
    for key, value in rows:
        fields.add_row(key, str(value))
    console.print(fields)
    if view.findings:
        findings = Table(title="整改事项 findings")
        for column in ("#", "事项 finding", "责任部门 department", "岗位 post"):
            findings.add_column(column)
        for f in view.findings:
            findings.add_row(str(f["index"]), f["text"], f["owner_department"] or "-", f["owner_post"] or "-")
        console.print(findings)
    steps = Table(title="签名历史 signed history (verified here)")
    for column in ("时间 at", "环节 step", "单位 node", "人员 person", "内容 text", "验证 verified"):
        steps.add_column(column)
    for entry in history.entries:
        text = entry.text if entry.kind != "issued" else "-"
        if "findings" in entry.detail:
            text += "".join(
                f"\n#{f['index']} {'✓' if f['done'] else '✗'} {f['note']}" for f in entry.detail["findings"]
            )
        if "due_at" in entry.detail:
            text = f"due {entry.detail['due_at']}" + (
                f"; escalates {entry.detail['escalate_at']}" if "escalate_at" in entry.detail else ""
            )
        steps.add_row(
            local_text(entry.at),
            f"{entry.label} {entry.kind}",
            entry.actor_id,
            entry.actor_person or "-",
            text or "-",
            "[green]✓[/]" if entry.verified else f"[bold red]✗ {entry.problem}[/]",
        )
    console.print(steps)
    waiting = [item for item in history.deliveries if item.status != "acked"]
    for item in waiting:
        console.print(
            f"  [yellow]{item.message} → {item.next_hop}: {item.status}[/] after {item.attempts} attempt(s)"
            + (f": {item.last_error}" if item.last_error else "")
        )


@directive_app.command("show")
@handle_errors
def show_command(
    ctx: typer.Context, directive_id: DirectiveId, *, data_dir: OptionalDataDir = None, as_json: JsonFlag = False
) -> None:
    """One directive and its full signed history, every step verified again (exit 1 if one does not verify)."""
    with opened_node(ctx, data_dir) as node:
        history = directive_history(node, directive_id)
        if as_json:
            print_json(history.to_dict(node.tz))
        else:
            _print_history(history)
    if not history.verified:
        if not as_json:
            err_console.print("[bold red]the history does not verify[/]: see ✗ above", highlight=False)
        raise typer.Exit(1)


@directive_app.command("ack")
@handle_errors
def ack_command(
    ctx: typer.Context,
    directive_id: DirectiveId,
    *,
    by: ByOption = "",
    data_dir: OptionalDataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """签收: acknowledge a directive received here."""
    with opened_node(ctx, data_dir) as node:
        view = acknowledge(node, directive_id, by=by)
        _print_view(view, node, as_json, _hand_over(node, directive_id))


@directive_app.command("respond")
@handle_errors
def respond_command(
    ctx: typer.Context,
    directive_id: DirectiveId,
    *,
    text: Annotated[str, typer.Option("--text", help="The response (答复).")],
    finding_done: Annotated[
        list[int] | None, typer.Option("--finding-done", help="整改: finding N is done (repeat; 1-based).")
    ] = None,
    note: Annotated[list[str] | None, typer.Option("--note", help="A note for each --finding-done, in order.")] = None,
    by: ByOption = "",
    data_dir: OptionalDataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """答复: respond to a directive addressed to this node (for 整改, mark findings done)."""
    done_list, notes = finding_done or [], note or []
    if len(notes) > len(done_list):
        raise InvalidArgumentError("each --note belongs to a --finding-done: more notes than findings done")
    done = [(index, notes[i] if i < len(notes) else "") for i, index in enumerate(done_list)]
    with opened_node(ctx, data_dir) as node:
        view = respond(node, directive_id, text, done=done, by=by)
        _print_view(view, node, as_json, _hand_over(node, directive_id))


@directive_app.command("close")
@handle_errors
def close_command(
    ctx: typer.Context,
    directive_id: DirectiveId,
    *,
    text: Annotated[str, typer.Option("--text", help="A closing remark (optional).")] = "",
    by: ByOption = "",
    data_dir: OptionalDataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """办结: accept the response to a directive issued here."""
    with opened_node(ctx, data_dir) as node:
        view = close(node, directive_id, text=text, by=by)
        _print_view(view, node, as_json, _hand_over(node, directive_id))


@directive_app.command("reopen")
@handle_errors
def reopen_command(
    ctx: typer.Context,
    directive_id: DirectiveId,
    *,
    text: Annotated[str, typer.Option("--text", help="Why the response is not accepted.")],
    by: ByOption = "",
    data_dir: OptionalDataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """退回重办: do not accept the response; the target responds again."""
    with opened_node(ctx, data_dir) as node:
        view = reopen(node, directive_id, text, by=by)
        _print_view(view, node, as_json, _hand_over(node, directive_id))


def register(app: typer.Typer) -> None:
    """Add ``supnet directive``."""
    app.add_typer(directive_app, name="directive")

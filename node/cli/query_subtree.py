"""``supnet query TARGET cases|alerts|complaints|directives|ranking --subtree``: one search over a whole subtree.

The query is signed with this node's key and sent to its own server, which fans it out over TARGET's subtree;
every node's part comes back signed by that node and is verified here through its certificate chain. Rows are
printed as they arrive with ``--json`` (JSON Lines, one row a line, then one closing line with the outcome), or
as one table (at most ``--limit`` rows). A partial answer is never shown as complete: the nodes that did not
answer in time are listed and the command exits with ExitCode.PARTIAL (a rejected part: VERIFICATION_FAILED).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import typer
from google.protobuf.json_format import MessageToDict
from rich.table import Table

from federation.proto.v1 import drilldown_pb2 as dd
from node.cli.common import console, err_console, print_json
from node.cli.render import Col, alerts_table, cases_table, complaints_table, fitted_table, print_table, ranking_table
from node.drilldown import SubtreeOutcome, decode_resume, encode_resume, rank_entries, rows_of, search_subtree
from node.errors import ExitCode, InvalidArgumentError

__all__ = ["SubtreeScope", "run_subtree", "since_day"]

_SINCE = re.compile(r"^(\d{1,4})d$")
# How the outcome names why a node is missing (Chinese first).
REASONS = {
    "unreachable": "无法连接 unreachable",
    "deadline": "超时 deadline",
    "refused": "拒绝 refused",
    "error": "出错 error",
    "no_answer": "无应答 no answer",
    "rejected": "签名校验失败 rejected",
    "below_missing": "上级缺失 below a missing node",
}
_TABLES: dict[str, Callable[..., Table]] = {
    "cases": cases_table,
    "alerts": alerts_table,
    "complaints": complaints_table,
}


@dataclass(frozen=True)
class SubtreeScope:
    """The options of a subtree search: on or off, its deadline, row limit, part size and resume token."""

    enabled: bool = False
    deadline: float = 5.0
    limit: int = 0
    page_size: int = 0
    resume: str = ""
    all_levels: bool = False
    # --since as a first day (YYYY-MM-DD), "" for none; a listing's or ranking's --from wins.
    since_day: str = ""


def since_day(since: str, today: date) -> str:
    """The first day of ``--since``: ``7d`` (the last 7 days, today included) or a day YYYY-MM-DD; "" for none."""
    if not since:
        return ""
    match = _SINCE.match(since.strip())
    if match:
        days = int(match.group(1))
        if days < 1:
            raise InvalidArgumentError(f"--since {since!r}: at least 1d")
        return (today - timedelta(days=days - 1)).isoformat()
    try:
        return date.fromisoformat(since).isoformat()
    except ValueError as exc:
        raise InvalidArgumentError(
            f"--since {since!r} is neither a number of days like 7d nor a day YYYY-MM-DD"
        ) from exc


def run_subtree(
    target: str,
    kind: str,
    request: Any,
    scope: SubtreeScope,
    *,
    data_dir: Path,
    address: str | None,
    json_output: bool,
    wide: bool = False,
) -> None:
    """Search TARGET's subtree for ``kind`` rows; print them and the outcome; exit PARTIAL if not complete."""
    from node.app import open_node

    if scope.deadline <= 0:
        raise InvalidArgumentError(f"--deadline {scope.deadline}: must be more than 0 seconds")
    node = open_node(data_dir, migrate_schema=False)
    try:
        search = search_subtree(
            node,
            target,
            address=address,
            deadline_seconds=scope.deadline,
            limit=scope.limit,
            page_size=scope.page_size,
            resume=decode_resume(scope.resume),
            **{kind: request},
        )
        collected: list[Any] = []
        levels: dict[str, str] = {}
        for verified in search.parts():
            levels[verified.node_id] = verified.part.level
            for row in rows_of(verified.part):
                if json_output and kind != "ranking":
                    record = MessageToDict(row, preserving_proto_field_name=True)
                    print_json({"node_id": verified.node_id, **record})
                else:
                    collected.append(row)
        outcome = search.outcome
        assert outcome is not None
        if kind == "ranking":
            _show_ranking(target, request, collected, levels, scope, json_output=json_output, wide=wide)
        elif not json_output:
            _show_rows(target, kind, collected, node.tz, wide=wide)
    finally:
        node.close()
    _finish(outcome, json_output=json_output)


def _show_rows(target: str, kind: str, rows: list[Any], tz: Any, *, wide: bool) -> None:
    title = f"{target} 全辖区 (subtree): {kind} ({len(rows)})"
    if kind in _TABLES:
        print_table(_TABLES[kind](rows, title, tz, width=console.width, wide=wide))
        return
    columns = (
        Col("directive", key=True),
        Col("kind"),
        Col("issuer", drop=2),
        Col("target", key=True),
        Col("status", key=True),
        Col("overdue", key=True),
        Col("subject", drop=1),
    )
    cells = [
        (row.directive_id, row.kind, row.issuer_id, row.target_id, row.status, "是" if row.overdue else "", row.subject)
        for row in rows
    ]
    print_table(fitted_table(title, columns, cells, width=console.width, wide=wide))


def _show_ranking(
    target: str,
    request: dd.RankingRequest,
    rows: list[dd.RankingRow],
    levels: dict[str, str],
    scope: SubtreeScope,
    *,
    json_output: bool,
    wide: bool,
) -> None:
    """Rank every street of the subtree (every node with --all-levels) by the metric, over the verified entries."""
    chosen = rows if scope.all_levels else [row for row in rows if levels.get(row.node_id) == "street"]
    if not chosen and not scope.all_levels:
        chosen = rows  # a subtree without streets: rank what there is
    metric = request.metric or dd.RANKING_METRIC_EARLY_COMPLETION_RATE
    ranked = rank_entries(metric, chosen, worst_first=request.worst_first)
    if json_output:
        for row in ranked.rows:
            print_json(MessageToDict(row, preserving_proto_field_name=True))
        return
    who = "全部节点 (all nodes)" if scope.all_levels else "全部街道 (all streets)"
    print_table(ranking_table(ranked, f"{target} {who}: {len(ranked.rows)}", width=console.width, wide=wide))


def _finish(outcome: SubtreeOutcome, *, json_output: bool) -> None:
    """Print the outcome (answered, missing, rejected, cut); exit PARTIAL / VERIFICATION_FAILED unless whole."""
    token = encode_resume(outcome.resume) if outcome.resume is not None else ""
    if json_output:
        print_json(
            {
                "outcome": "partial" if outcome.partial else ("truncated" if outcome.cut else "complete"),
                "target_id": outcome.target_id,
                "kind": outcome.kind,
                "nodes_answered": outcome.nodes_answered,
                "rows": outcome.rows,
                "missing": [
                    {"node_id": m.node_id, "reason": m.reason, "detail": m.detail, "reported_by": m.reported_by}
                    for m in outcome.missing
                ],
                "rejected": [{"signer_id": signer, "reason": reason} for signer, reason in outcome.rejected],
                "unread": outcome.unread,
                "resume": token,
                "seconds": round(outcome.seconds, 3),
            }
        )
    else:
        _print_outcome(outcome, token)
    if outcome.rejected:
        raise typer.Exit(ExitCode.VERIFICATION_FAILED)
    if outcome.partial:
        raise typer.Exit(ExitCode.PARTIAL)


def _print_outcome(outcome: SubtreeOutcome, token: str) -> None:
    seconds = f"{outcome.seconds:.2f} s"
    if outcome.complete:
        console.print(
            f"完整：{outcome.nodes_answered} 个节点全部应答，{outcome.rows} 行，各部分签名已逐一验证 ({seconds}) "
            f"[dim]complete: every node answered, every part verified[/]"
        )
    for signer, reason in outcome.rejected:
        err_console.print(f"[bold red]签名校验失败[/] {signer}: {reason}", highlight=False)
    if outcome.partial:
        err_console.print(
            f"[bold yellow]部分结果 (PARTIAL)[/]：{len(outcome.missing)} 个节点未在时限内完整应答，"
            f"其数据不在结果中；已应答 {outcome.nodes_answered} 个节点，{outcome.rows} 行 ({seconds})",
            highlight=False,
        )
        for missing in outcome.missing:
            by = f"，{missing.reported_by} 报告" if missing.reported_by else ""
            detail = f" — {missing.detail}" if missing.detail else ""
            err_console.print(
                f"  缺失 {missing.node_id}（{REASONS.get(missing.reason, missing.reason)}{by}）{detail}",
                highlight=False,
            )
    if outcome.cut:
        console.print(
            f"已达上限 {outcome.limit or '默认'} 行 (limit reached)：{len(outcome.unread)} 个节点未读完。"
            f"继续 (continue): --resume {token}",
            highlight=False,
        )

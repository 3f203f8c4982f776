"""A spot check's record at the ancestor: the audit entry (clean or not), the operators' alert, the later directive.

``record_result`` writes one hash-chained audit entry per check with the bucket, the sample, the detection
probability and every finding (``spotcheck.run``; the target's end is the drill-down audit of the query it served);
findings also raise an operator notice. ``directive_text`` turns a recorded check into the text of a 督办 or 整改
(the CLI issues it through node.directives). ``pick_targets`` draws the descendants a scheduled run checks.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

from node.app import Node
from node.audit_log import AuditFilter, AuditLog, AuditResult, record_audit
from node.errors import InvalidArgumentError, NotFoundError, SupnetError
from node.notify import NoticeKind, notify_operators
from node.spotcheck.check import SpotCheckResult

__all__ = [
    "AUDIT_ACTION",
    "directive_text",
    "pick_targets",
    "record_failure",
    "record_result",
    "recorded_check",
    "result_text",
]

AUDIT_ACTION = "spotcheck.run"
_FIELD_LABELS = {
    "completed_on_time": "按时办结",
    "completed_early": "提前办结",
    "completed_within_legal": "法定时限内办结",
    "refused": "不予办理",
    "cases_returned": "退件",
    "received": "受理数",
    "completed": "办结数",
    "promised_due_at": "承诺办结期限",
    "legal_due_at": "法定办结期限",
    "case_no": "办件编号",
}


def _label(field: str) -> str:
    label = _FIELD_LABELS.get(field)
    return f"{label} ({field})" if label else field


def result_text(result: dict[str, Any]) -> list[str]:
    """The check's outcome as lines of operator text (Chinese first), from ``SpotCheckResult.to_dict()``."""
    bucket = f"{result['day']} 事项 {result['basic_code']}/{result['item_type_code']}"
    lines = [
        f"抽查 spot check {result['target']} 报告 #{result['report_sequence']} 桶 {bucket}: "
        f"承诺 {result['leaf_count']} 条记录, 抽取 {result['samples']} 条 + {result['pairs']} 对相邻记录, "
        f"打开 {result['opened']} 条",
    ]
    probability = result["detection_probability"]
    lines.append(
        "发现概率 detection probability (至少 at least): 若 1 条记录被篡改 "
        f"{probability['k=1']:.1%}; 若 1% 被篡改 {probability['k=1%']:.1%}; 若 5% 被篡改 {probability['k=5%']:.1%}"
    )
    if result["pairs"]:
        gaps = result["gap_probability"]
        lines.append(f"缺号发现概率 gap probability: 1 处缺号 {gaps['g=1']:.1%}; 3 处缺号 {gaps['g=3']:.1%}")
    if not result["findings"]:
        lines.append("结果: 未发现问题 (clean)")
    for finding in result["findings"]:
        where = f"办件 {finding['case_no']} " if finding["case_no"] else "本桶 "
        lines.append(
            f"问题 finding [{finding['kind']}]: {where}{_label(finding['field'])}: "
            f"上报 reported {finding['reported']}, 核查 re-judged {finding['rejudged']}"
        )
    return lines


def record_result(node: Node, result: SpotCheckResult, actor: str) -> int:
    """Audit the check at this (the asking) node and alert the operators of findings; returns the audit seq."""
    detail = result.to_dict()
    with node.engine.begin() as conn:
        seq = record_audit(
            conn,
            actor=actor,
            action=AUDIT_ACTION,
            target=result.plan.target,
            detail=detail,
            result=AuditResult.OK if not result.findings else "finding",
        )
    if result.findings:
        lines = result_text(detail)
        notify_operators(
            node,
            NoticeKind.SPOT_CHECK_FINDING,
            f"{result.plan.target}:{detail['day']}:{detail['basic_code']}",
            f"抽查发现问题: {result.plan.target} {len(result.findings)} 处 (spot check found {len(result.findings)})",
            "\n".join([*lines, f"转为督办或整改: supnet spotcheck directive {seq} --kind rectify"]),
        )
    return seq


def record_failure(node: Node, target: str, error: SupnetError, actor: str) -> int:
    """Audit a check that could not be completed (refused, unreachable, records changed): it is on record too."""
    with node.engine.begin() as conn:
        return record_audit(
            conn,
            actor=actor,
            action=AUDIT_ACTION,
            target=target,
            detail={"target": target, "error_code": error.code, "error": error.message[:500]},
            result="error",
        )


def recorded_check(node: Node, seq: int) -> dict[str, Any]:
    """The detail of the spot check audited under ``seq`` at this node."""
    for entry in AuditLog(node.engine).entries(AuditFilter(action=AUDIT_ACTION), limit=None):
        if entry.seq == seq:
            detail: dict[str, Any] = json.loads(entry.detail_json)
            return detail
    raise NotFoundError(f"no spot check is recorded under audit entry {seq} (see 'supnet audit list')")


def directive_text(detail: dict[str, Any]) -> tuple[str, list[str], str]:
    """(text, findings, case number) for a directive about a recorded check with findings."""
    findings = detail.get("findings") or []
    if not findings:
        raise InvalidArgumentError("that spot check found nothing: there is nothing to order")
    text = (
        f"抽查 {detail['target']} 报告 #{detail['report_sequence']} ({detail['day']}, 事项 {detail['basic_code']}) "
        f"发现 {len(findings)} 处上报数据与办件记录不符, 请核实并整改。"
    )
    items = [
        f"{finding['case_no'] or '本桶'} {_label(finding['field'])}: 上报 {finding['reported']}, "
        f"核查 {finding['rejudged']}"
        for finding in findings
    ]
    cases = {finding["case_no"] for finding in findings if finding["case_no"]}
    return text, items, (next(iter(cases)) if len(cases) == 1 else "")


def pick_targets(descendants: Sequence[str], count: int, rng: random.Random) -> list[str]:
    """The descendants a scheduled run checks: ``count`` drawn at random."""
    return rng.sample(list(descendants), min(count, len(descendants)))

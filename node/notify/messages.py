"""Text of a warning notification per channel, Chinese + English: rule, case, department, post and due time."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from node.domain import to_iso

__all__ = ["SEVERITY_LABELS", "AlertFacts", "format_for_channel"]

SEVERITY_LABELS = {"reminder": ("提醒", "reminder"), "yellow": ("黄牌", "yellow card"), "red": ("红牌", "red card")}
SMS_MAX_CHARS = 200


@dataclass(frozen=True, slots=True)
class AlertFacts:
    """What a notification says about one alert (joined with its case's and complaint's due times)."""

    alert_id: int
    rule_id: str
    severity: str
    subject: str
    case_no: str | None
    complaint_no: str | None
    department: str
    post: str
    message: str
    raised_at: datetime
    correct_by: datetime | None
    promised_due_at: datetime | None
    legal_due_at: datetime | None
    decision_due_at: datetime | None

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> AlertFacts:
        """Build from a row mapping with the alert columns plus the joined due times."""
        return cls(
            alert_id=row["id"],
            rule_id=row["rule_id"],
            severity=row["severity"],
            subject=row["subject"],
            case_no=row["case_no"],
            complaint_no=row["complaint_no"],
            department=row["department"] or "",
            post=row["post"] or "",
            message=row["message"] or "",
            raised_at=row["raised_at"],
            correct_by=row["correct_by"],
            promised_due_at=row["promised_due_at"],
            legal_due_at=row["legal_due_at"],
            decision_due_at=row["decision_due_at"],
        )


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else "-"


def _severity(severity: str) -> tuple[str, str]:
    return SEVERITY_LABELS.get(severity, (severity, severity))


def _about(facts: AlertFacts) -> str:
    if facts.case_no:
        return f"办件 case {facts.case_no}"
    if facts.complaint_no:
        return f"投诉 complaint {facts.complaint_no}"
    return facts.subject


def subject_line(facts: AlertFacts) -> str:
    """Mail subject / title: severity, rule, what it is about and who is responsible."""
    cn, en = _severity(facts.severity)
    return f"[supnet {cn} {en}] {facts.rule_id} {_about(facts)} — {facts.department or '-'}"


def text_body(facts: AlertFacts) -> str:
    """The full plain-text message (mail, log, webhook 'text')."""
    cn, en = _severity(facts.severity)
    lines = [
        f"监察预警 Supervision warning #{facts.alert_id}",
        f"规则 Rule: {facts.rule_id}",
        f"级别 Severity: {cn} {en}",
    ]
    if facts.case_no:
        lines.append(f"办件编号 Case: {facts.case_no}")
    if facts.complaint_no:
        lines.append(f"投诉编号 Complaint: {facts.complaint_no}")
    lines += [f"责任部门 Department: {facts.department or '-'}", f"岗位 Post: {facts.post or '-'}"]
    if facts.promised_due_at is not None:
        lines.append(f"承诺办结时间 Promised due: {_when(facts.promised_due_at)}")
    if facts.legal_due_at is not None:
        lines.append(f"法定办结时间 Legal due: {_when(facts.legal_due_at)}")
    if facts.decision_due_at is not None:
        lines.append(f"受理决定期限 Decision due: {_when(facts.decision_due_at)}")
    if facts.correct_by is not None:
        lines.append(f"纠正期限 Correct by: {_when(facts.correct_by)}")
    lines.append(f"产生时间 Raised at: {_when(facts.raised_at)}")
    if facts.message:
        lines.append(f"说明 Message: {facts.message}")
    return "\n".join(lines)


def _due(facts: AlertFacts) -> datetime | None:
    for value in (facts.correct_by, facts.promised_due_at, facts.decision_due_at, facts.legal_due_at):
        if value is not None:
            return value
    return None


def sms_text(facts: AlertFacts) -> str:
    """A short text message (cut to SMS_MAX_CHARS so a gateway never rejects it for length)."""
    cn, _ = _severity(facts.severity)
    what = f"办件{facts.case_no}" if facts.case_no else (f"投诉{facts.complaint_no}" if facts.complaint_no else "")
    due = _due(facts)
    due_text = f" 期限{_when(due)}" if due is not None else ""
    text = f"【supnet】{cn}{facts.rule_id} {what} {facts.department}/{facts.post or '*'}{due_text}: {facts.message}"
    return text if len(text) <= SMS_MAX_CHARS else text[: SMS_MAX_CHARS - 1] + "…"


def webhook_payload(facts: AlertFacts, node_id: str, recipient_name: str, tz: ZoneInfo) -> str:
    """The JSON document a webhook receives (datetimes as ISO 8601 with the node's offset)."""

    def iso(value: datetime | None) -> str | None:
        return to_iso(value, tz) if value is not None else None

    document = {
        "kind": "supnet.alert",
        "node_id": node_id,
        "recipient": recipient_name,
        "title": subject_line(facts),
        "text": text_body(facts),
        "alert": {
            "id": facts.alert_id,
            "rule_id": facts.rule_id,
            "severity": facts.severity,
            "subject": facts.subject,
            "case_no": facts.case_no,
            "complaint_no": facts.complaint_no,
            "department": facts.department,
            "post": facts.post,
            "message": facts.message,
            "raised_at": iso(facts.raised_at),
            "correct_by": iso(facts.correct_by),
            "promised_due_at": iso(facts.promised_due_at),
            "legal_due_at": iso(facts.legal_due_at),
            "decision_due_at": iso(facts.decision_due_at),
        },
    }
    return json.dumps(document, ensure_ascii=False, sort_keys=True)


def format_for_channel(
    facts: AlertFacts, channel: str, *, node_id: str, recipient_name: str, tz: ZoneInfo
) -> tuple[str, str]:
    """(subject, body) stored in the notification row for ``channel``: exactly what will be sent."""
    subject = subject_line(facts)
    if channel == "webhook":
        return subject, webhook_payload(facts, node_id, recipient_name, tz)
    if channel == "sms":
        return subject, sms_text(facts)
    return subject, text_body(facts)

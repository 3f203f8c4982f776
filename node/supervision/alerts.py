"""Alerts (电子监察 warnings) and their life: raised → notified → acknowledged → corrected, or escalated.

* ``raise_alerts`` inserts alerts with ON CONFLICT DO NOTHING on UNIQUE(rule_id, subject), so one alert exists per
  (rule, case[, step]) even when scans and imports run concurrently; it counts exactly the rows it inserted in the
  metric buckets (reminders / yellow / red cards on the day of the breach, docs/domain.md §5; the open-overdue
  gauges for R02/R03 on an open case, on its acceptance day).
* An alert keeps ``breached_at`` (when its rule was broken: what figures, months and scores use) and ``raised_at``
  (when supnet noticed it: an import or a scan).
* 'raised' → 'notified' belongs to the notification dispatcher (node.notify).
* ``acknowledge_alert``: raised|notified → acknowledged. ``correct_alert`` (纠错, a note is required):
  raised|notified|acknowledged → corrected. ``escalate_alert`` / ``escalate_overdue_yellows``: a yellow card in
  raised|notified|acknowledged → escalated, creating and linking an R04 red card. corrected and escalated are final.
  An illegal transition is InvalidStateError; an unknown id NotFoundError.

A yellow card gets ``correct_by`` = end of the ``supervision_workdays``-th working day after it was raised; the
scan escalates it when that passes uncorrected. The node counter ESCALATION_FRONTIER holds the earliest
``correct_by`` of the open yellow cards, so a scan only looks at yellow cards when one can actually be due.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Row, Table, bindparam, func, or_, select, update

from node.audit_log import Action, operator_actor, record_audit
from node.domain import due_at, to_iso
from node.errors import InvalidStateError, NotFoundError, ValidationError
from node.store import (
    Alert,
    Item,
    compare_and_set_counter,
    copy_to_staging,
    counter_value,
    dialect_insert,
    lower_counter,
    staging_definition,
    to_micros,
)
from node.supervision.metric_definitions import OVERDUE_GAUGE_RULES, SEVERITY_COUNTERS
from node.supervision.metrics import BucketKey, Deltas, add_to_buckets, merge_deltas
from node.supervision.rulebook import R04, RULES, SEVERITIES, Thresholds, escalation_subject, groups_condition

if TYPE_CHECKING:
    from node.app import Node
    from node.domain import WorkCalendar

__all__ = [
    "ESCALATION_FRONTIER",
    "OPEN_STATUSES",
    "AlertDraft",
    "AlertView",
    "RaisedAlert",
    "acknowledge_alert",
    "correct_alert",
    "correct_by_deadline",
    "escalate_alert",
    "escalate_overdue_yellows",
    "get_alert",
    "list_alerts",
    "raise_alerts",
]

log = logging.getLogger(__name__)

OPEN_STATUSES: tuple[str, ...] = ("raised", "notified", "acknowledged")
ACKNOWLEDGEABLE: tuple[str, ...] = ("raised", "notified")
ESCALATION_FRONTIER = "alerts.escalation_frontier"
# Stored as the frontier when no open yellow card exists: later than any real deadline.
NO_FRONTIER = to_micros(datetime(9999, 1, 1))

_alerts: Table = Alert.__table__  # type: ignore[assignment]
_items: Table = Item.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class AlertDraft:
    """An alert a rule wants to raise, with what the metric buckets need to count it.

    ``open_case_day`` is the acceptance day of the case when the case is OPEN at raise time: an R02/R03 alert on
    an open case moves that cohort's open-overdue gauge.
    """

    rule_id: str
    subject: str
    department: str
    implementation_code: str
    message: str
    raised_at: datetime
    case_no: str | None = None
    step_id: int | None = None
    complaint_no: str | None = None
    post: str = ""
    correct_by: datetime | None = None
    basic_code: str = ""
    item_type_code: str = ""
    open_case_day: date | None = None
    # When the rule was broken (docs/domain.md §5); None: at raised_at.
    breached_at: datetime | None = None

    @property
    def breach_moment(self) -> datetime:
        """What figures, months and scores date this alert by: the breach, else when it was raised."""
        return self.breached_at if self.breached_at is not None else self.raised_at

    @property
    def severity(self) -> str:
        """The rule's severity (reminder, yellow, red)."""
        return RULES[self.rule_id].severity


@dataclass(frozen=True, slots=True)
class RaisedAlert:
    """An alert actually inserted by ``raise_alerts`` (a draft that lost the race to an existing one is absent)."""

    id: int
    draft: AlertDraft


@dataclass(frozen=True, slots=True)
class AlertView:
    """One stored alert, as shown by the CLI and returned by the lifecycle functions."""

    id: int
    rule_id: str
    rule_name: str
    subject: str
    severity: str
    status: str
    case_no: str | None
    step_id: int | None
    complaint_no: str | None
    department: str
    post: str
    implementation_code: str
    message: str
    raised_at: datetime
    breached_at: datetime
    correct_by: datetime | None
    notified_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str
    corrected_at: datetime | None
    correction_note: str
    escalated_at: datetime | None
    escalated_alert_id: int | None

    @classmethod
    def from_row(cls, row: Row[Any]) -> AlertView:
        """Build from an ``alerts`` row."""
        data = dict(row._mapping)
        rule = RULES.get(data["rule_id"])
        return cls(rule_name=rule.name if rule else "", **{k: data[k] for k in _VIEW_COLUMNS})

    def to_dict(self, tz: ZoneInfo | None = None) -> dict[str, Any]:
        """JSON-ready form: datetimes as ISO 8601 strings, with the UTC offset of ``tz`` (the node's zone) if given."""

        def text(value: datetime) -> str:
            return to_iso(value, tz) if tz is not None else value.isoformat()

        return {k: (text(v) if isinstance(v, datetime) else v) for k, v in asdict(self).items()}


_VIEW_COLUMNS = tuple(name for name in AlertView.__dataclass_fields__ if name != "rule_name")


def correct_by_deadline(cal: WorkCalendar, raised_at: datetime, supervision_workdays: int) -> datetime:
    """A yellow card's supervision deadline: end of the N-th working day after the day it was raised."""
    return due_at(cal, raised_at, supervision_workdays)


# -- raising -----------------------------------------------------------------------------------------------------
def _draft_row(draft: AlertDraft) -> dict[str, Any]:
    return {
        "rule_id": draft.rule_id,
        "subject": draft.subject,
        "severity": draft.severity,
        "case_no": draft.case_no,
        "step_id": draft.step_id,
        "complaint_no": draft.complaint_no,
        "department": draft.department,
        "post": draft.post,
        "implementation_code": draft.implementation_code,
        "message": draft.message,
        "raised_at": draft.raised_at,
        "breached_at": draft.breach_moment,
        "correct_by": draft.correct_by,
        "status": "raised",
        "acknowledged_by": "",
        "correction_note": "",
    }


def alert_deltas(raised: Iterable[AlertDraft]) -> Deltas:
    """Metric deltas of newly raised alerts: severity counters on the breach day, overdue gauges on open cases."""
    deltas: Deltas = {}
    for draft in raised:
        key = BucketKey(
            draft.breach_moment.date(),
            draft.department,
            draft.implementation_code,
            draft.basic_code,
            draft.item_type_code,
        )
        merge_deltas(deltas, {key: {SEVERITY_COUNTERS[draft.severity]: 1}})
        gauge = OVERDUE_GAUGE_RULES.get(draft.rule_id)
        if gauge is not None and draft.open_case_day is not None:
            cohort = BucketKey(
                draft.open_case_day,
                draft.department,
                draft.implementation_code,
                draft.basic_code,
                draft.item_type_code,
            )
            merge_deltas(deltas, {cohort: {gauge: 1}})
    return deltas


def _insert_new(conn: Connection, rows: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
    """INSERT ... ON CONFLICT (rule_id, subject) DO NOTHING RETURNING (id, rule_id, subject) of the rows inserted."""
    if conn.dialect.name == "postgresql":
        # COPY into a staging table, then ONE INSERT ... SELECT (node.store.bulk): a pipelined executemany with
        # RETURNING still cost a server round and a result fetch per alert, and SQLAlchemy's multi-VALUES form has
        # psycopg re-parse one huge statement per page. Ids are taken in the drafts' order (ORDER BY the ordinal).
        columns = list(rows[0])
        definition = "ordinal integer, " + staging_definition(conn, _alerts, columns)
        staging = copy_to_staging(
            conn,
            "supnet_alert_drafts",
            definition,
            ["ordinal", *columns],
            ((index, *(row[name] for name in columns)) for index, row in enumerate(rows)),
        )
        selected = ", ".join(columns)
        result = conn.exec_driver_sql(
            f"INSERT INTO {_alerts.name} ({selected}) SELECT {selected} FROM {staging} ORDER BY ordinal "
            "ON CONFLICT (rule_id, subject) DO NOTHING RETURNING id, rule_id, subject"
        )
        return [(row[0], row[1], row[2]) for row in result]
    stmt = (
        dialect_insert(conn, _alerts)
        .on_conflict_do_nothing(index_elements=["rule_id", "subject"])
        .returning(_alerts.c.id, _alerts.c.rule_id, _alerts.c.subject)
    )
    return [(row.id, row.rule_id, row.subject) for row in conn.execute(stmt, rows)]


def raise_alerts(conn: Connection, drafts: Sequence[AlertDraft]) -> list[RaisedAlert]:
    """Insert alerts that do not exist yet (one per rule and subject) and count them; returns those inserted."""
    unique: dict[tuple[str, str], AlertDraft] = {}
    for draft in drafts:
        unique.setdefault((draft.rule_id, draft.subject), draft)
    if not unique:
        return []
    inserted = _insert_new(conn, [_draft_row(draft) for draft in unique.values()])
    raised = [RaisedAlert(int(alert_id), unique[(rule_id, subject)]) for alert_id, rule_id, subject in inserted]
    if not raised:
        return []
    add_to_buckets(conn, alert_deltas(r.draft for r in raised))
    deadlines = [r.draft.correct_by for r in raised if r.draft.severity == "yellow" and r.draft.correct_by]
    if deadlines:
        # A new yellow card may be due before the stored frontier: pull it earlier (a missing one stays missing).
        lower_counter(conn, ESCALATION_FRONTIER, to_micros(min(deadlines)))
    for alert in raised:
        log.debug("alert %s raised: %s %s", alert.id, alert.draft.rule_id, alert.draft.subject)
    log.info("%s alerts raised (%s already existed)", len(raised), len(unique) - len(raised))
    return raised


# -- reading -----------------------------------------------------------------------------------------------------
def get_alert(conn: Connection, alert_id: int) -> AlertView:
    """One alert by id; NotFoundError if there is none."""
    row = conn.execute(select(_alerts).where(_alerts.c.id == alert_id)).first()
    if row is None:
        raise NotFoundError(f"alert {alert_id} not found")
    return AlertView.from_row(row)


def list_alerts(
    conn: Connection,
    *,
    open_only: bool = False,
    severity: str | None = None,
    rule_id: str | None = None,
    department: str | None = None,
    case_no: str | None = None,
    limit: int | None = 200,
) -> list[AlertView]:
    """Alerts, newest first, filtered; ``open_only`` means not yet corrected or escalated."""
    if severity is not None and severity not in SEVERITIES:
        raise ValidationError(
            f"severity must be one of {', '.join(SEVERITIES)}, got {severity!r}", field="severity", reason="bad_code"
        )
    if rule_id is not None and rule_id not in RULES:
        raise ValidationError(
            f"unknown rule id {rule_id!r} (known: {', '.join(RULES)})", field="rule", reason="bad_code"
        )
    query = select(_alerts).order_by(_alerts.c.id.desc())
    if open_only:
        query = query.where(_alerts.c.status.in_(OPEN_STATUSES))
    if severity is not None:
        query = query.where(_alerts.c.severity == severity)
    if rule_id is not None:
        query = query.where(_alerts.c.rule_id == rule_id)
    if department is not None:
        query = query.where(_alerts.c.department == department)
    if case_no is not None:
        query = query.where(_alerts.c.case_no == case_no)
    if limit is not None:
        query = query.limit(limit)
    return [AlertView.from_row(row) for row in conn.execute(query)]


# -- lifecycle ---------------------------------------------------------------------------------------------------
def _transition(
    conn: Connection, alert_id: int, allowed_from: tuple[str, ...], action: str, values: dict[str, Any]
) -> AlertView:
    """Apply one guarded status change atomically (UPDATE ... WHERE status IN allowed), explaining a refusal."""
    result = conn.execute(
        update(_alerts).where(_alerts.c.id == alert_id, _alerts.c.status.in_(allowed_from)).values(**values)
    )
    if result.rowcount == 0:
        current = get_alert(conn, alert_id)  # NotFoundError for an unknown id
        raise InvalidStateError(
            f"alert {alert_id} is {current.status}; cannot {action} it (only when {' or '.join(allowed_from)})"
        )
    log.info("alert %s: %s", alert_id, action)
    return get_alert(conn, alert_id)


def acknowledge_alert(
    node: Node, alert_id: int, by: str = "", now: datetime | None = None, *, actor: str | None = None
) -> AlertView:
    """raised|notified → acknowledged: the responsible unit has seen the warning.

    ``actor`` names who acted in the audit log (the console's ``web:NAME@NODE``); default: the OS user.
    """
    when = now or node.now()
    with node.engine.begin() as conn:
        view = _transition(
            conn,
            alert_id,
            ACKNOWLEDGEABLE,
            "acknowledge",
            {"status": "acknowledged", "acknowledged_at": when, "acknowledged_by": by.strip()[:100]},
        )
        record_audit(
            conn,
            actor=actor or operator_actor(node.config.id),
            action=Action.ALERT_ACKNOWLEDGED,
            target=f"alert:{alert_id}",
            detail={"by": by.strip()[:100], "rule": view.rule_id, "subject": view.subject},
        )
        return view


def correct_alert(
    node: Node, alert_id: int, note: str, now: datetime | None = None, *, actor: str | None = None
) -> AlertView:
    """raised|notified|acknowledged → corrected (纠错) with a required note saying what was put right.

    ``actor`` names who acted in the audit log (default: the OS user).
    """
    if not note or not note.strip():
        raise ValidationError(
            f"alert {alert_id}: field 'note': a correction needs a note saying what was corrected",
            field="note",
            reason="missing_field",
        )
    when = now or node.now()
    with node.engine.begin() as conn:
        view = _transition(
            conn,
            alert_id,
            OPEN_STATUSES,
            "correct",
            {"status": "corrected", "corrected_at": when, "correction_note": note.strip()},
        )
        record_audit(
            conn,
            actor=actor or operator_actor(node.config.id),
            action=Action.ALERT_CORRECTED,
            target=f"alert:{alert_id}",
            detail={"note": note.strip(), "rule": view.rule_id, "subject": view.subject},
        )
        return view


def _escalate_rows(
    conn: Connection, yellows: Sequence[Row[Any]], now: datetime, *, by_hand: bool = False
) -> list[RaisedAlert]:
    """Raise an R04 red card for each yellow row and mark the yellows escalated, linked to their red card."""

    def why(row: Row[Any]) -> str:
        if by_hand or row.correct_by is None:
            return "escalated by hand (人工升级)"
        return f"not corrected by {row.correct_by:%Y-%m-%d %H:%M} (逾期未纠正)"

    def breach(row: Row[Any]) -> datetime:
        # R04 is broken when the supervision deadline passes uncorrected; by hand (or without a deadline) it is the
        # escalation itself, which may come before the deadline.
        if by_hand or row.correct_by is None or row.correct_by > now:
            return now
        return cast(datetime, row.correct_by)

    drafts = [
        AlertDraft(
            rule_id=R04,
            subject=escalation_subject(row.subject, row.id),
            department=row.department,
            implementation_code=row.implementation_code,
            message=f"黄牌 #{row.id} 升级为红牌: yellow card {row.rule_id} on {row.subject} {why(row)}",
            raised_at=now,
            case_no=row.case_no,
            step_id=row.step_id,
            complaint_no=row.complaint_no,
            post=row.post,
            basic_code=row.basic_code or "",
            item_type_code=row.type_code or "",
            breached_at=breach(row),
        )
        for row in yellows
    ]
    raised = raise_alerts(conn, drafts)
    red_ids = {alert.draft.subject: alert.id for alert in raised}
    links = [
        {"yellow_id": row.id, "red_id": red_ids[escalation_subject(row.subject, row.id)]}
        for row in yellows
        if escalation_subject(row.subject, row.id) in red_ids
    ]
    if links:
        conn.execute(
            update(_alerts)
            # OR of equalities, not IN: an expanding IN cannot be used with executemany.
            .where(_alerts.c.id == bindparam("yellow_id"), or_(*(_alerts.c.status == s for s in OPEN_STATUSES)))
            .values(status="escalated", escalated_at=now, escalated_alert_id=bindparam("red_id")),
            links,
        )
    return raised


def _yellow_query() -> Any:
    return (
        select(_alerts, _items.c.basic_code, _items.c.type_code)
        .select_from(_alerts.outerjoin(_items, _items.c.implementation_code == _alerts.c.implementation_code))
        .where(_alerts.c.severity == "yellow", _alerts.c.status.in_(OPEN_STATUSES))
    )


def escalate_alert(node: Node, alert_id: int, now: datetime | None = None) -> AlertView:
    """Escalate one open yellow card by hand (raises its R04 red card); returns the red card."""
    when = now or node.now()
    with node.engine.begin() as conn:
        row = conn.execute(_yellow_query().where(_alerts.c.id == alert_id)).first()
        if row is None:
            current = get_alert(conn, alert_id)
            raise InvalidStateError(
                f"alert {alert_id} is a {current.severity} alert in status {current.status}; only an open yellow card "
                "can be escalated"
            )
        raised = _escalate_rows(conn, [row], when, by_hand=True)
        if not raised:
            raise InvalidStateError(f"alert {alert_id} was escalated concurrently")
        record_audit(
            conn,
            actor=operator_actor(node.config.id),
            action=Action.ALERT_ESCALATED,
            target=f"alert:{alert_id}",
            detail={"red_card": raised[0].id},
        )
        return get_alert(conn, raised[0].id)


def escalate_overdue_yellows(conn: Connection, thresholds: Thresholds, now: datetime) -> list[RaisedAlert]:
    """R04: escalate every open yellow card whose ``correct_by`` has passed; returns the red cards raised.

    Cheap when nothing can be due: the stored frontier (earliest open correct_by) is compared first.
    """
    groups = thresholds.groups(R04)
    if not groups:
        return []
    frontier = counter_value(conn, ESCALATION_FRONTIER)
    if frontier is not None and frontier >= to_micros(now):
        return []
    item_type = func.coalesce(_items.c.type_code, "")
    in_scope = groups_condition(groups, item_type)
    due = conn.execute(
        _yellow_query().where(_alerts.c.correct_by.is_not(None), _alerts.c.correct_by < now, in_scope)
    ).all()
    raised = _escalate_rows(conn, due, now) if due else []
    earliest = conn.execute(
        select(func.min(_alerts.c.correct_by))
        .select_from(_alerts.outerjoin(_items, _items.c.implementation_code == _alerts.c.implementation_code))
        .where(_alerts.c.severity == "yellow", _alerts.c.status.in_(OPEN_STATUSES), in_scope)
    ).scalar_one_or_none()
    new_frontier = NO_FRONTIER if earliest is None else to_micros(earliest)
    # Compare-and-set: if an import lowered the frontier meanwhile, keep its (earlier) value.
    compare_and_set_counter(conn, ESCALATION_FRONTIER, frontier, new_frontier)
    if raised:
        log.info("escalated %s yellow cards to red (R04)", len(raised))
    return raised

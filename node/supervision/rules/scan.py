"""The periodic scan (``run_scan``): the time-driven rules, one transaction, set-based SQL per rule and setting.

* R01 open, running (not clock-stopped) cases due within ``reminder_workdays``; R02 past the promised limit; R03 past
  the legal limit (breached at the window's start, the promised due, the legal due: docs/domain.md §5) — each a
  SELECT of candidates with NOT EXISTS on the alerts' unique (rule_id, subject) index, then one INSERT ... ON
  CONFLICT DO NOTHING RETURNING, so concurrent scans never duplicate and only inserted alerts are counted in the
  metrics;
* R05 pending steps of open cases past their step due (``steps.step_due_at``, computed at import, the breach), over
  the partial index of pending steps;
* R10/R11 overdue complaints (few rows: their deadlines, the breach, are computed in Python);
* R12 departments whose 30-day 退件率 exceeds the threshold (node.supervision.rules.return_rate);
* R13 evaluation follow-ups still open past their deadline (node.supervision.rules.followups);
* R04 yellow cards uncorrected at their ``correct_by``, the breach (node.supervision.alerts.escalate_overdue_yellows).

Incremental scan: node counters remember the previous scan time (``scan.last_at``) and the earliest deadline of any
case accepted or re-timed since (``scan.dirty_from``, lowered by the event rules). A scan at ``now`` only examines
deadlines in [min(last_at, dirty_from), now) — everything earlier was already judged at a time past its deadline —
so a periodic scan costs an index range read, not a pass over every open case. A changed supervision config
(``scan.config_fingerprint``), a first scan or ``full=True`` examines every open case. Pending steps work the same
way with their own marker (``scan.step_dirty_from``, lowered by step imports to the earliest new pending due).
"""

from __future__ import annotations

import logging
import time as time_module
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    DateTime,
    String,
    Table,
    bindparam,
    cast,
    exists,
    func,
    literal,
    literal_column,
    select,
)

from node.config import SupervisionConfig
from node.domain import due_at
from node.errors import CalendarError
from node.store import (
    Alert,
    Case,
    Complaint,
    Step,
    compare_and_set_counter,
    counter_values,
    from_micros,
    lock_revision,
    set_counter,
    to_micros,
)
from node.supervision.alerts import AlertDraft, RaisedAlert, escalate_overdue_yellows, raise_alerts
from node.supervision.catalogue import flag_items
from node.supervision.rulebook import (
    R01,
    R02,
    R03,
    R05,
    R10,
    R11,
    RuleGroup,
    case_subject,
    complaint_subject,
    step_subject,
)
from node.supervision.rules.context import (
    NOTHING_DIRTY,
    SCAN_DAILY_DAY,
    SCAN_DIRTY_FROM,
    SCAN_FINGERPRINT,
    SCAN_LAST_AT,
    SCAN_MAX_AT,
    SCAN_STEP_DIRTY_FROM,
    RuleContext,
    pending_step_message,
)
from node.supervision.rules.followups import scan_followups
from node.supervision.rules.return_rate import scan_return_rates

if TYPE_CHECKING:
    from node.app import Node
    from node.domain import WorkCalendar

__all__ = ["PeriodicScan", "ScanResult", "run_scan"]

log = logging.getLogger(__name__)

_cases: Table = Case.__table__  # type: ignore[assignment]
_alerts: Table = Alert.__table__  # type: ignore[assignment]
_complaints: Table = Complaint.__table__  # type: ignore[assignment]
_steps: Table = Step.__table__  # type: ignore[assignment]


@dataclass
class ScanResult:
    """What one scan did: the alerts it raised (escalations included) and how it ran."""

    now: datetime
    full: bool
    raised: list[RaisedAlert] = field(default_factory=list)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def by_rule(self) -> dict[str, int]:
        """Number of alerts raised per rule id."""
        counts: dict[str, int] = {}
        for alert in self.raised:
            counts[alert.draft.rule_id] = counts.get(alert.draft.rule_id, 0) + 1
        return dict(sorted(counts.items()))

    def to_dict(self, max_alerts: int | None = 1000) -> dict[str, Any]:
        """JSON-ready summary (at most ``max_alerts`` alerts listed; the counts are always complete)."""
        shown = self.raised if max_alerts is None else self.raised[:max_alerts]
        return {
            "now": self.now.isoformat(),
            "full": self.full,
            "seconds": round(self.seconds, 4),
            "raised_total": len(self.raised),
            "by_rule": self.by_rule,
            "warnings": list(self.warnings),
            "alerts": [
                {
                    "id": alert.id,
                    "rule_id": alert.draft.rule_id,
                    "severity": alert.draft.severity,
                    "subject": alert.draft.subject,
                    "department": alert.draft.department,
                    "message": alert.draft.message,
                }
                for alert in shown
            ],
        }


def _next_midnight(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), time())


class PeriodicScan(RuleContext):
    """The time-driven rules of one node, as of a given time: R01–R03 on open cases, R05, R10–R13, R04."""

    def __init__(self, config: SupervisionConfig, calendar: WorkCalendar) -> None:
        super().__init__(config, calendar)
        self._fingerprint = self.thresholds.fingerprint()

    def _reminder_horizon(self, settings_workdays: int, at: datetime) -> datetime:
        """Cases due before this instant are within the reminder window at ``at``."""
        return _next_midnight(self.calendar.add_workdays(at.date(), settings_workdays))

    def run(self, conn: Connection, now: datetime, *, full: bool = False) -> ScanResult:
        """Run every scan rule as of ``now`` in the caller's transaction."""
        started = time_module.perf_counter()
        # Serialize with imports' metric writes first, so the open/closed state read below cannot go stale.
        lock_revision(conn)
        state = counter_values(
            conn, (SCAN_LAST_AT, SCAN_DIRTY_FROM, SCAN_STEP_DIRTY_FROM, SCAN_FINGERPRINT, SCAN_MAX_AT, SCAN_DAILY_DAY)
        )
        last_at, dirty_from = state.get(SCAN_LAST_AT), state.get(SCAN_DIRTY_FROM)
        step_dirty_from = state.get(SCAN_STEP_DIRTY_FROM)
        fingerprint = self._fingerprint
        config_changed = state.get(SCAN_FINGERPRINT) != fingerprint
        full = full or last_at is None or config_changed
        previous = None if full or last_at is None else from_micros(last_at)
        dirty = from_micros(dirty_from) if dirty_from is not None and not full else None

        self.warnings = []
        raised: list[RaisedAlert] = []
        for group in self.thresholds.groups(R01):
            try:
                horizon = self._reminder_horizon(group.settings.reminder_workdays, now)
                lower = None
                if previous is not None:
                    lower = self._reminder_horizon(group.settings.reminder_workdays, previous)
                    lower = min(lower, dirty) if dirty is not None else lower
            except CalendarError as exc:
                self.warnings.append(f"{R01} reminders skipped: {exc}")
                log.error("%s reminders skipped: %s", R01, exc)
                continue
            raised += self._scan_cases(
                conn,
                R01,
                group,
                "promised_due_at",
                now=now,
                due_not_before=now,
                due_before=horizon,
                lower=lower,
            )
        for rule_id, due_column in ((R02, "promised_due_at"), (R03, "legal_due_at")):
            lower = None
            if previous is not None:
                lower = min(previous, dirty) if dirty is not None else previous
            for group in self.thresholds.groups(rule_id):
                raised += self._scan_cases(
                    conn, rule_id, group, due_column, now=now, due_not_before=None, due_before=now, lower=lower
                )
        step_lower = None
        if previous is not None:
            step_dirty = from_micros(step_dirty_from) if step_dirty_from is not None else None
            step_lower = min(previous, step_dirty) if step_dirty is not None else previous
        for group in self.thresholds.groups(R05):
            raised += self._scan_pending_steps(conn, group, now=now, lower=step_lower)
        raised += self._scan_complaints(conn, now)
        # Whole-table rules run at the first scan of a day (and a full scan), not every few minutes: R12 reads every
        # case of its window, R14 every item (new items are judged at import), and follow-ups imported before their
        # deadlines existed are stamped once.
        daily = full or state.get(SCAN_DAILY_DAY) != now.date().toordinal()
        if daily:
            previous_scan = from_micros(last_at) if last_at is not None and not full else None
            raised += scan_return_rates(self, conn, now, previous_scan)
        raised += scan_followups(self, conn, now, since=None if daily else previous)
        raised += escalate_overdue_yellows(conn, self.thresholds, now)
        if daily:
            raised += flag_items(conn, self.thresholds, now)  # R14 (node.supervision.catalogue)
            set_counter(conn, SCAN_DAILY_DAY, now.date().toordinal())

        new_last = to_micros(now) if full or last_at is None else max(last_at, to_micros(now))
        set_counter(conn, SCAN_LAST_AT, new_last)
        # Compare-and-set: an import that lowered dirty_from meanwhile keeps its value for the next scan.
        compare_and_set_counter(conn, SCAN_DIRTY_FROM, dirty_from, NOTHING_DIRTY)
        compare_and_set_counter(conn, SCAN_STEP_DIRTY_FROM, step_dirty_from, NOTHING_DIRTY)
        if config_changed:
            set_counter(conn, SCAN_FINGERPRINT, fingerprint)
        if state.get(SCAN_MAX_AT, -1) < to_micros(now):
            set_counter(conn, SCAN_MAX_AT, to_micros(now))
        result = ScanResult(
            now=now,
            full=full,
            raised=raised,
            seconds=time_module.perf_counter() - started,
            warnings=list(self.warnings),
        )
        log.info(
            "scan as of %s (%s): %s alerts raised %s in %.3f s",
            now.isoformat(),
            "full" if full else "incremental",
            len(raised),
            result.by_rule,
            result.seconds,
        )
        return result

    def _scan_cases(
        self,
        conn: Connection,
        rule_id: str,
        group: RuleGroup,
        due_column: str,
        *,
        now: datetime,
        due_not_before: datetime | None,
        due_before: datetime,
        lower: datetime | None,
    ) -> list[RaisedAlert]:
        """One case rule for one threshold group: open, running cases with due_not_before <= due < due_before."""
        params: dict[str, Any] = {"due_before": due_before}
        if group.others:
            type_filter = "not_in" if group.excluded_types else "all"
            params["types"] = sorted(group.excluded_types)
        else:
            type_filter = "in"
            params["types"] = sorted(group.item_types)
        # One lower bound, so the planner ranges over the (status, due) index between two values.
        bounds = [bound for bound in (due_not_before, lower) if bound is not None]
        if bounds:
            params["lower"] = max(bounds)
        if type_filter == "all":
            del params["types"]
        statement = _case_candidates(rule_id, due_column, type_filter, bool(bounds))
        rows = conn.execute(statement, params).all()
        if not rows:
            return []
        correct_by = None
        if rule_id == R02:
            correct_by = self._supervision_deadline(group.settings.supervision_workdays, now)
        drafts = [
            AlertDraft(
                rule_id=rule_id,
                subject=case_subject(row.case_no),
                department=row.department,
                implementation_code=row.implementation_code,
                message=_case_message(rule_id, row.case_no, row.due),
                raised_at=now,
                case_no=row.case_no,
                correct_by=correct_by,
                basic_code=row.basic_code,
                item_type_code=row.item_type_code,
                open_case_day=row.accepted_at.date(),
                # R02/R03: the limit's due time; R01: when the case came within its reminder window.
                breached_at=(
                    self.reminder_window_start(row.due, group.settings.reminder_workdays, row.accepted_at)
                    if rule_id == R01
                    else row.due
                ),
            )
            for row in rows
        ]
        return raise_alerts(conn, drafts)

    def _scan_pending_steps(
        self, conn: Connection, group: RuleGroup, *, now: datetime, lower: datetime | None
    ) -> list[RaisedAlert]:
        """R05 for one threshold group: pending steps of open cases whose step due is before ``now``, no alert yet.

        Set-based over the partial index of pending steps; ``lower`` (incremental scans) skips dues already judged.
        A step's due never moves (step limits ignore clock stops, as for finished steps), so the window is exact.
        """
        params: dict[str, Any] = {"due_before": now}
        if group.others:
            type_filter = "not_in" if group.excluded_types else "all"
            if group.excluded_types:
                params["types"] = sorted(group.excluded_types)
        else:
            type_filter = "in"
            params["types"] = sorted(group.item_types)
        if lower is not None:
            params["lower"] = lower
        rows = conn.execute(_pending_step_candidates(type_filter, lower is not None), params).all()
        drafts = [
            AlertDraft(
                rule_id=R05,
                subject=step_subject(row.case_no, row.id),
                department=row.department,
                implementation_code=row.implementation_code,
                message=pending_step_message(row.case_no, row.step_name, row.step_limit, row.step_due_at),
                raised_at=now,
                breached_at=row.step_due_at,
                case_no=row.case_no,
                step_id=int(row.id),
                post=row.post or "",
                basic_code=row.basic_code,
                item_type_code=row.item_type_code,
            )
            for row in rows
        ]
        return raise_alerts(conn, drafts)

    def _scan_complaints(self, conn: Connection, now: datetime) -> list[RaisedAlert]:
        """R10 (decision overdue) and R11 (handling overdue) over complaints still waiting; few rows by nature."""
        drafts: list[AlertDraft] = []
        for rule_id in (R10, R11):
            rows = conn.execute(_complaint_candidates(rule_id)).all()
            for row in rows:
                if not self.thresholds.enabled(rule_id, row.item_type):
                    continue
                try:
                    due = self._complaint_due(rule_id, row)
                except CalendarError as exc:
                    self.warnings.append(f"complaint {row.complaint_no}: {rule_id} not evaluated: {exc}")
                    log.warning("complaint %s: %s not evaluated: %s", row.complaint_no, rule_id, exc)
                    continue
                what = "受理/不予受理决定 decision" if rule_id == R10 else "办理 handling"
                if due >= now:
                    continue
                drafts.append(
                    AlertDraft(
                        rule_id=rule_id,
                        subject=complaint_subject(row.complaint_no),
                        department=row.handling_unit or row.respondent_unit,
                        implementation_code=row.item_code,
                        message=f"投诉 {row.complaint_no} {what} overdue since {due:%Y-%m-%d %H:%M}",
                        raised_at=now,
                        breached_at=due,
                        complaint_no=row.complaint_no,
                        case_no=row.case_no,
                        correct_by=self._correct_by(rule_id, row.item_type, now),
                        basic_code=row.item_basic_code,
                        item_type_code=row.item_type,
                    )
                )
        return raise_alerts(conn, drafts)

    def _complaint_due(self, rule_id: str, row: Any) -> datetime:
        """Decision (R10) or handling (R11) deadline, as node.supervision.complaints defines them."""
        if rule_id == R10:
            if row.decision_due_at is not None:
                return row.decision_due_at  # type: ignore[no-any-return]
            return due_at(self.calendar, row.received_at, self.thresholds.complaint_decision_workdays)
        workdays = self.thresholds.complaint_handling_workdays + max(int(row.extension_workdays or 0), 0)
        return due_at(self.calendar, row.decided_at or row.received_at, workdays)


# Scan statements, built once and reused with bound values (building SQLAlchemy expressions on every scan would cost
# more than running them). Keyed by everything that changes their shape.
_STATEMENTS: dict[tuple[Any, ...], Any] = {}


def _case_candidates(rule_id: str, due_name: str, type_filter: str, with_lower: bool) -> Any:
    """Candidates of one case rule: open, running cases in a deadline window, of the group's item types, no alert yet.

    Window: ``due < :due_before`` [and ``>= :lower``]; "no alert yet" is a NOT EXISTS on the
    alerts' unique (rule_id, subject) index.
    """
    key = ("cases", rule_id, due_name, type_filter, with_lower)
    statement = _STATEMENTS.get(key)
    if statement is None:
        c = _cases.c
        due = c[due_name]
        conditions: list[ColumnElement[bool]] = [
            c.status == "open",
            ~c.clock_stopped,
            due < bindparam("due_before", type_=DateTime()),
        ]
        if type_filter == "in":
            conditions.append(c.item_type_code.in_(bindparam("types", expanding=True)))
        elif type_filter == "not_in":
            conditions.append(c.item_type_code.not_in(bindparam("types", expanding=True)))
        if with_lower:
            conditions.append(due >= bindparam("lower", type_=DateTime()))
        already = exists().where(_alerts.c.rule_id == rule_id, _alerts.c.subject == literal("case:") + c.case_no)
        statement = select(
            c.case_no,
            c.department,
            c.implementation_code,
            c.basic_code,
            c.item_type_code,
            c.accepted_at,
            due.label("due"),
        ).where(*conditions, ~already)
        _STATEMENTS[key] = statement
    return statement


def _pending_step_candidates(type_filter: str, with_lower: bool) -> Any:
    """R05 candidates: pending steps (环节办理状态 1, no end) of open cases due before ``:due_before``, no alert yet.

    The pending-state terms are literal SQL so SQLite can prove the partial index ix_steps_pending_due applies
    (it cannot with bound parameters); "no alert yet" probes the alerts' unique (rule_id, subject) index.
    """
    key = ("steps", type_filter, with_lower)
    statement = _STATEMENTS.get(key)
    if statement is None:
        s, c = _steps.c, _cases.c
        conditions: list[ColumnElement[bool]] = [
            s.status_code == literal_column("'1'"),
            s.ended_at.is_(None),
            s.step_due_at.is_not(None),
            s.step_due_at < bindparam("due_before", type_=DateTime()),
            # Wrapped so no planner starts from the open cases (status index) and probes each one's steps: with
            # 100,000 open cases that reads them all, while the pending steps due in the window are few.
            func.coalesce(c.status, "") == "open",
        ]
        if with_lower:
            conditions.append(s.step_due_at >= bindparam("lower", type_=DateTime()))
        if type_filter == "in":
            conditions.append(c.item_type_code.in_(bindparam("types", expanding=True)))
        elif type_filter == "not_in":
            conditions.append(c.item_type_code.not_in(bindparam("types", expanding=True)))
        subject = literal("case:") + s.case_no + literal(":step:") + cast(s.id, String)
        already = exists().where(_alerts.c.rule_id == R05, _alerts.c.subject == subject)
        statement = (
            select(
                s.id,
                s.case_no,
                s.step_name,
                s.post,
                s.step_limit,
                s.step_due_at,
                c.department,
                c.implementation_code,
                c.basic_code,
                c.item_type_code,
            )
            .select_from(_steps.join(_cases, c.case_no == s.case_no))
            .where(*conditions, ~already)
        )
        _STATEMENTS[key] = statement
    return statement


def _complaint_candidates(rule_id: str) -> Any:
    """Complaints still waiting for the step ``rule_id`` watches (R10: a decision, R11: handling), no alert yet."""
    key = ("complaints", rule_id)
    statement = _STATEMENTS.get(key)
    if statement is None:
        cp, c = _complaints.c, _cases.c
        status = "received" if rule_id == R10 else "accepted"
        already = exists().where(
            _alerts.c.rule_id == rule_id, _alerts.c.subject == literal("complaint:") + cp.complaint_no
        )
        statement = (
            select(
                _complaints,
                func.coalesce(c.implementation_code, "").label("item_code"),
                func.coalesce(c.basic_code, "").label("item_basic_code"),
                func.coalesce(c.item_type_code, "").label("item_type"),
            )
            .select_from(_complaints.outerjoin(_cases, c.case_no == cp.case_no))
            .where(cp.status == status, ~already)
        )
        _STATEMENTS[key] = statement
    return statement


def _case_message(rule_id: str, case_no: str, due: datetime) -> str:
    when = f"{due:%Y-%m-%d %H:%M}"
    if rule_id == R01:
        return f"办件 {case_no} 即将到达承诺办结时限 {when}: promised limit reached soon"
    if rule_id == R02:
        return f"办件 {case_no} 已超过承诺办结时限 {when}: promised limit passed (黄牌)"
    return f"办件 {case_no} 已超过法定办结时限 {when}: legal limit passed (红牌)"


def run_scan(node: Node, now: datetime | None = None, *, full: bool = False) -> ScanResult:
    """Run one scan as of ``now`` (default: the node's clock) in its own transaction; for the CLI and scheduler."""
    scan = PeriodicScan(node.config.supervision, node.calendar)
    with node.engine.begin() as conn:
        return scan.run(conn, now or node.now(), full=full)

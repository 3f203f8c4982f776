"""The rule engine's event-driven half: the rules judged on newly stored records, inside the import transaction.

Called by the RulesListener for each batch of one kind:

* step: R05 step ended past its own limit, or still pending (环节办理状态 1, no end) and already past it when it
  arrives; R07 repeated supplement, R08 return without an opinion, R09 late entry (only when the source sent
  数据录入时间: the importer stamps a missing one with the import time);
* completion: R02/R03 when completed past the promised/legal limit (if no alert yet), R08 refusal without reason,
  R06 when its 是否收费 declares fees on an item that charges none or the case's payments total above the standard
  (once per case, and not when a payment already raised R06 on it); the open-overdue gauges of the completing
  cases are closed;
* payment: R06 fee on an item that charges none, or above its standard;
* acceptance, procedure_end: the case's (new) deadlines are handed to the next scan (its "Incremental scan").

Overdue-ness of open cases is left to the scan on purpose: a historical import delivers acceptances before their
completions, so judging a case "open and overdue" the moment its acceptance arrives would raise false cards. The
time-driven rules are the periodic scan's (node.supervision.rules.scan).

Each alert is dated by its breach (docs/domain.md §5), whatever the import time: R02/R03 the promised/legal due, R05
the step's due, R06 the payment (or the completion declaring the fee), R07 the supplement request past the allowed
number, R08 the refusal or the return, R09 the step's own time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Table, select, tuple_

from node.config import SupervisionConfig
from node.domain import due_at
from node.errors import CalendarError
from node.store import (
    Alert,
    Item,
    Payment,
    Step,
    counter_values,
    from_micros,
    lock_revision,
    lower_counter,
    to_micros,
)
from node.supervision.alerts import AlertDraft, RaisedAlert, raise_alerts
from node.supervision.metric_definitions import OVERDUE_GAUGE_RULES
from node.supervision.metrics import BucketKey, Deltas, add_to_buckets, merge_deltas
from node.supervision.rulebook import (
    R02,
    R03,
    R05,
    R06,
    R07,
    R08,
    R09,
    case_subject,
    completion_subject,
    payment_subject,
    step_subject,
)
from node.supervision.rules.context import (
    SCAN_DIRTY_FROM,
    SCAN_MAX_AT,
    SCAN_STEP_DIRTY_FROM,
    RuleContext,
    chunks,
    fmt,
    pending_step_message,
)

if TYPE_CHECKING:
    from node.domain import WorkCalendar

__all__ = ["RuleEngine"]

log = logging.getLogger(__name__)

REFUSAL_RESULT_CODES = frozenset({"2", "3"})
_FEN = Decimal("0.01")

_alerts: Table = Alert.__table__  # type: ignore[assignment]
_items: Table = Item.__table__  # type: ignore[assignment]
_steps: Table = Step.__table__  # type: ignore[assignment]
_payments: Table = Payment.__table__  # type: ignore[assignment]


class RuleEngine(RuleContext):
    """Evaluates the event-driven rules of the catalogue on newly stored records (the time-driven: PeriodicScan)."""

    def __init__(self, config: SupervisionConfig, calendar: WorkCalendar) -> None:
        super().__init__(config, calendar)
        self._fees: dict[str, tuple[bool, Decimal | None]] = {}

    def on_records(
        self, conn: Connection, kind: str, records: Sequence[Mapping[str, Any]], now: datetime
    ) -> list[RaisedAlert]:
        """Evaluate newly stored records of one kind (ingest listener contract); returns the alerts raised."""
        self.warnings = []
        if not records or kind not in ("acceptance", "procedure_end", "step", "completion", "payment"):
            return []
        # Same lock order as the scan and every metric writer (the revision row first), whatever order the
        # listeners run in: a scan and an import can then never deadlock on each other's rows.
        lock_revision(conn)
        if kind in ("acceptance", "procedure_end"):
            self._mark_for_scan(conn, records)
            return []
        if kind == "step":
            self._mark_pending_steps(conn, records)
            return raise_alerts(conn, self._step_drafts(conn, records, now))
        if kind == "completion":
            self._close_overdue_gauges(conn, records)
            drafts = self._completion_drafts(records, now)
            drafts += self._completion_fee_drafts(conn, records, now)
            return raise_alerts(conn, drafts)
        if kind == "payment":
            return raise_alerts(conn, self._payment_drafts(conn, records, now))
        return []

    def _mark_for_scan(self, conn: Connection, records: Sequence[Mapping[str, Any]]) -> None:
        """New or re-timed open cases: make the next scan look back to their earliest deadline."""
        earliest: datetime | None = None
        for record in records:
            case_row = record.get("case") or record
            if case_row.get("status", "open") != "open":
                continue
            # The earliest deadline a scan may judge; without computed deadlines, the acceptance (always earlier).
            promised, legal = case_row.get("promised_due_at"), case_row.get("legal_due_at")
            candidate = case_row["accepted_at"] if promised is None or legal is None else min(promised, legal)
            if earliest is None or candidate < earliest:
                earliest = candidate
        if earliest is not None:
            lower_counter(conn, SCAN_DIRTY_FROM, to_micros(earliest))

    def _close_overdue_gauges(self, conn: Connection, records: Sequence[Mapping[str, Any]]) -> None:
        """Completing cases leave the open-overdue gauges of their acceptance-day cohort."""
        # The caller took the metric lock: a concurrent scan either committed its alerts before this read or will
        # see these completions. Only a scan raises R02/R03 on an open case, and only a scan run after the case
        # was accepted: a case accepted after the latest scan time cannot hold one (a historical bulk import skips
        # the lookup entirely).
        latest_scan = counter_values(conn, (SCAN_MAX_AT,)).get(SCAN_MAX_AT)
        if latest_scan is None:
            return
        scanned_after = from_micros(latest_scan)
        cases = {
            record["case"]["case_no"]: record["case"]
            for record in records
            if record["case"]["accepted_at"] < scanned_after
        }
        deltas: Deltas = {}
        case_numbers = sorted(cases)
        rules = sorted(OVERDUE_GAUGE_RULES)
        for chunk in chunks(case_numbers):
            rows = conn.execute(
                select(_alerts.c.case_no, _alerts.c.rule_id).where(
                    _alerts.c.case_no.in_(chunk), _alerts.c.rule_id.in_(rules)
                )
            )
            for case_no, rule_id in rows:
                case_row = cases[case_no]
                key = BucketKey(
                    case_row["accepted_at"].date(),
                    case_row["department"],
                    case_row["implementation_code"],
                    case_row.get("basic_code") or "",
                    case_row.get("item_type_code") or "",
                )
                merge_deltas(deltas, {key: {OVERDUE_GAUGE_RULES[rule_id]: -1}})
        if deltas:
            add_to_buckets(conn, deltas)

    def _case_draft(
        self, rule_id: str, case_row: Mapping[str, Any], message: str, now: datetime, **extra: Any
    ) -> AlertDraft:
        item_type = case_row.get("item_type_code") or ""
        correct_by = None
        if rule_id in (R02, R07, R08):
            correct_by = self._correct_by(rule_id, item_type, now)
        return AlertDraft(
            rule_id=rule_id,
            subject=extra.pop("subject", None) or case_subject(case_row["case_no"]),
            department=case_row["department"],
            implementation_code=case_row["implementation_code"],
            message=message,
            raised_at=now,
            case_no=case_row["case_no"],
            correct_by=correct_by,
            basic_code=case_row.get("basic_code") or "",
            item_type_code=item_type,
            **extra,
        )

    def _completion_drafts(self, records: Sequence[Mapping[str, Any]], now: datetime) -> list[AlertDraft]:
        drafts: list[AlertDraft] = []
        for record in records:
            case_row = record["case"]
            item_type = case_row.get("item_type_code") or ""
            completed_at: datetime = record["completed_at"]
            no = case_row["case_no"]
            if not case_row.get("clock_stopped"):
                promised, legal = case_row["promised_due_at"], case_row["legal_due_at"]
                if completed_at > promised and self.thresholds.enabled(R02, item_type):
                    message = f"办件 {no} 超承诺时限办结: completed {fmt(completed_at)}, promised {fmt(promised)}"
                    drafts.append(self._case_draft(R02, case_row, message, now, breached_at=promised))
                if completed_at > legal and self.thresholds.enabled(R03, item_type):
                    message = f"办件 {no} 超法定时限办结: completed {fmt(completed_at)} after legal {fmt(legal)}"
                    drafts.append(self._case_draft(R03, case_row, message, now, breached_at=legal))
            result_code = record.get("result_code") or ""
            if (
                result_code in REFUSAL_RESULT_CODES
                and not (record.get("reason") or "").strip()
                and self.thresholds.enabled(R08, item_type)
            ):
                label = "不予批准 refused" if result_code == "2" else "不予受理 not accepted"
                message = f"办件 {no} {label} without a stated reason (未说明理由)"
                drafts.append(self._case_draft(R08, case_row, message, now, breached_at=completed_at))
        return drafts

    def _step_findings(self, record: Mapping[str, Any], now: datetime) -> list[tuple[str, str, datetime]]:
        """(rule id, message, breach) of the step-level rules one step record breaks (R05, R08 return, R09)."""
        case_row = record["case"]
        item_type = case_row.get("item_type_code") or ""
        where = f"办件 {case_row['case_no']} 环节「{record.get('step_name', '')}」"
        started_at: datetime = record["started_at"]
        ended_at: datetime | None = record.get("ended_at")
        findings: list[tuple[str, str, datetime]] = []
        step_limit = record.get("step_limit")
        if step_limit is not None and self.thresholds.enabled(R05, item_type):
            step_due = self._step_due(record)
            if step_due is None:
                pass  # cannot judge (calendar lacks the year): logged by _step_due, never guessed
            elif ended_at is not None:
                if ended_at > step_due:
                    findings.append(
                        (
                            R05,
                            f"{where}超时: ended {fmt(ended_at)}, limit {step_limit} workdays (due {fmt(step_due)})",
                            step_due,
                        )
                    )
            elif _is_pending(record) and case_row.get("status") == "open" and step_due < now:
                # Still pending and already past its limit when it arrives; later ones are the scan's.
                findings.append(
                    (
                        R05,
                        pending_step_message(case_row["case_no"], record["step_name"], step_limit, step_due),
                        step_due,
                    )
                )
        no_opinion = not (record.get("opinion") or "").strip()
        if record.get("action") == "return" and no_opinion and self.thresholds.enabled(R08, item_type):
            # The return is the step's outcome: made when the step ended (its start if the source sent no end).
            findings.append((R08, f"{where}退回未说明理由: return without an opinion", ended_at or started_at))
        late = self.thresholds.settings(R09, item_type)
        entered_at: datetime | None = record.get("entered_at")
        # The importer stamps a missing 数据录入时间 with the import time (== now): that says nothing about when the
        # business system recorded the step, so only an entry time the source actually sent is judged.
        if late.enabled and entered_at is not None and entered_at != now:
            happened = ended_at or started_at
            if entered_at - happened > timedelta(hours=late.late_entry_hours):
                # Dated by the step's own time (when it happened), not by the late entry: the lateness belongs to
                # the work of that day, and an entry made months later must not move the card out of its month.
                findings.append(
                    (R09, f"{where}延迟录入: happened {fmt(happened)}, entered {fmt(entered_at)}", happened)
                )
        return findings

    def _step_due(self, record: Mapping[str, Any]) -> datetime | None:
        """A step's due: as the importer stored it, else computed; None (logged) when the calendar lacks the year."""
        if "step_due_at" in record:
            due: datetime | None = record["step_due_at"]
            return due
        try:
            return due_at(self.calendar, record["started_at"], int(record["step_limit"]))
        except CalendarError as exc:
            log.warning("step of case %s: %s not evaluated: %s", record["case"]["case_no"], R05, exc)
            return None

    def _mark_pending_steps(self, conn: Connection, records: Sequence[Mapping[str, Any]]) -> None:
        """Pending steps with a due: make the next scan look back to the earliest (it may precede the last scan)."""
        dues = [
            due
            for record in records
            if _is_pending(record)
            and record["case"].get("status") == "open"
            and (due := record.get("step_due_at")) is not None
        ]
        if dues:
            lower_counter(conn, SCAN_STEP_DIRTY_FROM, to_micros(min(dues)))

    def _step_drafts(self, conn: Connection, records: Sequence[Mapping[str, Any]], now: datetime) -> list[AlertDraft]:
        firing: list[tuple[str, Mapping[str, Any], str, datetime]] = []  # step-level findings need the step's id
        drafts: list[AlertDraft] = []
        repeated: dict[str, tuple[Mapping[str, Any], str, int]] = {}  # R07: case -> (record, message, allowed)
        for record in records:
            case_row = record["case"]
            settings = self.thresholds.settings(R07, case_row.get("item_type_code") or "")
            supplements = int(case_row.get("supplement_count") or 0)
            if record.get("action") == "supplement" and settings.enabled and supplements > settings.max_supplements:
                message = f"办件 {case_row['case_no']} 第 {supplements} 次补正，违反一次性告知: repeated supplement"
                repeated.setdefault(case_row["case_no"], (record, message, settings.max_supplements))
            firing.extend(
                (rule_id, record, message, breach) for rule_id, message, breach in self._step_findings(record, now)
            )
        if repeated:
            times = self._supplement_times(conn, sorted(repeated))
            for case_no, (record, message, allowed) in repeated.items():
                # Broken by the first supplement request past the allowed number (the 2nd when one is allowed).
                requests = times.get(case_no, [])
                breach = requests[allowed] if len(requests) > allowed else record["started_at"]
                drafts.append(self._case_draft(R07, record["case"], message, now, breached_at=breach))
        if firing:
            ids = self._step_ids(conn, [record for _, record, _, _ in firing])
            for rule_id, record, message, breach in firing:
                case_row = record["case"]
                step_id = ids[(case_row["case_no"], record["step_name"], record["started_at"])]
                draft = self._case_draft(
                    rule_id,
                    case_row,
                    message,
                    now,
                    subject=step_subject(case_row["case_no"], step_id),
                    step_id=step_id,
                    post=record.get("post") or "",
                    breached_at=breach,
                )
                drafts.append(draft)
        return drafts

    @staticmethod
    def _supplement_times(conn: Connection, case_numbers: Sequence[str]) -> dict[str, list[datetime]]:
        """The stored supplement requests' times per case, earliest first."""
        times: dict[str, list[datetime]] = {}
        s = _steps.c
        for chunk in chunks(case_numbers):
            rows = conn.execute(
                select(s.case_no, s.started_at)
                .where(s.case_no.in_(chunk), s.action == "supplement")
                .order_by(s.case_no, s.started_at)
            )
            for case_no, started_at in rows:
                times.setdefault(case_no, []).append(started_at)
        return times

    @staticmethod
    def _step_ids(conn: Connection, records: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str, datetime], int]:
        """Ids of stored steps by natural key (the listener gets rows without their generated ids)."""
        ids: dict[tuple[str, str, datetime], int] = {}
        missing = []
        for record in records:
            key = (record["case"]["case_no"], record["step_name"], record["started_at"])
            if record.get("id") is not None:
                ids[key] = int(record["id"])
            else:
                missing.append(key)
        s = _steps.c
        for chunk in chunks(sorted(set(missing))):
            rows = conn.execute(
                select(s.id, s.case_no, s.step_name, s.started_at).where(
                    tuple_(s.case_no, s.step_name, s.started_at).in_(chunk)
                )
            )
            for row in rows:
                ids[(row.case_no, row.step_name, row.started_at)] = int(row.id)
        return ids

    def _payment_drafts(
        self, conn: Connection, records: Sequence[Mapping[str, Any]], now: datetime
    ) -> list[AlertDraft]:
        items = self._item_fees(conn, (record["case"]["implementation_code"] for record in records))
        firing: list[tuple[Mapping[str, Any], str]] = []
        for record in records:
            case_row = record["case"]
            if not self.thresholds.enabled(R06, case_row.get("item_type_code") or ""):
                continue
            amount = Decimal(str(record["amount"]))
            charges, standard = items.get(case_row["implementation_code"], (True, None))
            no = case_row["case_no"]
            if amount > 0 and not charges:
                firing.append((record, f"办件 {no} 违规收费 {amount} 元: the item charges no fee (不收费事项)"))
            elif standard is not None and amount > standard:
                firing.append((record, f"办件 {no} 超标准收费 {amount} 元 > standard {standard} 元"))
        if not firing:
            return []
        ids = self._payment_ids(conn, [record for record, _ in firing])
        drafts = []
        for record, message in firing:
            case_row = record["case"]
            payment_id = ids[(case_row["case_no"], record["paid_at"])]
            drafts.append(
                self._case_draft(
                    R06,
                    case_row,
                    message,
                    now,
                    subject=payment_subject(case_row["case_no"], payment_id),
                    breached_at=record["paid_at"],
                )
            )
        return drafts

    def _item_fees(self, conn: Connection, codes: Iterable[str]) -> dict[str, tuple[bool, Decimal | None]]:
        """(charges a fee, fee standard) per implementation code; remembered, since an item never changes."""
        known = self._fees
        missing = sorted({code for code in codes if code not in known})
        for chunk in chunks(missing):
            rows = conn.execute(
                select(_items.c.implementation_code, _items.c.fee_flag, _items.c.fee_standard).where(
                    _items.c.implementation_code.in_(chunk)
                )
            )
            known.update({row.implementation_code: (bool(row.fee_flag), row.fee_standard) for row in rows})
        return known

    def _completion_fee_drafts(
        self, conn: Connection, records: Sequence[Mapping[str, Any]], now: datetime
    ) -> list[AlertDraft]:
        """R06 from a completion's 是否收费: fees declared on an item that charges none, or paid above its standard.

        Above standard is judged on the case's payments in total (each payment alone was judged when it arrived).
        At most one R06 per case comes from its completion, and none when a payment already raised one for the
        case: the completion is further evidence of the same charge, not a second violation.
        """
        charged = [
            record
            for record in records
            if record.get("fee_flag") and self.thresholds.enabled(R06, record["case"].get("item_type_code") or "")
        ]
        if not charged:
            return []
        items = self._item_fees(conn, (record["case"]["implementation_code"] for record in charged))
        free: list[Mapping[str, Any]] = []
        standard_cases: list[Mapping[str, Any]] = []
        for record in charged:
            charges, standard = items.get(record["case"]["implementation_code"], (True, None))
            if not charges:
                free.append(record)
            elif standard is not None:
                standard_cases.append(record)
        totals = self._payment_totals(conn, [record["case"]["case_no"] for record in standard_cases])
        firing: list[tuple[Mapping[str, Any], str]] = []
        for record in free:
            no = record["case"]["case_no"]
            firing.append((record, f"办件 {no} 违规收费: completion declares fees (是否收费 = 1) on a no-fee item"))
        for record in standard_cases:
            no = record["case"]["case_no"]
            standard = items[record["case"]["implementation_code"]][1]
            total = totals.get(no)
            if standard is not None and total is not None and total > standard:
                firing.append((record, f"办件 {no} 超标准收费: fees paid {total} 元 in total > standard {standard} 元"))
        if not firing:
            return []
        already = self._cases_with_alert(conn, R06, [record["case"]["case_no"] for record, _ in firing])
        return [
            self._case_draft(
                R06,
                record["case"],
                message,
                now,
                subject=completion_subject(record["case"]["case_no"]),
                breached_at=record["completed_at"],
            )
            for record, message in firing
            if record["case"]["case_no"] not in already
        ]

    @staticmethod
    def _payment_totals(conn: Connection, case_numbers: Sequence[str]) -> dict[str, Decimal]:
        """Sum of the payments per case, in yuan to the fen (cases without payments are absent)."""
        if not case_numbers:
            return {}
        rows = _by_keys(
            conn, "SELECT case_no, sum(amount) FROM payments WHERE case_no {keys} GROUP BY case_no", case_numbers
        )
        # SQLite sums the amounts as floats: back to fen exactly (amounts have at most 2 decimals).
        return {case_no: Decimal(str(total)).quantize(_FEN) for case_no, total in rows}

    @staticmethod
    def _cases_with_alert(conn: Connection, rule_id: str, case_numbers: Sequence[str]) -> set[str]:
        """The cases among ``case_numbers`` already holding an alert of ``rule_id``."""
        found: set[str] = set()
        a = _alerts.c
        for chunk in chunks(sorted(set(case_numbers))):
            rows = conn.execute(select(a.case_no).where(a.rule_id == rule_id, a.case_no.in_(chunk)))
            found.update(row.case_no for row in rows)
        return found

    @staticmethod
    def _payment_ids(conn: Connection, records: Sequence[Mapping[str, Any]]) -> dict[tuple[str, datetime], int]:
        ids: dict[tuple[str, datetime], int] = {}
        missing = []
        for record in records:
            key = (record["case"]["case_no"], record["paid_at"])
            if record.get("id") is not None:
                ids[key] = int(record["id"])
            else:
                missing.append(key)
        p = _payments.c
        for chunk in chunks(sorted(set(missing))):
            rows = conn.execute(select(p.id, p.case_no, p.paid_at).where(tuple_(p.case_no, p.paid_at).in_(chunk)))
            ids.update({(row.case_no, row.paid_at): int(row.id) for row in rows})
        return ids


def _by_keys(conn: Connection, sql: str, keys: Sequence[str]) -> list[Any]:
    """Rows of ``sql`` whose ``{keys}`` placeholder filters a column by ``keys``, bound as ONE parameter.

    A JSON array on SQLite, an array on PostgreSQL: thousands of keys then cost neither thousands of bound
    parameters nor a statement compiled per call, on the import hot path.
    """
    if conn.dialect.name == "sqlite":
        statement = sql.format(keys="IN (SELECT value FROM json_each(?))")
        param: Any = json.dumps(list(keys), ensure_ascii=False)
    else:
        statement = sql.format(keys="= ANY(%s)")
        param = list(keys)
    return list(conn.exec_driver_sql(statement, (param,)))


def _is_pending(record: Mapping[str, Any]) -> bool:
    """A step still in progress: 环节办理状态代码 1 (pending) and no end time."""
    return record.get("status_code") == "1" and record.get("ended_at") is None

"""The accountability register (问责): measures taken against a person, post or department, and what led to them.

A measure is one of MEASURES, names the department (单位), optionally the post (岗位) and the person (当事人), the
reason (事由) and what led to it: a directive (free text: directives are numbered by their issuer), a complaint or an
alert of this node (both must exist here). Recording one is one transaction: the row, its count in the activity
counts (``measures_recorded`` by measure, on the decision day, so the next report carries it upward) and the audit
entry. The person's name stays at the node: it is in neither the reports nor the audit log (docs/domain.md §8).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from datetime import date, datetime, time
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, Table, func, insert, select

from node.audit_log import operator_actor, record_audit
from node.errors import ValidationError
from node.store import AccountabilityMeasure, Alert, Complaint, lock_revision
from node.supervision.activity import record_activity

if TYPE_CHECKING:
    from node.app import Node

__all__ = [
    "MEASURES",
    "MEASURE_RECORDED",
    "SOURCE_KINDS",
    "MeasureView",
    "list_measures",
    "measure_counts",
    "record_measure",
]

log = logging.getLogger(__name__)

# The measures of the register, mildest first (the Guangzhou and Beihai reports publish counts of exactly these).
MEASURES: tuple[str, ...] = ("诫勉谈话", "通报批评", "警告", "记过", "降级", "撤职", "其他")
# What may have led to a measure: a directive (its issuer's id, free text), a complaint number or an alert id.
SOURCE_KINDS: tuple[str, ...] = ("directive", "complaint", "alert")
MEASURE_RECORDED = "accountability.recorded"

_measures = cast(Table, AccountabilityMeasure.__table__)
_alerts = cast(Table, Alert.__table__)
_complaints = cast(Table, Complaint.__table__)
# Column sizes, checked before writing so a long value is refused by name, never cut (PostgreSQL would refuse it
# with a database error; SQLite would keep it whole).
_SIZES: dict[str, int] = {"person": 100, "post": 100, "department": 200, "source_ref": 100, "recorded_by": 100}


@dataclass(frozen=True, slots=True)
class MeasureView:
    """One recorded measure, as the node's operators see it (the person included: this is the node's own register)."""

    id: int
    measure: str
    department: str
    post: str
    person: str
    reason: str
    source_kind: str
    source_ref: str
    decided_at: datetime
    recorded_at: datetime
    recorded_by: str


def _invalid(field: str, why: str, reason: str = "invalid") -> ValidationError:
    return ValidationError(f"accountability measure: field '{field}': {why}", field=field, reason=reason)


def _checked_text(values: dict[str, str]) -> dict[str, str]:
    cleaned = {name: value.strip() for name, value in values.items()}
    for name, value in cleaned.items():
        limit = _SIZES.get(name)
        if limit is not None and len(value) > limit:
            raise _invalid(name, f"{len(value)} characters, at most {limit}", "too_long")
    return cleaned


def _check_source(conn: Connection, kind: str, ref: str) -> None:
    """The measure's source exists here (a complaint or an alert); a directive id is taken as given."""
    if not kind and not ref:
        return
    if kind not in SOURCE_KINDS:
        raise _invalid("source_kind", f"must be one of {', '.join(SOURCE_KINDS)} (or none), got {kind!r}", "bad_code")
    if not ref:
        raise _invalid("source_ref", f"required with source_kind {kind}: which {kind} led to the measure", "missing")
    if kind == "complaint":
        found = conn.execute(select(_complaints.c.complaint_no).where(_complaints.c.complaint_no == ref)).first()
        if found is None:
            raise _invalid("source_ref", f"no complaint {ref!r} at this node", "not_found")
    elif kind == "alert":
        if not ref.isdigit():
            raise _invalid("source_ref", f"an alert id is a number, got {ref!r}", "bad_number")
        if conn.execute(select(_alerts.c.id).where(_alerts.c.id == int(ref))).first() is None:
            raise _invalid("source_ref", f"no alert {ref} at this node", "not_found")


def record_measure(
    node: Node,
    *,
    measure: str,
    department: str,
    reason: str,
    post: str = "",
    person: str = "",
    source_kind: str = "",
    source_ref: str = "",
    decided_at: datetime | None = None,
    recorded_by: str = "",
) -> MeasureView:
    """Record one measure, count it (``measures_recorded``, decision day) and audit it, in one transaction.

    ``decided_at`` defaults to now and may not be later; ``recorded_by`` to the operator (OS user @ node).
    Raises ValidationError naming the bad field: an unknown measure, no department or reason, a source that does
    not exist at this node, a value longer than its column.
    """
    now = node.now()
    when = decided_at or now
    if measure not in MEASURES:
        raise _invalid("measure", f"must be one of {', '.join(MEASURES)}, got {measure!r}", "bad_code")
    actor = operator_actor(node.config.id)
    text = _checked_text(
        {
            "department": department,
            "reason": reason,
            "post": post,
            "person": person,
            "source_kind": source_kind,
            "source_ref": source_ref,
            "recorded_by": recorded_by or actor,
        }
    )
    for required in ("department", "reason"):
        if not text[required]:
            raise _invalid(required, "required", "missing")
    if when > now:
        raise _invalid("decided_at", f"{when.isoformat(sep=' ')} is in the future (now {now:%Y-%m-%d %H:%M})", "future")
    with node.engine.begin() as conn:
        # The metric revision row first, as every metric writer takes it (node.store.counters).
        lock_revision(conn)
        _check_source(conn, text["source_kind"], text["source_ref"])
        row: dict[str, Any] = {**text, "measure": measure, "decided_at": when, "recorded_at": now}
        measure_id = int(conn.execute(insert(_measures).values(row).returning(_measures.c.id)).scalar_one())
        record_activity(conn, when.date(), "measures_recorded", measure)
        # The person stays out of the audit log too: personal data, and audit entries are kept for good.
        record_audit(
            conn,
            actor=actor,
            action=MEASURE_RECORDED,
            target=f"accountability:{measure_id}",
            detail={
                "measure": measure,
                "department": text["department"],
                "post": text["post"],
                "source": f"{text['source_kind']}:{text['source_ref']}" if text["source_kind"] else "",
                "decided_at": when.isoformat(sep=" "),
            },
        )
    log.info("accountability measure #%s (%s, %s) recorded", measure_id, measure, text["department"])
    return MeasureView(id=measure_id, **row)


def _filters(
    measure: str | None,
    department: str | None,
    source_kind: str | None,
    day_from: date | None,
    day_to: date | None,
) -> list[Any]:
    if measure is not None and measure not in MEASURES:
        raise _invalid("measure", f"must be one of {', '.join(MEASURES)}, got {measure!r}", "bad_code")
    if source_kind is not None and source_kind not in SOURCE_KINDS:
        raise _invalid("source_kind", f"must be one of {', '.join(SOURCE_KINDS)}, got {source_kind!r}", "bad_code")
    c = _measures.c
    conditions: list[Any] = []
    if measure is not None:
        conditions.append(c.measure == measure)
    if department is not None:
        conditions.append(c.department == department)
    if source_kind is not None:
        conditions.append(c.source_kind == source_kind)
    if day_from is not None:
        conditions.append(c.decided_at >= datetime.combine(day_from, time.min))
    if day_to is not None:
        conditions.append(c.decided_at <= datetime.combine(day_to, time.max))
    return conditions


def list_measures(
    node: Node,
    *,
    measure: str | None = None,
    department: str | None = None,
    source_kind: str | None = None,
    day_from: date | None = None,
    day_to: date | None = None,
    limit: int = 500,
) -> list[MeasureView]:
    """Recorded measures, newest decision first, filtered (the decision day within ``day_from``..``day_to``)."""
    query = (
        select(_measures)
        .where(*_filters(measure, department, source_kind, day_from, day_to))
        .order_by(_measures.c.decided_at.desc(), _measures.c.id.desc())
        .limit(limit)
    )
    with node.engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    return [MeasureView(**{field.name: row[field.name] for field in fields(MeasureView)}) for row in rows]


def measure_counts(
    node: Node,
    *,
    measure: str | None = None,
    department: str | None = None,
    source_kind: str | None = None,
    day_from: date | None = None,
    day_to: date | None = None,
) -> dict[tuple[str, str], int]:
    """Counts by (measure, department) of the measures decided in the days: what the published reports show."""
    c = _measures.c
    query = (
        select(c.measure, c.department, func.count())
        .where(*_filters(measure, department, source_kind, day_from, day_to))
        .group_by(c.measure, c.department)
    )
    with node.engine.connect() as conn:
        return {(str(m), str(d)): int(n) for m, d, n in conn.execute(query)}

"""Supervision tables: alerts (warnings), additive metric buckets, node counters, notifications, operator notices."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Date, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from node.store.models import Base


class Alert(Base):
    """电子监察: one warning raised by a rule on a subject (case, step or complaint)."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True, comment="监察编号")
    rule_id: Mapped[str] = mapped_column(String(10), comment="监察规则编号")
    subject: Mapped[str] = mapped_column(
        String(160), comment="what it is about: case:NO, case:NO:step:ID, complaint:NO"
    )
    severity: Mapped[str] = mapped_column(String(10), index=True, comment="监察预警类型: reminder | yellow | red")
    case_no: Mapped[str | None] = mapped_column(String(50), nullable=True, index=True, comment="办件编号")
    step_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    complaint_no: Mapped[str | None] = mapped_column(String(50), nullable=True)
    department: Mapped[str] = mapped_column(String(200), default="", index=True, comment="责任部门")
    post: Mapped[str] = mapped_column(String(100), default="", comment="岗位")
    implementation_code: Mapped[str] = mapped_column(String(24), default="", comment="实施编码")
    message: Mapped[str] = mapped_column(Text, default="", comment="督办内容 / 监察结果描述")
    # raised_at: when supnet noticed the breach; breached_at: when the rule was broken (figures use it).
    raised_at: Mapped[datetime] = mapped_column(DateTime, comment="状态产生时间")
    breached_at: Mapped[datetime] = mapped_column(
        DateTime, index=True, comment="when the rule was broken: what figures, months and scores use"
    )
    correct_by: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, comment="supervision deadline")
    status: Mapped[str] = mapped_column(
        String(12), default="raised", index=True, comment="raised | notified | acknowledged | corrected | escalated"
    )
    notified_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    acknowledged_by: Mapped[str] = mapped_column(String(100), default="")
    corrected_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    correction_note: Mapped[str] = mapped_column(Text, default="")
    escalated_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    escalated_alert_id: Mapped[int | None] = mapped_column(Integer, nullable=True)

    __table_args__ = (UniqueConstraint("rule_id", "subject"),)


class MetricBucket(Base):
    """Additive counters per (day, department, item); definitions live in node.supervision.metrics."""

    __tablename__ = "metric_buckets"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    department: Mapped[str] = mapped_column(String(200), primary_key=True)
    implementation_code: Mapped[str] = mapped_column(String(24), primary_key=True)
    basic_code: Mapped[str] = mapped_column(String(10), default="")
    item_type_code: Mapped[str] = mapped_column(String(2), default="")
    received: Mapped[int] = mapped_column(Integer, default=0)
    completed: Mapped[int] = mapped_column(Integer, default=0)
    completed_early: Mapped[int] = mapped_column(Integer, default=0)
    completed_on_time: Mapped[int] = mapped_column(Integer, default=0)
    completed_within_legal: Mapped[int] = mapped_column(Integer, default=0)
    processing_workdays: Mapped[int] = mapped_column(Integer, default=0)
    return_steps: Mapped[int] = mapped_column(Integer, default=0)
    supplements: Mapped[int] = mapped_column(Integer, default=0)
    refused: Mapped[int] = mapped_column(Integer, default=0)
    clock_stops: Mapped[int] = mapped_column(Integer, default=0)
    clock_stop_workdays: Mapped[int] = mapped_column(Integer, default=0)
    fees_count: Mapped[int] = mapped_column(Integer, default=0)
    fees_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    ratings_1: Mapped[int] = mapped_column(Integer, default=0)
    ratings_2: Mapped[int] = mapped_column(Integer, default=0)
    ratings_3: Mapped[int] = mapped_column(Integer, default=0)
    ratings_4: Mapped[int] = mapped_column(Integer, default=0)
    ratings_5: Mapped[int] = mapped_column(Integer, default=0)
    complaints_received: Mapped[int] = mapped_column(Integer, default=0)
    complaints_concluded: Mapped[int] = mapped_column(Integer, default=0)
    complaints_substantiated: Mapped[int] = mapped_column(Integer, default=0)
    reminders: Mapped[int] = mapped_column(Integer, default=0)
    yellow_cards: Mapped[int] = mapped_column(Integer, default=0)
    red_cards: Mapped[int] = mapped_column(Integer, default=0)
    open_cases: Mapped[int] = mapped_column(Integer, default=0, comment="cohort gauge on the acceptance day")
    open_overdue_promised: Mapped[int] = mapped_column(Integer, default=0, comment="cohort gauge")
    open_overdue_legal: Mapped[int] = mapped_column(Integer, default=0, comment="cohort gauge")
    cases_returned: Mapped[int] = mapped_column(Integer, default=0)
    complaints_accepted: Mapped[int] = mapped_column(Integer, default=0)
    records_reported: Mapped[int] = mapped_column(Integer, default=0)
    revision: Mapped[int] = mapped_column(BigInteger, default=0, comment="node revision of the last change")

    __table_args__ = (
        Index("ix_metric_buckets_revision", "revision"),
        Index("ix_metric_buckets_basic_code_day", "basic_code", "day"),
    )


class NodeCounter(Base):
    """Named monotonic counters of the node (e.g. the metric revision)."""

    __tablename__ = "node_counters"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class Notification(Base):
    """One message to one recipient over one channel; kept until delivered, never dropped."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alert_id: Mapped[int | None] = mapped_column(ForeignKey("alerts.id"), nullable=True, index=True)
    channel: Mapped[str] = mapped_column(String(10), comment="log | webhook | smtp | sms")
    recipient: Mapped[str] = mapped_column(String(300), comment="address, phone or URL")
    subject: Mapped[str] = mapped_column(String(300), default="")
    body: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(
        String(10), default="pending", index=True, comment="pending | delivered | failed"
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    __table_args__ = (UniqueConstraint("alert_id", "channel", "recipient"),)


class OperatorNotice(Base):
    """The last notice sent to the node's operators per (kind, about), so a lasting problem is not re-sent each run."""

    __tablename__ = "operator_notices"

    kind: Mapped[str] = mapped_column(String(30), primary_key=True, comment="outbox_overflow | child_silent | ...")
    about: Mapped[str] = mapped_column(String(200), primary_key=True, comment="what it concerns, e.g. a child id")
    first_at: Mapped[datetime] = mapped_column(DateTime, comment="first notice of this kind and subject")
    last_sent_at: Mapped[datetime] = mapped_column(DateTime, comment="when the last notice was queued")
    suppressed: Mapped[int] = mapped_column(Integer, default=0, comment="occurrences since then, not re-sent")


class AccountabilityMeasure(Base):
    """问责: an accountability measure taken against a person, post or department, and what led to it.

    The person's name stays at the node; only counts by measure and department roll up (docs/domain.md §8).
    """

    __tablename__ = "accountability_measures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    measure: Mapped[str] = mapped_column(String(20), index=True, comment="诫勉谈话 | 通报批评 | 警告 | …")
    person: Mapped[str] = mapped_column(String(100), default="", comment="personal data: never reported upward")
    post: Mapped[str] = mapped_column(String(100), default="", comment="岗位")
    department: Mapped[str] = mapped_column(String(200), index=True, comment="单位")
    reason: Mapped[str] = mapped_column(Text, default="")
    source_kind: Mapped[str] = mapped_column(String(20), default="", comment="directive | complaint | alert | ''")
    source_ref: Mapped[str] = mapped_column(String(100), default="", comment="the directive, complaint or alert id")
    decided_at: Mapped[datetime] = mapped_column(DateTime, index=True, comment="when the measure was decided")
    recorded_at: Mapped[datetime] = mapped_column(DateTime)
    recorded_by: Mapped[str] = mapped_column(String(100), default="")


class ActivityCount(Base):
    """Additive counts of supervision activity per day, e.g. directives received by kind, measures by kind.

    State per (day, metric, kind) under a metric revision, reported upward like the metric buckets.
    """

    __tablename__ = "activity_counts"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    metric: Mapped[str] = mapped_column(String(40), primary_key=True, comment="e.g. directives_received")
    kind: Mapped[str] = mapped_column(String(40), primary_key=True, comment="e.g. supervise, 诫勉谈话")
    count: Mapped[int] = mapped_column(BigInteger, default=0)
    revision: Mapped[int] = mapped_column(BigInteger, default=0, comment="node revision of the last change")

    __table_args__ = (Index("ix_activity_counts_revision", "revision"),)

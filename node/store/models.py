"""Approval data models (GB/T 39046-2020 fields; the standard's name is each column's comment).

Date-times are stored as naive local time in the node's time zone, as the standard writes them.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from federation import NAMING_CONVENTION

# Stable constraint names so Alembic migrations are identical on SQLite and PostgreSQL (federation's tables use
# the same convention: one definition).


class Base(DeclarativeBase):
    """Declarative base of every supnet table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Item(Base):
    """事项: an approval item as implemented by one body."""

    __tablename__ = "items"

    implementation_code: Mapped[str] = mapped_column(String(24), primary_key=True, comment="实施编码")
    basic_code: Mapped[str] = mapped_column(String(10), index=True, comment="基本编码")
    name: Mapped[str] = mapped_column(String(200), comment="事项名称")
    type_code: Mapped[str] = mapped_column(String(2), comment="事项类型代码 (A.1)")
    level_code: Mapped[str] = mapped_column(String(1), comment="行使层级代码 (A.2)")
    body_name: Mapped[str] = mapped_column(String(200), comment="实施主体")
    body_code: Mapped[str] = mapped_column(String(18), comment="实施主体代码 (统一社会信用代码)")
    department: Mapped[str] = mapped_column(String(200), index=True, comment="责任部门 (defaults to 实施主体)")
    legal_limit: Mapped[int] = mapped_column(Integer, comment="法定办结时限")
    legal_limit_unit: Mapped[str] = mapped_column(
        String(1), default="1", comment="法定办结时限单位 (1 工作日, 2 自然日)"
    )
    promised_limit: Mapped[int] = mapped_column(Integer, comment="承诺办结时限")
    promised_limit_unit: Mapped[str] = mapped_column(
        String(1), default="1", comment="承诺办结时限单位 (1 工作日, 2 自然日)"
    )
    fee_flag: Mapped[bool] = mapped_column(Boolean, default=False, comment="是否收费")
    fee_standard: Mapped[Decimal | None] = mapped_column(Numeric(18, 2), nullable=True, comment="收费标准 (元)")
    channel_code: Mapped[str] = mapped_column(String(1), default="1", comment="办理形式代码 (A.5)")
    # The versioned register (docs/domain.md §9): the columns above hold the latest version; item_versions all.
    effective_from: Mapped[datetime | None] = mapped_column(
        DateTime, nullable=True, comment="生效时间 of the latest version (NULL: from the beginning)"
    )
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1", comment="latest version number")
    status: Mapped[str] = mapped_column(
        String(10), default="in_force", server_default="in_force", comment="in_force 在用 | retired 已取消"
    )
    retired_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, comment="取消时间")
    retire_reason: Mapped[str] = mapped_column(Text, default="", server_default="", comment="取消原因")


class ItemVersion(Base):
    """事项版本: one version of an item's limits and terms, in force from its effective time to the next one's."""

    __tablename__ = "item_versions"

    implementation_code: Mapped[str] = mapped_column(
        ForeignKey("items.implementation_code"), primary_key=True, comment="实施编码"
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False, comment="版本号")
    effective_from: Mapped[datetime | None] = mapped_column(
        DateTime, nullable=True, comment="生效时间 (NULL: from the beginning)"
    )
    name: Mapped[str] = mapped_column(String(200), comment="事项名称")
    legal_limit: Mapped[int] = mapped_column(Integer, comment="法定办结时限")
    legal_limit_unit: Mapped[str] = mapped_column(String(1), default="1", comment="法定办结时限单位")
    promised_limit: Mapped[int] = mapped_column(Integer, comment="承诺办结时限")
    promised_limit_unit: Mapped[str] = mapped_column(String(1), default="1", comment="承诺办结时限单位")
    fee_flag: Mapped[bool] = mapped_column(Boolean, default=False, comment="是否收费")
    fee_standard: Mapped[Decimal | None] = mapped_column(Numeric(18, 2), nullable=True, comment="收费标准 (元)")
    channel_code: Mapped[str] = mapped_column(String(1), default="1", comment="办理形式代码 (A.5)")
    explanation: Mapped[str] = mapped_column(
        Text, default="", server_default="", comment="说明 (promised limit above half the legal one)"
    )
    explained_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, comment="说明记录时间")
    recorded_at: Mapped[datetime | None] = mapped_column(
        DateTime, nullable=True, comment="when supnet stored it (NULL: migrated)"
    )


class ItemStatusChange(Base):
    """事项取消/恢复: one retirement or re-activation of an item, kept as its history."""

    __tablename__ = "item_status_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    implementation_code: Mapped[str] = mapped_column(
        ForeignKey("items.implementation_code"), index=True, comment="实施编码"
    )
    action: Mapped[str] = mapped_column(String(10), comment="retire 取消 | reactivate 恢复")
    at: Mapped[datetime] = mapped_column(DateTime, index=True, comment="when it takes effect")
    reason: Mapped[str] = mapped_column(Text, default="", comment="原因")
    recorded_at: Mapped[datetime] = mapped_column(DateTime, comment="when supnet stored it")


class Case(Base):
    """事项受理: one accepted case, with the deadlines and status supnet derives for it."""

    __tablename__ = "cases"

    case_no: Mapped[str] = mapped_column(String(50), primary_key=True, comment="办件编号")
    # Not indexed: no query selects cases by item (items are never deleted), and the index cost every import.
    implementation_code: Mapped[str] = mapped_column(ForeignKey("items.implementation_code"), comment="实施编码")
    basic_code: Mapped[str] = mapped_column(String(10), comment="基本编码 (copied from the item)")
    item_type_code: Mapped[str] = mapped_column(String(2), comment="事项类型代码 (copied from the item)")
    department: Mapped[str] = mapped_column(String(200), comment="受理单位")
    department_code: Mapped[str] = mapped_column(String(18), default="", comment="受理单位代码")
    acceptor: Mapped[str] = mapped_column(String(100), default="", comment="受理人员")
    accepted_at: Mapped[datetime] = mapped_column(DateTime, index=True, comment="受理时间")
    declared_promised_at: Mapped[datetime | None] = mapped_column(
        DateTime, nullable=True, comment="承诺办结时间 (as sent by the business system)"
    )
    case_type_code: Mapped[str] = mapped_column(String(1), default="2", comment="办件类型代码 (A.6)")
    area_code: Mapped[str] = mapped_column(String(9), default="", comment="行政区划代码")
    applicant_name: Mapped[str] = mapped_column(String(200), default="", comment="申请者名称 (personal data)")
    applicant_id_type: Mapped[str] = mapped_column(String(3), default="", comment="申请者证件类型代码")
    applicant_id_no: Mapped[str] = mapped_column(String(50), default="", comment="申请者证件号码 (personal data)")
    apply_source_code: Mapped[str] = mapped_column(String(2), default="", comment="申报来源代码")
    applied_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, comment="申请时间")
    promised_limit: Mapped[int] = mapped_column(Integer, comment="承诺办结时限 (working days, snapshot)")
    legal_limit: Mapped[int] = mapped_column(Integer, comment="法定办结时限 (working days, snapshot)")
    promised_due_at: Mapped[datetime] = mapped_column(DateTime, comment="computed promised due date-time")
    legal_due_at: Mapped[datetime] = mapped_column(DateTime, comment="computed legal due date-time")
    clock_stop_workdays: Mapped[int] = mapped_column(
        Integer, default=0, comment="特别程序 working days (clock stopped)"
    )
    clock_stopped: Mapped[bool] = mapped_column(Boolean, default=False, comment="a special procedure is running")
    status: Mapped[str] = mapped_column(String(10), default="open", comment="open | completed")
    completed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, comment="办结时间")
    supplement_count: Mapped[int] = mapped_column(Integer, default=0, comment="补正 requests so far")
    return_count: Mapped[int] = mapped_column(Integer, default=0, comment="退回 actions so far")
    recorded_at: Mapped[datetime] = mapped_column(DateTime, comment="when supnet stored the record")

    __table_args__ = (
        Index("ix_cases_status_promised_due_at", "status", "promised_due_at"),
        Index("ix_cases_status_legal_due_at", "status", "legal_due_at"),
    )


class Step(Base):
    """事项办理: one processing step (环节) of a case."""

    __tablename__ = "steps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_no: Mapped[str] = mapped_column(ForeignKey("cases.case_no"), index=True, comment="办件编号")
    step_name: Mapped[str] = mapped_column(String(100), comment="环节名称")
    action: Mapped[str] = mapped_column(
        String(10), comment="业务动作 (pass 通过 / return 退回 / supplement 补正 / other 其他)"
    )
    handler: Mapped[str] = mapped_column(String(100), default="", comment="环节处理人")
    post: Mapped[str] = mapped_column(String(100), default="", comment="岗位")
    opinion: Mapped[str] = mapped_column(Text, default="", comment="环节处理意见")
    started_at: Mapped[datetime] = mapped_column(DateTime, comment="环节开始时间")
    ended_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, comment="环节结束时间")
    status_code: Mapped[str] = mapped_column(String(1), default="2", comment="环节办理状态代码 (1 pending, 2 done)")
    step_limit: Mapped[int | None] = mapped_column(Integer, nullable=True, comment="环节时限 (working days)")
    entered_at: Mapped[datetime] = mapped_column(DateTime, comment="数据录入时间 (when the step was entered)")
    step_due_at: Mapped[datetime | None] = mapped_column(
        DateTime, nullable=True, comment="computed 环节时限 due date-time (NULL: no step limit)"
    )

    __table_args__ = (
        UniqueConstraint("case_no", "step_name", "started_at"),
        # Pending steps by due (R05 scan); partial, so the finished steps (nearly all rows) cost no index upkeep.
        Index(
            "ix_steps_pending_due",
            "step_due_at",
            sqlite_where=text("status_code = '1' AND ended_at IS NULL AND step_due_at IS NOT NULL"),
            postgresql_where=text("status_code = '1' AND ended_at IS NULL AND step_due_at IS NOT NULL"),
        ),
    )


class SpecialProcedure(Base):
    """特别程序: a clock stop (hearing, inspection, expert review, approved extension…)."""

    __tablename__ = "special_procedures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_no: Mapped[str] = mapped_column(ForeignKey("cases.case_no"), index=True, comment="办件编号")
    kind_code: Mapped[str] = mapped_column(String(1), comment="特别程序种类代码 (A.7: 1 extension, 2 other)")
    started_at: Mapped[datetime] = mapped_column(DateTime, comment="特别程序开始时间")
    ended_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, comment="特别程序结束时间")
    reason: Mapped[str] = mapped_column(Text, default="", comment="特别程序启动理由")
    result: Mapped[str] = mapped_column(Text, default="", comment="特别程序结果")
    workdays: Mapped[int] = mapped_column(Integer, default=0, comment="working days the clock stood still")

    __table_args__ = (UniqueConstraint("case_no", "started_at"),)


class Completion(Base):
    """事项办结: how and when a case was concluded."""

    __tablename__ = "completions"

    case_no: Mapped[str] = mapped_column(ForeignKey("cases.case_no"), primary_key=True, comment="办件编号")
    handler_name: Mapped[str] = mapped_column(String(100), default="", comment="办理人姓名")
    completed_at: Mapped[datetime] = mapped_column(DateTime, comment="办结时间")
    result_code: Mapped[str] = mapped_column(
        String(1), default="1", comment="办理结果 (1 approved 准予, 2 refused 不予, 3 not accepted 不予受理, 9 other)"
    )
    reason: Mapped[str] = mapped_column(Text, default="", comment="不予批准/不予受理理由")
    certificate_name: Mapped[str] = mapped_column(String(200), default="", comment="结果证照名称")
    certificate_no: Mapped[str] = mapped_column(String(100), default="", comment="结果证照编号")
    fee_flag: Mapped[bool] = mapped_column(Boolean, default=False, comment="是否收费")


class Payment(Base):
    """支付信息: a fee paid on a case."""

    __tablename__ = "payments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_no: Mapped[str] = mapped_column(ForeignKey("cases.case_no"), index=True, comment="办件编号")
    amount: Mapped[Decimal] = mapped_column(Numeric(18, 2), comment="收费金额 (元)")
    paid_at: Mapped[datetime] = mapped_column(DateTime, comment="收费时间")

    __table_args__ = (UniqueConstraint("case_no", "paid_at"),)


class Evaluation(Base):
    """绩效评价: the applicant's rating of a case (1 very satisfied … 5 very dissatisfied)."""

    __tablename__ = "evaluations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_no: Mapped[str] = mapped_column(ForeignKey("cases.case_no"), index=True, comment="办件编号")
    channel: Mapped[str] = mapped_column(String(20), default="", comment="评价渠道")
    evaluated_at: Mapped[datetime] = mapped_column(DateTime, comment="评价时间")
    satisfaction_code: Mapped[int] = mapped_column(SmallInteger, comment="满意度代码 (A.8, 1–5)")
    comment: Mapped[str] = mapped_column(Text, default="", comment="评价内容")
    followup_status: Mapped[str] = mapped_column(
        String(10), default="none", comment="none | open | closed (ratings 4–5 need a follow-up)"
    )
    followup_note: Mapped[str] = mapped_column(Text, default="", comment="follow-up result")
    followup_closed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    followup_due_at: Mapped[datetime | None] = mapped_column(
        DateTime, nullable=True, index=True, comment="follow-up deadline (working days)"
    )

    __table_args__ = (UniqueConstraint("case_no", "evaluated_at"),)


class Complaint(Base):
    """投诉: an efficiency complaint and its handling life."""

    __tablename__ = "complaints"

    complaint_no: Mapped[str] = mapped_column(String(50), primary_key=True, comment="投诉编号")
    title: Mapped[str] = mapped_column(String(200), comment="投诉标题")
    complainant: Mapped[str] = mapped_column(String(100), default="", comment="投诉人 (personal data)")
    respondent_unit: Mapped[str] = mapped_column(String(200), comment="被投诉单位")
    respondent_person: Mapped[str] = mapped_column(String(100), default="", comment="被投诉人")
    content: Mapped[str] = mapped_column(Text, default="", comment="投诉内容")
    source_code: Mapped[str] = mapped_column(String(2), default="", comment="投诉来源")
    received_at: Mapped[datetime] = mapped_column(DateTime, index=True, comment="投诉时间")
    handling_unit: Mapped[str] = mapped_column(String(200), default="", comment="处理单位")
    handler: Mapped[str] = mapped_column(String(100), default="", comment="处理人")
    feedback: Mapped[str] = mapped_column(Text, default="", comment="反馈意见")
    promised_limit: Mapped[int | None] = mapped_column(Integer, nullable=True, comment="承诺时限 (working days)")
    extension_workdays: Mapped[int] = mapped_column(Integer, default=0, comment="延期 (working days)")
    overdue_days: Mapped[int] = mapped_column(Integer, default=0, comment="超期天数")
    area_code: Mapped[str] = mapped_column(String(9), default="", comment="行政区划代码")
    case_no: Mapped[str | None] = mapped_column(String(50), nullable=True, index=True, comment="related 办件编号")
    status: Mapped[str] = mapped_column(
        String(12), default="received", comment="received | accepted | declined | handled | concluded"
    )
    decision_due_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    decision_reason: Mapped[str] = mapped_column(Text, default="")
    handled_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    concluded_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finding: Mapped[str] = mapped_column(String(20), default="", comment="substantiated | unsubstantiated")
    accountability_measure: Mapped[str] = mapped_column(Text, default="", comment="问责措施")

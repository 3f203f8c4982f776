"""Node-side federation tables: each child's latest subtree buckets and item-register figures (the roll-up's input).

``child_month_buckets`` is derived: each child's day buckets summed per month, kept equal to them whenever a child
report is applied, so month and period figures read a few rows per child instead of every day bucket.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Date, DateTime, Index, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from node.store.models import Base


class ChildCounters:
    """The additive counters of a child's subtree buckets, one column each: its day buckets and their month sums.

    BigInteger: they are subtree sums and grow with the tree below. Declarative places a mixin's columns after the
    class's own, so each table keeps its keys first (its DDL unchanged).
    """

    received: Mapped[int] = mapped_column(BigInteger, default=0)
    completed: Mapped[int] = mapped_column(BigInteger, default=0)
    completed_early: Mapped[int] = mapped_column(BigInteger, default=0)
    completed_on_time: Mapped[int] = mapped_column(BigInteger, default=0)
    completed_within_legal: Mapped[int] = mapped_column(BigInteger, default=0)
    processing_workdays: Mapped[int] = mapped_column(BigInteger, default=0)
    return_steps: Mapped[int] = mapped_column(BigInteger, default=0)
    supplements: Mapped[int] = mapped_column(BigInteger, default=0)
    refused: Mapped[int] = mapped_column(BigInteger, default=0)
    clock_stops: Mapped[int] = mapped_column(BigInteger, default=0)
    clock_stop_workdays: Mapped[int] = mapped_column(BigInteger, default=0)
    fees_count: Mapped[int] = mapped_column(BigInteger, default=0)
    fees_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    ratings_1: Mapped[int] = mapped_column(BigInteger, default=0)
    ratings_2: Mapped[int] = mapped_column(BigInteger, default=0)
    ratings_3: Mapped[int] = mapped_column(BigInteger, default=0)
    ratings_4: Mapped[int] = mapped_column(BigInteger, default=0)
    ratings_5: Mapped[int] = mapped_column(BigInteger, default=0)
    complaints_received: Mapped[int] = mapped_column(BigInteger, default=0)
    complaints_concluded: Mapped[int] = mapped_column(BigInteger, default=0)
    complaints_substantiated: Mapped[int] = mapped_column(BigInteger, default=0)
    reminders: Mapped[int] = mapped_column(BigInteger, default=0)
    yellow_cards: Mapped[int] = mapped_column(BigInteger, default=0)
    red_cards: Mapped[int] = mapped_column(BigInteger, default=0)
    open_cases: Mapped[int] = mapped_column(BigInteger, default=0)
    open_overdue_promised: Mapped[int] = mapped_column(BigInteger, default=0)
    open_overdue_legal: Mapped[int] = mapped_column(BigInteger, default=0)
    cases_returned: Mapped[int] = mapped_column(BigInteger, default=0)
    complaints_accepted: Mapped[int] = mapped_column(BigInteger, default=0)
    records_reported: Mapped[int] = mapped_column(BigInteger, default=0)


class ChildBucket(ChildCounters, Base):
    """A child's latest reported subtree totals for one (day, basic code, item type): state, not delta."""

    __tablename__ = "child_buckets"

    child_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    basic_code: Mapped[str] = mapped_column(String(10), primary_key=True, comment="基本编码")
    item_type_code: Mapped[str] = mapped_column(String(2), primary_key=True, comment="事项类型代码")
    # sort_order 1: after the mixed-in counters (which follow the class's own columns), so the DDL stays as it was.
    revision: Mapped[int] = mapped_column(
        BigInteger, default=0, sort_order=1, comment="this node's metric revision when the child's value last changed"
    )

    __table_args__ = (
        Index("ix_child_buckets_revision", "revision"),
        Index("ix_child_buckets_day_basic_code_item_type_code", "day", "basic_code", "item_type_code"),
    )


class ChildMonthBucket(ChildCounters, Base):
    """Σ of a child's ``child_buckets`` over one month (first day in ``month``) for one (basic code, item type).

    Derived, never reported: rewritten from the day buckets of the months a child report touched, in the same
    transaction. A row exists exactly when the child has some day bucket of that key in that month (zeroed ones too).
    """

    __tablename__ = "child_month_buckets"

    child_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    month: Mapped[date] = mapped_column(Date, primary_key=True, comment="the month's first day")
    basic_code: Mapped[str] = mapped_column(String(10), primary_key=True, comment="基本编码")
    item_type_code: Mapped[str] = mapped_column(String(2), primary_key=True, comment="事项类型代码")


class ChildCatalogue(Base):
    """A child's latest reported item-register figures of its subtree (a ReportBody's ``catalogue``)."""

    __tablename__ = "child_catalogues"

    child_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    sequence: Mapped[int] = mapped_column(BigInteger, comment="the child report that carried these figures")
    figures: Mapped[bytes] = mapped_column(LargeBinary, comment="serialized federation.proto.v1.CatalogueFigures")
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class ChildActivityCount(Base):
    """A child's latest reported subtree activity counts for one (day, metric, kind): state, not delta."""

    __tablename__ = "child_activity_counts"

    child_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    metric: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(40), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)
    revision: Mapped[int] = mapped_column(
        BigInteger, default=0, comment="this node's metric revision when the child's value last changed"
    )

    __table_args__ = (Index("ix_child_activity_counts_revision", "revision"),)

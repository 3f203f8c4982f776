"""child_month_buckets: each child's day buckets summed per month, kept by the parent as child reports arrive.

The console's month and period figures (summary by child or month, ranking by score) read these few rows per child
instead of every day bucket. Existing nodes get the table filled from child_buckets here.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_COUNTERS = (
    "received",
    "completed",
    "completed_early",
    "completed_on_time",
    "completed_within_legal",
    "processing_workdays",
    "return_steps",
    "supplements",
    "refused",
    "clock_stops",
    "clock_stop_workdays",
    "fees_count",
    "fees_fen",
    "ratings_1",
    "ratings_2",
    "ratings_3",
    "ratings_4",
    "ratings_5",
    "complaints_received",
    "complaints_concluded",
    "complaints_substantiated",
    "reminders",
    "yellow_cards",
    "red_cards",
    "open_cases",
    "open_overdue_promised",
    "open_overdue_legal",
    "cases_returned",
    "complaints_accepted",
    "records_reported",
)


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "child_month_buckets",
        sa.Column("child_id", sa.String(length=200), nullable=False),
        sa.Column("month", sa.Date(), nullable=False, comment="the month's first day"),
        sa.Column("basic_code", sa.String(length=10), nullable=False, comment="基本编码"),
        sa.Column("item_type_code", sa.String(length=2), nullable=False, comment="事项类型代码"),
        sa.Column("received", sa.BigInteger(), nullable=False),
        sa.Column("completed", sa.BigInteger(), nullable=False),
        sa.Column("completed_early", sa.BigInteger(), nullable=False),
        sa.Column("completed_on_time", sa.BigInteger(), nullable=False),
        sa.Column("completed_within_legal", sa.BigInteger(), nullable=False),
        sa.Column("processing_workdays", sa.BigInteger(), nullable=False),
        sa.Column("return_steps", sa.BigInteger(), nullable=False),
        sa.Column("supplements", sa.BigInteger(), nullable=False),
        sa.Column("refused", sa.BigInteger(), nullable=False),
        sa.Column("clock_stops", sa.BigInteger(), nullable=False),
        sa.Column("clock_stop_workdays", sa.BigInteger(), nullable=False),
        sa.Column("fees_count", sa.BigInteger(), nullable=False),
        sa.Column("fees_fen", sa.BigInteger(), nullable=False),
        sa.Column("ratings_1", sa.BigInteger(), nullable=False),
        sa.Column("ratings_2", sa.BigInteger(), nullable=False),
        sa.Column("ratings_3", sa.BigInteger(), nullable=False),
        sa.Column("ratings_4", sa.BigInteger(), nullable=False),
        sa.Column("ratings_5", sa.BigInteger(), nullable=False),
        sa.Column("complaints_received", sa.BigInteger(), nullable=False),
        sa.Column("complaints_concluded", sa.BigInteger(), nullable=False),
        sa.Column("complaints_substantiated", sa.BigInteger(), nullable=False),
        sa.Column("reminders", sa.BigInteger(), nullable=False),
        sa.Column("yellow_cards", sa.BigInteger(), nullable=False),
        sa.Column("red_cards", sa.BigInteger(), nullable=False),
        sa.Column("open_cases", sa.BigInteger(), nullable=False),
        sa.Column("open_overdue_promised", sa.BigInteger(), nullable=False),
        sa.Column("open_overdue_legal", sa.BigInteger(), nullable=False),
        sa.Column("cases_returned", sa.BigInteger(), nullable=False),
        sa.Column("complaints_accepted", sa.BigInteger(), nullable=False),
        sa.Column("records_reported", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "child_id", "month", "basic_code", "item_type_code", name=op.f("pk_child_month_buckets")
        ),
    )
    # Filled from the day buckets already held (the same sum the receiver keeps from now on).
    bind = op.get_bind()
    month = "date_trunc('month', day)::date" if bind.dialect.name == "postgresql" else "substr(day, 1, 7) || '-01'"
    counters = ", ".join(_COUNTERS)
    sums = ", ".join(f"sum({name})" for name in _COUNTERS)
    op.execute(
        f"INSERT INTO child_month_buckets (child_id, month, basic_code, item_type_code, {counters}) "
        f"SELECT child_id, {month}, basic_code, item_type_code, {sums} FROM child_buckets "
        f"GROUP BY child_id, {month}, basic_code, item_type_code"
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("child_month_buckets")

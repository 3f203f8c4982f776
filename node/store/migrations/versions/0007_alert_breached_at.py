"""Alerts keep when their rule was broken (breached_at) beside when supnet noticed it (raised_at).

Existing alerts get the breach moment their rule defines where the stored rows tell it (docs/domain.md §5), as the
rule engine dates new ones: R02 the case's promised due, R03 its legal due, R04 the escalated yellow card's
correct_by (not for escalations by hand), R05 the step's due, R06 the payment (or the completion declaring the fee),
R07 the second supplement request (the default max_supplements of 1: the node's configuration is not read here),
R08 the return step (its end, else its start) or the refusing completion, R09 the step's own time, R10 the
complaint's stored decision due. R01 and R11 need the working-day calendar, so they keep raised_at (R01's raised_at
lies inside its reminder window anyway), as does any alert whose record is missing. Migration 0008 then flags the
buckets for a rebuild, which moves the cards to their breach days.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


_STEP = "FROM steps WHERE steps.id = alerts.step_id"
_PAYMENT_SUBJECT = "'case:' || payments.case_no || ':payment:' || CAST(payments.id AS VARCHAR(20))"
# (which alerts, the scalar subquery giving their breach moment): portable SQL, SQLite and PostgreSQL alike.
_BREACH_SOURCES: tuple[tuple[str, str], ...] = (
    ("rule_id = 'R02'", "SELECT cases.promised_due_at FROM cases WHERE cases.case_no = alerts.case_no"),
    ("rule_id = 'R03'", "SELECT cases.legal_due_at FROM cases WHERE cases.case_no = alerts.case_no"),
    (
        "rule_id = 'R04' AND message NOT LIKE '%人工升级%'",
        "SELECT yellow.correct_by FROM alerts AS yellow "
        "WHERE yellow.escalated_alert_id = alerts.id AND yellow.correct_by <= alerts.raised_at",
    ),
    ("rule_id = 'R05' AND step_id IS NOT NULL", f"SELECT steps.step_due_at {_STEP}"),
    (
        "rule_id = 'R06' AND subject LIKE '%:payment:%'",
        "SELECT payments.paid_at FROM payments "
        f"WHERE payments.case_no = alerts.case_no AND alerts.subject = {_PAYMENT_SUBJECT}",
    ),
    (
        "rule_id = 'R06' AND subject LIKE '%:completion'",
        "SELECT max(completions.completed_at) FROM completions WHERE completions.case_no = alerts.case_no",
    ),
    (
        "rule_id = 'R07'",
        "SELECT steps.started_at FROM steps WHERE steps.case_no = alerts.case_no AND steps.action = 'supplement' "
        "ORDER BY steps.started_at LIMIT 1 OFFSET 1",
    ),
    ("rule_id = 'R08' AND step_id IS NOT NULL", f"SELECT coalesce(steps.ended_at, steps.started_at) {_STEP}"),
    (
        "rule_id = 'R08' AND step_id IS NULL",
        "SELECT max(completions.completed_at) FROM completions WHERE completions.case_no = alerts.case_no",
    ),
    ("rule_id = 'R09' AND step_id IS NOT NULL", f"SELECT coalesce(steps.ended_at, steps.started_at) {_STEP}"),
    (
        "rule_id = 'R10'",
        "SELECT complaints.decision_due_at FROM complaints WHERE complaints.complaint_no = alerts.complaint_no",
    ),
)


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table('alerts') as batch:
        batch.add_column(
            sa.Column(
                'breached_at',
                sa.DateTime(),
                nullable=True,
                comment='when the rule was broken: what figures, months and scores use',
            )
        )
    op.execute("UPDATE alerts SET breached_at = raised_at")
    for condition, source in _BREACH_SOURCES:
        statement = f"UPDATE alerts SET breached_at = ({source}) WHERE {condition} AND ({source}) IS NOT NULL"
        if context.is_offline_mode():
            # Rendered as SQL text (`supnet db upgrade --sql`): ':' escaped, so text() sees no bind parameters.
            op.execute(sa.text(statement.replace(":", "\\:")))
            continue
        bind = op.get_bind()
        # Driver SQL, so the subject patterns (':payment:') are no ':name' binds; psycopg still reads '%' itself.
        if bind.dialect.paramstyle in ("format", "pyformat"):
            statement = statement.replace("%", "%%")
        bind.exec_driver_sql(statement)
    with op.batch_alter_table('alerts') as batch:
        batch.alter_column('breached_at', existing_type=sa.DateTime(), nullable=False)
        batch.create_index(batch.f('ix_alerts_breached_at'), ['breached_at'], unique=False)


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table('alerts') as batch:
        batch.drop_index(batch.f('ix_alerts_breached_at'))
        batch.drop_column('breached_at')

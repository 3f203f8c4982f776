"""Alerts keep when their rule was broken (breached_at) beside when supnet noticed it (raised_at).

Existing alerts get the breach moment their rule defines where the stored rows tell it (docs/domain.md §5): R02 the
case's promised due time, R03 its legal due time; every other alert keeps its raised_at.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


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
    for rule_id, column in (('R02', 'promised_due_at'), ('R03', 'legal_due_at')):
        op.execute(
            f"UPDATE alerts SET breached_at = (SELECT cases.{column} FROM cases WHERE cases.case_no = alerts.case_no) "
            f"WHERE rule_id = '{rule_id}' AND EXISTS "
            f"(SELECT 1 FROM cases WHERE cases.case_no = alerts.case_no AND cases.{column} IS NOT NULL)"
        )
    with op.batch_alter_table('alerts') as batch:
        batch.alter_column('breached_at', existing_type=sa.DateTime(), nullable=False)
        batch.create_index(batch.f('ix_alerts_breached_at'), ['breached_at'], unique=False)


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table('alerts') as batch:
        batch.drop_index(batch.f('ix_alerts_breached_at'))
        batch.drop_column('breached_at')

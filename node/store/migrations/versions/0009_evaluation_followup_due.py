"""Follow-ups of ratings 4–5 get a deadline (docs/domain.md §7): evaluations.followup_due_at.

Existing open follow-ups keep NULL here; the node assigns their deadlines in working days when it next runs (the
calendar is not available to a migration).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table('evaluations') as batch:
        batch.add_column(
            sa.Column('followup_due_at', sa.DateTime(), nullable=True, comment='follow-up deadline (working days)')
        )
        batch.create_index(batch.f('ix_evaluations_followup_due_at'), ['followup_due_at'], unique=False)


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table('evaluations') as batch:
        batch.drop_index(batch.f('ix_evaluations_followup_due_at'))
        batch.drop_column('followup_due_at')

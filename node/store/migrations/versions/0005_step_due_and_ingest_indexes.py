"""Step due date-time for pending-step supervision (R05); one index fewer on cases for the import.

Revision ID: 0005
Revises: 0004

* steps.step_due_at (the 环节时限 due, computed at import) and a partial index over pending steps by due, so the
  periodic scan finds pending steps past their limit set-based. Steps stored before this revision keep NULL (their
  due is not recomputed here: migrations run without the node's holiday file).
* ix_cases_implementation_code is dropped: no query selects cases by item and items are never deleted, while
  every imported case paid for the index.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

_PENDING = "status_code = '1' AND ended_at IS NULL AND step_due_at IS NOT NULL"


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table('steps', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                'step_due_at',
                sa.DateTime(),
                nullable=True,
                comment='computed 环节时限 due date-time (NULL: no step limit)',
            )
        )
    op.create_index(
        'ix_steps_pending_due',
        'steps',
        ['step_due_at'],
        unique=False,
        sqlite_where=sa.text(_PENDING),
        postgresql_where=sa.text(_PENDING),
    )
    op.drop_index('ix_cases_implementation_code', table_name='cases')


def downgrade() -> None:
    """Revert this revision."""
    op.create_index('ix_cases_implementation_code', 'cases', ['implementation_code'], unique=False)
    op.drop_index('ix_steps_pending_due', table_name='steps')
    with op.batch_alter_table('steps', schema=None) as batch_op:
        batch_op.drop_column('step_due_at')

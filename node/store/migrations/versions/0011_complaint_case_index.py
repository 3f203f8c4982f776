"""An index on complaints.case_no: a new case's import looks up the complaints that named it before it arrived.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table('complaints') as batch:
        batch.create_index(batch.f('ix_complaints_case_no'), ['case_no'], unique=False)


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table('complaints') as batch:
        batch.drop_index(batch.f('ix_complaints_case_no'))

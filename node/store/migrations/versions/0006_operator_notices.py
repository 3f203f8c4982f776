"""Operator notices: the last notice per (kind, about) sent to the node's operators (node.notify.operator_notices).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        'operator_notices',
        sa.Column('kind', sa.String(length=30), nullable=False, comment='outbox_overflow | child_silent | ...'),
        sa.Column('about', sa.String(length=200), nullable=False, comment='what it concerns, e.g. a child id'),
        sa.Column('first_at', sa.DateTime(), nullable=False, comment='first notice of this kind and subject'),
        sa.Column('last_sent_at', sa.DateTime(), nullable=False, comment='when the last notice was queued'),
        sa.Column('suppressed', sa.Integer(), nullable=False, comment='occurrences since then, not re-sent'),
        sa.PrimaryKeyConstraint('kind', 'about', name=op.f('pk_operator_notices')),
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table('operator_notices')

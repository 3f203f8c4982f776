"""Counters for one definition per rate: return steps keep their own name, cases returned at least once and
complaints accepted are counted (docs/domain.md §6).

``returned`` (return steps) becomes ``return_steps`` in metric_buckets and child_buckets; ``cases_returned`` and
``complaints_accepted`` are added. Existing buckets get the new counters from the stored records at the next open
(the node counter ``metrics_rebuild_needed`` asks for it), since bucket keys come from the domain's rules.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

_NEW = ('cases_returned', 'complaints_accepted')


def upgrade() -> None:
    """Apply this revision."""
    for table, kind in (('metric_buckets', sa.Integer()), ('child_buckets', sa.BigInteger())):
        with op.batch_alter_table(table) as batch:
            batch.alter_column('returned', new_column_name='return_steps', existing_type=kind)
            for name in _NEW:
                batch.add_column(sa.Column(name, kind, nullable=False, server_default='0'))
    op.execute(
        "INSERT INTO node_counters (name, value) SELECT 'metrics_rebuild_needed', 1 "
        "WHERE EXISTS (SELECT 1 FROM metric_buckets)"
    )


def downgrade() -> None:
    """Revert this revision."""
    op.execute("DELETE FROM node_counters WHERE name = 'metrics_rebuild_needed'")
    for table, kind in (('metric_buckets', sa.Integer()), ('child_buckets', sa.BigInteger())):
        with op.batch_alter_table(table) as batch:
            for name in reversed(_NEW):
                batch.drop_column(name)
            batch.alter_column('return_steps', new_column_name='returned', existing_type=kind)

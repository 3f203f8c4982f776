"""上报数据 and item registers upward (docs/domain.md §9): the records_reported counter, each child's catalogue.

``records_reported`` is added to metric_buckets and child_buckets; existing buckets get it from the stored records at
the next open (the node counter ``metrics_rebuild_needed`` asks for it); each rebuilt bucket gets a new revision, so
a child's next report carries the counter to its parent's child buckets. ``child_catalogues`` holds each child's latest item-register figures.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    for table, kind in (('metric_buckets', sa.Integer()), ('child_buckets', sa.BigInteger())):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column('records_reported', kind, nullable=False, server_default='0'))
    op.create_table(
        'child_catalogues',
        sa.Column('child_id', sa.String(length=200), nullable=False),
        sa.Column('sequence', sa.BigInteger(), nullable=False, comment='the child report that carried these figures'),
        sa.Column(
            'figures', sa.LargeBinary(), nullable=False, comment='serialized federation.proto.v1.CatalogueFigures'
        ),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('child_id', name=op.f('pk_child_catalogues')),
    )
    # The flag may exist already (cleared by an earlier rebuild): set it, or insert it.
    op.execute(
        "UPDATE node_counters SET value = 1 WHERE name = 'metrics_rebuild_needed' "
        "AND EXISTS (SELECT 1 FROM metric_buckets)"
    )
    op.execute(
        "INSERT INTO node_counters (name, value) SELECT 'metrics_rebuild_needed', 1 "
        "WHERE EXISTS (SELECT 1 FROM metric_buckets) "
        "AND NOT EXISTS (SELECT 1 FROM node_counters WHERE name = 'metrics_rebuild_needed')"
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table('child_catalogues')
    for table in ('metric_buckets', 'child_buckets'):
        with op.batch_alter_table(table) as batch:
            batch.drop_column('records_reported')

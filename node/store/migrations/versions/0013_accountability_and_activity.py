"""The accountability register (问责) and additive supervision activity counts, own and each child's.

accountability_measures keeps each measure with its person (which stays at the node); activity_counts holds per
(day, metric, kind) counts such as directives received or measures recorded, reported upward like the buckets, and
child_activity_counts each child's latest reported subtree counts.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table('accountability_measures',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('measure', sa.String(length=20), nullable=False, comment='诫勉谈话 | 通报批评 | 警告 | …'),
    sa.Column('person', sa.String(length=100), nullable=False, comment='personal data: never reported upward'),
    sa.Column('post', sa.String(length=100), nullable=False, comment='岗位'),
    sa.Column('department', sa.String(length=200), nullable=False, comment='单位'),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('source_kind', sa.String(length=20), nullable=False, comment="directive | complaint | alert | ''"),
    sa.Column('source_ref', sa.String(length=100), nullable=False, comment='the directive, complaint or alert id'),
    sa.Column('decided_at', sa.DateTime(), nullable=False, comment='when the measure was decided'),
    sa.Column('recorded_at', sa.DateTime(), nullable=False),
    sa.Column('recorded_by', sa.String(length=100), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_accountability_measures'))
    )
    with op.batch_alter_table('accountability_measures', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_accountability_measures_decided_at'), ['decided_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_accountability_measures_department'), ['department'], unique=False)
        batch_op.create_index(batch_op.f('ix_accountability_measures_measure'), ['measure'], unique=False)

    op.create_table('activity_counts',
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('metric', sa.String(length=40), nullable=False, comment='e.g. directives_received'),
    sa.Column('kind', sa.String(length=40), nullable=False, comment='e.g. supervise, 诫勉谈话'),
    sa.Column('count', sa.BigInteger(), nullable=False),
    sa.Column('revision', sa.BigInteger(), nullable=False, comment='node revision of the last change'),
    sa.PrimaryKeyConstraint('day', 'metric', 'kind', name=op.f('pk_activity_counts'))
    )
    with op.batch_alter_table('activity_counts', schema=None) as batch_op:
        batch_op.create_index('ix_activity_counts_revision', ['revision'], unique=False)

    op.create_table('child_activity_counts',
    sa.Column('child_id', sa.String(length=200), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('metric', sa.String(length=40), nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('count', sa.BigInteger(), nullable=False),
    sa.Column('revision', sa.BigInteger(), nullable=False, comment="this node's metric revision when the child's value last changed"),
    sa.PrimaryKeyConstraint('child_id', 'day', 'metric', 'kind', name=op.f('pk_child_activity_counts'))
    )
    with op.batch_alter_table('child_activity_counts', schema=None) as batch_op:
        batch_op.create_index('ix_child_activity_counts_revision', ['revision'], unique=False)



def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table('child_activity_counts', schema=None) as batch_op:
        batch_op.drop_index('ix_child_activity_counts_revision')

    op.drop_table('child_activity_counts')
    with op.batch_alter_table('activity_counts', schema=None) as batch_op:
        batch_op.drop_index('ix_activity_counts_revision')

    op.drop_table('activity_counts')
    with op.batch_alter_table('accountability_measures', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_accountability_measures_measure'))
        batch_op.drop_index(batch_op.f('ix_accountability_measures_department'))
        batch_op.drop_index(batch_op.f('ix_accountability_measures_decided_at'))

    op.drop_table('accountability_measures')

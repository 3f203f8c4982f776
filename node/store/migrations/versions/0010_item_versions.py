"""The item catalogue as a versioned register (docs/domain.md §9): item_versions, item_status_changes and the
register's columns on items (effective_from, version, status, retired_at, retire_reason).

Each existing item becomes version 1, effective from the beginning (effective_from NULL), with its stored limits
and terms; every item starts in force. Nothing is lost: the items rows keep their columns (the latest version).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

_VERSION_COLUMNS = (
    'name, legal_limit, legal_limit_unit, promised_limit, promised_limit_unit, fee_flag, fee_standard, channel_code'
)


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table('items') as batch:
        batch.add_column(
            sa.Column(
                'effective_from',
                sa.DateTime(),
                nullable=True,
                comment='生效时间 of the latest version (NULL: from the beginning)',
            )
        )
        batch.add_column(
            sa.Column('version', sa.Integer(), nullable=False, server_default='1', comment='latest version number')
        )
        batch.add_column(
            sa.Column(
                'status',
                sa.String(length=10),
                nullable=False,
                server_default='in_force',
                comment='in_force 在用 | retired 已取消',
            )
        )
        batch.add_column(sa.Column('retired_at', sa.DateTime(), nullable=True, comment='取消时间'))
        batch.add_column(sa.Column('retire_reason', sa.Text(), nullable=False, server_default='', comment='取消原因'))
    op.create_table(
        'item_versions',
        sa.Column('implementation_code', sa.String(length=24), nullable=False, comment='实施编码'),
        sa.Column('version', sa.Integer(), autoincrement=False, nullable=False, comment='版本号'),
        sa.Column('effective_from', sa.DateTime(), nullable=True, comment='生效时间 (NULL: from the beginning)'),
        sa.Column('name', sa.String(length=200), nullable=False, comment='事项名称'),
        sa.Column('legal_limit', sa.Integer(), nullable=False, comment='法定办结时限'),
        sa.Column('legal_limit_unit', sa.String(length=1), nullable=False, comment='法定办结时限单位'),
        sa.Column('promised_limit', sa.Integer(), nullable=False, comment='承诺办结时限'),
        sa.Column('promised_limit_unit', sa.String(length=1), nullable=False, comment='承诺办结时限单位'),
        sa.Column('fee_flag', sa.Boolean(), nullable=False, comment='是否收费'),
        sa.Column('fee_standard', sa.Numeric(precision=18, scale=2), nullable=True, comment='收费标准 (元)'),
        sa.Column('channel_code', sa.String(length=1), nullable=False, comment='办理形式代码 (A.5)'),
        sa.Column(
            'explanation',
            sa.Text(),
            nullable=False,
            server_default='',
            comment='说明 (promised limit above half the legal one)',
        ),
        sa.Column('explained_at', sa.DateTime(), nullable=True, comment='说明记录时间'),
        sa.Column('recorded_at', sa.DateTime(), nullable=True, comment='when supnet stored it (NULL: migrated)'),
        sa.ForeignKeyConstraint(
            ['implementation_code'],
            ['items.implementation_code'],
            name=op.f('fk_item_versions_implementation_code_items'),
        ),
        sa.PrimaryKeyConstraint('implementation_code', 'version', name=op.f('pk_item_versions')),
    )
    op.create_table(
        'item_status_changes',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('implementation_code', sa.String(length=24), nullable=False, comment='实施编码'),
        sa.Column('action', sa.String(length=10), nullable=False, comment='retire 取消 | reactivate 恢复'),
        sa.Column('at', sa.DateTime(), nullable=False, comment='when it takes effect'),
        sa.Column('reason', sa.Text(), nullable=False, comment='原因'),
        sa.Column('recorded_at', sa.DateTime(), nullable=False, comment='when supnet stored it'),
        sa.ForeignKeyConstraint(
            ['implementation_code'],
            ['items.implementation_code'],
            name=op.f('fk_item_status_changes_implementation_code_items'),
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_item_status_changes')),
    )
    op.create_index(op.f('ix_item_status_changes_at'), 'item_status_changes', ['at'], unique=False)
    op.create_index(
        op.f('ix_item_status_changes_implementation_code'),
        'item_status_changes',
        ['implementation_code'],
        unique=False,
    )
    # Every existing item: version 1, in force from the beginning, with the limits and terms it has now.
    op.execute(
        f"INSERT INTO item_versions (implementation_code, version, effective_from, {_VERSION_COLUMNS}, explanation) "
        f"SELECT implementation_code, 1, NULL, {_VERSION_COLUMNS}, '' FROM items"
    )


def downgrade() -> None:
    """Revert this revision (the items keep their latest version's columns)."""
    op.drop_index(op.f('ix_item_status_changes_implementation_code'), table_name='item_status_changes')
    op.drop_index(op.f('ix_item_status_changes_at'), table_name='item_status_changes')
    op.drop_table('item_status_changes')
    op.drop_table('item_versions')
    # Plain DROP COLUMN (SQLite 3.35+ and PostgreSQL): a batch copy of items would have to drop the table that
    # cases reference, which SQLite refuses with foreign keys on.
    for name in ('retire_reason', 'retired_at', 'status', 'version', 'effective_from'):
        op.execute(f'ALTER TABLE items DROP COLUMN {name}')

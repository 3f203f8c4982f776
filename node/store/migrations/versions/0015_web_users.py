"""The web console's accounts (users: role, argon2 hash, lockout) and sessions (user_sessions: token hash, CSRF).

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table('users',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False, comment='login name'),
    sa.Column('role', sa.String(length=16), nullable=False, comment='viewer | supervisor | admin'),
    sa.Column('password_hash', sa.String(length=255), nullable=False, comment='argon2id hash (PHC string)'),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.Column('failed_logins', sa.Integer(), nullable=False, comment='wrong passwords in a row'),
    sa.Column('locked_until', sa.DateTime(), nullable=True, comment='UTC, naive'),
    sa.Column('created_at', sa.DateTime(), nullable=False, comment='UTC, naive'),
    sa.Column('password_changed_at', sa.DateTime(), nullable=False, comment='UTC, naive'),
    sa.Column('last_login_at', sa.DateTime(), nullable=True, comment='UTC, naive'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('name', name=op.f('uq_users_name'))
    )
    op.create_table('user_sessions',
    sa.Column('token_hash', sa.String(length=64), nullable=False, comment='hex SHA-256 of the cookie token'),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('csrf_token', sa.String(length=64), nullable=False, comment='sent back with every form'),
    sa.Column('created_at', sa.DateTime(), nullable=False, comment='UTC, naive'),
    sa.Column('last_seen_at', sa.DateTime(), nullable=False, comment='UTC, naive; idle timeout counts from here'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_user_sessions_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('token_hash', name=op.f('pk_user_sessions'))
    )
    with op.batch_alter_table('user_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_user_sessions_user_id'), ['user_id'], unique=False)



def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table('user_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_user_sessions_user_id'))

    op.drop_table('user_sessions')
    op.drop_table('users')

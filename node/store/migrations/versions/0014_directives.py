"""Directives downward (docs/domain.md §8): the directives a node holds, their signed events, the directive outbox.

directives keeps each directive issued, received, relayed or escalated here with its signed envelope and this node's
view of its state; directive_events every signed event of its life seen here (unique per directive and digest, so a
replay is stored once); directive_outbox the messages still to hand to the next hop, until it acknowledges them.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table('directive_events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('directive_id', sa.String(length=160), nullable=False),
    sa.Column('digest', sa.LargeBinary(length=32), nullable=False, comment="SHA-256 over the envelope's canonical bytes"),
    sa.Column('kind', sa.String(length=12), nullable=False, comment='delivered | acknowledged | responded | closed | reopened | escalated'),
    sa.Column('actor_id', sa.String(length=200), nullable=False, comment='the signing node'),
    sa.Column('actor_person', sa.String(length=100), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False, comment='when the actor made it (node-local time)'),
    sa.Column('envelope', sa.LargeBinary(), nullable=False, comment='the SignedEnvelope exactly as signed'),
    sa.Column('received_from', sa.String(length=200), nullable=False, comment="the TLS caller; '' if own"),
    sa.Column('stored_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_directive_events')),
    sa.UniqueConstraint('directive_id', 'digest', name=op.f('uq_directive_events_directive_id_digest'))
    )
    with op.batch_alter_table('directive_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_directive_events_directive_id'), ['directive_id'], unique=False)

    op.create_table('directive_outbox',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('directive_id', sa.String(length=160), nullable=False),
    sa.Column('digest', sa.LargeBinary(length=32), nullable=False),
    sa.Column('message', sa.String(length=12), nullable=False, comment='directive | delivered | acknowledged | ...'),
    sa.Column('next_hop', sa.String(length=200), nullable=False, comment='the parent or child it goes to'),
    sa.Column('envelope', sa.LargeBinary(), nullable=False),
    sa.Column('status', sa.String(length=8), nullable=False, comment='pending | acked | refused'),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('acked_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_directive_outbox')),
    sa.UniqueConstraint('digest', 'next_hop', name=op.f('uq_directive_outbox_digest_next_hop'))
    )
    with op.batch_alter_table('directive_outbox', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_directive_outbox_directive_id'), ['directive_id'], unique=False)
        batch_op.create_index('ix_directive_outbox_status_next_attempt_at', ['status', 'next_attempt_at'], unique=False)

    op.create_table('directives',
    sa.Column('id', sa.String(length=160), nullable=False, comment='<issuer>/<YYYYMMDD>-<hex>'),
    sa.Column('role', sa.String(length=10), nullable=False, comment="issued | received | relayed | escalated: this node's part in it"),
    sa.Column('kind', sa.String(length=10), nullable=False, comment='supervise | warning | rectify | bulletin'),
    sa.Column('issuer_id', sa.String(length=200), nullable=False),
    sa.Column('issued_by', sa.String(length=100), nullable=False, comment='the issuing official'),
    sa.Column('target_id', sa.String(length=200), nullable=False),
    sa.Column('whole_subtree', sa.Boolean(), nullable=False),
    sa.Column('subject_kind', sa.String(length=10), nullable=False, comment="case | department | item | ''"),
    sa.Column('subject', sa.String(length=200), nullable=False),
    sa.Column('respond_within_workdays', sa.Integer(), nullable=False),
    sa.Column('issued_at', sa.DateTime(), nullable=False, comment='when the issuer signed it (node-local time)'),
    sa.Column('digest', sa.LargeBinary(length=32), nullable=False, comment="SHA-256 over the envelope's canonical bytes"),
    sa.Column('envelope', sa.LargeBinary(), nullable=False, comment='the SignedEnvelope exactly as signed'),
    sa.Column('status', sa.String(length=12), nullable=False, comment='issued | delivered | acknowledged | responded | reopened | closed | escalated (as seen here)'),
    sa.Column('received_from', sa.String(length=200), nullable=False, comment="the TLS caller; '' if own"),
    sa.Column('stored_at', sa.DateTime(), nullable=False),
    sa.Column('delivered_at', sa.DateTime(), nullable=True),
    sa.Column('acknowledged_at', sa.DateTime(), nullable=True),
    sa.Column('responded_at', sa.DateTime(), nullable=True),
    sa.Column('closed_at', sa.DateTime(), nullable=True),
    sa.Column('due_at', sa.DateTime(), nullable=True, comment="response due (the target's calendar, signed on delivery)"),
    sa.Column('escalate_at', sa.DateTime(), nullable=True),
    sa.Column('on_time_counted', sa.Boolean(), nullable=False, comment='target: directives_responded_on_time counted (once per directive)'),
    sa.Column('overdue_marked_at', sa.DateTime(), nullable=True, comment='when this node acted on the late response (alert or notice), once'),
    sa.Column('escalation_marked_at', sa.DateTime(), nullable=True, comment='when this node escalated the late response, once'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_directives'))
    )
    with op.batch_alter_table('directives', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_directives_due_at'), ['due_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_directives_role'), ['role'], unique=False)
        batch_op.create_index(batch_op.f('ix_directives_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_directives_target_id'), ['target_id'], unique=False)



def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table('directives', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_directives_target_id'))
        batch_op.drop_index(batch_op.f('ix_directives_status'))
        batch_op.drop_index(batch_op.f('ix_directives_role'))
        batch_op.drop_index(batch_op.f('ix_directives_due_at'))

    op.drop_table('directives')
    with op.batch_alter_table('directive_outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_directive_outbox_status_next_attempt_at')
        batch_op.drop_index(batch_op.f('ix_directive_outbox_directive_id'))

    op.drop_table('directive_outbox')
    with op.batch_alter_table('directive_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_directive_events_directive_id'))

    op.drop_table('directive_events')

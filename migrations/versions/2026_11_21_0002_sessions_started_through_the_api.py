"""sessions started through the api: provider, sealed spec, join info, start claims, Coze cursor

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 22:36:42.379679
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('provider', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('template', sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column('agent_user_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('spec', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True))
        batch_op.add_column(sa.Column('join_info', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True))
        batch_op.add_column(sa.Column('failure_message', sa.String(length=1024), nullable=True))
        batch_op.add_column(sa.Column('start_attempts', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('start_claimed_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('provisioned_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('end_requested_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('conversation_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('message_cursor', sa.String(length=64), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.drop_column('message_cursor')
        batch_op.drop_column('conversation_id')
        batch_op.drop_column('end_requested_at')
        batch_op.drop_column('provisioned_at')
        batch_op.drop_column('start_claimed_at')
        batch_op.drop_column('start_attempts')
        batch_op.drop_column('failure_message')
        batch_op.drop_column('join_info')
        batch_op.drop_column('spec')
        batch_op.drop_column('agent_user_id')
        batch_op.drop_column('template')
        batch_op.drop_column('provider')


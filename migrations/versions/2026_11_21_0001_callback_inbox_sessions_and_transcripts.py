"""callback inbox, sessions and transcripts

Revision ID: 0001
Revises: 
Create Date: 2026-11-21 20:55:31.692483
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('inbox',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('app_id', sa.BigInteger(), nullable=False),
    sa.Column('event', sa.String(length=64), nullable=False),
    sa.Column('agent_instance_id', sa.String(length=128), nullable=False),
    sa.Column('sequence', sa.BigInteger(), nullable=True),
    sa.Column('dedup_key', sa.String(length=320), nullable=False),
    sa.Column('signature', sa.String(length=64), nullable=False),
    sa.Column('body_hash', sa.String(length=64), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('content_type', sa.String(length=16), nullable=False),
    sa.Column('callback_ts', sa.BigInteger(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('processed_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_inbox')),
    sa.UniqueConstraint('dedup_key', name=op.f('uq_inbox_dedup_key')),
    sa.UniqueConstraint('signature', name=op.f('uq_inbox_signature'))
    )
    with op.batch_alter_table('inbox', schema=None) as batch_op:
        batch_op.create_index('ix_inbox_pending_received', ['received_at'], unique=False, postgresql_where=sa.text("state = 'pending'"), sqlite_where=sa.text("state = 'pending'"))
        batch_op.create_index('ix_inbox_pending_stream', ['app_id', 'agent_instance_id', 'sequence'], unique=False, postgresql_where=sa.text("state = 'pending'"), sqlite_where=sa.text("state = 'pending'"))
        batch_op.create_index('ix_inbox_state', ['state'], unique=False)

    op.create_table('sessions',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('app_id', sa.BigInteger(), nullable=False),
    sa.Column('origin', sa.String(length=16), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('end_reason', sa.String(length=64), nullable=True),
    sa.Column('end_code', sa.Integer(), nullable=True),
    sa.Column('room_id', sa.String(length=128), nullable=True),
    sa.Column('user_id', sa.String(length=64), nullable=True),
    sa.Column('agent_id', sa.String(length=128), nullable=True),
    sa.Column('agent_name', sa.String(length=256), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_activity_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_user_speech_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sessions'))
    )
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.create_index('ix_sessions_state', ['state'], unique=False)

    op.create_table('agent_instances',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('app_id', sa.BigInteger(), nullable=False),
    sa.Column('agent_instance_id', sa.String(length=128), nullable=False),
    sa.Column('session_id', sa.String(length=36), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('agent_user_id', sa.String(length=64), nullable=True),
    sa.Column('agent_id', sa.String(length=128), nullable=True),
    sa.Column('room_id', sa.String(length=128), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('delete_code', sa.Integer(), nullable=True),
    sa.Column('latency', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=True),
    sa.Column('status_sequence', sa.BigInteger(), nullable=True),
    sa.Column('first_seen_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_event_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_sequence', sa.BigInteger(), nullable=True),
    sa.ForeignKeyConstraint(['session_id'], ['sessions.id'], name=op.f('fk_agent_instances_session_id_sessions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_agent_instances')),
    sa.UniqueConstraint('app_id', 'agent_instance_id', name=op.f('uq_agent_instances_app_id_agent_instance_id'))
    )
    with op.batch_alter_table('agent_instances', schema=None) as batch_op:
        batch_op.create_index('ix_agent_instances_session_id', ['session_id'], unique=False)

    op.create_table('agent_exceptions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('session_id', sa.String(length=36), nullable=False),
    sa.Column('instance_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('inbox_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('code', sa.Integer(), nullable=False),
    sa.Column('family', sa.String(length=16), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('round', sa.BigInteger(), nullable=True),
    sa.Column('sequence', sa.BigInteger(), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['inbox_id'], ['inbox.id'], name=op.f('fk_agent_exceptions_inbox_id_inbox')),
    sa.ForeignKeyConstraint(['instance_id'], ['agent_instances.id'], name=op.f('fk_agent_exceptions_instance_id_agent_instances'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['session_id'], ['sessions.id'], name=op.f('fk_agent_exceptions_session_id_sessions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_agent_exceptions')),
    sa.UniqueConstraint('inbox_id', name=op.f('uq_agent_exceptions_inbox_id'))
    )
    with op.batch_alter_table('agent_exceptions', schema=None) as batch_op:
        batch_op.create_index('ix_agent_exceptions_session_id', ['session_id'], unique=False)

    op.create_table('agent_sentences',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('instance_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('inbox_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('round', sa.BigInteger(), nullable=False),
    sa.Column('sequence', sa.BigInteger(), nullable=True),
    sa.Column('callback_ts', sa.BigInteger(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['inbox_id'], ['inbox.id'], name=op.f('fk_agent_sentences_inbox_id_inbox')),
    sa.ForeignKeyConstraint(['instance_id'], ['agent_instances.id'], name=op.f('fk_agent_sentences_instance_id_agent_instances'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_agent_sentences')),
    sa.UniqueConstraint('inbox_id', name=op.f('uq_agent_sentences_inbox_id'))
    )
    with op.batch_alter_table('agent_sentences', schema=None) as batch_op:
        batch_op.create_index('ix_agent_sentences_instance_round', ['instance_id', 'round'], unique=False)

    op.create_table('timeline_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('session_id', sa.String(length=36), nullable=False),
    sa.Column('instance_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('inbox_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('event', sa.String(length=64), nullable=False),
    sa.Column('round', sa.BigInteger(), nullable=True),
    sa.Column('sequence', sa.BigInteger(), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('detail', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.ForeignKeyConstraint(['inbox_id'], ['inbox.id'], name=op.f('fk_timeline_events_inbox_id_inbox')),
    sa.ForeignKeyConstraint(['instance_id'], ['agent_instances.id'], name=op.f('fk_timeline_events_instance_id_agent_instances'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['session_id'], ['sessions.id'], name=op.f('fk_timeline_events_session_id_sessions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_timeline_events')),
    sa.UniqueConstraint('inbox_id', name=op.f('uq_timeline_events_inbox_id'))
    )
    with op.batch_alter_table('timeline_events', schema=None) as batch_op:
        batch_op.create_index('ix_timeline_events_session_id', ['session_id'], unique=False)

    op.create_table('turns',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('session_id', sa.String(length=36), nullable=False),
    sa.Column('instance_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('round', sa.BigInteger(), nullable=False),
    sa.Column('speaker', sa.String(length=8), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('user_id', sa.String(length=64), nullable=True),
    sa.Column('spoken_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('text_sequence', sa.BigInteger(), nullable=True),
    sa.Column('interrupted', sa.Boolean(), nullable=False),
    sa.Column('interrupt_reason', sa.Integer(), nullable=True),
    sa.Column('played_text', sa.Text(), nullable=True),
    sa.Column('meta_info', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=True),
    sa.ForeignKeyConstraint(['instance_id'], ['agent_instances.id'], name=op.f('fk_turns_instance_id_agent_instances'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['session_id'], ['sessions.id'], name=op.f('fk_turns_session_id_sessions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_turns')),
    sa.UniqueConstraint('instance_id', 'round', 'speaker', name=op.f('uq_turns_instance_id_round_speaker'))
    )
    with op.batch_alter_table('turns', schema=None) as batch_op:
        batch_op.create_index('ix_turns_session_id', ['session_id'], unique=False)

    op.create_table('user_audio',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('session_id', sa.String(length=36), nullable=False),
    sa.Column('instance_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('inbox_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('user_id', sa.String(length=64), nullable=True),
    sa.Column('round', sa.BigInteger(), nullable=True),
    sa.Column('sample_rate', sa.Integer(), nullable=True),
    sa.Column('format', sa.String(length=16), nullable=True),
    sa.Column('audio', sa.LargeBinary(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['inbox_id'], ['inbox.id'], name=op.f('fk_user_audio_inbox_id_inbox')),
    sa.ForeignKeyConstraint(['instance_id'], ['agent_instances.id'], name=op.f('fk_user_audio_instance_id_agent_instances'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['session_id'], ['sessions.id'], name=op.f('fk_user_audio_session_id_sessions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_user_audio')),
    sa.UniqueConstraint('inbox_id', name=op.f('uq_user_audio_inbox_id'))
    )
    with op.batch_alter_table('user_audio', schema=None) as batch_op:
        batch_op.create_index('ix_user_audio_at', ['at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('user_audio', schema=None) as batch_op:
        batch_op.drop_index('ix_user_audio_at')

    op.drop_table('user_audio')
    with op.batch_alter_table('turns', schema=None) as batch_op:
        batch_op.drop_index('ix_turns_session_id')

    op.drop_table('turns')
    with op.batch_alter_table('timeline_events', schema=None) as batch_op:
        batch_op.drop_index('ix_timeline_events_session_id')

    op.drop_table('timeline_events')
    with op.batch_alter_table('agent_sentences', schema=None) as batch_op:
        batch_op.drop_index('ix_agent_sentences_instance_round')

    op.drop_table('agent_sentences')
    with op.batch_alter_table('agent_exceptions', schema=None) as batch_op:
        batch_op.drop_index('ix_agent_exceptions_session_id')

    op.drop_table('agent_exceptions')
    with op.batch_alter_table('agent_instances', schema=None) as batch_op:
        batch_op.drop_index('ix_agent_instances_session_id')

    op.drop_table('agent_instances')
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.drop_index('ix_sessions_state')

    op.drop_table('sessions')
    with op.batch_alter_table('inbox', schema=None) as batch_op:
        batch_op.drop_index('ix_inbox_state')
        batch_op.drop_index('ix_inbox_pending_stream', postgresql_where=sa.text("state = 'pending'"), sqlite_where=sa.text("state = 'pending'"))
        batch_op.drop_index('ix_inbox_pending_received', postgresql_where=sa.text("state = 'pending'"), sqlite_where=sa.text("state = 'pending'"))

    op.drop_table('inbox')

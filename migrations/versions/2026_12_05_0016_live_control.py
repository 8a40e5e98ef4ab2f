"""live control: ``turns.source`` marks the agent turns an app had spoken through ``say``

SendAgentInstanceTTS answers with the Round the agent will speak the text in; the API writes
that Round's agent turn with ``source = 'say'`` (worker/sessions/control.py), so a reader of the
transcript tells words the app put in the agent's mouth from words its LLM chose. NULL is a turn
made from callbacks alone, as every turn before this revision was.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05 00:16:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("turns", sa.Column("source", sa.String(16), nullable=True))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_column("turns", "source")
    else:
        # Not batch mode: rebuilding the table would take the bi_* views with it (as in 0011, 0012).
        op.execute("ALTER TABLE turns DROP COLUMN source")

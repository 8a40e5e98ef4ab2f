"""PII redaction: a redacted copy of each turn's text beside the raw one, and BI views that show only it

``turns.text_redacted`` and ``turns.played_text_redacted`` hold what readers without the admin
token see (worker/privacy): NULL when the text holds nothing to redact, or when the session's
mode is ``off``. The BI views' ``text`` and ``played_text`` are the redacted copy where one
exists: the BI role reads the views only (0005), so it cannot reach the raw columns.

Both databases add the columns in place (no table rebuild); the views are replaced, and the
downgrade puts back 0005's.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 00:14:00
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("text_redacted", "played_text_redacted")

TURNS_VIEW = """
SELECT t.id AS turn_id,
       t.session_id,
       i.app_id,
       i.agent_instance_id,
       t.round,
       t.speaker,
       COALESCE(t.text_redacted, t.text) AS text,
       t.user_id,
       t.spoken_at,
       t.interrupted,
       t.interrupt_reason,
       COALESCE(t.played_text_redacted, t.played_text) AS played_text
  FROM turns t
  JOIN agent_instances i ON i.id = t.instance_id
"""


def _bi() -> ModuleType:
    """Revision 0005, for the text of its views (migrations do not import app code)."""
    path = Path(__file__).with_name("2026_11_22_0005_bi_views_and_role.py")
    spec = importlib.util.spec_from_file_location("_roomwarden_0005", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _turns_view(sql: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        # Same columns, same types: replaced in place, and the BI role's grant stays.
        op.execute(f"CREATE OR REPLACE VIEW bi.turns AS {sql}")
    else:
        op.execute("DROP VIEW IF EXISTS bi_turns")
        op.execute(f"CREATE VIEW bi_turns AS {sql}")


def upgrade() -> None:
    for name in COLUMNS:
        op.add_column("turns", sa.Column(name, sa.Text(), nullable=True))
    _turns_view(TURNS_VIEW)


def downgrade() -> None:
    bi = _bi()
    _turns_view(bi.PG_VIEWS["turns"] if op.get_bind().dialect.name == "postgresql" else bi.SQLITE_VIEWS["turns"])
    for name in COLUMNS:
        if op.get_bind().dialect.name == "postgresql":
            op.drop_column("turns", name)
        else:
            # Not batch mode: rebuilding the table would take the bi_* views with it (as in 0011).
            op.execute(f"ALTER TABLE turns DROP COLUMN {name}")

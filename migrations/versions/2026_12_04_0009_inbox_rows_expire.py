"""applied inbox rows may be deleted after their retention: inbox_id no longer a foreign key

Sentences, timeline events, exceptions and user audio keep the id of the callback they came
from (still unique: a callback is applied once), but no longer require its row to exist, so the
retention job can delete applied rows past ``ROOMWARDEN_INBOX_RETENTION_DAYS``. Instances whose
callbacks were deleted are marked ``history_purged``: a rebuild leaves their sessions as they
are, as it already does for callbacks whose payload was emptied.

SQLite: the four tables are rebuilt (batch mode) without the constraint, so the ``bi_*`` views
that read them are dropped first and created again afterwards (0005 holds their text).

Downgrade restores the constraints; it fails if rows were deleted since (their children point
at nothing), which is the truth: the old schema cannot hold that state.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 07:00:00
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHILDREN = ("agent_exceptions", "agent_sentences", "timeline_events", "user_audio")


def _bi() -> ModuleType:
    """Revision 0005, for the text of its SQLite views (migrations do not import app code)."""
    path = Path(__file__).with_name("2026_11_22_0005_bi_views_and_role.py")
    spec = importlib.util.spec_from_file_location("_roomwarden_0005", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _constraints(add: bool) -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    bi = _bi() if sqlite else None
    if bi is not None:
        for name in bi.VIEWS:
            op.execute(f"DROP VIEW IF EXISTS bi_{name}")
    for table in CHILDREN:
        name = f"fk_{table}_inbox_id_inbox"
        if sqlite:
            with op.batch_alter_table(table) as batch:
                if add:
                    batch.create_foreign_key(name, "inbox", ["inbox_id"], ["id"])
                else:
                    batch.drop_constraint(name, type_="foreignkey")
        elif add:
            op.create_foreign_key(name, table, "inbox", ["inbox_id"], ["id"])
        else:
            op.drop_constraint(name, table, type_="foreignkey")
    if add:  # downgrade: the column goes too, while the views are away
        with op.batch_alter_table("agent_instances") as batch:
            batch.drop_column("history_purged")
    if bi is not None:
        for name in bi.VIEWS:
            op.execute(f"CREATE VIEW bi_{name} AS {bi.SQLITE_VIEWS[name]}")


def upgrade() -> None:
    op.add_column(
        "agent_instances",
        sa.Column("history_purged", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    _constraints(add=False)


def downgrade() -> None:
    _constraints(add=True)

"""Where an analysis shows: search over summaries, the sessions export, the BI view."""

from __future__ import annotations

import json

from sqlalchemy import text
from sqlalchemy.orm import Session as DbSession

from emulator.server import Emulator
from tests.worker.postcall.support import client, config, stored_session
from worker.analysis import exports
from worker.analysis.catalog import SessionFilter
from worker.postcall import running
from worker.postcall.search import summary_matches


def analysed(db: DbSession, emulator: Emulator) -> str:
    session = stored_session(db)
    result = running.run(running.prepare(db, session, config(emulator)), client(emulator))
    running.store(db, result)
    return session.id


def test_search_finds_a_session_by_its_summary(db: DbSession, emulator: Emulator) -> None:
    """Every term of the query in the summary, in any case: the session comes back with it."""
    session_id = analysed(db, emulator)
    found = summary_matches(db, "TAXI hello", SessionFilter.from_query({}))
    assert [(m["session"]["id"], m["outcome"]) for m in found] == [(session_id, "success")]
    assert summary_matches(db, "taxi submarine", SessionFilter.from_query({})) == []
    assert summary_matches(db, "taxi", SessionFilter.from_query({"user_id": "nobody"})) == []


def test_the_sessions_export_has_the_analysis_columns(db: DbSession, emulator: Emulator) -> None:
    """Summary, outcome and the data as JSON text, in every format's fixed columns."""
    session_id = analysed(db, emulator)
    stored_session(db)  # one without an analysis: empty columns
    rows = {r["id"]: r for r in exports.rows(db, "sessions", SessionFilter.from_query({}))}
    row = rows[session_id]
    assert row["analysis_outcome"] == "success"
    assert row["analysis_summary"].startswith("Hello I need a taxi")
    assert json.loads(row["analysis_data"]) == {"city": "Hello", "passengers": 4}
    assert [r["analysis_summary"] for i, r in rows.items() if i != session_id] == [None]
    assert "analysis_summary" in exports.COLUMNS["sessions"].names


def test_the_bi_view_holds_each_version(db: DbSession, emulator: Emulator) -> None:
    """bi.analyses (bi_analyses on SQLite): one row per session and version, no secret."""
    session_id = analysed(db, emulator)
    view = "bi.analyses" if db.get_bind().dialect.name == "postgresql" else "bi_analyses"
    rows = db.execute(text(f"SELECT session_id, outcome, summary, prompt_tokens FROM {view}")).all()
    assert [(r.session_id, r.outcome) for r in rows] == [(session_id, "success")]
    assert rows[0].prompt_tokens > 0

"""Search over the analyses' summaries: the sessions whose summary holds every term.

The smallest addition that makes a summary findable beside the transcript search
(worker/analysis/search.py): the same terms and bounds, every term a case-insensitive substring
of the summary. Summaries are a sentence or a few per session, so a scan bounded by the filter
and the limit is enough; no index is kept for them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.orm import Session as DbSession

from worker.analysis import catalog, summary
from worker.analysis.search import MAX_LIMIT, escape_like, terms_of
from worker.models import SessionAnalysis


def summary_matches(
    db: DbSession, q: str, f: catalog.SessionFilter, *, limit: int = 20
) -> list[dict[str, Any]]:
    """Sessions whose analysis summary holds every term of ``q``, newest analysis first."""
    terms = terms_of(q)
    like = and_(*(SessionAnalysis.summary.ilike(f"%{escape_like(t)}%", escape="\\") for t in terms))
    query = select(SessionAnalysis).where(like, SessionAnalysis.status == "done")
    if f.conditions():
        query = query.where(SessionAnalysis.session_id.in_(catalog.filtered(f)))
    rows = db.scalars(
        query.order_by(SessionAnalysis.finished_at.desc()).limit(max(1, min(limit, MAX_LIMIT)))
    ).all()
    sessions = {s["id"]: s for s in summary.summaries(db, list(dict.fromkeys(r.session_id for r in rows)))}
    return [
        {
            "session": sessions[row.session_id],
            "summary": row.summary,
            "outcome": row.outcome,
            "config_version": row.config_version,
        }
        for row in rows
        if row.session_id in sessions
    ]

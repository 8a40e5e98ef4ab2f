"""Transcript retention per app and template: old sessions lose their words, stats do not change."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session as DbSession

from tests.factories import APP_ID, Signer, apply_pending, ingest
from tests.worker.privacy.conversation import EMAIL, conversation
from worker.analysis import catalog, stats
from worker.analysis.latency import round_latencies
from worker.analysis.summary import summaries
from worker.db import utcnow
from worker.inbox import retention as hourly
from worker.models import InboxCallback, Session, SessionAnalysis, Turn
from worker.policies.config import PolicyError, parse
from worker.privacy import erasure, retention
from worker.settings import Settings

POLICIES = f"""
[apps.{APP_ID}.retention]
transcript_days = 30

[templates.concierge.retention]
transcript_days = 0
"""
OLD, KEPT, OTHER_APP = "7200000000000000001", "7200000000000000002", "7200000000000000003"


def figures(db: DbSession) -> dict[str, Any]:
    ids = sorted(db.scalars(select(Session.id)))
    everything = stats.compute(db, catalog.SessionFilter(), rates={}, currency="EUR")
    return {
        "stats": everything,
        "summaries": summaries(db, ids),
        "rounds": [r.as_dict() for r in round_latencies(db, sessions=select(Session.id))],
    }


def texts(db: DbSession, user: str) -> list[str]:
    session_id = db.scalars(select(Session.id).where(Session.user_id == user)).one()
    return [t.text for t in db.scalars(select(Turn).where(Turn.session_id == session_id).order_by(Turn.id))]


def test_sessions_past_their_days_lose_their_words_others_keep_them_and_stats_stay(
    db: DbSession, settings: Settings
) -> None:
    """App 30 days, template concierge keeps for ever, another app keeps by default: a month on,
    only the app's plain session is emptied; counts, durations and response times are the same."""
    signer, elsewhere = Signer(), Signer(app_id=APP_ID + 1)
    ingest(db, conversation(signer, instance=OLD, user="old"))
    ingest(db, conversation(signer, instance=KEPT, user="kept"))
    ingest(db, conversation(elsewhere, instance=OTHER_APP, user="elsewhere"))
    apply_pending(db, settings, instance=OLD)
    apply_pending(db, settings, instance=KEPT)
    apply_pending(db, settings, instance=OTHER_APP, app_id=APP_ID + 1)
    db.execute(update(Session).where(Session.user_id == "kept").values(template="concierge"))
    book = parse(POLICIES)
    before = figures(db)

    assert retention.expire(db, book, utcnow() + dt.timedelta(days=29)) == {"sessions": 0}
    done = retention.expire(db, book, utcnow() + dt.timedelta(days=31))
    assert done["sessions"] == 1 and done["turns"] == 6 and done["payloads"] == 20
    assert set(texts(db, "old")) == {""}
    assert any(EMAIL in t for t in texts(db, "kept")) and any(EMAIL in t for t in texts(db, "elsewhere"))
    old = db.scalars(select(Session).where(Session.user_id == "old")).one()
    assert old.transcript_removed_by == "retention" and old.transcript_removed_at is not None
    payloads = db.scalars(select(InboxCallback.payload).where(InboxCallback.agent_instance_id == OLD)).all()
    assert set(payloads) == {"{}"}
    db.expire_all()
    assert figures(db) == before
    # Done once: the next run finds nothing.
    assert retention.expire(db, book, utcnow() + dt.timedelta(days=400)) == {"sessions": 0}


def test_the_hourly_job_applies_the_policy_file(db: DbSession, settings: Settings, tmp_path: Any) -> None:
    """purge_retention reads transcript_days from ROOMWARDEN_POLICIES_FILE; without it, nothing goes."""
    ingest(db, conversation(Signer(), instance=OLD, user="old"))
    apply_pending(db, settings, instance=OLD)
    later = utcnow() + dt.timedelta(days=31)
    assert hourly.purge(db, later, settings)["transcripts"] == 0
    policy = tmp_path / "policies.toml"
    policy.write_text("[defaults.retention]\ntranscript_days = 7\n")
    with_file = settings.model_copy(update={"policies_file": policy})
    assert hourly.purge(db, later, with_file)["transcripts"] == 1
    assert set(texts(db, "old")) == {""}


@pytest.mark.parametrize("days", ["-1", "36501", '"a week"'])
def test_a_bad_transcript_days_is_a_start_up_error_naming_the_key(days: str) -> None:
    """The policy file is validated when read, naming the layer and key."""
    with pytest.raises(PolicyError, match=r"templates\.t\.retention\.transcript_days"):
        parse(f"[templates.t.retention]\ntranscript_days = {days}\n")


def test_a_rebuild_after_removal_keeps_the_session_as_it_is(clean_engine: Any, settings: Settings) -> None:
    """Emptied callbacks cannot be derived again: rebuild keeps the session, its turns and no words."""
    from worker.db import make_sessionmaker, session_scope
    from worker.privacy.erasure import remove_words
    from worker.sessions.rebuild import rebuild

    factory = make_sessionmaker(clean_engine)
    with session_scope(factory) as db:
        ingest(db, conversation(Signer(), instance=OLD, user="old"))
        apply_pending(db, settings, instance=OLD)
        ids = list(db.scalars(select(Session.id)))
        remove_words(db, ids, reason="erasure", now=utcnow())
    rebuild(factory, settings)
    with session_scope(factory) as db:
        assert texts(db, "old") == [""] * 6
        assert db.scalars(select(Session.transcript_removed_by)).one() == "erasure"


def test_removing_words_also_empties_the_redacted_copies_read_mode_keeps(
    db: DbSession, settings: Settings
) -> None:
    """Under PII redaction ``read`` each turn also holds a redacted copy ("write to [EMAIL]"):
    those are words too, so removal empties them with the raw text."""
    reading = settings.model_copy(update={"pii_redaction": "read"})
    ingest(db, conversation(Signer(), instance=OLD, user="old"))
    apply_pending(db, reading, instance=OLD)
    session_id = db.scalars(select(Session.id).where(Session.user_id == "old")).one()
    copies = select(Turn.text_redacted).where(Turn.session_id == session_id, Turn.text_redacted.is_not(None))
    assert db.scalars(copies).all(), "the conversation's e-mail should have made a redacted copy"

    erasure.remove_words(db, [session_id], reason="retention", now=utcnow())

    assert db.scalars(copies).all() == []
    assert set(texts(db, "old")) == {""}


def test_removing_words_also_empties_the_post_call_analysis(db: DbSession, settings: Settings) -> None:
    """An analysis is made of the transcript's words (its summary quotes them): removal takes its
    summary, data and reason, and keeps the row so the sweep does not analyse the empty one again."""
    ingest(db, conversation(Signer(), instance=OLD, user="old"))
    apply_pending(db, settings, instance=OLD)
    session_id = db.scalars(select(Session.id).where(Session.user_id == "old")).one()
    now = utcnow()
    db.add(
        SessionAnalysis(
            session_id=session_id,
            config_version="v1",
            status="done",
            summary=f"The caller gave {EMAIL}.",
            data={"email": EMAIL},
            outcome="success",
            outcome_reason=f"Reached at {EMAIL}",
            started_at=now,
            finished_at=now,
        )
    )
    db.flush()

    first = erasure.remove_words(db, [session_id], reason="erasure", now=now)
    again = erasure.remove_words(db, [session_id], reason="erasure", now=now)
    db.expire_all()

    row = db.scalars(select(SessionAnalysis)).one()
    assert (row.summary, row.data, row.outcome_reason) == (None, None, None)
    assert (row.status, row.outcome) == ("done", "success")
    assert (first["analyses"], again["analyses"]) == (1, 0)

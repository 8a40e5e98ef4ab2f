"""Retention on the real databases: raw payloads and audio go, transcripts and sessions stay."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session as DbSession

from tests.factories import INSTANCE, Signer, apply_pending, ingest
from tests.worker.conversation import conversation
from tests.worker.sessions.test_transcripts import snapshot
from worker.db import make_sessionmaker, session_scope, utcnow
from worker.inbox import retention
from worker.models import InboxCallback, InboxState, Session, UserAudio
from worker.sessions import transcripts
from worker.sessions.rebuild import rebuild
from worker.settings import Settings

LATER = dt.timedelta(days=31)  # past the default raw_payload_retention_days of 30


def test_old_payloads_are_emptied_and_the_transcript_stays(db: DbSession, settings: Settings) -> None:
    """A month on, the stored callbacks are empty but the conversation still reads the same."""
    signer = Signer()
    ingest(db, conversation(signer))
    apply_pending(db, settings)
    session_id = db.scalars(select(Session.id)).one()
    said = [(t.speaker, t.text) for t in transcripts.transcript(db, session_id)]
    ingest(db, [signer.callback("ASRResult", instance="7000000000000000001")])  # still pending

    assert retention.purge(db, utcnow() + dt.timedelta(days=29), settings)["payloads"] == 0
    counts = retention.purge(db, utcnow() + LATER, settings)
    rows = list(db.scalars(select(InboxCallback).execution_options(populate_existing=True)))
    done = [r for r in rows if r.state == InboxState.DONE]
    assert counts["payloads"] == len(done) > 0
    assert all(r.payload == "{}" and r.purged_at is not None for r in done)
    [pending] = [r for r in rows if r.state == InboxState.PENDING]
    assert pending.purged_at is None and "ASRResult" in pending.payload
    assert [(t.speaker, t.text) for t in transcripts.transcript(db, session_id)] == said
    assert retention.purge(db, utcnow() + LATER, settings)["payloads"] == 0  # done once


def test_zero_days_keeps_payloads_for_ever(db: DbSession, settings: Settings) -> None:
    """raw_payload_retention_days = 0 turns payload purging off."""
    ingest(db, conversation(Signer()))
    apply_pending(db, settings)
    keep = settings.model_copy(update={"raw_payload_retention_days": 0})
    assert retention.purge(db, utcnow() + dt.timedelta(days=3650), keep)["payloads"] == 0


def test_user_audio_past_its_retention_is_purged_too(db: DbSession, settings: Settings) -> None:
    """Kept user audio goes after user_audio_retention_days, by the same hourly job."""
    audio_on = settings.model_copy(update={"store_user_audio": True})
    ingest(db, [Signer().callback("UserAudioData")])
    apply_pending(db, audio_on)
    assert len(db.scalars(select(UserAudio)).all()) == 1
    counts = retention.purge(db, utcnow() + dt.timedelta(days=8), audio_on)
    assert counts["user_audio"] == 1 and db.scalars(select(UserAudio)).all() == []


def test_a_rebuild_leaves_sessions_with_purged_callbacks_as_they_are(
    clean_engine: Engine, settings: Settings
) -> None:
    """Rebuild cannot re-derive an emptied callback, so it keeps that session; others are rebuilt."""
    factory = make_sessionmaker(clean_engine)
    other, signer = "7000000000000000001", Signer()
    with session_scope(factory) as db:
        ingest(db, conversation(Signer()))
        ingest(
            db,
            [signer.callback(e, instance=other) for e in ("AgentInstanceCreated", "ASRResult", "LLMResult")],
        )
        apply_pending(db, settings)
        apply_pending(db, settings, instance=other)
        before = snapshot(db)
        # Only the first conversation is old enough to purge.
        db.execute(
            update(InboxCallback)
            .where(InboxCallback.agent_instance_id == INSTANCE)
            .values(received_at=utcnow() - LATER)
        )
    with session_scope(factory) as db:
        assert retention.purge(db, utcnow(), settings)["payloads"] > 0
    assert rebuild(factory, settings) == 3  # the other stream only
    with session_scope(factory) as db:
        assert snapshot(db) == before
        assert set(db.scalars(select(InboxCallback.state))) == {InboxState.DONE}
        other_session = db.scalars(select(Session).where(Session.id != before["session"]["id"])).one()
        said = [(t.speaker, t.text) for t in transcripts.transcript(db, other_session.id)]
        assert said == [("user", "What's the weather like?"), ("agent", "It is sunny today.")]


def test_applied_rows_go_after_the_inbox_retention_and_the_conversation_stays(
    clean_engine: Engine, settings: Settings
) -> None:
    """Ninety days on, the applied rows themselves are deleted, in batches; the transcript reads
    the same, a rebuild leaves that session alone, and pending and failed rows are kept."""
    factory = make_sessionmaker(clean_engine)
    signer = Signer()
    with session_scope(factory) as db:
        ingest(db, conversation(signer))
        apply_pending(db, settings)
        before = snapshot(db)
        ingest(db, [signer.callback("ASRResult", instance="7000000000000000001")])  # still pending
        applied = len(
            db.scalars(select(InboxCallback.id).where(InboxCallback.state == InboxState.DONE)).all()
        )

    far = utcnow() + dt.timedelta(days=settings.inbox_retention_days + 1)
    with session_scope(factory) as db:
        assert retention.purge(db, utcnow() + LATER, settings)["inbox_rows"] == 0  # emptied, not yet deleted
    deleted = 0
    for _ in range(10):  # batches of 5, as the hourly job repeats them
        with session_scope(factory) as db:
            counts = retention.purge(db, far, settings, batch=5)
        deleted += counts["inbox_rows"]
        if counts["inbox_rows"] < 5:
            break
    assert deleted == applied
    with session_scope(factory) as db:
        assert [r.state for r in db.scalars(select(InboxCallback))] == [InboxState.PENDING]
        assert snapshot(db) == before
    rebuild(factory, settings)
    with session_scope(factory) as db:
        assert snapshot(db) == before


def test_a_retention_shorter_than_the_signature_window_is_refused_at_start() -> None:
    """A deleted row frees its dedup key: only safe once no retry of it can pass the signature
    window, so a configuration that would delete rows sooner does not start."""
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="inbox_retention_days must outlast"):
        Settings(inbox_retention_days=1, timestamp_window_seconds=2 * 86400, _env_file=None)  # type: ignore[call-arg]
    assert Settings(inbox_retention_days=0, timestamp_window_seconds=2 * 86400, _env_file=None)  # type: ignore[call-arg]

"""Session lifecycles as a reader of the API would see them after callbacks are applied."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from tests.factories import EVENT_DATA, INSTANCE, Signer, apply_pending, ingest
from worker.models import AgentException, AgentInstance, InboxCallback, Session, TimelineEvent
from worker.sessions import reading as sessions
from worker.sessions.lifecycle import end_reason, exception_family, session_id_for
from worker.settings import Settings


def _session(db: DbSession) -> Session:
    found = sessions.find_session(db, INSTANCE)
    assert found is not None
    return found


def test_callback_for_unknown_instance_creates_a_starting_session(
    db: DbSession, signer: Signer, settings: Settings
) -> None:
    """The first callback of an instance nobody started through roomwarden opens a session for it."""
    ingest(db, [signer.callback("AgentInstanceStatus", {"Status": "IDLE", "Round": 1})])
    apply_pending(db, settings)
    session = _session(db)
    assert session.id == session_id_for(1234567, INSTANCE)
    assert session.state == "starting"
    assert session.room_id == "room_1"
    assert session.agent_id == "weather-bot"
    assert session.agent_name == "Weather bot"


def test_created_makes_the_session_active_with_its_created_time(
    db: DbSession, signer: Signer, settings: Settings
) -> None:
    """AgentInstanceCreated marks the instance live and records CreatedTimestamp."""
    ingest(db, [signer.callback("AgentInstanceCreated", {"CreatedTimestamp": 1_745_000_000_123})])
    apply_pending(db, settings)
    session = _session(db)
    assert session.state == "active"
    instance = db.scalars(select(AgentInstance)).one()
    assert instance.state == "active"
    assert instance.created_at is not None
    assert int(instance.created_at.timestamp() * 1000) == 1_745_000_000_123


def test_deleted_ends_the_session_with_code_reason_and_latency(
    db: DbSession, signer: Signer, settings: Settings
) -> None:
    """AgentInstanceDeleted 1202 ends the session as user_absent and keeps LatencyData."""
    ingest(db, [signer.callback("AgentInstanceCreated"), signer.callback("AgentInstanceDeleted")])
    apply_pending(db, settings)
    view = sessions.describe(db, _session(db))
    assert view["state"] == "ended"
    assert view["end_code"] == 1202
    assert view["end_reason"] == "user_absent"
    [instance] = view["instances"]
    assert instance["delete_code"] == 1202
    assert instance["latency"] == EVENT_DATA["AgentInstanceDeleted"]["LatencyData"]
    assert instance["deleted_at"].startswith("2025-04-18")


def test_deleted_before_created_still_ends(db: DbSession, signer: Signer, settings: Settings) -> None:
    """A late AgentInstanceCreated never revives a session whose instance was already deleted."""
    created = signer.callback("AgentInstanceCreated")
    deleted = signer.callback("AgentInstanceDeleted", {"Code": 0})
    ingest(db, [deleted])
    apply_pending(db, settings)
    assert _session(db).state == "ended"
    ingest(db, [created])
    apply_pending(db, settings)
    session = _session(db)
    assert session.state == "ended"
    assert session.end_reason == "deleted"
    assert session.started_at is not None


def test_exceptions_are_kept_with_code_message_and_family(
    db: DbSession, signer: Signer, settings: Settings
) -> None:
    """Each Exception callback is listed on the session, classed by its code's family."""
    ingest(
        db,
        [
            signer.callback("Exception", {"Code": 2203, "Message": "LLM auth failed", "Round": 7}),
            signer.callback("Exception", {"Code": 1202, "Message": "user left"}),
        ],
    )
    apply_pending(db, settings)
    view = sessions.describe(db, _session(db))
    assert [(e["code"], e["family"], e["message"]) for e in view["exceptions"]] == [
        (2203, "llm", "LLM auth failed"),
        (1202, "agent_rtc", "user left"),
    ]


def test_exception_families_follow_the_vendor_code_table() -> None:
    """1xxx agent/RTC, 21xx ASR, 22xx LLM, 23xx TTS; anything else is 'other'."""
    assert [exception_family(c) for c in (1001, 1205, 2101, 2204, 2303, 3001)] == [
        "agent_rtc",
        "agent_rtc",
        "asr",
        "llm",
        "tts",
        "other",
    ]
    assert end_reason(1203) == "kicked_out"
    assert end_reason(4242) == "deleted_4242"


def test_speak_and_status_events_make_a_timeline_and_move_last_activity(
    db: DbSession, signer: Signer, settings: Settings
) -> None:
    """Speak and status events go on the timeline; the status with the highest Sequence wins."""
    ingest(
        db,
        [
            signer.callback("UserSpeakAction", timestamp=1_745_000_001_000),
            signer.callback("AgentSpeakAction", timestamp=1_745_000_002_000),
            signer.callback(
                "AgentInstanceStatus",
                {"Status": "IDLE", "Round": 9},
                sequence=50,
                timestamp=1_745_000_004_000,
            ),
            signer.callback(
                "AgentInstanceStatus",
                {"Status": "THINKING", "Round": 9},
                sequence=40,
                timestamp=1_745_000_003_000,
            ),
        ],
    )
    apply_pending(db, settings)
    events = db.scalars(select(TimelineEvent).order_by(TimelineEvent.sequence)).all()
    assert [e.event for e in events] == [
        "UserSpeakAction",
        "AgentSpeakAction",
        "AgentInstanceStatus",
        "AgentInstanceStatus",
    ]
    assert events[0].detail == {"UserId": "user_1", "Action": "SPEAK_BEGIN"}
    instance = db.scalars(select(AgentInstance)).one()
    assert instance.status == "IDLE"
    session = _session(db)
    assert session.last_activity_at is not None
    assert int(session.last_activity_at.timestamp()) == 1_745_000_004
    assert session.last_user_speech_at is not None
    assert int(session.last_user_speech_at.timestamp()) == 1_745_000_001
    assert session.user_id == "user_1"


def test_unknown_events_are_applied_as_done_without_effect(
    db: DbSession, signer: Signer, settings: Settings
) -> None:
    """An event ZEGO adds tomorrow is kept in the inbox and marked done, with no other effect."""
    ingest(db, [signer.callback("AgentInstanceFutureEvent", {"Whatever": [1, 2, 3]}, NewTopLevel="x")])
    assert apply_pending(db, settings) == 1
    row = db.scalars(select(InboxCallback)).one()
    assert row.state == "done"
    assert '"NewTopLevel":"x"' in row.payload
    assert db.scalars(select(AgentException)).all() == []


def test_applying_twice_has_no_second_effect(db: DbSession, signer: Signer, settings: Settings) -> None:
    """A second drain of the same stream finds nothing to do and changes nothing."""
    ingest(db, [signer.callback("Exception"), signer.callback("AgentInstanceCreated")])
    assert apply_pending(db, settings) == 2
    assert apply_pending(db, settings) == 0
    assert len(db.scalars(select(AgentException)).all()) == 1

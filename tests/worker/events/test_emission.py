"""What the app is told as a conversation is applied: each change once, turns before the end."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session as DbSession

from tests.factories import INSTANCE, Signer, apply_pending, ingest
from tests.worker.conversation import R1, R2, R3, conversation
from worker.db import make_sessionmaker, session_scope
from worker.events import outbox
from worker.inbox.drain import drain_until_done
from worker.models import AgentInstance, InboxCallback, OutboxEvent
from worker.sessions.rebuild import rebuild
from worker.settings import Settings

BAD_AUDIO = {"UserId": "user_1", "Round": 5, "SampleRate": 16000, "Format": "pcm", "Audio": "%%%not-base64"}


def told(db: DbSession) -> list[OutboxEvent]:
    db.expire_all()
    return list(db.scalars(select(OutboxEvent).order_by(OutboxEvent.id)))


def summary(events: list[OutboxEvent]) -> list[tuple[str, Any, Any]]:
    return [(e.type, e.data.get("round"), e.data.get("speaker")) for e in events]


EXPECTED = [
    ("session.created", None, None),
    ("session.active", None, None),
    ("turn.completed", R1, "user"),
    ("turn.completed", R1, "agent"),
    ("turn.completed", R2, "user"),
    ("turn.completed", R2, "agent"),
    ("turn.completed", R3, "user"),
    ("turn.completed", R3, "agent"),
    ("session.ended", None, None),
]


def test_a_conversation_applied_at_once_is_told_in_order_turns_before_the_end(
    db: DbSession, signer: Signer, settings: Settings
) -> None:
    ingest(db, conversation(signer))
    apply_pending(db, settings)

    events = told(db)
    assert summary(events) == EXPECTED
    by_type = {e.type: e for e in events}
    ended = by_type["session.ended"].data
    assert (ended["end_reason"], ended["end_code"], ended["learned"]) == ("deleted", 0, "callback")
    assert (ended["turn_count"], ended["duration_seconds"]) == (6, 60.0)
    for event in events:  # every event says which conversation it is about
        assert event.data["session_id"] == event.session_id and event.data["app_id"] == signer.app_id
        assert event.data["agent_instance_id"] == INSTANCE
        assert set(event.data) >= {"room_id", "user_id"}
    interrupted = events[5].data
    assert interrupted["interrupted"] is True
    assert interrupted["played_text"] == "Then 'Middlemarch', which"
    assert interrupted["text"] == "Then 'Middlemarch', which follows a whole town over"
    assert events[2].data["text"] == "Can you recommend a book?" and events[2].data["user_id"] == "user_1"


def test_the_same_conversation_arriving_callback_by_callback_tells_the_same_story(
    db: DbSession, signer: Signer, settings: Settings
) -> None:
    """Live, a Round is told when it is over (IDLE, or the user's next words), not at the end."""
    told_after: dict[str, int] = {}
    for payload in conversation(signer):
        ingest(db, [payload])
        apply_pending(db, settings)
        told_after.setdefault(f"{payload['Event']}:{payload['Data'].get('Status')}", len(told(db)))

    assert summary(told(db)) == EXPECTED
    # R1 was told when its IDLE came, long before the session ended.
    assert told_after["AgentInstanceStatus:IDLE"] == 4


def test_callbacks_applied_again_tell_nothing_new(db: DbSession, signer: Signer, settings: Settings) -> None:
    """A replay of the inbox (or a redelivered drain) re-applies callbacks: no cause is told twice."""
    ingest(db, conversation(signer))
    apply_pending(db, settings)
    before = len(told(db))
    db.execute(update(InboxCallback).values(state="pending"))
    db.execute(update(AgentInstance).values(completed_round=None))  # even with the marks lost
    apply_pending(db, settings)
    assert len(told(db)) == before


def test_events_written_together_keep_their_order_and_skip_a_cause_already_told(db: DbSession) -> None:
    """A drain batch writes its turn events in one statement: in the order given, repeats left out."""
    at = dt.datetime(2026, 12, 4, 10, 0, tzinfo=dt.UTC)

    def event(key: str, n: object) -> outbox.Event:
        return outbox.Event(type="turn.completed", key=key, data={"n": n}, occurred_at=at, session_id=None)

    outbox.emit(db, [event("told-before", 0)])
    batch = [event(f"turn-{n}", n) for n in range(40, 0, -1)]
    batch.insert(17, event("told-before", "again"))
    outbox.emit(db, batch)

    events = told(db)
    assert [e.data["n"] for e in events] == [0, *range(40, 0, -1)]
    assert {e.occurred_at.astimezone(dt.UTC) for e in events} == {at}


def test_event_data_with_number_keys_is_stored_as_json_would_write_it(db: DbSession) -> None:
    """orjson refuses non-string keys where the JSON column's serializer writes them as strings."""
    at = dt.datetime(2026, 12, 4, 10, 0, tzinfo=dt.UTC)
    outbox.emit(db, [outbox.Event(type="policy.decided", key="k", data={"codes": {1202: 2}}, occurred_at=at)])
    [event] = told(db)
    assert event.data == {"codes": {"1202": 2}}


def test_a_parked_callback_is_told_as_callback_failed(
    db: DbSession, signer: Signer, settings: Settings
) -> None:
    keep_audio = settings.model_copy(update={"store_user_audio": True, "apply_max_attempts": 1})
    ingest(db, [signer.callback("AgentInstanceCreated", {}), signer.callback("UserAudioData", BAD_AUDIO)])
    apply_pending(db, keep_audio)
    [failed] = [e for e in told(db) if e.type == "callback.failed"]
    assert failed.data["callback_event"] == "UserAudioData" and failed.data["attempts"] == 1
    assert failed.session_id is not None and failed.data["agent_instance_id"] == INSTANCE
    assert "base64" in failed.data["error"]


def test_rebuild_tells_nothing(clean_engine: Engine, signer: Signer, settings: Settings) -> None:
    """Rebuilding replays history; the app heard it when it happened."""
    factory = make_sessionmaker(clean_engine)
    with session_scope(factory) as db:
        ingest(db, conversation(signer))
    drain_until_done(factory, [(signer.app_id, INSTANCE)], settings=settings)
    with session_scope(factory) as db:
        before = [(e.id, e.type) for e in told(db)]
    assert len(before) == len(EXPECTED)

    assert rebuild(factory, settings) == len(conversation(signer))
    with session_scope(factory) as db:
        assert [(e.id, e.type) for e in told(db)] == before
        # The marks come back with the replay: the next live IDLE tells nothing twice.
        assert db.scalars(select(AgentInstance.completed_round)).one() == 2**63 - 1


def test_readers_never_pass_an_event_whose_transaction_is_still_open(clean_engine: Engine) -> None:
    """Postgres: an event with a lower id committed after a higher one is still read, and in order."""
    if clean_engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: commit order is id order")
    factory = make_sessionmaker(clean_engine)
    now = outbox.START

    def event(name: str) -> outbox.Event:
        import datetime as dt

        return outbox.Event(type="session.created", key=name, data={}, occurred_at=dt.datetime.now(dt.UTC))

    slow, fast, reader = factory(), factory(), factory()
    try:
        outbox.emit(slow, [event("slow")])  # takes the lower id, commits last
        outbox.emit(fast, [event("fast")])
        fast.commit()
        assert outbox.after(reader, now) == []  # "fast" waits behind the open transaction
        reader.rollback()
        slow.commit()
        read = outbox.after(reader, now)
        assert [e.dedup_key for e in read] == ["slow", "fast"]
        assert outbox.after(reader, outbox.position(reader, read[-1])) == []
    finally:
        for db in (slow, fast, reader):
            db.close()

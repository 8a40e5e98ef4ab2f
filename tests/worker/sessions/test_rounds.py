"""Per-Round marks and turn counts: what the drain keeps so that stats and filters need not count."""

from __future__ import annotations

import datetime as dt
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

from sqlalchemy import delete, select, text, update
from sqlalchemy.orm import Session as DbSession

from tests.factories import Signer, apply_pending, ingest
from tests.seeded import SEEDS, seed
from worker.models import COZE_APP_ID, AgentInstance, Round, Session, SessionState, Turn
from worker.sessions import coze_rooms
from worker.sessions.coze_rooms import Message, Watch
from worker.settings import Settings

BASE = 1_800_000_000_000
MIGRATIONS = Path(__file__).resolve().parents[3] / "migrations" / "versions"


def at(offset_ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp((BASE + offset_ms) / 1000, dt.UTC)


def script(signer: Signer, instance: str) -> list[dict[str, Any]]:
    """A greeting, a Round where the user pauses and the agent's text beats its voice, a Round
    nobody answered; with events that mark nothing (SPEAK_BEGIN, THINKING, no Round)."""

    def cb(offset: int, event: str, data: dict[str, object], seq: int) -> dict[str, Any]:
        return signer.callback(event, data, instance=instance, sequence=seq, timestamp=BASE + offset)

    return [
        cb(0, "AgentInstanceCreated", {"CreatedTimestamp": BASE}, 1),
        cb(100, "AgentInstanceStatus", {"Status": "SPEAKING", "Round": 1}, 2),
        cb(150, "LLMResult", {"Round": 1, "Text": "Hello!"}, 3),
        cb(1000, "UserSpeakAction", {"UserId": "u", "Action": "SPEAK_BEGIN", "Round": 2}, 4),
        cb(1500, "UserSpeakAction", {"UserId": "u", "Action": "SPEAK_END", "Round": 2}, 5),
        cb(1800, "UserSpeakAction", {"UserId": "u", "Action": "SPEAK_END", "Round": 2}, 6),
        cb(1900, "AgentInstanceStatus", {"Status": "THINKING", "Round": 2}, 7),
        cb(2300, "LLMResult", {"Round": 2, "Text": "Sure."}, 8),
        cb(2450, "AgentInstanceStatus", {"Status": "SPEAKING", "Round": 2}, 9),
        cb(2500, "LLMResult", {"Round": 2, "Text": "Here it is."}, 10),
        cb(2600, "AgentInstanceStatus", {"Status": "SPEAKING", "Round": 2}, 11),
        cb(3000, "UserSpeakAction", {"UserId": "u", "Action": "SPEAK_END"}, 12),
        cb(4000, "UserSpeakAction", {"UserId": "u", "Action": "SPEAK_END", "Round": 3}, 13),
    ]


def marks(db: DbSession, instance: str) -> list[tuple[Any, ...]]:
    rows = db.execute(
        select(Round.round, Round.user_speak_end_at, Round.agent_speaking_at, Round.first_llm_ts)
        .join(AgentInstance, AgentInstance.id == Round.instance_id)
        .where(AgentInstance.agent_instance_id == instance)
        .order_by(Round.round)
    )
    return [tuple(row) for row in rows]


def test_a_rounds_marks_are_the_same_in_any_order_and_any_batching(
    db: DbSession, signer: Signer, settings: Settings
) -> None:
    """Last SPEAK_END, first SPEAKING, first LLMResult: all at once, or backwards one by one."""
    ingest(db, script(signer, "in-order"))
    apply_pending(db, settings, instance="in-order")
    for payload in reversed(script(signer, "backwards")):
        ingest(db, [payload])
        apply_pending(db, settings, instance="backwards")
    expected = [
        (1, None, at(100), BASE + 150),
        (2, at(1800), at(2450), BASE + 2300),
        (3, at(4000), None, None),
    ]
    assert marks(db, "in-order") == expected
    assert marks(db, "backwards") == expected


def _migration() -> ModuleType:
    """Revision 0012, whose backfill derives marks and counts from the stored rows."""
    path = next(MIGRATIONS.glob("*_0012_*.py"))
    spec = importlib.util.spec_from_file_location("_roomwarden_0012_test", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_migration_derives_what_the_drain_kept(db: DbSession, settings: Settings) -> None:
    """Rounds and counts filled from the stored timeline, sentences and turns (an upgraded
    database) equal what the drain kept while applying the seeded conversations."""
    seed(db, settings)
    kept_rounds = db.execute(select(Round.__table__).order_by(Round.instance_id, Round.round)).all()
    counts = select(Session.id, Session.user_turns, Session.agent_turns, Session.interrupted_turns)
    kept_counts = db.execute(counts.order_by(Session.id)).all()
    assert len(kept_rounds) == sum(len(s.rounds) for s in SEEDS)
    assert any(c.interrupted_turns for c in kept_counts)

    migration = _migration()
    db.execute(delete(Round))
    db.execute(update(Session).values(user_turns=0, agent_turns=0, interrupted_turns=0))
    db.execute(text(migration.rounds_backfill(db.get_bind().dialect.name)))
    db.execute(text(migration.COUNT_TURNS))
    assert db.execute(select(Round.__table__).order_by(Round.instance_id, Round.round)).all() == kept_rounds
    assert db.execute(counts.order_by(Session.id)).all() == kept_counts


def test_each_session_counts_its_turns_by_speaker_and_its_interruptions(
    db: DbSession, settings: Settings
) -> None:
    """The counts say what the seeded conversations did, and what the turns table holds."""
    seed(db, settings)
    for s in SEEDS:
        row = db.scalars(select(Session).where(Session.id == s.session_id)).one()
        assert (row.user_turns, row.agent_turns, row.interrupted_turns) == (
            len(s.rounds),
            len(s.rounds),
            sum(r.played is not None for r in s.rounds),
        )
        turns = db.scalars(select(Turn).where(Turn.session_id == s.session_id)).all()
        assert row.user_turns + row.agent_turns == len(turns)


def test_an_interruption_heard_twice_counts_once(db: DbSession, signer: Signer, settings: Settings) -> None:
    """ZEGO may send Interrupted twice for one Round (a retry): one interrupted turn."""
    ingest(db, script(signer, "cut")[:10])
    cut = {"Round": 2, "Reason": 1, "PlayedText": "Sure."}
    for seq in (20, 21):
        ingest(db, [signer.callback("Interrupted", cut, instance="cut", sequence=seq, timestamp=BASE + 2700)])
        apply_pending(db, settings, instance="cut")
    session = db.scalars(
        select(Session).join(AgentInstance).where(AgentInstance.agent_instance_id == "cut")
    ).one()
    assert (session.user_turns, session.agent_turns, session.interrupted_turns) == (0, 2, 1)


def test_a_coze_rooms_turns_are_counted_as_its_messages_are_written(db: DbSession) -> None:
    """Coze sends no callbacks: its turns are written from the room's messages, and counted there,
    a message that adds to a turn already written counting nothing."""
    now = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)
    room = Session(
        id="coze-room", app_id=COZE_APP_ID, origin="api", state=SessionState.ACTIVE, provider="coze",
        created_at=now, started_at=now, conversation_id="conv-1",
    )  # fmt: skip
    db.add(room)
    db.flush()
    db.add(
        AgentInstance(app_id=COZE_APP_ID, agent_instance_id="coze-room", session_id=room.id, state="active")
    )
    db.flush()
    messages = [
        Message("m1", "1001", "user", "Hi", int(now.timestamp())),
        Message("m2", "1001", "assistant", "Hello!", int(now.timestamp()) + 1),
        Message("m3", "1001", "assistant", "How can I help?", int(now.timestamp()) + 2),
        Message("m4", "1002", "user", "Bye", int(now.timestamp()) + 3),
    ]
    watch = Watch(session_id=room.id, conversation_id="conv-1", cursor=None)
    assert coze_rooms.record(db, watch, messages, now=now, silence_seconds=600) is None
    db.flush()  # as the watcher's commit would
    db.expire(room)
    assert (room.user_turns, room.agent_turns, room.interrupted_turns) == (2, 1, 0)
    assert len(db.scalars(select(Turn).where(Turn.session_id == room.id)).all()) == 3

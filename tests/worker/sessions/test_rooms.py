"""ZEGO's RTC room callbacks applied through the inbox: who is in the room, and what follows."""

from __future__ import annotations

import datetime as dt
import random

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from tests.factories import APP_ID, RoomSigner, ingest_rtc
from tests.worker.policies.rows import deleted, live_session
from worker.db import utcnow
from worker.inbox.drain import DrainResult, drain_streams
from worker.inbox.rtc_callbacks import ordering_key
from worker.models import ActionKind, ActionState, InboxCallback, PolicyAction, RoomUser, Session
from worker.policies.decisions import Decision, record
from worker.sessions.lifecycle import refresh
from worker.settings import Settings

ROOM = (APP_ID, ordering_key("room_1"))


def drain_room(db: DbSession, settings: Settings) -> DrainResult:
    result = drain_streams(db, streams=[ROOM], settings=settings)
    db.flush()
    return result


def ms(ago: float) -> int:
    return int((utcnow() - dt.timedelta(seconds=ago)).timestamp() * 1000)


def test_a_user_who_leaves_and_returns_is_followed_and_the_absence_billed(
    db: DbSession, settings: Settings
) -> None:
    """The agent starts 5 s before the user logs in; the user leaves for 20 s and comes back:
    present again, 25 agent-seconds billed with nobody there."""
    session, _agent = live_session(db, started_ago=60)
    room = RoomSigner()
    ingest_rtc(db, [room.login(at_ms=ms(55)), room.logout(at_ms=ms(40), reason="2")])
    assert drain_room(db, settings).applied == 2
    db.refresh(session)
    assert (session.user_present, session.user_logout_reason) == (False, "2")
    assert session.user_absent_since is not None and session.no_user_seconds is not None
    assert 44.9 < session.no_user_seconds < 47  # 5 s, and the open absence until now while it lasts

    ingest_rtc(db, [room.login(at_ms=ms(20))])
    drain_room(db, settings)
    db.refresh(session)
    assert (session.user_present, session.user_absent_since) == (True, None)
    assert (
        session.no_user_seconds is not None and 24.9 < session.no_user_seconds < 27
    )  # + the test's own time
    row = db.get_one(RoomUser, (APP_ID, "room_1", "user_1"))
    assert [c[1] for c in row.changes] == ["in", "out", "in"]


def test_reordered_and_duplicated_room_callbacks_end_the_same(db: DbSession, settings: Settings) -> None:
    """ZEGO's retries arrive late and twice: however shuffled, one presence and one figure."""
    room = RoomSigner()
    told = [room.login(at_ms=ms(50)), room.logout(at_ms=ms(40)), room.login(at_ms=ms(30))]
    told += [room.logout(at_ms=ms(10), reason="1")]
    figures = set()
    for attempt in range(3):
        session, agent = live_session(db, started_ago=60)
        session.room_id = agent.room_id = f"room_r{attempt}"
        shuffled = RoomSigner(f"room_r{attempt}")
        payloads = [{**p, "room_id": f"room_r{attempt}"} for p in told]
        order = [*payloads, shuffled.resign(random.choice(payloads))]
        random.Random(attempt).shuffle(order)
        for payload in order:  # one at a time: each in its own drain, as late arrivals are
            ingest_rtc(db, [shuffled.resign(payload)])
            drain_streams(db, streams=[(APP_ID, ordering_key(f"room_r{attempt}"))], settings=settings)
        deleted(db, agent, 0, ago=0)
        refresh(db, session, learned="callback")
        db.flush()
        assert (session.user_present, session.user_logout_reason) == (False, "1")
        figures.add(round(session.no_user_seconds or -1))
    assert figures == {30}  # 10 before the first login, 10 out, 10 since the last logout


def test_callbacks_heard_before_the_session_count_at_its_end(db: DbSession, settings: Settings) -> None:
    """The user was in the room before the agent came and never left: the session ends with 0 s."""
    room = RoomSigner()
    ingest_rtc(db, [room.login(at_ms=ms(120))])
    drain_room(db, settings)
    session, agent = live_session(db, started_ago=60)
    assert session.user_present is None  # not told yet: nothing changed since it started
    deleted(db, agent, 0, ago=0)
    refresh(db, session, learned="callback")
    assert (session.state, session.no_user_seconds) == ("ended", 0.0)


def test_without_room_callbacks_the_figure_is_unknown(db: DbSession) -> None:
    """A deployment whose ZEGO console sends no room callbacks: NULL, never a made-up 0."""
    session, agent = live_session(db)
    deleted(db, agent, 0, ago=0)
    refresh(db, session, learned="callback")
    assert session.state == "ended" and session.no_user_seconds is None


def test_a_login_wakes_the_wait_for_the_user_at_once(db: DbSession, settings: Settings) -> None:
    """A 1202 wait polls every minute; the room_login makes it run now, trusting the login."""
    session, agent = live_session(db)
    room = RoomSigner()
    ingest_rtc(db, [room.login(at_ms=ms(100)), room.logout(at_ms=ms(90))])
    drain_room(db, settings)
    deleted(db, agent, 1202, ago=1)
    decision = Decision(
        ActionKind.AWAIT_USER,
        "user_absent",
        policy="on_deleted",
        trigger_key=f"await:{session.id}",
        dry_run=False,
        inputs={"wait_seconds": 300, "poll_seconds": 60},
        agent_instance_id=agent.agent_instance_id,
        recovering=True,
    )
    action = record(db, session, decision, now=utcnow())
    assert action is not None
    action.not_before = utcnow() + dt.timedelta(seconds=60)  # its next poll
    refresh(db, session, learned="policy")

    ingest_rtc(db, [room.login()])
    result = drain_room(db, settings)

    db.refresh(action)
    assert [action_id for action_id, _ in result.actions] == [action.id]
    assert action.not_before <= utcnow() and action.state == ActionState.PENDING
    assert action.result is not None and action.result["room_login"]["user_update_seq"] == 3


def test_a_rejoin_on_a_new_stream_asks_the_agent_to_follow_it(db: DbSession, settings: Settings) -> None:
    """The agent pulls us_1; the user comes back publishing us_2: one follow_stream action."""
    session, agent = live_session(db)
    room = RoomSigner()
    ingest_rtc(db, [room.login(), room.stream("stream_create", "us_1")])
    assert drain_room(db, settings).actions == []  # the stream the agent already pulls

    ingest_rtc(db, [room.stream("stream_close", "us_1"), room.stream("stream_create", "us_2")])
    result = drain_room(db, settings)
    follow = db.scalars(select(PolicyAction).where(PolicyAction.session_id == session.id)).one()
    assert (follow.kind, follow.reason, follow.agent_instance_id) == (
        ActionKind.FOLLOW_STREAM,
        "user_new_stream",
        agent.agent_instance_id,
    )
    assert follow.inputs["user_stream_id"] == "us_2" and [a for a, _ in result.actions] == [follow.id]
    # The same stream_create again (a retry) decides nothing new.
    ingest_rtc(db, [room.resign(room.stream("stream_create", "us_2"))])
    drain_room(db, settings)
    assert db.scalars(select(PolicyAction).where(PolicyAction.session_id == session.id)).all() == [follow]


def test_other_users_and_sessions_nobody_started_are_not_steered(db: DbSession, settings: Settings) -> None:
    """Another user's stream changes nothing; a session first heard of through callbacks has no
    stream roomwarden chose, so none is followed."""
    mine, _ = live_session(db, origin="callback")
    room = RoomSigner()
    ingest_rtc(db, [room.login("someone_else"), room.stream("stream_create", "x_1", "someone_else")])
    ingest_rtc(db, [room.login(), room.stream("stream_create", "us_9")])
    result = drain_room(db, settings)
    assert result.actions == [] and result.applied == 4
    db.refresh(mine)
    assert mine.user_present is True


def test_a_callback_for_an_empty_room_is_kept_and_applied(db: DbSession, settings: Settings) -> None:
    """No session in the room yet: the inbox row is done and the presence waits in room_users."""
    room = RoomSigner("room_new")
    ingest_rtc(db, [room.login("u7")])
    drain_streams(db, streams=[(APP_ID, ordering_key("room_new"))], settings=settings)
    states = db.scalars(select(InboxCallback.state).where(InboxCallback.agent_instance_id == "rtc:room_new"))
    assert list(states) == ["done"]
    assert db.get_one(RoomUser, (APP_ID, "room_new", "u7")).present is True
    assert db.scalars(select(Session).where(Session.room_id == "room_new")).all() == []


def test_a_rebuild_leaves_room_callbacks_retention_emptied_and_what_they_made(
    db: DbSession, settings: Settings
) -> None:
    """After retention emptied a login's payload, a rebuild's reset keeps that row done (it could
    not be applied again) and the presence it made stays."""
    from worker.sessions.rebuild import reset_derived

    room = RoomSigner()
    ingest_rtc(db, [room.login()])
    drain_room(db, settings)
    row = db.scalars(select(InboxCallback).where(InboxCallback.agent_instance_id == ROOM[1])).one()
    row.payload, row.purged_at = "{}", utcnow()  # what retention does
    db.flush()
    reset_derived(db)
    db.refresh(row)
    assert row.state == "done"
    assert drain_room(db, settings).applied == 0
    assert db.get_one(RoomUser, (APP_ID, "room_1", "user_1")).present is True


def test_the_timeline_shows_the_user_leave_and_come_back(db: DbSession, settings: Settings) -> None:
    """In the session's timeline: out, then in again; a login before the session started is not
    the session's, and a retried logout shows once."""
    from worker.analysis.detail import timeline

    session, _ = live_session(db, started_ago=60)
    room = RoomSigner()
    first, logout, back = room.login(at_ms=ms(90)), room.logout(at_ms=ms(30)), room.login(at_ms=ms(20))
    ingest_rtc(db, [first, back, logout])
    ingest_rtc(db, [room.resign(logout)])
    drain_room(db, settings)
    told = [(e["event"], e["detail"]) for e in timeline(db, session.id) if e["event"].startswith("room_")]
    assert told == [
        ("room_logout", {"user_id": "user_1", "user_update_seq": 2}),
        ("room_login", {"user_id": "user_1", "user_update_seq": 3}),
    ]

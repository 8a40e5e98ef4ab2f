"""The BI views as a dashboard sees them: seeded data through bi.* (bi_* on SQLite), nothing secret.

On Postgres a BI tool logs in as a role that is a member of ``roomwarden_bi``: it reads the
views and nothing else.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text, update
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import Session as DbSession

from tests.seeded import SEEDS, seed, seed_committed
from worker.db import make_sessionmaker
from worker.models import PolicyAction, Session
from worker.settings import Settings

VIEWS = ("sessions", "turns", "events", "latency")
# Nothing in a view may be named like what holds secrets or raw vendor payloads.
SECRET_COLUMNS = {"spec", "join_info", "payload", "signature", "inputs", "result", "meta_info", "token"}


def view(db: DbSession | Any, name: str) -> str:
    return f"bi.{name}" if db.bind.dialect.name == "postgresql" else f"bi_{name}"


def select_all(db: DbSession, name: str, order: str = "") -> list[dict[str, Any]]:
    sql = f"SELECT * FROM {view(db, name)}" + (f" ORDER BY {order}" if order else "")
    return [dict(row) for row in db.execute(text(sql)).mappings()]


def test_sessions_view_has_one_row_per_session_with_counts_and_duration(
    db: DbSession, settings: Settings
) -> None:
    """bi.sessions: start, duration, turns, interruptions and exceptions as the seed plan has them."""
    seed(db, settings)
    rows = {r["session_id"]: r for r in select_all(db, "sessions")}
    assert set(rows) == {s.session_id for s in SEEDS}
    for s in SEEDS:
        row = rows[s.session_id]
        assert row["provider"] == (s.provider or "zego")
        assert (row["app_id"], row["room_id"], row["user_id"], row["agent_id"]) == (
            s.app_id,
            s.room_id,
            s.user_id,
            s.agent_id,
        )
        assert row["duration_seconds"] == s.duration_seconds
        assert (row["turns"], row["user_turns"], row["agent_turns"]) == (
            s.turns,
            len(s.rounds),
            len(s.rounds),
        )
        assert row["interruptions"] == sum(r.played is not None for r in s.rounds)
        assert row["exceptions"] == len(s.exceptions)
        assert (row["instances"], row["end_code"]) == (1, s.delete_code)
        assert str(row["started_at"])[:19] == s.started_at.strftime("%Y-%m-%d %H:%M:%S")


def test_sessions_view_shows_time_with_no_user_where_it_is_known(db: DbSession, settings: Settings) -> None:
    """A dashboard sums no_user_seconds from bi.sessions: 40 s for the session whose user left the
    room, NULL for those no room callback told about, so an average skips them."""
    seed(db, settings)
    left = SEEDS[1].session_id
    db.execute(update(Session).where(Session.id == left).values(no_user_seconds=40.0))
    rows = {r["session_id"]: r["no_user_seconds"] for r in select_all(db, "sessions")}
    assert rows == {s.session_id: 40.0 if s.session_id == left else None for s in SEEDS}
    average = db.execute(text(f"SELECT avg(no_user_seconds) FROM {view(db, 'sessions')}")).scalar()
    assert average == 40.0


def test_turns_view_has_every_turn_with_its_instance(db: DbSession, settings: Settings) -> None:
    """bi.turns: what each side said, which were cut off and what the user heard of them."""
    seed(db, settings)
    rows = select_all(db, "turns", "turn_id")
    assert len(rows) == sum(s.turns for s in SEEDS)
    said = {(r["agent_instance_id"], r["round"], r["speaker"]): r for r in rows}
    for s in SEEDS:
        for i, r in enumerate(s.rounds):
            user = said[(s.key, s.round_number(i), "user")]
            agent = said[(s.key, s.round_number(i), "agent")]
            assert (user["text"], user["user_id"], user["session_id"]) == (r.user, s.user_id, s.session_id)
            assert bool(agent["interrupted"]) == (r.played is not None)
            assert agent["played_text"] == r.played


def test_events_view_streams_timeline_exceptions_instances_and_actions(
    db: DbSession, settings: Settings
) -> None:
    """bi.events: every exception with its code, every deletion with its code, speech and status changes."""
    seed(db, settings)
    auth_failed = next(s for s in SEEDS if any(code == 2203 for code, _ in s.exceptions))
    decided = dt.datetime(2026, 11, 17, 16, 46, tzinfo=dt.UTC)
    db.add(
        PolicyAction(
            session_id=auth_failed.session_id,
            kind="end",
            reason="llm_auth_failed",
            policy="on_exception",
            trigger_key=f"exception:{auth_failed.key}:2203",
            app_id=auth_failed.app_id,
            agent_instance_id=auth_failed.key,
            inputs={"code": 2203, "api_key_hint": "sk-not-for-dashboards"},
            state="done",
            not_before=decided,
            created_at=decided,
        )
    )
    db.flush()
    rows = select_all(db, "events")
    sources = {r["source"] for r in rows}
    assert {"timeline", "exception", "instance"} <= sources
    exceptions = sorted((r["session_id"], r["code"]) for r in rows if r["source"] == "exception")
    assert exceptions == sorted((s.session_id, code) for s in SEEDS for code, _ in s.exceptions)
    deletions = {r["session_id"]: r["code"] for r in rows if r["event"] == "AgentInstanceDeleted"}
    assert deletions == {s.session_id: s.delete_code for s in SEEDS if s.delete_code is not None}
    speak_ends = [r for r in rows if r["event"] == "UserSpeakAction" and r["status"] == "SPEAK_END"]
    assert len(speak_ends) == sum(len(s.rounds) for s in SEEDS)
    actions = [r for r in rows if r["source"] == "policy_action"]
    assert [
        (a["session_id"], a["agent_instance_id"], a["event"], a["reason"], a["status"], a["detail"])
        for a in actions
    ] == [(auth_failed.session_id, auth_failed.key, "end", "llm_auth_failed", "done", "on_exception")]
    assert str(actions[0]["at"])[:19] == "2026-11-17 16:46:00"
    assert "sk-not-for-dashboards" not in repr(rows)


def test_latency_view_has_response_times_per_round_and_latency_data_per_instance(
    db: DbSession, settings: Settings
) -> None:
    """bi.latency: SPEAK_END to first output for each round; LLMTTFT and friends for each instance."""
    seed(db, settings)
    rows = select_all(db, "latency")
    rounds = {(r["agent_instance_id"], r["round"]): r["response_ms"] for r in rows if r["kind"] == "round"}
    assert rounds == {
        (s.key, s.round_number(i)): float(r.response_ms) for s in SEEDS for i, r in enumerate(s.rounds)
    }
    instances = {r["agent_instance_id"]: r for r in rows if r["kind"] == "instance"}
    assert set(instances) == {s.key for s in SEEDS if s.latency}
    for s in SEEDS:
        if s.latency:
            row = instances[s.key]
            assert (row["llm_ttft_ms"], row["tts_first_frame_ms"], row["total_cost_ms"], row["llm_tps"]) == (
                s.latency["LLMTTFT"],
                s.latency["TTSAudioFirstFrameTime"],
                s.latency["TotalCost"],
                s.latency["LLMTPS"],
            )


def test_no_view_has_a_secret_column(db: DbSession) -> None:
    """Specs, join info, payloads and policy inputs stay out of every view."""
    for name in VIEWS:
        columns = set(db.execute(text(f"SELECT * FROM {view(db, name)} LIMIT 0")).keys())
        assert columns and not columns & SECRET_COLUMNS, (name, columns & SECRET_COLUMNS)


# --------------------------------------------------------------------------- the role (Postgres)


@pytest.fixture
def bi_login(clean_engine: Engine, settings: Settings) -> Iterator[Engine]:
    """A LOGIN role that is a member of roomwarden_bi, as an operator would make for Metabase."""
    if clean_engine.dialect.name != "postgresql":
        pytest.skip("roles are Postgres's")
    seed_committed(make_sessionmaker(clean_engine), settings)
    name = f"rw_bi_test_{uuid.uuid4().hex[:12]}"
    with clean_engine.begin() as conn:
        conn.execute(text(f"CREATE ROLE {name} LOGIN IN ROLE roomwarden_bi"))
    login = create_engine(clean_engine.url.set(username=name, password=None))
    try:
        yield login
    finally:
        login.dispose()
        with clean_engine.begin() as conn:
            conn.execute(text(f"DROP ROLE {name}"))


def test_a_bi_login_reads_every_view(bi_login: Engine) -> None:
    """Member of roomwarden_bi: each view answers with the seeded data."""
    with bi_login.connect() as conn:
        counts = {name: conn.execute(text(f"SELECT count(*) FROM bi.{name}")).scalar_one() for name in VIEWS}
        latest = conn.execute(text("SELECT max(started_at) FROM bi.sessions")).scalar_one()
    assert counts["sessions"] == len(SEEDS)
    assert counts["turns"] == sum(s.turns for s in SEEDS)
    assert counts["events"] > 0 and counts["latency"] > 0
    assert latest == max(s.start for s in SEEDS).astimezone(dt.UTC)


@pytest.mark.parametrize("table", ["inbox", "sessions", "policy_actions", "turns", "agent_instances"])
def test_a_bi_login_cannot_read_the_tables(bi_login: Engine, table: str) -> None:
    """The tables themselves (the inbox's payloads, the sessions' specs) are out of its reach."""
    with bi_login.connect() as conn, pytest.raises(ProgrammingError, match="permission denied"):
        conn.execute(text(f"SELECT * FROM public.{table} LIMIT 1"))


def test_the_bi_role_itself_cannot_log_in(clean_engine: Engine) -> None:
    """roomwarden_bi is a group: only its members log in."""
    if clean_engine.dialect.name != "postgresql":
        pytest.skip("roles are Postgres's")
    with clean_engine.connect() as conn:
        can_login = conn.execute(
            text("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'roomwarden_bi'")
        ).scalar_one()
    assert can_login is False

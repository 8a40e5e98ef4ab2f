"""Per-Round marks (the ``rounds`` table): what a Round's response time is computed from, kept as
callbacks are applied.

A response time runs from the user's last ``SPEAK_END`` of a Round to the agent's first output,
its first ``SPEAKING`` status or first ``LLMResult``, whichever came first
(worker/analysis/latency.py). Those are a max and two mins over rows the drain stores anyway
(timeline events, agent sentences), so the drain folds each batch's into one row per Round:
stats then read Rounds instead of grouping a million timeline rows on every request.

Max and min do not care about order or repetition, so late and reordered callbacks, and a
``rebuild`` that applies everything again, land on the same row. A batch's marks are merged in
memory and written with one upsert that keeps the later SPEAK_END and the earlier outputs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import ColumnElement, and_, case, or_
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session as DbSession

from worker.models import Round

if TYPE_CHECKING:
    from worker.sessions.lifecycle import Stream


@dataclass(slots=True)
class Marks:
    """One Round's marks as far as this batch saw them."""

    user_speak_end_at: dt.datetime | None = None
    agent_speaking_at: dt.datetime | None = None
    first_llm_ts: int | None = None


def heard(stream: Stream, event: str, data: dict[str, Any], round_: int | None, at: dt.datetime) -> None:
    """A timeline event: the user's SPEAK_END or the agent's SPEAKING status marks its Round."""
    if round_ is None:
        return
    if event == "UserSpeakAction" and data.get("Action") == "SPEAK_END":
        marks = _marks(stream, round_)
        if marks.user_speak_end_at is None or at > marks.user_speak_end_at:
            marks.user_speak_end_at = at
    elif event == "AgentInstanceStatus" and data.get("Status") == "SPEAKING":
        marks = _marks(stream, round_)
        if marks.agent_speaking_at is None or at < marks.agent_speaking_at:
            marks.agent_speaking_at = at


def said(stream: Stream, round_: int, callback_ts: int) -> None:
    """An LLMResult sentence of the Round, at ZEGO's callback time in milliseconds."""
    marks = _marks(stream, round_)
    if marks.first_llm_ts is None or callback_ts < marks.first_llm_ts:
        marks.first_llm_ts = callback_ts


def _marks(stream: Stream, round_: int) -> Marks:
    marks = stream.rounds.get(round_)
    if marks is None:
        marks = stream.rounds[round_] = Marks()
    return marks


def settle(db: DbSession, streams: list[Stream]) -> None:
    """Write the marks these streams gathered: one statement for the whole batch."""
    rows = [
        {
            "instance_id": stream.instance.id,
            "round": round_,
            "user_speak_end_at": marks.user_speak_end_at,
            "agent_speaking_at": marks.agent_speaking_at,
            "first_llm_ts": marks.first_llm_ts,
        }
        for stream in streams
        for round_, marks in stream.rounds.items()
    ]
    for stream in streams:
        stream.rounds.clear()
    if not rows:
        return
    if db.get_bind().dialect.name == "postgresql":
        # One JSON parameter, unpacked by the server (as worker/inbox/recordsets.py inserts).
        db.connection().exec_driver_sql(_POSTGRES_UPSERT, {"rows": orjson.dumps(rows).decode()})
        return
    statement = sqlite.insert(Round)
    db.execute(
        statement.on_conflict_do_update(
            index_elements=[Round.instance_id, Round.round],
            set_={
                "user_speak_end_at": _later(Round.user_speak_end_at, statement.excluded.user_speak_end_at),
                "agent_speaking_at": _earlier(Round.agent_speaking_at, statement.excluded.agent_speaking_at),
                "first_llm_ts": _earlier(Round.first_llm_ts, statement.excluded.first_llm_ts),
            },
        ),
        rows,
    )


# greatest() and least() skip NULLs on Postgres; SQLite's max() and min() would return NULL.
_POSTGRES_UPSERT = (
    "INSERT INTO rounds (instance_id, round, user_speak_end_at, agent_speaking_at, first_llm_ts)"
    " SELECT instance_id, round, user_speak_end_at, agent_speaking_at, first_llm_ts"
    " FROM json_to_recordset(%(rows)s::json) AS u(instance_id bigint, round bigint,"
    " user_speak_end_at timestamptz, agent_speaking_at timestamptz, first_llm_ts bigint)"
    " ON CONFLICT (instance_id, round) DO UPDATE SET"
    " user_speak_end_at = greatest(rounds.user_speak_end_at, excluded.user_speak_end_at),"
    " agent_speaking_at = least(rounds.agent_speaking_at, excluded.agent_speaking_at),"
    " first_llm_ts = least(rounds.first_llm_ts, excluded.first_llm_ts)"
)


def _later(stored: Any, new: Any) -> ColumnElement[Any]:
    return case((or_(stored.is_(None), and_(new.is_not(None), new > stored)), new), else_=stored)


def _earlier(stored: Any, new: Any) -> ColumnElement[Any]:
    return case((or_(stored.is_(None), and_(new.is_not(None), new < stored)), new), else_=stored)

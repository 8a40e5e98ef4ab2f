"""Per-round response time: from the end of the user's speech to the agent's first output.

ZEGO reports latency per instance only (``LatencyData`` on deletion). The time a user actually
waits is visible per Round in what roomwarden stores: the user's ``SPEAK_END`` (timeline) and the
agent's first output of the same Round, whichever came first of its first ``LLMResult``
(``agent_sentences.callback_ts``) and its ``SPEAKING`` status (timeline).

Everything is aggregated in SQL, one row per (instance, Round) with GROUP BY, so stats over many
sessions read rounds, not events; only the subtraction of two times is done in Python.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Float,
    Select,
    and_,
    case,
    cast,
    extract,
    func,
    literal,
    or_,
    select,
    true,
    union,
)
from sqlalchemy.orm import Session as DbSession

from worker.db import from_ms
from worker.models import AgentInstance, AgentSentence, TimelineEvent


@dataclass(frozen=True, slots=True)
class RoundLatency:
    session_id: str
    agent_instance_id: str
    round: int
    # The last SPEAK_END of the Round: a user who pauses and goes on is still speaking.
    user_speak_end_at: dt.datetime | None
    first_output_at: dt.datetime | None
    # None when either side is missing (a greeting has no user speech, an interrupted Round may
    # have no output) or when the output came before the speech ended (the agent answered an
    # earlier pause of a user who then went on speaking): neither is a response time.
    response_ms: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "agent_instance_id": self.agent_instance_id,
            "round": self.round,
            "user_speak_end_at": self.user_speak_end_at.isoformat() if self.user_speak_end_at else None,
            "first_output_at": self.first_output_at.isoformat() if self.first_output_at else None,
            "response_ms": self.response_ms,
        }


def round_latencies(
    db: DbSession, *, session_id: str | None = None, sessions: Select[Any] | None = None
) -> list[RoundLatency]:
    """Every Round of one session, or of the sessions a ``SELECT sessions.id`` finds (a filter).

    Ordered by session, then instance (as first seen), then Round. With neither argument, every
    Round stored.
    """
    events = _in_scope(TimelineEvent.session_id, session_id, sessions)
    instances = select(AgentInstance.id).where(_in_scope(AgentInstance.session_id, session_id, sessions))

    # The last SPEAK_END of a Round (a user may pause and go on) and its first SPEAKING.
    speak_end = _timeline_per_round(events, func.max, "UserSpeakAction", "Action", "SPEAK_END")
    speaking = _timeline_per_round(events, func.min, "AgentInstanceStatus", "Status", "SPEAKING")
    first_llm = (
        select(
            AgentSentence.instance_id.label("instance_id"),
            AgentSentence.round.label("round"),
            func.min(AgentSentence.callback_ts).label("ts"),
        )
        .where(AgentSentence.instance_id.in_(instances))
        .group_by(AgentSentence.instance_id, AgentSentence.round)
        .subquery("first_llm")
    )
    keys = union(
        select(speak_end.c.instance_id, speak_end.c.round),
        select(speaking.c.instance_id, speaking.c.round),
        select(first_llm.c.instance_id, first_llm.c.round),
    ).subquery("keys")

    def same(sub: Any) -> ColumnElement[bool]:
        return and_(sub.c.instance_id == keys.c.instance_id, sub.c.round == keys.c.round)

    rows = db.execute(
        select(
            AgentInstance.session_id,
            AgentInstance.agent_instance_id,
            keys.c.round,
            speak_end.c.at,
            speaking.c.at,
            first_llm.c.ts,
        )
        .select_from(keys)
        .join(AgentInstance, AgentInstance.id == keys.c.instance_id)
        .outerjoin(speak_end, same(speak_end))
        .outerjoin(speaking, same(speaking))
        .outerjoin(first_llm, same(first_llm))
        .order_by(
            AgentInstance.session_id,
            AgentInstance.first_seen_at,
            AgentInstance.agent_instance_id,
            keys.c.round,
        )
    ).all()
    return [_round(*row) for row in rows]


def _in_scope(column: Any, session_id: str | None, sessions: Select[Any] | None) -> ColumnElement[bool]:
    where: list[ColumnElement[bool]] = []
    if session_id is not None:
        where.append(column == session_id)
    if sessions is not None:
        where.append(column.in_(sessions.scalar_subquery()))
    return and_(true(), *where)


def _round(
    session_id: str,
    agent_instance_id: str,
    round_: int,
    speak_end: dt.datetime | None,
    speaking: dt.datetime | None,
    first_llm_ms: int | None,
) -> RoundLatency:
    outputs = [t for t in (speaking, from_ms(first_llm_ms) if first_llm_ms is not None else None) if t]
    first_output = min(outputs) if outputs else None
    response: float | None = None
    if speak_end is not None and first_output is not None and first_output >= speak_end:
        response = (first_output - speak_end) / dt.timedelta(microseconds=1) / 1000
    return RoundLatency(
        session_id=session_id,
        agent_instance_id=agent_instance_id,
        round=round_,
        user_speak_end_at=speak_end,
        first_output_at=first_output,
        response_ms=response,
    )


def _timeline_per_round(
    events: ColumnElement[bool], aggregate: Callable[..., Any], event: str, key: str, value: str
) -> Any:
    """One time per (instance, Round) of the timeline events whose Data[key] is ``value``."""
    return (
        select(
            TimelineEvent.instance_id.label("instance_id"),
            TimelineEvent.round.label("round"),
            aggregate(TimelineEvent.at).label("at"),
        )
        .where(
            events,
            TimelineEvent.event == event,
            TimelineEvent.detail[key].as_string() == value,
            TimelineEvent.round.is_not(None),
        )
        .group_by(TimelineEvent.instance_id, TimelineEvent.round)
        .subquery(value.lower())
    )


def response_times(sessions: Select[Any] | None) -> Any:
    """The same response times as ``round_latencies``, as a subquery with one ``ms`` column per Round
    (Postgres only): stats take their percentiles in SQL rather than reading every Round.

    One pass over the timeline (the last SPEAK_END and first SPEAKING of each Round as filtered
    aggregates) left-joined to the first LLMResult: only Rounds whose speech ended can have a
    response time. The arithmetic is the Python one: the earlier output, the LLMResult's
    milliseconds as a timestamp, the difference in milliseconds when not negative.
    """
    # None: every session (an unfiltered figure needs no semi-join against the whole table).
    in_scope = _in_scope(TimelineEvent.session_id, None, sessions)
    instances = select(AgentInstance.id).where(_in_scope(AgentInstance.session_id, None, sessions))
    speak_end = and_(
        TimelineEvent.event == "UserSpeakAction", TimelineEvent.detail["Action"].as_string() == "SPEAK_END"
    )
    speaking = and_(
        TimelineEvent.event == "AgentInstanceStatus", TimelineEvent.detail["Status"].as_string() == "SPEAKING"
    )
    rounds = (
        select(
            TimelineEvent.instance_id.label("instance_id"),
            TimelineEvent.round.label("round"),
            func.max(TimelineEvent.at).filter(speak_end).label("speak_end"),
            func.min(TimelineEvent.at).filter(speaking).label("speaking"),
        )
        .where(in_scope, TimelineEvent.round.is_not(None), or_(speak_end, speaking))
        .group_by(TimelineEvent.instance_id, TimelineEvent.round)
        .subquery("rounds")
    )
    first_llm = (
        select(
            AgentSentence.instance_id.label("instance_id"),
            AgentSentence.round.label("round"),
            func.min(AgentSentence.callback_ts).label("ts"),
        )
        .where(AgentSentence.instance_id.in_(instances) if sessions is not None else true())
        .group_by(AgentSentence.instance_id, AgentSentence.round)
        .subquery("first_llm")
    )
    first_output = func.least(
        rounds.c.speaking,
        func.to_timestamp(cast(first_llm.c.ts, Float) / literal(1000.0, Float)),
        type_=DateTime(timezone=True),
    )
    elapsed = first_output - rounds.c.speak_end
    ms = case((first_output >= rounds.c.speak_end, cast(extract("epoch", elapsed) * 1000, Float)), else_=None)
    return (
        select(ms.label("ms"))
        .select_from(
            rounds.outerjoin(
                first_llm,
                and_(first_llm.c.instance_id == rounds.c.instance_id, first_llm.c.round == rounds.c.round),
            )
        )
        .where(rounds.c.speak_end.is_not(None))
        .subquery("response_times")
    )

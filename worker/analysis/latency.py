"""Per-round response time: from the end of the user's speech to the agent's first output.

ZEGO reports latency per instance only (``LatencyData`` on deletion). The time a user actually
waits is visible per Round in what roomwarden stores: the user's ``SPEAK_END`` (timeline) and the
agent's first output of the same Round, whichever came first of its first ``LLMResult``
(``agent_sentences.callback_ts``) and its ``SPEAKING`` status (timeline).

The drain keeps those three times per Round as it applies callbacks (the ``rounds`` table,
worker/sessions/rounds.py), so stats over many sessions read one row a Round, not the events;
only the subtraction of two times is done here (in SQL on Postgres: ``rounds.response_ms``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Float, Select, and_, literal_column, select, true
from sqlalchemy.orm import Session as DbSession

from worker.db import from_ms
from worker.models import AgentInstance, Round


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
    Round stored. Read from ``rounds``, which the drain keeps (worker/sessions/rounds.py).
    """
    rows = db.execute(
        select(
            AgentInstance.session_id,
            AgentInstance.agent_instance_id,
            Round.round,
            Round.user_speak_end_at,
            Round.agent_speaking_at,
            Round.first_llm_ts,
        )
        .join(AgentInstance, AgentInstance.id == Round.instance_id)
        .where(_in_scope(AgentInstance.session_id, session_id, sessions))
        .order_by(
            AgentInstance.session_id,
            AgentInstance.first_seen_at,
            AgentInstance.agent_instance_id,
            Round.round,
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


# Postgres only: the generated column of migration 0012 (``_round``'s arithmetic in SQL), not modelled.
RESPONSE_MS = literal_column("rounds.response_ms", Float)


def response_times(sessions: Select[Any] | None) -> Any:
    """The same response times as ``round_latencies``, as a subquery with one ``ms`` column per Round
    (Postgres only): stats take their percentiles in SQL rather than reading every Round.

    Each Round's time is stored with it (``rounds.response_ms``); ``sessions`` None is every
    session (an unfiltered figure needs no semi-join against the whole table).
    """
    times = select(RESPONSE_MS.label("ms")).select_from(Round.__table__)
    if sessions is not None:
        instances = select(AgentInstance.id).where(AgentInstance.session_id.in_(sessions.scalar_subquery()))
        times = times.where(Round.instance_id.in_(instances))
    return times.where(RESPONSE_MS.is_not(None)).subquery("response_times")

"""Figures over the sessions a filter finds: volume, durations, outcomes, interruptions, latency, cost.

Counts are SQL aggregates (GROUP BY). Durations, latencies and response times are read as one
number per session, instance or Round (never per callback) and their percentiles computed here,
because SQLite has no ``percentile_cont``; the method is Postgres's ``percentile_cont`` (and
numpy's default): linear interpolation between the two closest ranks, p = (n - 1) * q.

Durations and cost count ended sessions that had a live agent: ``ended_at - started_at``, the
same duration as ``summary.summaries``. A live session has no duration yet.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import and_, case, distinct, func, select
from sqlalchemy.orm import Session as DbSession

from worker.analysis import catalog, latency
from worker.models import AgentException, AgentInstance, Provider, Session, SessionState, Turn

# agent_instances.latency (AgentInstanceDeleted's LatencyData) fields, by the name stats uses.
LATENCY_FIELDS = {
    "llm_ttft_ms": "LLMTTFT",
    "tts_first_frame_ms": "TTSAudioFirstFrameTime",
    "total_cost_ms": "TotalCost",
}


def compute(
    db: DbSession, f: catalog.SessionFilter, *, rates: Mapping[str, float], currency: str
) -> dict[str, Any]:
    """Everything /v1/stats and ``roomwarden stats`` show, for the sessions ``f`` finds.

    ``rates`` is the price of a minute by provider (Settings.cost_per_minute); sessions first
    heard of through callbacks have no provider and are ZEGO's (only ZEGO sends callbacks).
    """
    found = catalog.filtered(f)
    sessions = _sessions(db, f)
    turns = _turns(db, found)
    return {
        **sessions.pop("figures"),
        **turns,
        "deletion_codes": {
            str(code): n
            for code, n in _grouped(
                db,
                AgentInstance.delete_code,
                AgentInstance.session_id.in_(found),
                AgentInstance.delete_code.is_not(None),
            )
        },
        "exceptions": dict(_grouped(db, AgentException.family, AgentException.session_id.in_(found))),
        "latency": _latency(db, found),
        "cost": _cost(sessions["minutes_by_provider"], rates, currency),
        "per_day": sessions["per_day"],
    }


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks of the sorted values; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def distribution(values: Iterable[float]) -> dict[str, Any]:
    found = list(values)
    return {
        "count": len(found),
        "p50": percentile(found, 0.5),
        "p90": percentile(found, 0.9),
        "p99": percentile(found, 0.99),
    }


def _sessions(db: DbSession, f: catalog.SessionFilter) -> dict[str, Any]:
    """One row per session (start, state, provider, duration): counts, durations, days, minutes."""
    rows = db.execute(
        select(
            catalog.session_start,
            Session.state,
            Session.end_reason,
            Session.provider,
            catalog.session_duration_ms,
        ).where(*f.conditions())
    ).all()
    durations: list[float] = []
    end_reasons: dict[str, int] = {}
    minutes_by_provider: dict[str, float] = {}
    days: dict[dt.date, dict[str, Any]] = {}
    ended = 0
    for start, state, reason, provider, duration_ms in rows:
        day = days.setdefault(start.astimezone(dt.UTC).date(), {"sessions": 0, "minutes": 0.0})
        day["sessions"] += 1
        if state != SessionState.ENDED:
            continue
        ended += 1
        if reason is not None:
            end_reasons[reason] = end_reasons.get(reason, 0) + 1
        if duration_ms is None:
            continue  # ended without ever having a live agent
        durations.append(duration_ms / 1000)
        minutes = duration_ms / 60000
        day["minutes"] += minutes
        key = provider or Provider.ZEGO.value
        minutes_by_provider[key] = minutes_by_provider.get(key, 0.0) + minutes
    return {
        "figures": {
            "sessions": len(rows),
            "ended_sessions": ended,
            "duration_seconds": {
                "total": sum(durations),
                "median": percentile(durations, 0.5),
                "p90": percentile(durations, 0.9),
            },
            "end_reasons": dict(sorted(end_reasons.items())),
        },
        "minutes_by_provider": minutes_by_provider,
        "per_day": [
            {"date": day.isoformat(), "sessions": v["sessions"], "minutes": round(v["minutes"], 3)}
            for day, v in sorted(days.items())
        ],
    }


def _turns(db: DbSession, found: Any) -> dict[str, Any]:
    agent = Turn.speaker == "agent"
    cut = and_(agent, Turn.interrupted.is_(True))
    total, users, agents, cuts, cut_sessions = db.execute(
        select(
            func.count(),
            func.sum(case((Turn.speaker == "user", 1), else_=0)),
            func.sum(case((agent, 1), else_=0)),
            func.sum(case((cut, 1), else_=0)),
            func.count(distinct(case((cut, Turn.session_id), else_=None))),
        ).where(Turn.session_id.in_(found))
    ).one()
    agents, cuts = int(agents or 0), int(cuts or 0)
    return {
        "turns": int(total),
        "user_turns": int(users or 0),
        "agent_turns": agents,
        "interruption_rate": cuts / agents if agents else None,
        "interrupted_turns": cuts,
        "sessions_with_interruptions": int(cut_sessions),
    }


def _grouped(db: DbSession, column: Any, *where: Any) -> list[tuple[Any, int]]:
    rows = db.execute(select(column, func.count()).where(*where).group_by(column).order_by(column))
    return [(key, int(n)) for key, n in rows]


def _latency(db: DbSession, found: Any) -> dict[str, Any]:
    """Per instance LatencyData (as ZEGO reports it on deletion) and per Round response times."""
    values: dict[str, list[float]] = {name: [] for name in LATENCY_FIELDS}
    for (data,) in db.execute(
        select(AgentInstance.latency).where(
            AgentInstance.session_id.in_(found), AgentInstance.latency.is_not(None)
        )
    ):
        for name, field in LATENCY_FIELDS.items():
            value = data.get(field) if isinstance(data, dict) else None
            if isinstance(value, int | float) and not isinstance(value, bool):
                values[name].append(float(value))
    out = {name: distribution(found_values) for name, found_values in values.items()}
    rounds = latency.round_latencies(db, sessions=found)
    out["response_ms"] = distribution(r.response_ms for r in rounds if r.response_ms is not None)
    return out


def _cost(minutes: Mapping[str, float], rates: Mapping[str, float], currency: str) -> dict[str, Any]:
    by_provider = {p: round(m * rates[p], 6) for p, m in sorted(minutes.items()) if p in rates}
    return {
        "currency": currency,
        "total": round(sum(by_provider.values()), 6),
        "by_provider": by_provider,
        "rates": dict(rates),
        # Minutes of providers without a rate: not free, just not priced.
        "unpriced_minutes": {p: round(m, 3) for p, m in sorted(minutes.items()) if p not in rates},
    }

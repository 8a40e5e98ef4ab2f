"""Figures over the sessions a filter finds: volume, durations, time billed with no user in the room,
outcomes, interruptions, latency, cost.

Counts, sums and days are SQL aggregates (GROUP BY) on both databases; turn figures sum each
session's turn counts and response times read the drain's per-Round rows (``rounds``), so no
figure reads the turns or the timeline. Percentiles of durations,
latencies and response times are Postgres's ``percentile_cont`` there, so a figure over a million
turns reads a few rows, not one per session or Round (``latency.response_times`` reads each
Round's response time stored). SQLite, the embedded and small case, has no ``percentile_cont``:
it reads one number per session, instance or Round and ``percentile`` interpolates the same
way (numpy's default): linearly between the two closest ranks, p = (n - 1) * q.

Durations and cost count ended sessions that had a live agent: ``ended_at - started_at``, the
same duration as ``summary.summaries``. A live session has no duration yet.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import ColumnElement, Float, and_, case, cast, func, literal, select, text, true
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import Date

from worker.analysis import catalog, latency
from worker.models import AgentException, AgentInstance, Provider, Session, SessionState

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
    postgres = db.get_bind().dialect.name == "postgresql"
    if postgres:
        # These aggregates run in a few hundred milliseconds; compiling them (JIT, its cost
        # estimate tripped by a million rows) took longer than running them. Sorting every
        # Round's response time (500,000 over a million turns) spilled to disk at the default 4 MB.
        db.execute(text("SET LOCAL jit = off"))
        db.execute(text("SET LOCAL work_mem = '32MB'"))
    found = catalog.filtered(f)
    filtering = bool(f.conditions())

    def of_found(column: Any) -> ColumnElement[bool]:
        # Without a filter every session is found: no semi-join against the whole table.
        return column.in_(found) if filtering else true()

    sessions = _sessions(db, f, postgres=postgres)
    turns = _turns(db, f)
    return {
        **sessions.pop("figures"),
        **turns,
        "deletion_codes": {
            str(code): n
            for code, n in _grouped(
                db,
                AgentInstance.delete_code,
                of_found(AgentInstance.session_id),
                AgentInstance.delete_code.is_not(None),
            )
        },
        "exceptions": dict(_grouped(db, AgentException.family, of_found(AgentException.session_id))),
        "latency": _latency(
            db, found, of_found(AgentInstance.session_id), postgres=postgres, filtering=filtering
        ),
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


QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}


def distribution(values: Iterable[float]) -> dict[str, Any]:
    found = list(values)
    return {
        "count": len(found),
        "p50": percentile(found, 0.5),
        "p90": percentile(found, 0.9),
        "p99": percentile(found, 0.99),
    }


class utc_day(FunctionElement[dt.date]):  # lower case: used like a SQL function
    """The UTC calendar day of a timestamp, for "sessions per day" grouped in SQL."""

    type = Date()
    name = "utc_day"
    inherit_cache = True


@compiles(utc_day, "postgresql")
def _utc_day_postgres(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(timezone('UTC', {compiler.process(element.clauses, **kw)}) AS DATE)"


@compiles(utc_day, "sqlite")
def _utc_day_sqlite(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    return f"date({compiler.process(element.clauses, **kw)})"  # stored as naive UTC text


def _sessions(db: DbSession, f: catalog.SessionFilter, *, postgres: bool) -> dict[str, Any]:
    """Counts, durations, days and minutes by provider, grouped in SQL over the filtered sessions."""
    where = f.conditions()
    ended = Session.state == SessionState.ENDED
    duration = catalog.session_duration_ms
    lasted = and_(ended, duration.is_not(None))  # ended without ever having a live agent: no duration
    day = utc_day(catalog.session_start)
    days = [
        (_day(d), int(n), float(ms or 0))
        for d, n, ms in db.execute(
            select(day, func.count(), func.sum(case((lasted, duration), else_=0))).where(*where).group_by(day)
        )
    ]
    reasons = db.execute(
        select(Session.end_reason, func.count()).where(*where, ended).group_by(Session.end_reason)
    ).all()
    provider = func.coalesce(Session.provider, Provider.ZEGO.value)
    minutes_by_provider = {
        str(key): float(ms) / 60000
        for key, ms in db.execute(
            select(provider, func.sum(duration)).where(*where, lasted).group_by(provider)
        )
    }
    seconds = cast(duration, Float) / literal(1000.0, Float)
    total: float | None
    median: float | None
    p90: float | None
    if postgres:
        row = db.execute(
            select(func.sum(seconds), _cont(0.5, seconds), _cont(0.9, seconds)).where(*where, lasted)
        ).one()
        total, median, p90 = (None if v is None else float(v) for v in row)
    else:
        durations = [int(ms) / 1000 for ms in db.scalars(select(duration).where(*where, lasted))]
        total, median, p90 = sum(durations), percentile(durations, 0.5), percentile(durations, 0.9)
    return {
        "figures": {
            "sessions": sum(n for _d, n, _ms in days),
            "ended_sessions": sum(int(n) for _r, n in reasons),
            "duration_seconds": {"total": float(total or 0), "median": median, "p90": p90},
            "no_user_seconds": _no_user_seconds(db, where, ended, postgres=postgres),
            "end_reasons": dict(sorted((r, int(n)) for r, n in reasons if r is not None)),
        },
        "minutes_by_provider": minutes_by_provider,
        "per_day": [
            {"date": d.isoformat(), "sessions": n, "minutes": round(ms / 60000, 3)}
            for d, n, ms in sorted(days)
        ],
    }


def _no_user_seconds(
    db: DbSession, where: list[ColumnElement[bool]], ended: ColumnElement[bool], *, postgres: bool
) -> dict[str, Any]:
    """Agent time billed with the user out of the room, as durations are summed: over ended
    sessions, since a live one's figure still grows. Only sessions where it is known count
    (``sessions`` says how many): one never heard of in a room callback is unknown, not 0 s.
    """
    seconds = Session.no_user_seconds.expression
    known = and_(ended, seconds.is_not(None))
    total: float | None
    median: float | None
    p90: float | None
    if postgres:
        n, total, median, p90 = db.execute(
            select(func.count(), func.sum(seconds), _cont(0.5, seconds), _cont(0.9, seconds)).where(
                *where, known
            )
        ).one()
        total, median, p90 = (None if v is None else float(v) for v in (total, median, p90))
    else:
        rows = db.scalars(select(Session.no_user_seconds).where(*where, known))
        values = [float(v) for v in rows if v is not None]
        n, total, median, p90 = len(values), sum(values), percentile(values, 0.5), percentile(values, 0.9)
    return {"total": float(total or 0), "median": median, "p90": p90, "sessions": int(n)}


def _day(value: dt.date | str) -> dt.date:
    """Postgres gives a date, SQLite the text of one."""
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(value)


def _conts(value: ColumnElement[Any]) -> ColumnElement[Any]:
    """``_cont`` at every ``QUANTILES`` from one sort of the values (an array, in their order)."""
    wanted = postgresql.array([literal(q, Float) for q in QUANTILES.values()])
    return func.percentile_cont(wanted, type_=postgresql.ARRAY(Float)).within_group(value)


def _distribution(count: int, cuts: list[float | None] | None) -> dict[str, Any]:
    return {"count": int(count), **dict(zip(QUANTILES, cuts or [None] * len(QUANTILES), strict=True))}


def _cont(q: float, value: ColumnElement[Any]) -> ColumnElement[float]:
    """Postgres's percentile_cont: the interpolation ``percentile`` does in Python."""
    return func.percentile_cont(q).within_group(value)


def _turns(db: DbSession, f: catalog.SessionFilter) -> dict[str, Any]:
    """From each session's turn counts (kept as turns are made), not from the turns themselves."""
    users, agents, cuts, cut_sessions = db.execute(
        select(
            func.sum(Session.user_turns),
            func.sum(Session.agent_turns),
            func.sum(Session.interrupted_turns),
            func.count().filter(Session.interrupted_turns > 0),
        ).where(*f.conditions())
    ).one()
    users, agents, cuts = int(users or 0), int(agents or 0), int(cuts or 0)
    return {
        "turns": users + agents,
        "user_turns": users,
        "agent_turns": agents,
        "interruption_rate": cuts / agents if agents else None,
        "interrupted_turns": cuts,
        "sessions_with_interruptions": int(cut_sessions),
    }


def _grouped(db: DbSession, column: Any, *where: Any) -> list[tuple[Any, int]]:
    rows = db.execute(select(column, func.count()).where(*where).group_by(column).order_by(column))
    return [(key, int(n)) for key, n in rows]


def _latency(
    db: DbSession, found: Any, instances: ColumnElement[bool], *, postgres: bool, filtering: bool
) -> dict[str, Any]:
    """Per instance LatencyData (as ZEGO reports it on deletion) and per Round response times;
    ``instances`` says which instances are the found sessions'."""
    if postgres:
        return _latency_in_sql(db, found, instances, filtering=filtering)
    values: dict[str, list[float]] = {name: [] for name in LATENCY_FIELDS}
    for (data,) in db.execute(
        select(AgentInstance.latency).where(instances, AgentInstance.latency.is_not(None))
    ):
        for name, field in LATENCY_FIELDS.items():
            value = data.get(field) if isinstance(data, dict) else None
            if isinstance(value, int | float) and not isinstance(value, bool):
                values[name].append(float(value))
    out = {name: distribution(found_values) for name, found_values in values.items()}
    rounds = latency.round_latencies(db, sessions=found)
    out["response_ms"] = distribution(r.response_ms for r in rounds if r.response_ms is not None)
    return out


def _latency_in_sql(
    db: DbSession, found: Any, instances: ColumnElement[bool], *, filtering: bool
) -> dict[str, Any]:
    """The same figures with count and percentiles aggregated by Postgres: a few rows come back."""
    columns: list[ColumnElement[Any]] = []
    for field in LATENCY_FIELDS.values():
        # Numbers only, as in Python: a string or a boolean where a number belongs is left out.
        number = func.jsonb_typeof(AgentInstance.latency[field]) == "number"
        value = case((number, cast(AgentInstance.latency[field].as_string(), Float)), else_=None)
        columns += [func.count(value), _conts(value)]
    row = db.execute(select(*columns).where(instances, AgentInstance.latency.is_not(None))).one()
    out = {}
    for k, name in enumerate(LATENCY_FIELDS):
        out[name] = _distribution(row[2 * k], row[2 * k + 1])
    times = latency.response_times(found if filtering else None)
    count, cuts = db.execute(select(func.count(times.c.ms), _conts(times.c.ms))).one()
    out["response_ms"] = _distribution(count, cuts)
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

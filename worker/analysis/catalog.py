"""Finding sessions: the filters every analyst view shares (list, search, stats, exports, BI).

A session's *start* is when its first agent was live (``started_at``), or, for one that never
got that far (queued, failed), when it was asked for (``created_at``). Time ranges, sorting and
"sessions per day" all use it.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Select, and_, case, exists, func, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from worker.analysis.latency import round_latencies
from worker.models import AgentException, AgentInstance, Provider, Session, TimelineEvent, Turn
from worker.sessions.reading import describe

session_start = func.coalesce(Session.started_at, Session.created_at)


class FilterError(ValueError):
    """A query parameter that cannot be understood; ``field`` names it for the 400 answer."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class SessionFilter:
    since: dt.datetime | None = None  # start >= since
    until: dt.datetime | None = None  # start < until
    app_id: int | None = None
    room_id: str | None = None
    user_id: str | None = None
    agent_id: str | None = None  # ZEGO AgentId (the registered agent)
    template: str | None = None  # roomwarden template name
    provider: str | None = None
    state: str | None = None
    end_reason: str | None = None
    has_interruptions: bool | None = None
    has_exceptions: bool | None = None
    min_turns: int | None = None
    agent_instance_id: str | None = None

    @classmethod
    def from_query(cls, params: Mapping[str, str]) -> SessionFilter:
        """From URL query parameters (or CLI options) of the same names; FilterError on bad ones."""
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = params.get(f.name)
            if raw is None or raw == "":
                continue
            if f.name in ("since", "until"):
                values[f.name] = parse_time(f.name, raw)
            elif f.name in ("app_id", "min_turns"):
                values[f.name] = _integer(f.name, raw)
            elif f.name in ("has_interruptions", "has_exceptions"):
                values[f.name] = _boolean(f.name, raw)
            elif f.name == "provider" and raw not in {p.value for p in Provider}:
                raise FilterError(f.name, f"provider must be one of {', '.join(p.value for p in Provider)}")
            else:
                values[f.name] = text_value(f.name, raw)
        return cls(**values)  # type: ignore[arg-type]

    def conditions(self) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        if self.since is not None:
            where.append(session_start >= self.since)
        if self.until is not None:
            where.append(session_start < self.until)
        for name in ("app_id", "room_id", "user_id", "agent_id", "template", "state", "end_reason"):
            value = getattr(self, name)
            if value is not None:
                where.append(getattr(Session, name) == value)
        if self.provider is not None:
            # Sessions first heard of through callbacks have no provider: only ZEGO sends callbacks.
            if self.provider == Provider.ZEGO:
                where.append(or_(Session.provider == Provider.ZEGO, Session.provider.is_(None)))
            else:
                where.append(Session.provider == self.provider)
        if self.has_interruptions is not None:
            interrupted = exists().where(Turn.session_id == Session.id, Turn.interrupted.is_(True))
            where.append(interrupted if self.has_interruptions else ~interrupted)
        if self.has_exceptions is not None:
            failed = exists().where(AgentException.session_id == Session.id)
            where.append(failed if self.has_exceptions else ~failed)
        if self.min_turns is not None:
            turns = select(func.count()).where(Turn.session_id == Session.id).scalar_subquery()
            where.append(turns >= self.min_turns)
        if self.agent_instance_id is not None:
            where.append(
                exists().where(
                    AgentInstance.session_id == Session.id,
                    AgentInstance.agent_instance_id == self.agent_instance_id,
                )
            )
        return where


def filtered(f: SessionFilter) -> Select[str]:
    """``SELECT sessions.id`` of the matching sessions: a subquery for stats, search and exports."""
    return select(Session.id).where(*f.conditions())


def parse_time(name: str, raw: str) -> dt.datetime:
    """ISO 8601, a date alone meaning its midnight UTC; a time without a zone is UTC.

    Converted to UTC here, not when the query binds it: an offset that carries the time past
    year 1 or 9999 is the client's 400, not the server's 500."""
    try:
        parsed = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        return parsed.astimezone(dt.UTC) if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    except (ValueError, OverflowError):
        raise FilterError(
            name, f"{name} must be an ISO 8601 time between years 1 and 9999, e.g. 2026-01-31T12:00:00Z"
        ) from None


# What a BIGINT column holds: a larger number would fail in the database, mid-query.
_BIGINT_MAX = 2**63 - 1


def _integer(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise FilterError(name, f"{name} must be an integer") from None
    if not 0 <= value <= _BIGINT_MAX:
        raise FilterError(name, f"{name} must be between 0 and {_BIGINT_MAX}")
    return value


def text_value(name: str, raw: str) -> str:
    """A text parameter as given, unless it holds NUL: Postgres text cannot, so on Postgres the
    query would fail, and SQLite would match nothing. Refused on both, as one rule."""
    if "\x00" in raw:
        raise FilterError(name, f"{name} must not contain NUL characters")
    return raw


def _boolean(name: str, raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes"):
        return True
    if lowered in ("0", "false", "no"):
        return False
    raise FilterError(name, f"{name} must be true or false")


# --- Duration: the same arithmetic in SQL on both databases. ---


class duration_ms(FunctionElement[int]):  # lower case: used like a SQL function
    """Whole milliseconds from ``start`` to ``end`` (NULL when either is): sorting and paging by
    duration need one exact, comparable number on Postgres (interval arithmetic) and SQLite
    (naive UTC text, so ``julianday``) alike. Whole milliseconds keep a cursor's value exact."""

    type = BigInteger()
    name = "duration_ms"
    inherit_cache = True


@compiles(duration_ms, "postgresql")
def _duration_postgres(element: duration_ms, compiler: SQLCompiler, **kw: Any) -> str:
    start, end = (compiler.process(c, **kw) for c in element.clauses)
    return f"CAST(ROUND(EXTRACT(EPOCH FROM ({end}) - ({start})) * 1000) AS BIGINT)"


@compiles(duration_ms, "sqlite")
def _duration_sqlite(element: duration_ms, compiler: SQLCompiler, **kw: Any) -> str:
    start, end = (compiler.process(c, **kw) for c in element.clauses)
    return f"CAST(ROUND((julianday({end}) - julianday({start})) * 86400000) AS INTEGER)"


# A session lasts from its first live agent to its end; one that never had an agent (queued,
# failed, cancelled) or is still going has no duration. Sorted by duration, those come last.
session_duration_ms = duration_ms(Session.started_at, Session.ended_at)


# --- Summaries: one row per session, every count in a constant number of queries. ---


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def summaries(db: DbSession, ids: Sequence[str]) -> list[dict[str, Any]]:
    """The one-line view of each session, in the order of ``ids`` (unknown ids are left out).

    Four queries whatever the number of sessions (sessions, turn counts, exceptions, instances),
    so a page of 500 costs the same round trips as a page of one. Heavy columns (spec, join info)
    are not read.
    """
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return []
    rows = db.execute(
        select(
            Session.id,
            Session.app_id,
            Session.provider,
            Session.template,
            Session.agent_id,
            Session.agent_name,
            Session.room_id,
            Session.user_id,
            Session.state,
            Session.end_reason,
            Session.end_code,
            Session.flag,
            Session.created_at,
            Session.started_at,
            Session.ended_at,
        ).where(Session.id.in_(wanted))
    ).all()
    user = case((Turn.speaker == "user", 1), else_=0)
    agent = case((Turn.speaker == "agent", 1), else_=0)
    cut = case((and_(Turn.speaker == "agent", Turn.interrupted.is_(True)), 1), else_=0)
    turns = {
        session_id: (int(total), int(users or 0), int(agents or 0), int(cuts or 0))
        for session_id, total, users, agents, cuts in db.execute(
            select(Turn.session_id, func.count(), func.sum(user), func.sum(agent), func.sum(cut))
            .where(Turn.session_id.in_(wanted))
            .group_by(Turn.session_id)
        )
    }
    exceptions = _counts(db, AgentException.session_id, wanted)
    instances = _counts(db, AgentInstance.session_id, wanted)
    by_id: dict[str, dict[str, Any]] = {}
    for row in rows:
        total, users, agents, cuts = turns.get(row.id, (0, 0, 0, 0))
        duration = (
            (row.ended_at - row.started_at).total_seconds()
            if row.started_at is not None and row.ended_at is not None
            else None
        )
        count = instances.get(row.id, 0)
        by_id[row.id] = {
            "id": row.id,
            "app_id": row.app_id,
            "provider": row.provider,
            "template": row.template,
            "agent_id": row.agent_id,
            "agent_name": row.agent_name,
            "room_id": row.room_id,
            "user_id": row.user_id,
            "state": row.state,
            "end_reason": row.end_reason,
            "end_code": row.end_code,
            "flag": row.flag,
            "started_at": _iso(row.started_at or row.created_at),
            "ended_at": _iso(row.ended_at),
            "duration_seconds": duration,
            "turns": total,
            "user_turns": users,
            "agent_turns": agents,
            "interruptions": cuts,
            "exceptions": exceptions.get(row.id, 0),
            "instances": count,
            # A new agent in the same session (after a deletion, by a policy): what users notice.
            "recreations": max(count - 1, 0),
        }
    return [by_id[i] for i in wanted if i in by_id]


def _counts(db: DbSession, column: InstrumentedAttribute[str], ids: list[str]) -> dict[str, int]:
    return {
        key: int(n)
        for key, n in db.execute(select(column, func.count()).where(column.in_(ids)).group_by(column))
    }


# --- Listing: keyset pages, stable while new sessions arrive. ---

SORTS = ("started_at", "duration")
ORDERS = ("desc", "asc")
MAX_LIMIT = 500


@dataclass(frozen=True, slots=True)
class Page:
    sessions: list[dict[str, Any]]
    # Pass back as ``cursor`` for the page after this one; None on the last page.
    next_cursor: str | None


def list_sessions(
    db: DbSession,
    f: SessionFilter,
    *,
    sort: str = "started_at",
    order: str = "desc",
    limit: int = 50,
    cursor: str | None = None,
) -> Page:
    """One page of matching sessions, sorted by start or duration, then by id.

    Keyset paging rather than OFFSET: the cursor carries the last row's sort value and id, so a
    session that starts while an analyst pages through older ones shifts nothing, and a deep
    page costs what the first does. Sessions without a duration (live, never started) come last
    in either order.
    """
    if sort not in SORTS:
        raise FilterError("sort", f"sort must be one of {', '.join(SORTS)}")
    if order not in ORDERS:
        raise FilterError("order", f"order must be one of {', '.join(ORDERS)}")
    if not 1 <= limit <= MAX_LIMIT:
        raise FilterError("limit", f"limit must be between 1 and {MAX_LIMIT}")
    key: ColumnElement[Any] = session_start if sort == "started_at" else session_duration_ms
    descending = order == "desc"
    stmt = select(Session.id, key).where(*f.conditions())
    if cursor is not None:
        value, last_id = _decode_cursor(cursor, sort, order)
        stmt = stmt.where(_after(key, value, last_id, descending=descending))
    if descending:
        stmt = stmt.order_by(key.desc().nulls_last(), Session.id.desc())
    else:
        stmt = stmt.order_by(key.asc().nulls_last(), Session.id.asc())
    rows = db.execute(stmt.limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = _encode_cursor(sort, order, rows[-1][1], rows[-1][0]) if more else None
    return Page(sessions=summaries(db, [r[0] for r in rows]), next_cursor=next_cursor)


def _after(key: ColumnElement[Any], value: Any, last_id: str, *, descending: bool) -> ColumnElement[bool]:
    """Rows after (value, last_id) in the listing's order, NULL keys last."""
    if value is None:
        return and_(key.is_(None), Session.id < last_id if descending else Session.id > last_id)
    beyond = key < value if descending else key > value
    tie = and_(key == value, Session.id < last_id if descending else Session.id > last_id)
    return or_(beyond, tie, key.is_(None))


def _encode_cursor(sort: str, order: str, value: Any, last_id: str) -> str:
    shown = value.isoformat() if isinstance(value, dt.datetime) else value
    raw = json.dumps([sort, order, shown, last_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, sort: str, order: str) -> tuple[Any, str]:
    """The last row's (sort value, id); FilterError for anything this listing did not give out."""
    bad = FilterError("cursor", "cursor is not one this listing gave out (same sort and order)")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        c_sort, c_order, value, last_id = json.loads(raw)
    except (ValueError, TypeError):
        raise bad from None
    if (c_sort, c_order) != (sort, order) or not isinstance(last_id, str) or "\x00" in last_id:
        raise bad
    if value is None:
        return None, last_id
    if sort == "started_at":
        if not isinstance(value, str):
            raise bad
        try:
            moment = dt.datetime.fromisoformat(value)
            if moment.tzinfo is None:
                raise bad
            return moment.astimezone(dt.UTC), last_id
        except (ValueError, OverflowError):
            raise bad from None
    if not isinstance(value, int) or isinstance(value, bool) or abs(value) > _BIGINT_MAX:
        raise bad
    return value, last_id


# --- One session in full: what describe() shows, plus its summary, timeline and rounds. ---


def detail(db: DbSession, session: Session) -> dict[str, Any]:
    """``sessions.describe`` plus the summary, one time-ordered event stream and per-round latency."""
    body = describe(db, session)
    body["summary"] = summaries(db, [session.id])[0]
    body["timeline"] = timeline(db, session.id)
    body["rounds"] = [
        {k: v for k, v in r.as_dict().items() if k != "session_id"}
        for r in round_latencies(db, session_id=session.id)
    ]
    return body


def timeline(db: DbSession, session_id: str) -> list[dict[str, Any]]:
    """What happened, in time order: speech and status events as ZEGO sent them, and, under ZEGO's
    own event names, each instance's creation and deletion (``code``) and each exception, so a
    reader sees a recreation or an error where it happened without merging lists."""
    events: list[tuple[dt.datetime, int, int, dict[str, Any]]] = []
    rows = db.execute(
        select(TimelineEvent, AgentInstance.agent_instance_id)
        .join(AgentInstance, AgentInstance.id == TimelineEvent.instance_id)
        .where(TimelineEvent.session_id == session_id)
    ).all()
    for event, instance_id in rows:
        entry = _event(event.at, event.event, event.round, instance_id, event.detail)
        events.append((event.at, 1, event.sequence if event.sequence is not None else -1, entry))
    for i in db.scalars(select(AgentInstance).where(AgentInstance.session_id == session_id)):
        created = i.created_at or i.first_seen_at
        if created is not None:
            events.append(
                (created, 0, -1, _event(created, "AgentInstanceCreated", None, i.agent_instance_id, {}))
            )
        if i.deleted_at is not None:
            gone = _event(
                i.deleted_at, "AgentInstanceDeleted", None, i.agent_instance_id, {"code": i.delete_code}
            )
            events.append((i.deleted_at, 3, 2**62, gone))
    for e, instance_id in db.execute(
        select(AgentException, AgentInstance.agent_instance_id)
        .join(AgentInstance, AgentInstance.id == AgentException.instance_id)
        .where(AgentException.session_id == session_id)
    ):
        detail = {"code": e.code, "family": e.family, "message": e.message}
        seq = e.sequence if e.sequence is not None else -1
        events.append((e.at, 2, seq, _event(e.at, "Exception", e.round, instance_id, detail)))
    events.sort(key=lambda item: item[:3])
    return [entry for *_, entry in events]


def _event(
    at: dt.datetime, event: str, round_: int | None, instance_id: str, detail: dict[str, Any]
) -> dict[str, Any]:
    return {
        "at": at.isoformat(),
        "event": event,
        "round": round_,
        "agent_instance_id": instance_id,
        "detail": detail,
    }

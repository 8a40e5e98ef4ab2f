"""Finding sessions: the filters every analyst view shares (list, search, stats, exports, BI).

A session's *start* is when its first agent was live (``started_at``), or, for one that never
got that far (queued, failed), when it was asked for (``created_at``). Time ranges, sorting and
"sessions per day" all use it.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Select, and_, exists, func, or_, select, tuple_
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from worker.analysis.summary import summaries
from worker.models import AgentException, AgentInstance, Provider, Session, Turn

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
            elif f.name == "app_id":
                values[f.name] = _integer(f.name, raw)
            elif f.name == "min_turns":  # compared in SQL as a 32-bit integer on Postgres
                values[f.name] = _integer(f.name, raw, high=_INT_MAX)
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
            # The bare column, as the partial index ix_turns_interrupted is written (migration 0010).
            interrupted = exists().where(Turn.session_id == Session.id, Turn.interrupted)
            where.append(interrupted if self.has_interruptions else ~interrupted)
        if self.has_exceptions is not None:
            failed = exists().where(AgentException.session_id == Session.id)
            where.append(failed if self.has_exceptions else ~failed)
        if self.min_turns:  # at least 0 turns: every session
            # The session's own counts (kept as turns are made): a comparison per session, where
            # counting turns walked every session's turns when none had enough.
            where.append(Session.user_turns + Session.agent_turns >= self.min_turns)
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
_INT_MAX = 2**31 - 1
_BIGINT_MAX = 2**63 - 1


def _integer(name: str, raw: str, high: int = 0) -> int:
    high = high or _BIGINT_MAX
    try:
        value = int(raw)
    except ValueError:
        raise FilterError(name, f"{name} must be an integer") from None
    if not 0 <= value <= high:
        raise FilterError(name, f"{name} must be between 0 and {high}")
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
    # Orders the indexes of migration 0010 are read in: a session always has a start (created_at
    # is NOT NULL), so only duration needs NULLS LAST, which each direction's index holds.
    if sort == "started_at":
        stmt = stmt.order_by(key.desc(), Session.id.desc()) if descending else stmt.order_by(key, Session.id)
    elif descending:
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
    if key is session_start:
        # Never NULL: one row comparison, which the index's range can start from.
        mark = tuple_(key, Session.id)
        return mark < tuple_(value, last_id) if descending else mark > tuple_(value, last_id)
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

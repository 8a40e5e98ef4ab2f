"""Exports of sessions and turns as JSON Lines, CSV or Parquet, streamed in constant memory.

An export may be millions of turns, so nothing here holds a whole result: rows come from a
server-side cursor (``yield_per``: Postgres streams through a named cursor, SQLite steps its
statement), are encoded a chunk at a time, and each chunk is handed on before the next is read.
Parquet is written one row group at a time (``worker.analysis.parquet``), so even the columnar
format streams.

Both kinds take the same ``SessionFilter`` as the list, search and stats: an export of turns
holds the turns of the matching sessions, in conversation order, sessions by their start.

The columns are fixed per kind (``COLUMNS``), whatever the format, so that a reader can rely on
them: a missing value is ``null`` in JSON Lines, an empty field in CSV, a null in Parquet; times
are UTC (ISO 8601 in text formats, ``timestamp[us, UTC]`` in Parquet); booleans are
``true``/``false`` in CSV. Session rows carry the same keys as the session summaries of the API.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any, Literal

import orjson
from sqlalchemy import Select, case, func, select
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

from worker.analysis.catalog import SessionFilter, session_start
from worker.analysis.summary import summaries
from worker.models import AgentInstance, Session, Turn
from worker.postcall import running as postcall
from worker.privacy.turns import played_text_column, text_column

KINDS = ("sessions", "turns")
FORMATS = ("jsonl", "csv", "parquet")

MEDIA_TYPES = {
    "jsonl": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
    # Registered with IANA in 2024.
    "parquet": "application/vnd.apache.parquet",
}

# Rows fetched from the cursor at a time: large enough that round trips do not dominate.
FETCH_ROWS = 2000
# Text formats hand on a chunk once this many bytes are encoded: a client sees bytes early.
CHUNK_BYTES = 64 * 1024

ColumnType = Literal["string", "int64", "float64", "bool", "timestamp"]


@dataclass(frozen=True)
class Columns:
    """A kind's columns in order, with their types (Parquet's are in ``worker.analysis.parquet``)."""

    fields: list[tuple[str, ColumnType]]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.fields]

    def of_type(self, wanted: ColumnType) -> list[str]:
        return [name for name, kind in self.fields if kind == wanted]


COLUMNS: dict[str, Columns] = {
    "sessions": Columns(
        [
            ("id", "string"),
            ("app_id", "int64"),
            ("provider", "string"),
            ("template", "string"),
            ("agent_id", "string"),
            ("agent_name", "string"),
            ("room_id", "string"),
            ("user_id", "string"),
            ("state", "string"),
            ("end_reason", "string"),
            ("end_code", "int64"),
            ("flag", "string"),
            ("started_at", "timestamp"),
            ("ended_at", "timestamp"),
            ("duration_seconds", "float64"),
            ("turns", "int64"),
            ("user_turns", "int64"),
            ("agent_turns", "int64"),
            ("interruptions", "int64"),
            ("exceptions", "int64"),
            ("instances", "int64"),
            ("recreations", "int64"),
            # Post-call analysis (worker/postcall/), the newest version's; data as JSON text.
            ("analysis_summary", "string"),
            ("analysis_outcome", "string"),
            ("analysis_data", "string"),
            # Agent seconds billed with the user out of the RTC room; null when no room callback
            # was heard. Last, so that columns read by position before it stay where they were.
            ("no_user_seconds", "float64"),
        ]
    ),
    "turns": Columns(
        [
            ("session_id", "string"),
            ("agent_instance_id", "string"),
            ("round", "int64"),
            ("speaker", "string"),
            ("text", "string"),
            ("spoken_at", "timestamp"),
            ("interrupted", "bool"),
            ("interrupt_reason", "int64"),
            ("played_text", "string"),
            ("user_id", "string"),
        ]
    ),
}


class ExportError(ValueError):
    """An unknown kind or format."""


def check(kind: str, fmt: str) -> None:
    if kind not in KINDS:
        raise ExportError(f"kind must be one of {', '.join(KINDS)}")
    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}")


# --------------------------------------------------------------------------- reading


def _picked(f: SessionFilter) -> Any:
    """The matching sessions and their start, as a derived table: joined, never correlated.

    (The filter's EXISTS subqueries on turns must correlate with *this* select's sessions; put
    in the WHERE of a query over turns, SQLAlchemy would correlate them with the outer turns.)
    """
    return (
        select(Session.id.label("id"), session_start.label("start")).where(*f.conditions()).subquery("picked")
    )


def _turns_query(f: SessionFilter, raw: bool = True) -> Select[*tuple[Any, ...]]:
    """``raw``: the text as spoken (the admin token, the CLI); else the PII-redacted copy."""
    picked = _picked(f)
    return (
        select(
            Turn.session_id,
            AgentInstance.agent_instance_id,
            Turn.round,
            Turn.speaker,
            text_column(raw=raw).label("text"),
            Turn.spoken_at,
            Turn.interrupted,
            Turn.interrupt_reason,
            played_text_column(raw=raw).label("played_text"),
            Turn.user_id,
        )
        .select_from(Turn)
        .join(picked, picked.c.id == Turn.session_id)
        .join(AgentInstance, AgentInstance.id == Turn.instance_id)
        # Sessions by their start, then the transcript's own order (worker/sessions/transcripts.py):
        # instance by instance, Round by Round, the user before the agent.
        .order_by(
            picked.c.start,
            picked.c.id,
            AgentInstance.first_seen_at,
            AgentInstance.agent_instance_id,
            Turn.round,
            case((Turn.speaker == "user", 0), else_=1),
        )
    )


def rows(db: DbSession, kind: str, f: SessionFilter, *, raw: bool = True) -> Iterator[dict[str, Any]]:
    """Rows of ``kind`` for the sessions ``f`` matches, as dicts keyed by ``COLUMNS[kind]``.

    Streams: at most ``FETCH_ROWS`` rows are held at a time. The caller keeps ``db`` open (and,
    on Postgres, in its transaction) until the iterator is exhausted or closed.
    """
    check(kind, "jsonl")
    if kind == "sessions":
        yield from _session_rows(db, f)
        return
    result = db.execute(_turns_query(f, raw).execution_options(yield_per=FETCH_ROWS))
    keys = list(result.keys())
    try:
        for row in result:
            yield dict(zip(keys, row, strict=True))
    finally:
        result.close()


def _session_rows(db: DbSession, f: SessionFilter) -> Iterator[dict[str, Any]]:
    """The API's own summaries (``catalog.summaries``), a cursor's batch of ids at a time, so
    an exported session has exactly the figures the list shows; times back to datetimes."""
    ids = db.scalars(
        select(Session.id)
        .where(*f.conditions())
        .order_by(session_start, Session.id)
        .execution_options(yield_per=FETCH_ROWS)
    )
    try:
        for batch in ids.partitions():
            analysed = postcall.latest_of(db, list(batch))
            for summary in summaries(db, batch):
                summary.update(postcall.export_columns(analysed.get(summary["id"])))
                for name in ("started_at", "ended_at"):
                    value = summary[name]
                    summary[name] = dt.datetime.fromisoformat(value) if value is not None else None
                yield {name: summary[name] for name in COLUMNS["sessions"].names}
    finally:
        ids.close()


def count(db: DbSession, kind: str, f: SessionFilter) -> int:
    """How many rows ``rows`` will give (for a progress bar; rows may arrive meanwhile)."""
    check(kind, "jsonl")
    picked = _picked(f)
    if kind == "sessions":
        stmt = select(func.count()).select_from(picked)
    else:
        stmt = select(func.count()).select_from(Turn).join(picked, picked.c.id == Turn.session_id)
    return int(db.scalar(stmt) or 0)


# --------------------------------------------------------------------------- encoding


def encode(kind: str, fmt: str, rows: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    """The bytes of the export, a chunk at a time, as ``rows`` is consumed."""
    check(kind, fmt)
    if fmt == "jsonl":
        return _text_chunks(orjson.dumps(row) + b"\n" for row in rows)
    if fmt == "csv":
        return _csv_chunks(kind, rows)
    # pyarrow is imported here, at the first Parquet export, not by every web process at start.
    from worker.analysis import parquet

    return parquet.encode(COLUMNS[kind], rows)


def _text_chunks(lines: Iterable[bytes]) -> Iterator[bytes]:
    buffer: list[bytes] = []
    size = 0
    for line in lines:
        buffer.append(line)
        size += len(line)
        if size >= CHUNK_BYTES:
            yield b"".join(buffer)
            buffer, size = [], 0
    if buffer:
        yield b"".join(buffer)


# A cell a spreadsheet would take for a formula (OWASP, "CSV Injection"); tab and carriage return
# too, which some spreadsheets strip before looking at the first character.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralised(value: Any) -> Any:
    """A text cell a spreadsheet will show as text: prefixed with ``'`` when it could start a formula.

    Callback text is anyone's words (the user speaks them, the LLM repeats them), so a transcript
    opened in a spreadsheet must not run ``=HYPERLINK(...)`` or ``+cmd|...``. Only CSV does this:
    JSON Lines and Parquet are read by programs, which get the text exactly.
    """
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def _csv_chunks(kind: str, rows: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    """RFC 4180 (CRLF line ends, quoting as needed), UTF-8, a header row even when empty.

    None is written as an empty field by the csv module itself; only booleans (``true``/
    ``false``, not Python's ``True``) and times (ISO 8601 with a ``T``) need converting.
    """
    columns = COLUMNS[kind]
    names = columns.names
    flags, times, texts = columns.of_type("bool"), columns.of_type("timestamp"), columns.of_type("string")
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(names)
    for row in rows:
        for name in flags:
            value = row[name]
            if value is not None:
                row[name] = "true" if value else "false"
        for name in times:
            value = row[name]
            if value is not None:
                row[name] = value.isoformat()
        for name in texts:
            row[name] = neutralised(row[name])
        writer.writerow([row[name] for name in names])
        if text.tell() >= CHUNK_BYTES:
            yield text.getvalue().encode()
            text.seek(0)
            text.truncate()
    yield text.getvalue().encode()


# --------------------------------------------------------------------------- whole exports


@contextmanager
def _reading(factory: sessionmaker[DbSession]) -> Iterator[DbSession]:
    """A session for a long read. ``sqlite_read_only`` asks worker/db.py for a deferred BEGIN on
    SQLite (in WAL mode it takes no write lock, so writers go on during a long export)."""
    with factory() as db:
        db.connection(execution_options={"sqlite_read_only": True})
        yield db


def stream(
    factory: sessionmaker[DbSession], kind: str, fmt: str, f: SessionFilter, *, raw: bool = True
) -> Iterator[bytes]:
    """An export with its own database session, open exactly as long as the iterator is.

    Closing the iterator early (a client that went away) closes the session, and with it the
    server-side cursor, at once.
    """
    check(kind, fmt)
    with _reading(factory) as db:
        yield from encode(kind, fmt, rows(db, kind, f, raw=raw))


def write(
    factory: sessionmaker[DbSession],
    kind: str,
    fmt: str,
    f: SessionFilter,
    out: IO[bytes],
    on_rows: Callable[[int], None] | None = None,
) -> int:
    """Write an export to ``out``; ``on_rows(n)`` is told of every ``n`` rows read. Returns the rows."""
    check(kind, fmt)
    written = 0

    def counted(source: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        nonlocal written
        pending = 0
        for row in source:
            yield row
            written += 1
            pending += 1
            if pending == FETCH_ROWS:
                if on_rows is not None:
                    on_rows(pending)
                pending = 0
        if pending and on_rows is not None:
            on_rows(pending)

    with _reading(factory) as db:
        for chunk in encode(kind, fmt, counted(rows(db, kind, f))):
            out.write(chunk)
    return written

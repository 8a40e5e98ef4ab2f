"""Transcripts as people read them: plain text and WebVTT, timed from the session's start.

Times expected here come from the seed plan: a user turn is timed by its ASRResult (80 ms after
the speech ended), an agent turn by its first LLMResult (``response_ms`` after that).
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy.orm import Session as DbSession

from tests.seeded import SEEDS, Seed, seed
from worker.analysis.transcript_formats import as_json, as_text, as_webvtt
from worker.sessions.transcripts import TranscriptTurn, transcript
from worker.settings import Settings

WEATHER = next(s for s in SEEDS if s.key == "inst-en-weather")  # English, round 2 cut off
RENEWAL = next(s for s in SEEDS if s.key == "inst-zh-tts-errors")  # Chinese, round 2 cut off
START = dt.datetime(2026, 11, 16, 9, 0, tzinfo=dt.UTC)


def user_ms(s: Seed, i: int) -> int:
    return 2000 + i * s.round_gap_ms + s.rounds[i].speech_ms + 80


def agent_ms(s: Seed, i: int) -> int:
    return 2000 + i * s.round_gap_ms + s.rounds[i].speech_ms + s.rounds[i].response_ms


def turn_times(s: Seed) -> list[int]:
    return [t for i in range(len(s.rounds)) for t in (user_ms(s, i), agent_ms(s, i))]


def clock(ms: int) -> str:
    seconds = ms // 1000
    return f"[{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}]"


def joined(s: Seed, sentences: list[str]) -> str:
    return ("" if s.key.startswith("inst-zh") else " ").join(sentences)


def said(s: Seed, i: int) -> str:
    """What the text transcript shows for the agent in round i: all of it, or the played part."""
    r = s.rounds[i]
    full = joined(s, r.agent)
    if r.played is None:
        return full
    return f"{r.played} [interrupted] (not played: {full[len(r.played) :].strip()})"


@pytest.fixture
def seeded(db: DbSession, settings: Settings) -> DbSession:
    seed(db, settings)
    return db


@pytest.mark.parametrize("s", [WEATHER, RENEWAL], ids=lambda s: s.key)
def test_text_transcript_reads_like_the_conversation(seeded: DbSession, s: Seed) -> None:
    """One '[hh:mm:ss] speaker: words' line per turn; a cut-off reply shows what was heard and what not."""
    text = as_text(transcript(seeded, s.session_id), s.start)
    expected = []
    for i, r in enumerate(s.rounds):
        expected.append(f"{clock(user_ms(s, i))} user: {r.user}")
        expected.append(f"{clock(agent_ms(s, i))} agent: {said(s, i)}")
    assert text.splitlines() == expected
    assert text.endswith("\n")


def parse_vtt(body: str) -> tuple[list[str], list[tuple[int, int, str, str]]]:
    """NOTE texts and cues (start ms, end ms, voice, text) of a WebVTT file, checking its shape."""
    assert body.startswith("WEBVTT\n\n")
    assert body.endswith("\n") and "\n\n\n" not in body
    timing = re.compile(r"^(\d{2,}):([0-5]\d):([0-5]\d)\.(\d{3}) --> (\d{2,}):([0-5]\d):([0-5]\d)\.(\d{3})$")
    notes: list[str] = []
    cues: list[tuple[int, int, str, str]] = []
    for block in body.rstrip("\n").split("\n\n")[1:]:
        if block.startswith("NOTE"):
            assert "-->" not in block
            notes.append(block.removeprefix("NOTE "))
            continue
        ident, times, text = block.split("\n")
        assert ident == str(len(cues) + 1)
        match = timing.match(times)
        assert match, times
        h1, m1, s1, f1, h2, m2, s2, f2 = (int(g) for g in match.groups())
        start = ((h1 * 60 + m1) * 60 + s1) * 1000 + f1
        end = ((h2 * 60 + m2) * 60 + s2) * 1000 + f2
        voice = re.match(r"^<v (user|agent)>(.*)$", text)
        assert voice, text
        assert "<" not in voice.group(2) and "-->" not in voice.group(2)
        cues.append((start, end, voice.group(1), voice.group(2)))
    starts = [c[0] for c in cues]
    assert starts == sorted(starts), "cues must be in time order"
    assert all(end > start for start, end, _, _ in cues)
    return notes, cues


@pytest.mark.parametrize("s", [WEATHER, RENEWAL], ids=lambda s: s.key)
def test_webvtt_cues_follow_the_seeded_times(seeded: DbSession, s: Seed) -> None:
    """Each turn is a cue from its own time to the next turn's (the last one lasts 3 s), voiced by speaker."""
    notes, cues = parse_vtt(as_webvtt(transcript(seeded, s.session_id), s.start))
    times = turn_times(s)
    assert [c[0] for c in cues] == times
    assert [c[1] for c in cues] == [*times[1:], times[-1] + 3000]
    assert [c[2] for c in cues] == ["user", "agent"] * len(s.rounds)
    expected_text = []
    expected_notes = []
    for r in s.rounds:
        expected_text.append(r.user)
        if r.played is None:
            expected_text.append(joined(s, r.agent))
        else:
            expected_text.append(f"{r.played} [interrupted]")
            expected_notes.append(f"interrupted, not played: {joined(s, r.agent)[len(r.played) :].strip()}")
    assert [c[3] for c in cues] == expected_text
    assert notes == expected_notes


def test_json_transcript_has_offsets_from_the_start(seeded: DbSession) -> None:
    """The JSON transcript gives every turn's offset in seconds from the session's start."""
    body = as_json(WEATHER.session_id, transcript(seeded, WEATHER.session_id), WEATHER.start)
    assert body["session_id"] == WEATHER.session_id
    assert dt.datetime.fromisoformat(body["started_at"]) == WEATHER.start
    assert [t["offset_seconds"] for t in body["turns"]] == [ms / 1000 for ms in turn_times(WEATHER)]
    assert [t["speaker"] for t in body["turns"]] == ["user", "agent"] * len(WEATHER.rounds)


def turn(
    speaker: str,
    text: str,
    at_ms: int | None,
    *,
    instance: str = "inst-1",
    played: str | None = None,
    interrupted: bool = False,
    new_instance: bool = False,
    round_: int = 1,
) -> TranscriptTurn:
    return TranscriptTurn(
        agent_instance_id=instance,
        round=round_,
        speaker=speaker,
        text=text,
        spoken_at=START + dt.timedelta(milliseconds=at_ms) if at_ms is not None else None,
        interrupted=interrupted or played is not None,
        interrupt_reason=1 if interrupted or played is not None else None,
        played_text=played,
        user_id="u" if speaker == "user" else None,
        meta_info=None,
        new_instance=new_instance,
    )


def test_webvtt_escapes_markup_and_keeps_cues_on_one_line() -> None:
    """Angle brackets, ampersands, arrows and line breaks in what was said cannot break the file."""
    turns = [
        turn("user", "is 3 < 4 & 5 > 2?\n\nand --> this", 1000),
        turn("agent", "Yes: <b>3 &lt; 4</b>\nalways.", 2500),
    ]
    _, cues = parse_vtt(as_webvtt(turns, START))
    assert [c[3] for c in cues] == [
        "is 3 &lt; 4 &amp; 5 &gt; 2? and --&gt; this",
        "Yes: &lt;b&gt;3 &amp;lt; 4&lt;/b&gt; always.",
    ]
    assert [(c[0], c[1]) for c in cues] == [(1000, 2500), (2500, 5500)]


def test_webvtt_orders_cues_by_time_and_never_ends_one_before_it_starts() -> None:
    """Turns out of time order become cues in time order; two at the same instant still end later."""
    turns = [
        turn("user", "first", 5000),
        turn("agent", "earlier", 4000),
        turn("user", "same time", 5000, round_=2),
        turn("agent", "no time", None, round_=2),
        turn("agent", "", 9000, round_=3),  # nothing said: no cue
    ]
    _, cues = parse_vtt(as_webvtt(turns, START))
    assert [(c[0], c[1], c[3]) for c in cues] == [
        (4000, 5000, "earlier"),
        (5000, 8000, "first"),
        (5000, 8000, "same time"),
    ]


def test_a_new_agent_instance_is_marked_in_both_formats() -> None:
    """When a new agent took over, the text shows a divider line and the WebVTT a NOTE."""
    turns = [
        turn("user", "hello", 1000),
        turn("agent", "hi", 2000),
        turn("user", "are you there?", 9000, instance="inst-2", new_instance=True),
        turn("agent", "yes, sorry", 9500, instance="inst-2"),
    ]
    text = as_text(turns, START).splitlines()
    assert text == [
        "[00:00:01] user: hello",
        "[00:00:02] agent: hi",
        "[00:00:09] --- new agent instance inst-2 ---",
        "[00:00:09] user: are you there?",
        "[00:00:09] agent: yes, sorry",
    ]
    notes, cues = parse_vtt(as_webvtt(turns, START))
    assert notes == ["new agent instance inst-2"]
    assert len(cues) == 4


def test_interruptions_without_a_known_played_part() -> None:
    """A cut with no PlayedText keeps the whole reply; a PlayedText that is not its start is shown alone."""
    turns = [
        turn("agent", "the whole reply", 1000, interrupted=True),
        turn("agent", "twelve dollars", 2000, played="12 dollars", round_=2),
        turn("agent", "cut before a word", 3000, played="", round_=3),
    ]
    assert as_text(turns, START).splitlines() == [
        "[00:00:01] agent: the whole reply [interrupted]",
        "[00:00:02] agent: 12 dollars [interrupted]",
        "[00:00:03] agent: [interrupted] (not played: cut before a word)",
    ]
    notes, cues = parse_vtt(as_webvtt(turns, START))
    assert [c[3] for c in cues] == [
        "the whole reply [interrupted]",
        "12 dollars [interrupted]",
        "[interrupted]",
    ]
    assert notes == ["interrupted, not played: cut before a word"]


def test_untimed_turns_and_long_sessions() -> None:
    """A turn with no time shows dashes in text; offsets past an hour keep counting hours."""
    turns = [turn("user", "hello?", None), turn("agent", "still here", 3_725_042)]
    assert as_text(turns, START).splitlines() == ["[--:--:--] user: hello?", "[01:02:05] agent: still here"]
    _, cues = parse_vtt(as_webvtt(turns, START))
    assert cues == [(3_725_042, 3_728_042, "agent", "still here")]
    assert "01:02:05.042 --> 01:02:08.042" in as_webvtt(turns, START)
    assert as_text([], START) == ""
    assert as_webvtt([], START) == "WEBVTT\n"

"""Transcripts as people read them: JSON with offsets, plain text, and WebVTT subtitles.

Times are offsets from the session's start (its first live agent), the clock of a recording of
the call, so a transcript can be laid under the audio. A user turn is timed by its recognised
text (ASRResult), an agent turn by its first words (LLMResult or the interruption).

An interrupted agent turn is shown as the user heard it: the played part, marked as cut off;
what the agent meant to say after the cut is kept where the format has room for it (a
"not played" note in text, a NOTE block in WebVTT, the whole text in JSON).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Any

from worker.sessions.repair import RoundStatus
from worker.sessions.transcripts import TranscriptTurn

# A cue with no next turn to end it stays on screen this long.
LAST_CUE = dt.timedelta(seconds=3)
# The shortest cue: WebVTT needs an end after the start, and two turns can share a millisecond.
MIN_CUE = dt.timedelta(milliseconds=1)
CUT = "[interrupted]"


def offset_seconds(turn: TranscriptTurn, start: dt.datetime) -> float | None:
    if turn.spoken_at is None:
        return None
    return (turn.spoken_at - start).total_seconds()


def as_json(
    session_id: str,
    turns: Sequence[TranscriptTurn],
    start: dt.datetime,
    rounds: Sequence[RoundStatus] = (),
) -> dict[str, Any]:
    """The API's JSON transcript: every turn as stored, with its offset from the session start,
    and how complete each Round is (worker/sessions/repair.py)."""
    return {
        "session_id": session_id,
        "started_at": start.isoformat(),
        "turns": [{**t.as_dict(), "offset_seconds": offset_seconds(t, start)} for t in turns],
        "rounds": [r.as_dict() for r in rounds],
    }


def played_and_rest(turn: TranscriptTurn) -> tuple[str, str | None]:
    """What the user heard, and (for an interrupted turn) what was cut, when it can be told.

    ZEGO's PlayedText is normally the start of the reply; when it is not (TTS normalised the
    text), what was cut cannot be told apart and only the played part is shown.
    """
    if not turn.interrupted or turn.played_text is None:
        return turn.text, None
    played = turn.played_text
    if turn.text.startswith(played):
        rest = turn.text[len(played) :].strip()
        return played, rest or None
    return played, None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _clock(delta: dt.timedelta) -> str:
    seconds = max(int(delta.total_seconds()), 0)
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def as_text(turns: Sequence[TranscriptTurn], start: dt.datetime) -> str:
    """``[00:01:02] user: ...`` lines, one per turn, with a line where a new agent took over."""
    lines: list[str] = []
    for turn in turns:
        when = f"[{_clock(turn.spoken_at - start)}]" if turn.spoken_at is not None else "[--:--:--]"
        if turn.new_instance:
            lines.append(f"{when} --- new agent instance {turn.agent_instance_id} ---")
        if turn.interrupted:
            played, rest = played_and_rest(turn)
            said = _one_line(f"{played} {CUT}")
            if rest is not None:
                said += f" (not played: {_one_line(rest)})"
        else:
            said = _one_line(turn.text)
        lines.append(f"{when} {turn.speaker}: {said}".rstrip())
    return "\n".join(lines) + "\n" if lines else ""


def _vtt_time(delta: dt.timedelta) -> str:
    ms = max(round(delta / dt.timedelta(milliseconds=1)), 0)
    return f"{ms // 3_600_000:02d}:{ms % 3_600_000 // 60_000:02d}:{ms % 60_000 // 1000:02d}.{ms % 1000:03d}"


def _vtt_text(text: str) -> str:
    """Cue text on one line, with WebVTT's three special characters escaped."""
    return _one_line(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _vtt_note(text: str) -> str:
    # A NOTE ends at a blank line and may not contain "-->".
    return re.sub(r"-{2,}>", "->", _one_line(text))


def as_webvtt(turns: Sequence[TranscriptTurn], start: dt.datetime) -> str:
    """A WebVTT file: one cue per timed turn, from its offset to the next turn's (or 3 s on).

    Cues are in time order, as the format requires. Turns with no time of their own (none
    stored) cannot be placed and are left out; so are turns with nothing said.
    """
    timed = [
        (turn.spoken_at - start, i, turn)
        for i, turn in enumerate(turns)
        if turn.spoken_at is not None and (turn.text or turn.played_text or turn.interrupted)
    ]
    timed.sort(key=lambda item: (item[0], item[1]))
    blocks = ["WEBVTT"]
    for n, (begin, _, turn) in enumerate(timed):
        later = next((timed[k][0] for k in range(n + 1, len(timed)) if timed[k][0] > begin), None)
        end = max(later if later is not None else begin + LAST_CUE, begin + MIN_CUE)
        if turn.interrupted:
            played, rest = played_and_rest(turn)
            text = f"{_vtt_text(played)} {CUT}".strip()
            if rest is not None:
                blocks.append(f"NOTE interrupted, not played: {_vtt_note(rest)}")
        else:
            text = _vtt_text(turn.text)
        if turn.new_instance:
            blocks.append(f"NOTE new agent instance {_vtt_note(turn.agent_instance_id)}")
        blocks.append(f"{n + 1}\n{_vtt_time(begin)} --> {_vtt_time(end)}\n<v {turn.speaker}>{text}")
    return "\n\n".join(blocks) + "\n"

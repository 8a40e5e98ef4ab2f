"""The transcript as prompt lines, and the messages sent to the model.

``transcript_lines`` is the ONE place the prompt's transcript text comes from: whatever must
change what the model sees (PII redaction, say) changes it here. A transcript longer than the
model's context is split into chunks of whole lines (``chunks``); each chunk is summarised on its
own and the final call reads the chunk summaries (``summary: ...`` lines) instead of the turns.
"""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from worker.models import AgentInstance, Turn
from worker.postcall.config import AnalysisConfig

# Tokens are estimated at four characters each (OpenAI's rule of thumb for English); the prompt's
# instructions and the answer need room too, so a chunk takes at most this share of the context.
CHARS_PER_TOKEN = 4
TRANSCRIPT_SHARE = 0.6


def transcript_lines(db: DbSession, session_id: str) -> list[str]:
    """``speaker: text`` for each non-empty turn, in conversation order (instance, Round, user first)."""
    rows = db.execute(
        select(Turn.speaker, Turn.text)
        .join(AgentInstance, AgentInstance.id == Turn.instance_id)
        .where(Turn.session_id == session_id)
        .order_by(AgentInstance.id, Turn.round, Turn.speaker.desc())  # "user" > "agent"
    ).all()
    return [f"{speaker}: {' '.join(text.split())}" for speaker, text in rows if text and text.strip()]


def budget_chars(context_tokens: int) -> int:
    return max(200, int(context_tokens * CHARS_PER_TOKEN * TRANSCRIPT_SHARE))


def chunks(lines: list[str], max_chars: int) -> list[list[str]]:
    """Whole lines, in order, at most ``max_chars`` a chunk (a longer line is cut to fit)."""
    out: list[list[str]] = []
    current: list[str] = []
    size = 0
    for line in lines:
        line = line[:max_chars]
        if current and size + len(line) + 1 > max_chars:
            out.append(current)
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
    if current or not out:
        out.append(current)
    return out


def part_messages(config: AnalysisConfig, lines: list[str], part: int, parts: int) -> list[dict[str, str]]:
    """Ask for the summary of one part of a transcript too long for one call."""
    text = "\n".join(lines)
    return [
        {"role": "system", "content": config.system_prompt},
        {
            "role": "user",
            "content": (
                f"This is part {part} of {parts} of a call transcript. Summarise what happens in it, "
                'keeping every fact a later reader may need. Answer {"summary": "..."}.\n\n'
                f"<transcript>\n{text}\n</transcript>"
            ),
        },
    ]


def final_messages(config: AnalysisConfig, lines: list[str], *, summarised: bool) -> list[dict[str, str]]:
    """Ask for the summary, the data to the schema and the outcome against the criteria."""
    what = "summaries of the parts of a call transcript" if summarised else "a call transcript"
    criteria = config.criteria or "The user got what they called for."
    text = "\n".join(lines)
    return [
        {"role": "system", "content": config.system_prompt},
        {
            "role": "user",
            "content": (
                f"Below are {what}. Answer with one JSON object with the keys:\n"
                '- "summary": a few sentences on what the call was about and how it went;\n'
                '- "data": an object that validates against this JSON Schema:\n'
                f"<schema>{json.dumps(config.data_schema, sort_keys=True)}</schema>\n"
                '- "outcome": "success", "failure" or "unknown", judged against these criteria:\n'
                f"<criteria>{criteria}</criteria>\n"
                '- "outcome_reason": one sentence saying why.\n\n'
                f"<transcript>\n{text}\n</transcript>"
            ),
        },
    ]

"""Conversation transcripts: user and agent turns by Round, built from ASR, LLM and Interrupted callbacks.

A Round has at most one user turn (its ASRResult; a later Sequence wins) and one agent turn
(every LLMResult sentence of the Round joined in Sequence order). An agent turn may exist with
no text at all: an Interrupted or MetaInfo callback can arrive before, or instead of, the words.

A turn is *settled* once its text should not change any more (``settles``): only settled turns
are in the Postgres search indexes, because rewriting an indexed text re-inserts all its words
and trigrams, and an agent turn is rewritten once per sentence while it is spoken.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session as DbSession

from worker.db import from_ms
from worker.inbox.callbacks import Callback, int_field, text_field
from worker.models import AgentInstance, AgentSentence, Session, Turn
from worker.sessions import rounds as round_marks
from worker.sessions.lifecycle import Stream, earliest


def preload_turns(db: DbSession, wanted: dict[Stream, set[int]]) -> None:
    """Fetch the turns of the Rounds a batch touches, for every stream at once, in one query."""
    missing = {stream: rounds - stream.loaded_rounds for stream, rounds in wanted.items()}
    missing = {stream: rounds for stream, rounds in missing.items() if rounds}
    if not missing:
        return
    by_instance = {stream.instance.id: stream for stream in missing}
    all_rounds = set().union(*missing.values())
    for turn in db.scalars(select(Turn).where(Turn.instance_id.in_(by_instance), Turn.round.in_(all_rounds))):
        by_instance[turn.instance_id].turns.setdefault((turn.round, turn.speaker), turn)
    for stream, rounds in missing.items():
        stream.loaded_rounds |= rounds  # including Rounds that have no turn yet: no second look


def _turn(db: DbSession, stream: Stream, round_: int, speaker: str) -> Turn:
    turn = stream.turns.get((round_, speaker))
    if turn is None:
        preload_turns(db, {stream: {round_}})
        turn = stream.turns.get((round_, speaker))
    if turn is None:
        turn = Turn(
            session_id=stream.session.id,
            instance_id=stream.instance.id,
            round=round_,
            speaker=speaker,
            text="",
            interrupted=False,
            settled=settles(round_, speaker, stream.instance.completed_round),
        )
        db.add(turn)
        stream.turns[(round_, speaker)] = turn
        count_new_turn(stream.session, speaker)
    return turn


def count_new_turn(session: Session, speaker: str) -> None:
    """A turn was made for this session (locked by the caller): its per-speaker count goes up.
    The row is written at the flush anyway (activity times), so counting costs no statement."""
    if speaker == "user":
        session.user_turns += 1
    elif speaker == "agent":
        session.agent_turns += 1


def user_said(db: DbSession, stream: Stream, cb: Callback, inbox_id: int) -> None:
    round_ = int_field(cb.data.get("Round"))
    if round_ is None:
        return
    turn = _turn(db, stream, round_, "user")
    text = text_field(cb.data.get("Text")) or ""
    seq = cb.sequence if cb.sequence is not None else -1
    if turn.text_sequence is None or (seq, text) > (turn.text_sequence, turn.text):
        turn.text = text
        turn.text_sequence = seq
    turn.user_id = turn.user_id or text_field(cb.data.get("UserId"))
    turn.spoken_at = earliest(turn.spoken_at, from_ms(cb.timestamp_ms))
    stream.complete(round_ - 1)  # the user speaking again: every earlier Round is over


def agent_said(db: DbSession, stream: Stream, cb: Callback, inbox_id: int) -> None:
    round_ = int_field(cb.data.get("Round"))
    if round_ is None:
        return
    stream.insert(
        AgentSentence,
        instance_id=stream.instance.id,
        inbox_id=inbox_id,
        round=round_,
        sequence=cb.sequence,
        callback_ts=cb.timestamp_ms,
        text=text_field(cb.data.get("Text")) or "",
    )
    round_marks.said(stream, round_, cb.timestamp_ms)
    turn = _turn(db, stream, round_, "agent")
    turn.spoken_at = earliest(turn.spoken_at, from_ms(cb.timestamp_ms))
    stream.dirty_rounds.add(round_)


def interrupted(db: DbSession, stream: Stream, cb: Callback, inbox_id: int) -> None:
    round_ = int_field(cb.data.get("Round"))
    if round_ is None:
        return
    turn = _turn(db, stream, round_, "agent")
    if not turn.interrupted:
        stream.session.interrupted_turns += 1
    turn.interrupted = True
    turn.interrupt_reason = int_field(cb.data.get("Reason")) or turn.interrupt_reason
    played = text_field(cb.data.get("PlayedText"))
    if played is not None:
        turn.played_text = played
    turn.spoken_at = earliest(turn.spoken_at, from_ms(cb.timestamp_ms))


def meta_info(db: DbSession, stream: Stream, cb: Callback, inbox_id: int) -> None:
    round_ = int_field(cb.data.get("Round"))
    info = cb.data.get("MetaInfo")
    if round_ is None or not isinstance(info, dict):
        return
    turn = _turn(db, stream, round_, "agent")
    turn.meta_info = {**(turn.meta_info or {}), **info}


def settle_agent_text(db: DbSession, streams: list[Stream]) -> None:
    """Re-join the sentences of every Round that got a new one: order-independent by construction."""
    dirty = {stream.instance.id: stream for stream in streams if stream.dirty_rounds}
    if not dirty:
        return
    all_rounds = set().union(*(stream.dirty_rounds for stream in dirty.values()))
    rows = db.execute(
        select(AgentSentence.instance_id, AgentSentence.round, AgentSentence.text)
        .where(AgentSentence.instance_id.in_(dirty), AgentSentence.round.in_(all_rounds))
        .order_by(
            AgentSentence.instance_id,
            AgentSentence.round,
            AgentSentence.sequence.asc().nulls_last(),
            AgentSentence.callback_ts,
            AgentSentence.text,
        )
    ).all()
    sentences: dict[tuple[int, int], list[str]] = {}
    for instance_id, round_, text in rows:
        if round_ in dirty[instance_id].dirty_rounds:
            sentences.setdefault((instance_id, round_), []).append(text)
    for (instance_id, round_), texts in sentences.items():
        stream = dirty[instance_id]
        turn = _turn(db, stream, round_, "agent")
        turn.text = join_sentences(texts)
        if turn.source == "repaired":  # the callbacks came after all: theirs is the better witness
            turn.source = None
    for stream in dirty.values():
        stream.dirty_rounds.clear()


def settles(round_: int, speaker: str, completed_round: int | None) -> bool:
    """Whether a turn's text is final enough to index: a user's turn is one ASRResult (a rare
    later one still rewrites it, indexed); an agent's is final once its Round is over (the
    instance's ``completed_round``, a function of the callbacks: so is this)."""
    return speaker == "user" or (completed_round is not None and round_ <= completed_round)


def mark_settled(streams: list[Stream]) -> None:
    """Settle the turns at hand whose Round this batch completed, before they are flushed: a turn
    whose last sentence and IDLE come in one batch is then written once, straight into the index."""
    for stream in streams:
        through = _through(stream)
        if through is None:
            continue
        for (round_, speaker), turn in stream.turns.items():
            if not turn.settled and settles(round_, speaker, through):
                turn.settled = True


def stored_to_settle(streams: list[Stream]) -> ColumnElement[bool] | None:
    """The stored turns this batch completed that ``mark_settled`` did not have at hand (earlier
    Rounds, or every Round on a deletion), only when such turns can exist; for ``settle_stored``.

    Read from the instances' marks before the batch moves them (``turn_events.advance``).
    """
    ranges = []
    for stream in streams:
        through, before = stream.complete_through, stream.instance.completed_round
        if through is None or (before is not None and through <= before):
            continue
        low = -(2**63) if before is None else before
        if through - low <= len(stream.loaded_rounds) and all(
            r in stream.loaded_rounds for r in range(low + 1, through + 1)
        ):
            continue  # every Round of the range was loaded: its turns are at hand, settled already
        ranges.append(and_(Turn.instance_id == stream.instance.id, Turn.round > low, Turn.round <= through))
    return or_(*ranges) if ranges else None


def settle_stored(db: DbSession, stored: ColumnElement[bool] | None) -> None:
    """Settle ``stored_to_settle``'s turns: one UPDATE, after the flush (a turn at hand is written
    by the flush, settled already; updated here too, it would enter the search indexes twice)."""
    if stored is not None:
        db.execute(
            update(Turn)
            .where(~Turn.settled, stored)
            .values(settled=True)
            # The turns at hand in this range are settled already; nothing in memory to match.
            .execution_options(synchronize_session=False)
        )


def _through(stream: Stream) -> int | None:
    marks = [m for m in (stream.instance.completed_round, stream.complete_through) if m is not None]
    return max(marks) if marks else None


def join_sentences(sentences: list[str]) -> str:
    """Sentences as one reply: a space between Latin sentences, nothing between CJK ones."""
    out = ""
    for sentence in (s.strip() for s in sentences):
        if not sentence:
            continue
        if out and not (_is_wide(out[-1]) or _is_wide(sentence[0])):
            out += " "
        out += sentence
    return out


def _is_wide(char: str) -> bool:
    return unicodedata.east_asian_width(char) in ("W", "F")


@dataclass(frozen=True, slots=True)
class TranscriptTurn:
    agent_instance_id: str
    round: int
    speaker: str
    text: str
    spoken_at: dt.datetime | None
    interrupted: bool
    interrupt_reason: int | None
    played_text: str | None
    user_id: str | None
    meta_info: dict[str, Any] | None
    new_instance: bool
    source: str | None = None  # "say": spoken through POST /v1/sessions/{id}/say

    def as_dict(self) -> dict[str, Any]:
        return {
            "agent_instance_id": self.agent_instance_id,
            "round": self.round,
            "speaker": self.speaker,
            "text": self.text,
            "spoken_at": self.spoken_at.isoformat() if self.spoken_at else None,
            "interrupted": self.interrupted,
            "interrupt_reason": self.interrupt_reason,
            "played_text": self.played_text,
            "user_id": self.user_id,
            "meta_info": self.meta_info,
            "new_instance": self.new_instance,
            "source": self.source,
        }


def transcript(db: DbSession, session_id: str, *, raw: bool = True) -> list[TranscriptTurn]:
    """Turns in conversation order: instance by instance, Round by Round, the user before the agent.
    ``raw``: the text as spoken (admin token, CLI); else the PII-redacted copy where one is kept."""
    rows = db.execute(
        select(Turn, AgentInstance.agent_instance_id)
        .join(AgentInstance, AgentInstance.id == Turn.instance_id)
        .where(Turn.session_id == session_id)
        .order_by(
            AgentInstance.first_seen_at,
            AgentInstance.agent_instance_id,
            Turn.round,
            Turn.speaker.desc(),  # "user" sorts after "agent"; users speak first in a Round
        )
    ).all()
    turns: list[TranscriptTurn] = []
    previous_instance: str | None = None
    for turn, instance_id in rows:
        turns.append(
            TranscriptTurn(
                agent_instance_id=instance_id,
                round=turn.round,
                speaker=turn.speaker,
                text=turn.text if raw else (turn.text_redacted or turn.text),
                spoken_at=turn.spoken_at,
                interrupted=turn.interrupted,
                interrupt_reason=turn.interrupt_reason,
                played_text=turn.played_text if raw else (turn.played_text_redacted or turn.played_text),
                user_id=turn.user_id,
                meta_info=turn.meta_info,
                new_instance=previous_instance is not None and instance_id != previous_instance,
                source=turn.source,
            )
        )
        previous_instance = instance_id
    return turns

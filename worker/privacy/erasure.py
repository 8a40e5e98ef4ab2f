"""A user's erasure: every word of their sessions removed, counts and timings kept, the act recorded.

``DELETE /v1/users/{user_id}`` and ``roomwarden erase --user`` call :func:`erase`. For each
session whose ``user_id`` is that user it removes, through :func:`remove_words`:

- the text of every turn, the user's and the agent's (agents repeat what users say: "so your
  e-mail is ...") and the played part of interrupted ones; the rows stay, with speaker, Round,
  times and the interrupted flag, so turn counts, durations and response times read the same;
- the agent's sentences (LLMResult texts the agent turns are joined from), emptied likewise;
- the stored callbacks of those sessions (ASR and LLM text inside), emptied as retention empties
  them (``payload = '{}'``, ``purged_at``), and the instances marked ``history_purged`` so that
  a rebuild leaves the sessions as they are; callbacks still pending are left to the drain;
- kept user audio, deleted;
- the text inside their outbound events (``turn.completed``), and the deliveries of those events
  not yet made, cancelled (failed, ``last_error`` says why); other events go out as before.

The search indexes follow the text: Postgres' stored vector and bigram index are computed from
it, SQLite's FTS5 table is kept by triggers. Then :mod:`worker.privacy.files` removes what the
database files still hold (FTS segments, the WAL; VACUUM on Postgres when asked).

Sessions are done in batches of ``BATCH``, one transaction each, so a user with thousands of
sessions never holds one long transaction; the ``erasures`` row is written first and finished
last, so a half-done erasure is visible and running it again completes it. Every step changes
only rows that still hold text, so a second erasure changes nothing and says so.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import delete, null, select, tuple_, update
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

from worker.db import iso, session_scope, utcnow
from worker.models import (
    AgentInstance,
    AgentSentence,
    Delivery,
    DeliveryState,
    Erasure,
    InboxCallback,
    InboxState,
    OutboxEvent,
    Session,
    SessionAnalysis,
    Turn,
    UserAudio,
)
from worker.privacy import files

log = structlog.get_logger(__name__)

BATCH = 20  # sessions per transaction
EMPTIED = "{}"  # as worker/inbox/retention.py empties a payload
CANCELLED = "erased: the user's words were removed before delivery"

# Per outbound event type, the keys of its ``data`` that hold what was said. Events of other
# types (session.*, action.*) carry no words and are delivered as before.
EVENT_TEXT: dict[str, tuple[str, ...]] = {
    "turn.completed": ("text", "played_text"),
    "session.analyzed": ("summary", "data", "outcome_reason"),
}


def user_hash(user_id: str) -> str:
    """What the erasures log keeps instead of the user id."""
    return hashlib.sha256(user_id.encode()).hexdigest()


Remover = Callable[[DbSession, list[str], dt.datetime], int]


def _turns(db: DbSession, ids: list[str], now: dt.datetime) -> int:
    result = db.execute(
        update(Turn)
        .where(
            Turn.session_id.in_(ids),
            (Turn.text != "")
            | Turn.played_text.is_not(None)
            | Turn.text_redacted.is_not(None)
            | Turn.played_text_redacted.is_not(None),
        )
        .values(text="", played_text=None, text_redacted=None, played_text_redacted=None)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def _instances(ids: list[str]) -> Any:
    return select(AgentInstance.id).where(AgentInstance.session_id.in_(ids)).scalar_subquery()


def _agent_sentences(db: DbSession, ids: list[str], now: dt.datetime) -> int:
    result = db.execute(
        update(AgentSentence)
        .where(AgentSentence.instance_id.in_(_instances(ids)), AgentSentence.text != "")
        .values(text="")
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def _payloads(db: DbSession, ids: list[str], now: dt.datetime) -> int:
    """The stored callbacks of the sessions' instances, emptied; pending ones are the drain's."""
    streams = db.execute(
        select(AgentInstance.app_id, AgentInstance.agent_instance_id).where(AgentInstance.session_id.in_(ids))
    ).all()
    if not streams:
        return 0
    pairs = [tuple(row) for row in streams]
    result = db.execute(
        update(InboxCallback)
        .where(
            tuple_(InboxCallback.app_id, InboxCallback.agent_instance_id).in_(pairs),
            InboxCallback.state != InboxState.PENDING,
            InboxCallback.payload != EMPTIED,
        )
        .values(payload=EMPTIED, purged_at=now)
        .execution_options(synchronize_session=False)
    )
    changed = int(getattr(result, "rowcount", 0) or 0)
    if changed:
        # A rebuild cannot derive these sessions again from emptied callbacks: it must keep them.
        db.execute(
            update(AgentInstance)
            .where(AgentInstance.session_id.in_(ids))
            .values(history_purged=True)
            .execution_options(synchronize_session=False)
        )
    return changed


def _user_audio(db: DbSession, ids: list[str], now: dt.datetime) -> int:
    result = db.execute(delete(UserAudio).where(UserAudio.session_id.in_(ids)))
    return int(getattr(result, "rowcount", 0) or 0)


def _worded_events(db: DbSession, ids: list[str]) -> list[tuple[int, dict[str, Any], list[str]]]:
    """The sessions' outbound events that still hold words: id, data, and the keys holding them."""
    found = db.execute(
        select(OutboxEvent.id, OutboxEvent.type, OutboxEvent.data).where(
            OutboxEvent.session_id.in_(ids), OutboxEvent.type.in_(list(EVENT_TEXT))
        )
    ).all()
    worded = []
    for event_id, kind, data in found:
        keys = [k for k in EVENT_TEXT[kind] if isinstance(data, dict) and data.get(k)]
        if keys:
            worded.append((event_id, data, keys))
    return worded


def _deliveries(db: DbSession, ids: list[str], now: dt.datetime) -> int:
    """Deliveries not yet made of events that hold words: cancelled (failed, saying why). Before
    ``_events``, which empties those words; other events of the sessions go out as before."""
    events = [event_id for event_id, _, _ in _worded_events(db, ids)]
    if not events:
        return 0
    result = db.execute(
        update(Delivery)
        .where(Delivery.event_id.in_(events), Delivery.state == DeliveryState.PENDING)
        .values(state=DeliveryState.FAILED, finished_at=now, next_attempt_at=None, last_error=CANCELLED)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def _events(db: DbSession, ids: list[str], now: dt.datetime) -> int:
    """Outbound events' words emptied (text "", played_text null) and ``text_removed`` added."""
    worded = _worded_events(db, ids)
    for event_id, data, keys in worded:
        clean = {**data, **{k: ("" if k == "text" else None) for k in keys}, "text_removed": True}
        db.execute(update(OutboxEvent).where(OutboxEvent.id == event_id).values(data=clean))
    return len(worded)


def _analyses(db: DbSession, ids: list[str], now: dt.datetime) -> int:
    """Post-call analyses are made of the transcript's words: their summary, extracted data and
    outcome reason go; the row stays (status, outcome, usage), so the sweep does not analyse the
    emptied transcript again."""
    result = db.execute(
        update(SessionAnalysis)
        .where(
            SessionAnalysis.session_id.in_(ids),
            SessionAnalysis.summary.is_not(None)
            | SessionAnalysis.data.is_not(None)
            | SessionAnalysis.outcome_reason.is_not(None),
        )
        .values(summary=None, data=null(), outcome_reason=None)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def removers() -> dict[str, Remover]:
    """Every kind of stored words, in the order they are removed; the counts use these names.

    Add a kind here and both erasure and transcript retention remove it (an event type that
    carries words goes in ``EVENT_TEXT``).
    """
    return {
        "turns": _turns,
        "agent_sentences": _agent_sentences,
        "payloads": _payloads,
        "user_audio": _user_audio,
        "analyses": _analyses,
        "deliveries_cancelled": _deliveries,
        "events": _events,
    }


def remove_words(db: DbSession, session_ids: list[str], *, reason: str, now: dt.datetime) -> dict[str, int]:
    """Remove every stored word of ``session_ids`` in the caller's transaction; counts per kind.

    The sessions are marked (``transcript_removed_at``/``_by``); a session already marked for
    the same reason is marked again only if words were found (new turns after the last run).
    """
    counts = {name: remove(db, session_ids, now) for name, remove in removers().items()}
    db.execute(
        update(Session)
        .where(Session.id.in_(session_ids))
        .where(Session.transcript_removed_at.is_(None) | (Session.transcript_removed_by != reason))
        .values(transcript_removed_at=now, transcript_removed_by=reason)
        .execution_options(synchronize_session=False)
    )
    return counts


@dataclass(frozen=True)
class Outcome:
    """What an erasure answers: its record, and whether it found anything left to erase."""

    record: dict[str, Any]
    erased_anything: bool


def user_sessions(db: DbSession, user_id: str) -> list[str]:
    return list(db.scalars(select(Session.id).where(Session.user_id == user_id).order_by(Session.id)))


def erase(
    factory: sessionmaker[DbSession],
    user_id: str,
    *,
    requested_by: str,
    vacuum: bool = False,
    batch: int = BATCH,
) -> Outcome | None:
    """Erase what ``user_id`` said; None when no session has that user id (nothing is recorded)."""
    with session_scope(factory) as db:
        ids = user_sessions(db, user_id)
        if not ids:
            return None
        record = Erasure(
            user_hash=user_hash(user_id),
            requested_by=requested_by[:128],
            requested_at=utcnow(),
            sessions=len(ids),
            counts={},
        )
        db.add(record)
        db.flush()
        record_id = record.id
    totals = dict.fromkeys(removers(), 0)
    for start in range(0, len(ids), batch):
        with session_scope(factory) as db:
            counts = remove_words(db, ids[start : start + batch], reason="erasure", now=utcnow())
        for name, value in counts.items():
            totals[name] += value
    engine = factory.kw["bind"]
    scrubbed = files.scrub(engine, vacuum=vacuum)
    with session_scope(factory) as db:
        record = db.get_one(Erasure, record_id)
        record.counts, record.finished_at, record.files_scrubbed = totals, utcnow(), scrubbed
        shown = as_dict(record)
    log.info("user_erased", erasure_id=record_id, sessions=len(ids), **totals)
    return Outcome(shown, erased_anything=any(totals.values()))


def as_dict(record: Erasure) -> dict[str, Any]:
    return {
        "id": record.id,
        "user_hash": record.user_hash,
        "requested_by": record.requested_by,
        "requested_at": iso(record.requested_at),
        "finished_at": iso(record.finished_at),
        "sessions": record.sessions,
        "counts": dict(record.counts),
        "files_scrubbed": record.files_scrubbed,
    }

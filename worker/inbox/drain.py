"""Applying stored callbacks: per stream in Sequence order, under the session's lock, each exactly once.

A stream is one agent instance's callbacks. A drain takes the pending callbacks of a group of
streams (about ``BATCH_LIMIT`` callbacks in all), applies them in one transaction, and marks them
done in that same transaction, so a callback's effects and its ``done`` mark commit or vanish
together. The common case applies the whole batch under one savepoint; only if something raises
does it go again one savepoint per callback, so that one bad callback is retried with backoff
(and finally parked as ``failed``) without holding back the others.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from sqlalchemy import Row, or_, select, tuple_, update
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

from worker.db import Base, describe_failure, id_in, session_scope, utcnow
from worker.events import callbacks as callback_events
from worker.events import turns as turn_events
from worker.inbox import callback_fields, recordsets, wakeups
from worker.inbox import store as inbox
from worker.inbox.callbacks import Callback, int_field
from worker.inbox.rtc_callbacks import is_room_key
from worker.inbox.store import StreamKey
from worker.inbox.wakeups import Wakeups
from worker.jobs import leases
from worker.metrics import APPLY_LAG
from worker.models import InboxCallback, InboxState, PolicyAction
from worker.policies import decisions, quotas
from worker.policies.config import PolicyBook, book_for
from worker.privacy import turns as privacy_turns
from worker.sessions import audio, lifecycle, rooms, rounds, transcripts
from worker.sessions.lifecycle import Stream
from worker.settings import Settings
from worker.vendors.retries import RetryPolicy

if TYPE_CHECKING:
    from worker.jobs.context import JobContext

log = structlog.get_logger(__name__)

Handler = Callable[[DbSession, Stream, Callback, int], None]

HANDLERS: dict[str, Handler] = {
    "AgentInstanceCreated": lifecycle.instance_created,
    "AgentInstanceDeleted": lifecycle.instance_deleted,
    "Exception": lifecycle.exception,
    "UserSpeakAction": lifecycle.timeline,
    "AgentSpeakAction": lifecycle.timeline,
    "AgentInstanceStatus": lifecycle.timeline,
    "ASRResult": transcripts.user_said,
    "LLMResult": transcripts.agent_said,
    "Interrupted": transcripts.interrupted,
    "AgentInstanceMetaInfo": transcripts.meta_info,
}

BATCH_LIMIT = 500
# A drain message's share of a pool process before its streams go back in the queue.
SLICE_SECONDS = 2.0
# A stream with this many callbacks due in one pass is busy: the drain keeps it (marked, see
# worker.inbox.wakeups) and reads it again, at most every PASS_SECONDS while it is keeping up (the
# receiver's enqueuer gathers for as long between messages). A quiet stream leaves after its pass.
BUSY = 2
PASS_SECONDS = 0.05

# A stored callback as the drain reads it: the columns it uses as a plain row, not an ORM object
# (building 500 InboxCallback objects a batch, identity map and all, was most of the ~10% of the
# drain's CPU that reading the batch took in a profile). The rare failure path loads the object.
Due = Row[int, int, str, str, dt.datetime]


@dataclass
class DrainResult:
    applied: int = 0
    retrying: int = 0
    parked: int = 0
    more: bool = False
    retry_in: float | None = None
    locked: list[StreamKey] = field(default_factory=list)
    # Policy actions decided while applying (pending ones only): enqueue them after the commit.
    actions: list[tuple[int, float]] = field(default_factory=list)
    # A deletion freed a slot of an app with sessions in line: start them after the commit.
    slot_freed: bool = False

    def add(self, other: DrainResult) -> None:
        """Another part of the same transaction's work (rooms and agents drained together)."""
        self.applied += other.applied
        self.retrying += other.retrying
        self.parked += other.parked
        self.more = self.more or other.more
        if other.retry_in is not None:
            self.retry_in = other.retry_in if self.retry_in is None else min(self.retry_in, other.retry_in)
        self.locked.extend(other.locked)
        self.actions.extend(other.actions)
        self.slot_freed = self.slot_freed or other.slot_freed

    def totals(self) -> dict[str, int]:
        return {"applied": self.applied, "retrying": self.retrying, "parked": self.parked}


def drain_streams(
    db: DbSession,
    *,
    streams: Sequence[StreamKey],
    settings: Settings,
    now: dt.datetime | None = None,
    react: bool = True,
) -> DrainResult:
    """Apply what is pending for these instances. The caller commits (and so releases the locks).

    With ``react`` (all but a rebuild), deletions and exceptions are put to the policies, and
    the actions they decide are written in this same transaction (``result.actions``).

    Many streams share one transaction, so a drain message naming a hundred instances with a few
    new callbacks each costs a handful of statements, not a hundred transactions. Streams whose
    session another worker holds are returned in ``locked``: that worker looks for pending
    callbacks again after its commit (see ``inbox.due_streams``).
    """
    now = now or utcnow()
    rooms_due = [key for key in streams if is_room_key(key[1])]
    if rooms_due:  # RTC room callbacks: no agent instance, no session of their own
        result = _drain_rooms(db, rooms_due, settings=settings, now=now, react=react)
        agents = [key for key in streams if not is_room_key(key[1])]
        if agents:
            result.add(drain_streams(db, streams=agents, settings=settings, now=now, react=react))
        return result
    held = lifecycle.lock_streams(db, streams, skip_locked=True)
    result = DrainResult(locked=[key for key in streams if key not in held])
    if not held:
        return result
    rows, result.more = _due_rows(db, held, now)
    if not rows:
        return result
    book = book_for(settings.policies_file) if react else None
    try:
        done, reactions = _apply_together(db, held, rows, settings, book, now)
    except Exception as error:
        log.warning(
            "drain_batch_failed_isolating",
            error=describe_failure(error),
            inbox_ids=[row.id for row in rows],
        )
        done, reactions = _apply_one_by_one(db, held, rows, settings, book, now, result)
    _mark_done(db, done, now)
    result.applied = len(done)
    _observe_lag(rows, set(done))
    freed = {stream.session.app_id for stream in held.values() if stream.freed}
    result.slot_freed = react and bool(freed) and quotas.anyone_waiting(db, freed)
    result.actions = _to_enqueue(reactions, now)
    return result


def _to_enqueue(reactions: list[PolicyAction], now: dt.datetime) -> list[tuple[int, float]]:
    """The decided actions to run once the transaction commits: (id, seconds until due)."""
    return [
        (action.id, max(0.0, (action.not_before - now).total_seconds()))
        for action in reactions
        if not action.dry_run
    ]


def _drain_rooms(
    db: DbSession, keys: Sequence[StreamKey], *, settings: Settings, now: dt.datetime, react: bool
) -> DrainResult:
    """``drain_streams`` for rooms' RTC callbacks (worker/sessions/rooms.py): the same batch, the
    same retries and parking of a callback that keeps failing, one lock per room."""
    held = rooms.lock_rooms(db, keys)
    result = DrainResult(locked=[key for key in keys if key not in held])
    if not held:
        return result
    rows, result.more = _due_rows(db, held, now)
    if not rows:
        return result
    try:
        with db.begin_nested():
            reactions = rooms.apply(db, [(row.app_id, row.payload) for row in rows], now=now, react=react)
        done = [row.id for row in rows]
    except Exception as error:
        log.warning(
            "drain_rooms_failed_isolating", error=describe_failure(error), inbox_ids=[r.id for r in rows]
        )
        done, reactions = [], []
        for row in rows:
            try:
                with db.begin_nested():
                    reactions.extend(rooms.apply(db, [(row.app_id, row.payload)], now=now, react=react))
                done.append(row.id)
            except Exception as exc:
                _record_failure(db, row, exc, settings=settings, now=now, result=result)
    _mark_done(db, done, now)
    result.applied = len(done)
    _observe_lag(rows, set(done))
    result.actions = _to_enqueue(reactions, now)
    return result


def _mark_done(db: DbSession, done: list[int], now: dt.datetime) -> None:
    if done:
        db.execute(
            update(InboxCallback)
            .where(id_in(InboxCallback.id, done, db.get_bind().dialect.name))
            .values(state=InboxState.DONE, processed_at=now, last_error=None)
            # The loaded rows are not read again: skip matching them up in the identity map.
            .execution_options(synchronize_session=False)
        )


def _observe_lag(rows: list[Due], done: set[int]) -> None:
    """Acknowledged (stored) to applied, for ``roomwarden_apply_lag_seconds``; the commit that
    follows adds a few milliseconds this does not see."""
    now = utcnow()
    for row in rows:
        if row.id in done:
            APPLY_LAG.observe(max(0.0, (now - row.received_at).total_seconds()))


def _due_rows(db: DbSession, held: Collection[StreamKey], now: dt.datetime) -> tuple[list[Due], bool]:
    """The held streams' due callbacks in the order ZEGO sent them, at most BATCH_LIMIT; and
    whether more are waiting."""
    rows = list(
        db.execute(
            select(
                InboxCallback.id,
                InboxCallback.app_id,
                InboxCallback.agent_instance_id,
                InboxCallback.payload,
                InboxCallback.received_at,
            )
            .where(
                tuple_(InboxCallback.app_id, InboxCallback.agent_instance_id).in_(list(held)),
                InboxCallback.state == InboxState.PENDING,
                or_(InboxCallback.next_attempt_at.is_(None), InboxCallback.next_attempt_at <= now),
            )
            .order_by(
                InboxCallback.app_id,
                InboxCallback.agent_instance_id,
                InboxCallback.sequence.asc().nulls_last(),
                InboxCallback.callback_ts,
                InboxCallback.id,
            )
            .limit(BATCH_LIMIT + 1)
        )
    )
    return rows[:BATCH_LIMIT], len(rows) > BATCH_LIMIT


def _apply_together(
    db: DbSession,
    held: dict[StreamKey, Stream],
    rows: list[Due],
    settings: Settings,
    book: PolicyBook | None,
    now: dt.datetime,
) -> tuple[list[int], list[PolicyAction]]:
    """The fast path: the whole batch in one savepoint, the turns it touches loaded at once."""
    reactions: list[PolicyAction] = []
    with db.begin_nested(), db.no_autoflush:
        parsed = [(row, _callback(row)) for row in rows]
        rounds: dict[StreamKey, set[int]] = {}
        for row, cb in parsed:
            round_ = int_field(cb.data.get("Round"))
            if round_ is not None:
                rounds.setdefault(_key(row), set()).add(round_)
        transcripts.preload_turns(db, {held[key]: wanted for key, wanted in rounds.items()})
        for row, cb in parsed:
            _apply(db, held[_key(row)], row, cb, settings, book, now, reactions)
        _settle(db, [held[key] for key in dict.fromkeys(_key(row) for row in rows)], settings)
    return [row.id for row in rows], reactions


def _apply_one_by_one(
    db: DbSession,
    held: dict[StreamKey, Stream],
    rows: list[Due],
    settings: Settings,
    book: PolicyBook | None,
    now: dt.datetime,
    result: DrainResult,
) -> tuple[list[int], list[PolicyAction]]:
    """Something in the batch failed: each callback in its own savepoint, so one bad callback
    is retried or parked (in ``result``) and the rest still apply."""
    held = _relock(db, list(held))
    done: list[int] = []
    reactions: list[PolicyAction] = []
    for row in rows:
        decided: list[PolicyAction] = []
        try:
            with db.begin_nested():
                stream = held[_key(row)]
                _apply(db, stream, row, _callback(row), settings, book, now, decided)
                _settle(db, [stream], settings)
            done.append(row.id)
            reactions.extend(decided)
        except Exception as exc:
            held = _relock(db, list(held))
            _record_failure(db, row, exc, settings=settings, now=now, result=result)
    return done, reactions


def drain_until_done(
    factory: sessionmaker[DbSession],
    streams: Sequence[StreamKey],
    *,
    settings: Settings,
    retry_later: Callable[[list[StreamKey], float], None] | None = None,
    react: bool = True,
    on_actions: Callable[[list[tuple[int, float]]], None] | None = None,
    on_slot_freed: Callable[[], object] | None = None,
    slice_seconds: float = SLICE_SECONDS,
    marks: Wakeups | None = None,
) -> DrainResult:
    """Drain these streams until none has callbacks due, one transaction per ~BATCH_LIMIT callbacks.

    Owns its transactions (it runs many), unlike ``drain_streams``. Streams another worker holds
    are left to it. ``retry_later`` is told when callbacks that failed become due again,
    ``on_actions`` of the policy actions each committed transaction decided (id, delay), and
    ``on_slot_freed`` when one deleted an agent while sessions of its app wait for a slot: the
    slot goes to them at once, not at the next beat of ``start_queued`` (up to an interval
    during which ZEGO has room and roomwarden makes users wait).

    Live conversations keep their streams due, so a drain could loop for as long as they talk,
    holding a pool process the beat's jobs and other streams wait for. After ``slice_seconds``
    the streams still due are handed back through ``retry_later`` (delay 0: a new message at the
    back of the queue) and this run ends; without ``retry_later`` it drains to the end.

    With ``marks`` (``worker.inbox.wakeups``) the message's marks go at once, so that a quiet
    stream costs one pass (its next callback sends a message of its own). A stream found busy
    (``BUSY`` or more callbacks due) is marked again and kept while this loops: what it stores
    meanwhile is found here instead of waking the other pool process for the same stream. A kept
    stream leaves only after its mark is released and it is read once more.
    """
    total = DrainResult()
    keys = list(dict.fromkeys(streams))
    marks = marks if marks is not None and marks.enabled else None
    kept: set[StreamKey] = set()  # marked by this drain: released, then read once more, to leave
    ensured: set[StreamKey] = set()
    if marks is not None:
        marks.release(keys)  # taken: what is stored from now on sends a message, or is ours if kept
    started = time.monotonic()
    last_pass: tuple[float, int] | None = None  # when the previous pass began, what it applied
    while keys:
        if kept and last_pass is not None and 0 < last_pass[1] < BATCH_LIMIT // 2:
            # Keeping up with busy streams: gather for a moment, as the receiver's enqueuer does,
            # rather than spin on a few new callbacks a transaction (each pass costs the same few
            # statements, whatever it applies).
            time.sleep(max(0.0, last_pass[0] + PASS_SECONDS - time.monotonic()))
        pass_started, applied_before = time.monotonic(), total.applied
        # Asked with no lock held: whatever was stored while we worked, and whose message found
        # us holding its session, is picked up on the next turn of this loop.
        with session_scope(factory) as db:
            counts = inbox.due_counts(db, keys, now=utcnow())
            new = [key for key in counts if key not in ensured and not is_room_key(key[1])]
            if new:  # new sessions committed now, in this short transaction, not at a drain's end
                lifecycle.ensure_streams(db, new)
                ensured.update(new)
        leaving = [key for key in keys if key in kept and key not in counts]
        if leaving:
            _let_go(marks, leaving, kept)  # then read once more: see worker.inbox.wakeups
        if not counts:
            keys = leaving
            continue
        if retry_later is not None and total.applied and time.monotonic() - started >= slice_seconds:
            retry_later([*counts, *leaving], 0.0)
            break
        groups = batches(counts, BATCH_LIMIT)
        if retry_later is not None and len(groups) > 1:
            # A backlog (after an outage, or a burst): this run takes one transaction's worth and
            # hands the other streams back at once, so that every pool process and host shares it.
            # A message names each stream once (worker.inbox.wakeups), so without this one
            # process would drain what its message named while the others had nothing to do.
            shared = [key for group in groups[1:] for key in group]
            retry_later(shared, 0.0)
            kept.difference_update(shared)  # their marks are queued ones now, the next drain's
            counts = {key: counts[key] for key in groups[0]}
            groups = groups[:1]
        held_by_others: set[StreamKey] = set()
        for batch in groups:
            with session_scope(factory) as db:
                result = drain_streams(db, streams=batch, settings=settings, react=react)
            if result.actions and on_actions is not None:
                on_actions(result.actions)
            if result.slot_freed and on_slot_freed is not None:
                on_slot_freed()
            total.actions.extend(result.actions)
            total.applied += result.applied
            total.retrying += result.retrying
            total.parked += result.parked
            if result.retry_in is not None and retry_later is not None:
                retry_later(batch, result.retry_in)
            held_by_others.update(result.locked)
        last_pass = (pass_started, total.applied - applied_before)
        ours = [key for key in counts if key not in held_by_others]
        if marks is None:
            keys = ours
            continue
        # A stream another worker holds is that worker's: it reads again after its commit. One we
        # kept goes like a stream with nothing left: released, then read once more.
        handed = [key for key in held_by_others if key in kept]
        if handed:
            _let_go(marks, handed, kept)
        busy = [key for key in ours if counts[key] >= BUSY and key not in kept]
        if busy:
            marks.taken(busy)
            kept.update(busy)
        keys = [*(key for key in ours if key in kept), *leaving, *handed]
    return total


def _let_go(marks: Wakeups | None, streams: list[StreamKey], kept: set[StreamKey]) -> None:
    assert marks is not None  # only marked streams are kept
    marks.release(streams)
    kept.difference_update(streams)


def batches(counts: dict[StreamKey, int], budget: int) -> list[list[StreamKey]]:
    """Streams grouped so that each transaction applies about ``budget`` callbacks.

    A transaction locks only the sessions it will really work on, so a second worker handed the
    same message takes the next group instead of finding every session held.
    """
    groups: list[list[StreamKey]] = [[]]
    filled = 0
    for key, count in counts.items():
        if groups[-1] and filled + count > budget:
            groups.append([])
            filled = 0
        groups[-1].append(key)
        filled += count
    return groups


def drain_stream(
    db: DbSession,
    *,
    app_id: int,
    agent_instance_id: str,
    settings: Settings,
    now: dt.datetime | None = None,
) -> DrainResult:
    """``drain_streams`` for one instance."""
    return drain_streams(db, streams=[(app_id, agent_instance_id)], settings=settings, now=now)


def _key(row: Due) -> StreamKey:
    return (row.app_id, row.agent_instance_id)


def _relock(db: DbSession, keys: list[StreamKey]) -> dict[StreamKey, Stream]:
    """After a savepoint rollback: forget cached objects, take the streams again (our own locks)."""
    db.expire_all()
    held = lifecycle.lock_streams(db, keys)
    assert len(held) == len(keys)  # we hold the locks already; none can be skipped
    return held


def _apply(
    db: DbSession,
    stream: Stream,
    row: Due,
    cb: Callback,
    settings: Settings,
    book: PolicyBook | None,
    now: dt.datetime,
    reactions: list[PolicyAction],
) -> None:
    payload = cb.payload
    lifecycle.observe(stream, cb)
    handler = HANDLERS.get(cb.event)
    if handler is not None:
        handler(db, stream, cb, row.id)
        if book is not None and cb.event in ("AgentInstanceDeleted", "Exception"):
            action = decisions.react(db, stream, cb, book=book, now=now)
            if action is not None:
                reactions.append(action)
    elif cb.event == "UserAudioData":
        if settings.store_user_audio:
            audio.user_audio(db, stream, cb, row.id)
        else:
            stripped = orjson.dumps(audio.without_audio(payload)).decode()
            db.execute(update(InboxCallback).where(InboxCallback.id == row.id).values(payload=stripped))


def _settle(db: DbSession, streams: list[Stream], settings: Settings) -> None:
    inserts: dict[type[Base], list[dict[str, Any]]] = {}
    for stream in streams:
        for model, rows in stream.inserts.items():
            inserts.setdefault(model, []).extend(rows)
        stream.inserts.clear()
    for model, rows in inserts.items():
        recordsets.insert_rows(db, model, rows)
    rounds.settle(db, streams)
    transcripts.settle_agent_text(db, streams)
    for stream in streams:  # PII redaction (worker/privacy/turns.py): a no-op when off
        if stream.turns:
            privacy_turns.keep_redacted(stream.session, stream.turns.values(), settings=settings)
    transcripts.mark_settled(streams)
    stored = transcripts.stored_to_settle(streams)  # before advance moves the instances' marks
    marks = [(s.session, s.instance, s.complete_through) for s in streams if s.complete_through is not None]
    # The marks go out with this flush, in the instance's one UPDATE of the batch.
    completed = turn_events.advance(marks)
    for stream in streams:
        stream.complete_through = None
    db.flush()
    transcripts.settle_stored(db, stored)
    turn_events.announce(db, completed, settings=settings)  # before any session.ended of this batch
    for stream in streams:
        lifecycle.refresh_session_state(db, stream)
    db.flush()


def _callback(row: Due) -> Callback:
    """The stored callback as the drain applies it: NUL in any string kept as U+FFFD (callback_fields)."""
    payload = orjson.loads(row.payload)
    if "\\u0000" in row.payload:
        payload = callback_fields.scrub(payload)
    return Callback.from_payload(payload)


def _record_failure(
    db: DbSession,
    due: Due,
    exc: Exception,
    *,
    settings: Settings,
    now: dt.datetime,
    result: DrainResult,
) -> None:
    row = db.get_one(InboxCallback, due.id)  # the rare path: the whole row, for the event and the log
    attempts = row.attempts + 1
    error = describe_failure(exc)
    if attempts >= settings.apply_max_attempts:
        values = {
            "state": InboxState.FAILED,
            "attempts": attempts,
            "last_error": error,
            "next_attempt_at": None,
        }
        result.parked += 1
        callback_events.parked(db, row, attempts=attempts, error=error)
        log.error(
            "callback_parked", inbox_id=row.id, callback_event=row.event, attempts=attempts, error=error
        )
    else:
        backoff = RetryPolicy(
            base=settings.apply_retry_base_seconds, cap=math.inf, jitter="band", deadline=None
        )
        delay = backoff.delay(attempts - 1)
        values = {
            "attempts": attempts,
            "last_error": error,
            "next_attempt_at": now + dt.timedelta(seconds=delay),
        }
        result.retrying += 1
        result.retry_in = delay if result.retry_in is None else min(result.retry_in, delay)
        log.warning(
            "callback_apply_failed",
            inbox_id=row.id,
            callback_event=row.event,
            attempts=attempts,
            retry_in=round(delay, 2),
            error=error,
        )
    db.execute(update(InboxCallback).where(InboxCallback.id == row.id).values(**values))


def sweep(job: JobContext, enqueue: Callable[[list[StreamKey]], bool]) -> int:
    """Re-send the streams whose callbacks are overdue, in messages of 100; one sweep at a time
    across every beat and worker (a second would only send the same streams again).

    A stream whose message is still on its way (marked, see ``worker.inbox.wakeups``) is skipped:
    under a backlog its message is only late, and another would lengthen the queue it waits in.
    Its mark expires if the message was lost, and the next sweep sends it. Returns how many
    streams were sent."""
    with leases.held(job.sessions, "sweep-inbox") as mine:
        if not mine:
            return 0
        marks = wakeups.for_settings(job.settings)
        streams = overdue(job)
        sent = 0
        for start in range(0, len(streams), 100):
            wanted = marks.claim(streams[start : start + 100])
            if not wanted:
                continue
            if not enqueue(wanted):
                marks.unclaim(wanted)
                break  # the broker is away: the rest would fail the same way; the next sweep tries
            sent += len(wanted)
    if streams:
        log.info("inbox_swept", overdue=len(streams), sent=sent)
    return sent


def overdue(job: JobContext) -> list[StreamKey]:
    """Streams with callbacks still pending a while after they came: their message was lost."""
    now = utcnow()
    with session_scope(job.sessions) as db:
        streams = inbox.pending_streams(
            db, received_before=now - dt.timedelta(seconds=job.settings.sweep_after_seconds), now=now
        )
    return streams

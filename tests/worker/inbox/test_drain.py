"""Applying stored callbacks: a bad one is retried, then parked and replayable, never blocking the rest."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from typing import Any

import pytest
import redis
import structlog
from sqlalchemy import Engine, select, text, update
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

from tests.conftest import REDIS_URL
from tests.factories import INSTANCE, Signer, apply_pending, ingest
from worker.db import make_sessionmaker, session_scope, utcnow
from worker.inbox import store as inbox
from worker.inbox import wakeups
from worker.inbox.drain import drain_stream, drain_streams, drain_until_done, sweep
from worker.inbox.wakeups import Wakeups
from worker.jobs.context import JobContext
from worker.models import InboxCallback, Session, Turn, UserAudio
from worker.sessions import audio
from worker.sessions.lifecycle import session_id_for
from worker.settings import Settings

BAD_AUDIO = {"UserId": "user_1", "Round": 5, "SampleRate": 16000, "Format": "pcm", "Audio": "%%%not-base64"}


def _rows(db: DbSession) -> dict[str, InboxCallback]:
    db.expire_all()
    return {row.event: row for row in db.scalars(select(InboxCallback))}


def test_a_failing_callback_is_retried_with_backoff_while_the_rest_apply(
    db: DbSession, signer: Signer, settings: Settings
) -> None:
    """One callback that cannot be applied waits for its retry; the others of the stream are applied now."""
    keep_audio = settings.model_copy(update={"store_user_audio": True, "apply_retry_base_seconds": 30})
    ingest(db, [signer.callback("UserAudioData", BAD_AUDIO), signer.callback("ASRResult")])
    result = drain_stream(db, app_id=signer.app_id, agent_instance_id=INSTANCE, settings=keep_audio)
    assert (result.applied, result.retrying, result.parked) == (1, 1, 0)
    assert result.retry_in is not None and 24 <= result.retry_in <= 36
    rows = _rows(db)
    assert rows["ASRResult"].state == "done"
    failing = rows["UserAudioData"]
    assert (failing.state, failing.attempts) == ("pending", 1)
    assert failing.last_error is not None and "base64" in failing.last_error
    assert failing.next_attempt_at is not None and failing.next_attempt_at > utcnow()
    assert db.scalars(select(Turn)).one().text == "What's the weather like?"
    # Not due yet: a second drain leaves it alone.
    again = drain_stream(db, app_id=signer.app_id, agent_instance_id=INSTANCE, settings=keep_audio)
    assert (again.applied, again.retrying) == (0, 0)


def test_after_the_bound_a_callback_is_parked_as_failed_and_can_be_replayed(
    db: DbSession, signer: Signer, settings: Settings
) -> None:
    """Past apply_max_attempts the callback is parked with its error; replay puts it back and it applies."""
    keep_audio = settings.model_copy(update={"store_user_audio": True, "apply_max_attempts": 3})
    ingest(db, [signer.callback("UserAudioData", BAD_AUDIO)])
    for attempt in range(3):  # noqa: B007 - checked after the loop
        db.execute(update(InboxCallback).values(next_attempt_at=None))
        result = drain_stream(db, app_id=signer.app_id, agent_instance_id=INSTANCE, settings=keep_audio)
    assert (result.parked, attempt) == (1, 2)
    row = _rows(db)["UserAudioData"]
    assert (row.state, row.attempts) == ("failed", 3)
    assert inbox.list_callbacks(db, state=inbox.InboxState.FAILED)[0].id == row.id
    # The sweeper does not pick up parked callbacks...
    assert inbox.pending_streams(db, received_before=utcnow() + dt.timedelta(hours=1), now=utcnow()) == []
    # ...an operator replays them (here, after turning audio storage off, which strips the audio).
    assert inbox.replay_failed(db) == [(signer.app_id, INSTANCE)]
    assert apply_pending(db, settings) == 1
    row = _rows(db)["UserAudioData"]
    assert (row.state, row.attempts) == ("done", 0)
    assert '"Audio":null' in row.payload


def test_user_audio_is_not_kept_by_default(db: DbSession, signer: Signer, settings: Settings) -> None:
    """With audio storage off (the default) the base64 audio is stripped from the stored callback once applied."""
    ingest(db, [signer.callback("UserAudioData")])
    apply_pending(db, settings)
    assert db.scalars(select(UserAudio)).all() == []
    payload = _rows(db)["UserAudioData"].payload
    assert "AAECAwQFBgcICQ==" not in payload
    assert '"AudioDropped":true' in payload


def test_user_audio_is_kept_when_enabled_and_purged_after_retention(
    db: DbSession, signer: Signer, settings: Settings
) -> None:
    """With ROOMWARDEN_STORE_USER_AUDIO on, the PCM is kept, then deleted once past its retention."""
    keep_audio = settings.model_copy(update={"store_user_audio": True})
    ingest(db, [signer.callback("UserAudioData")])
    apply_pending(db, keep_audio)
    stored = db.scalars(select(UserAudio)).one()
    assert stored.audio == bytes(range(10))
    assert (stored.sample_rate, stored.format, stored.round, stored.user_id) == (
        16000,
        "pcm",
        650459806,
        "user_1",
    )
    assert audio.purge_expired(db, now=utcnow(), retention_days=7) == 0
    db.execute(update(InboxCallback).values(received_at=utcnow() - dt.timedelta(days=8)))
    db.execute(update(UserAudio).values(at=utcnow() - dt.timedelta(days=8)))
    assert audio.purge_expired(db, now=utcnow(), retention_days=7) == 1
    db.flush()
    assert db.scalars(select(UserAudio)).all() == []
    assert "AAECAwQFBgcICQ==" not in _rows(db)["UserAudioData"].payload


def test_the_sweeper_finds_streams_left_pending(db: DbSession, signer: Signer, settings: Settings) -> None:
    """Callbacks still pending after the sweep delay are found again, stream by stream."""
    ingest(
        db,
        [
            signer.callback("ASRResult"),
            signer.callback("LLMResult"),
            signer.callback("ASRResult", instance="42"),
        ],
    )
    now = utcnow()
    assert inbox.pending_streams(db, received_before=now - dt.timedelta(seconds=5), now=now) == []
    later = now + dt.timedelta(seconds=10)
    found = inbox.pending_streams(db, received_before=later - dt.timedelta(seconds=5), now=later)
    assert sorted(found) == sorted([(signer.app_id, INSTANCE), (signer.app_id, "42")])


def test_a_drain_message_only_opens_the_streams_with_work_due(
    db: DbSession, signer: Signer, settings: Settings
) -> None:
    """Of the streams a drain message names, only those with callbacks due now are drained."""
    ingest(db, [signer.callback("ASRResult"), signer.callback("ASRResult", instance="42")])
    apply_pending(db, settings, instance="42")
    named = [(signer.app_id, "42"), (signer.app_id, INSTANCE), (signer.app_id, "never-heard-of")]
    assert inbox.due_streams(db, named, now=utcnow()) == [(signer.app_id, INSTANCE)]
    assert inbox.due_streams(db, [], now=utcnow()) == []


def test_a_session_held_by_another_worker_is_skipped_not_waited_for(
    clean_engine: Engine, signer: Signer, settings: Settings
) -> None:
    """Two streams drained together: the one whose session another worker holds is handed back untouched."""
    if clean_engine.dialect.name != "postgresql":
        pytest.skip("SQLite serialises writers with BEGIN IMMEDIATE; there is no row lock to skip")
    factory = make_sessionmaker(clean_engine)
    with session_scope(factory) as db:
        ingest(db, [signer.callback("ASRResult"), signer.callback("ASRResult", instance="42")])
        apply_pending(db, settings, instance="42")  # makes session "42" exist
        ingest(db, [signer.callback("LLMResult", instance="42")])
    other_worker = factory()
    other_worker.execute(
        select(Session).where(Session.id == session_id_for(signer.app_id, "42")).with_for_update()
    )
    try:
        with session_scope(factory) as db:
            result = drain_streams(
                db, streams=[(signer.app_id, INSTANCE), (signer.app_id, "42")], settings=settings
            )
        assert result.locked == [(signer.app_id, "42")]
        assert result.applied == 1
    finally:
        other_worker.rollback()
        other_worker.close()
    with session_scope(factory) as db:
        assert inbox.due_streams(db, [(signer.app_id, INSTANCE), (signer.app_id, "42")], now=utcnow()) == [
            (signer.app_id, "42")
        ]
        assert drain_streams(db, streams=[(signer.app_id, "42")], settings=settings).applied == 1


def test_nul_and_escapes_are_applied_with_the_text_around_them(
    db: DbSession, signer: Signer, settings: Settings
) -> None:
    """NUL, which Postgres text and JSONB cannot hold, arrives as U+FFFD on both databases; the rest of
    the text, terminal escapes included, is kept as it came (escaped only where it meets a terminal)."""
    ingest(
        db,
        [
            signer.callback(
                "ASRResult",
                {"UserId": "user\x00_1", "Round": 3, "Text": "hi\x00there \x1b[2J"},
                RoomId="room\x00_1",
            ),
            signer.callback("LLMResult", {"Round": 3, "Text": "ans\x00wer"}),
            signer.callback("AgentInstanceMetaInfo", {"Round": 3, "MetaInfo": {"mood\x00": "calm\x00"}}),
            signer.callback("Exception", {"Code": 2201, "Message": "bad\x00llm", "Round": 3}),
        ],
    )
    assert apply_pending(db, settings) == 4
    assert {row.state for row in db.scalars(select(InboxCallback))} == {"done"}
    user, agent = sorted(db.scalars(select(Turn)), key=lambda t: t.speaker, reverse=True)
    assert (user.text, user.user_id) == ("hi\ufffdthere \x1b[2J", "user\ufffd_1")
    assert agent.text == "ans\ufffdwer"
    assert agent.meta_info == {"mood\ufffd": "calm\ufffd"}
    session = db.get(Session, session_id_for(signer.app_id, INSTANCE))
    assert session is not None and session.room_id == "room\ufffd_1"


def test_a_failed_batch_is_reported_by_error_class_and_ids_never_by_its_values(
    db: DbSession,
    engine: Engine,
    signer: Signer,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """When the database refuses a batch, the logs and last_error name the error and the callbacks, and
    quote none of the contents: not the failing callback's, not the other callbacks' in the batch."""
    room = "SECRET-ROOM-" + "r" * 200  # stored past the receiver's checks, as an older release did
    if engine.dialect.name == "sqlite":  # SQLite takes any length: make it refuse, as Postgres does
        for when in ("INSERT", "UPDATE"):
            db.execute(
                text(
                    f"CREATE TEMP TRIGGER refuse_long_rooms_{when} BEFORE {when} ON agent_instances "
                    "WHEN length(NEW.room_id) > 128 BEGIN SELECT RAISE(ABORT, 'room id too long'); END"
                )
            )
    good = signer.callback("ASRResult", {"UserId": "user_1", "Round": 1, "Text": "SECRET-TEXT-4242"})
    bad = signer.callback("LLMResult", {"Round": 1, "Text": "SECRET-ANSWER"}, instance="2", RoomId=room)
    ingest(db, [good, bad])
    with structlog.testing.capture_logs() as logs:
        drain_streams(db, streams=[(signer.app_id, INSTANCE), (signer.app_id, "2")], settings=settings)
    rows = {row.agent_instance_id: row for row in db.scalars(select(InboxCallback))}
    assert rows[INSTANCE].state == "done"
    failed = rows["2"]
    assert failed.state == "pending" and failed.last_error is not None
    assert failed.last_error.startswith(("DataError", "IntegrityError"))
    # Loggers cached by an earlier test may write around capture_logs: read stderr too.
    reported = repr(logs) + capsys.readouterr().err + failed.last_error
    for secret in ("SECRET-ROOM", "SECRET-TEXT", "SECRET-ANSWER", "user_1"):
        assert secret not in reported
    assert "callback_apply_failed" in reported
    assert "drain_batch_failed_isolating" in reported
    assert f"[{rows[INSTANCE].id}, {failed.id}]" in reported  # the batch's inbox ids


def test_a_drain_that_outlasts_its_slice_hands_its_streams_back_to_the_queue(
    clean_engine: Engine, signer: Signer, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream that stays busy does not keep a pool process: after its slice the drain asks for a
    new message for what is still due (the beat's jobs get their turn meanwhile) and stops; the
    next message finishes the work, and nothing is applied twice."""
    from worker.inbox import drain as draining

    monkeypatch.setattr(draining, "BATCH_LIMIT", 2)  # five callbacks: three transactions' worth
    factory = make_sessionmaker(clean_engine)
    with session_scope(factory) as db:
        said = [{"UserId": "user_1", "Round": n, "Text": f"line {n}"} for n in range(1, 6)]
        ingest(db, [signer.callback("ASRResult", data, sequence=n) for n, data in enumerate(said, 1)])
    handed_back: list[tuple[list[tuple[int, str]], float]] = []
    stream = (signer.app_id, INSTANCE)

    first = draining.drain_until_done(
        factory,
        [stream],
        settings=settings,
        retry_later=lambda s, d: handed_back.append((s, d)),
        slice_seconds=0.0,
    )
    assert first.applied == 2 and handed_back == [([stream], 0.0)]
    rest = draining.drain_until_done(factory, [stream], settings=settings)  # no re-enqueue: to the end
    assert rest.applied == 3
    with session_scope(factory) as db:
        assert [t.text for t in db.scalars(select(Turn).order_by(Turn.round))] == [
            f"line {n}" for n in range(1, 6)
        ]


def test_a_backlog_bigger_than_a_transaction_is_shared_with_the_other_workers(
    clean_engine: Engine, signer: Signer, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After an outage one message may name every stream with callbacks waiting (a stream is
    named once at a time): the drain that takes it applies one transaction's worth and hands the
    other streams straight back, so the other pool processes work the backlog too."""
    from worker.inbox import drain as draining

    monkeypatch.setattr(draining, "BATCH_LIMIT", 2)  # two callbacks a stream: one stream a transaction
    factory = make_sessionmaker(clean_engine)
    streams = [(signer.app_id, INSTANCE), (signer.app_id, "42"), (signer.app_id, "43")]
    with session_scope(factory) as db:
        ingest(
            db,
            [
                signer.callback(
                    "ASRResult",
                    {"UserId": "user_1", "Round": n, "Text": f"{instance} {n}"},
                    instance=instance,
                    sequence=n,
                )
                for _, instance in streams
                for n in (1, 2)
            ],
        )
    handed_back: list[tuple[list[tuple[int, str]], float]] = []

    first = draining.drain_until_done(
        factory, streams, settings=settings, retry_later=lambda s, d: handed_back.append((s, d))
    )
    assert first.applied == 2 and handed_back == [(streams[1:], 0.0)]
    assert draining.drain_until_done(factory, handed_back[0][0], settings=settings).applied == 4
    with session_scope(factory) as db:
        assert sorted(t.text for t in db.scalars(select(Turn))) == sorted(
            f"{instance} {n}" for _, instance in streams for n in (1, 2)
        )


# --- One message per stream at a time (worker/inbox/wakeups.py). ---


class _StoredMeanwhile(Wakeups):
    """Marks that, the moment a drain lets a stream it kept go, first see a callback stored while
    the stream was still marked: the receiver's enqueuer finds the mark and sends nothing."""

    def __init__(self, factory: sessionmaker[DbSession], payload: dict[str, Any]) -> None:
        super().__init__(redis.Redis.from_url(REDIS_URL))
        self.factory, self.payload = factory, payload
        self.kept: list[tuple[int, str]] = []
        self.receiver_sent: list[tuple[int, str]] | None = None

    def taken(self, streams: Sequence[tuple[int, str]]) -> None:
        super().taken(streams)
        self.kept.extend(streams)

    def release(self, streams: Sequence[tuple[int, str]]) -> None:
        if self.kept and self.receiver_sent is None:
            with session_scope(self.factory) as db:
                ingest(db, [self.payload])
            self.receiver_sent = self.claim(streams)
        super().release(streams)


def _said(round_: int, text: str, sequence: int) -> dict[str, Any]:
    return Signer().callback(
        "ASRResult", {"UserId": "user_1", "Round": round_, "Text": text}, sequence=sequence
    )


def test_a_drain_keeps_a_busy_stream_marked_and_applies_what_came_meanwhile(
    clean_engine: Engine, redis_client: redis.Redis, settings: Settings
) -> None:
    """While a drain works a busy stream, a new callback sends no second message (that would wake
    the other pool process for nothing); the drain reads the stream again after letting it go, so
    the callback is applied all the same, and from then on a new callback sends a message again."""
    factory = make_sessionmaker(clean_engine)
    stream = (Signer().app_id, INSTANCE)
    with session_scope(factory) as db:
        ingest(db, [_said(1, "hi", 1), _said(2, "there", 2)])
    marks = _StoredMeanwhile(factory, _said(3, "again", 3))
    assert marks.claim([stream]) == [stream]  # the receiver's message for the first callbacks

    result = drain_until_done(factory, [stream], settings=settings, marks=marks)

    assert marks.kept == [stream]  # two callbacks in one pass: busy, kept
    assert marks.receiver_sent == []  # the third found the mark: no message of its own
    assert result.applied == 3
    with session_scope(factory) as db:
        assert [t.text for t in db.scalars(select(Turn).order_by(Turn.round))] == ["hi", "there", "again"]
        assert inbox.due_streams(db, [stream], now=utcnow()) == []
    assert marks.claim([stream]) == [stream]  # let go: the next callback sends a message


def test_a_quiet_stream_is_let_go_when_its_message_is_taken(
    clean_engine: Engine, redis_client: redis.Redis, settings: Settings
) -> None:
    """One callback due: the drain frees the stream as it takes the message, applies the callback
    in one pass and is done; a callback after that sends a message of its own."""
    factory = make_sessionmaker(clean_engine)
    stream = (Signer().app_id, INSTANCE)
    with session_scope(factory) as db:
        ingest(db, [_said(1, "hi", 1)])
    marks = _StoredMeanwhile(factory, _said(2, "unused", 2))
    assert marks.claim([stream]) == [stream]

    assert drain_until_done(factory, [stream], settings=settings, marks=marks).applied == 1
    assert marks.kept == [] and marks.receiver_sent is None
    assert marks.claim([stream]) == [stream]


def test_the_sweeper_skips_a_stream_whose_message_is_on_its_way_until_its_mark_expires(
    clean_engine: Engine, redis_client: redis.Redis, signer: Signer, settings: Settings
) -> None:
    """Under a backlog a stream's message is late, not lost: the sweeper leaves it alone instead
    of lengthening the queue. A message really lost (its mark expired) is sent again."""
    factory = make_sessionmaker(clean_engine)
    late, forgotten = (signer.app_id, INSTANCE), (signer.app_id, "42")
    with session_scope(factory) as db:
        ingest(db, [signer.callback("ASRResult"), signer.callback("ASRResult", instance="42")])
    marks = wakeups.for_settings(settings)
    assert marks.claim([late], seconds=1) == [late]  # sent by the receiver, then lost by the broker
    job = JobContext.from_settings(settings.model_copy(update={"sweep_after_seconds": 0.0}))
    sent: list[list[tuple[int, str]]] = []
    try:
        assert sweep(job, lambda streams: sent.append(streams) or True) == 1
        assert sent == [[forgotten]]  # never marked: its message went missing before the mark
        assert sweep(job, lambda streams: sent.append(streams) or True) == 0  # both on their way now
        time.sleep(1.2)
        assert sweep(job, lambda streams: sent.append(streams) or True) == 1
        assert sent[1:] == [[late]]
    finally:
        job.close()


class _KilledWhileKeeping(Wakeups):
    """kill -9 of the worker while its drain keeps a busy stream: nothing after it runs."""

    class Killed(BaseException):
        pass

    def __init__(self) -> None:
        super().__init__(redis.Redis.from_url(REDIS_URL))
        self.keeping = False

    def taken(self, streams: Sequence[tuple[int, str]]) -> None:
        super().taken(streams)
        self.keeping = True

    def release(self, streams: Sequence[tuple[int, str]]) -> None:
        if self.keeping:
            raise self.Killed
        super().release(streams)


def test_a_worker_killed_mid_drain_leaves_its_streams_to_the_sweeper(
    clean_engine: Engine, redis_client: redis.Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drain killed while it keeps a busy stream leaves the stream marked (and on a Redis broker
    its message dies with it): a callback stored then sends nothing until the mark expires, then
    the sweeper sends the stream again and everything is applied, once."""
    monkeypatch.setattr(wakeups, "TAKEN_SECONDS", 1)
    factory = make_sessionmaker(clean_engine)
    stream = (Signer().app_id, INSTANCE)
    with session_scope(factory) as db:
        ingest(db, [_said(1, "hi", 1), _said(2, "there", 2)])
    dying = _KilledWhileKeeping()
    assert dying.claim([stream]) == [stream]
    with pytest.raises(_KilledWhileKeeping.Killed):
        drain_until_done(factory, [stream], settings=settings, marks=dying)

    marks = wakeups.for_settings(settings)
    with session_scope(factory) as db:
        ingest(db, [_said(3, "again", 3)])
    job = JobContext.from_settings(settings.model_copy(update={"sweep_after_seconds": 0.0}))
    sent: list[list[tuple[int, str]]] = []
    try:
        assert marks.claim([stream]) == []  # the receiver sends nothing for it: the mark holds
        assert sweep(job, lambda streams: sent.append(streams) or True) == 0
        time.sleep(1.2)
        assert sweep(job, lambda streams: sent.append(streams) or True) == 1
    finally:
        job.close()
    assert sent == [[stream]]
    assert drain_until_done(factory, sent[0], settings=settings, marks=marks).applied == 1
    with session_scope(factory) as db:
        assert [t.text for t in db.scalars(select(Turn).order_by(Turn.round))] == ["hi", "there", "again"]

"""Sessions started through the API: claims, failures, cancellations, and callbacks that outrun the start."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from tests.factories import APP_ID, INSTANCE, Signer, apply_pending, ingest
from worker.db import utcnow
from worker.models import AgentInstance, Provider, Session, SessionState
from worker.sealing import Sealer
from worker.sessions import ending, requesting, starting, transcripts
from worker.settings import Settings

PARAMS: dict[str, Any] = {
    "AgentId": "weather-bot",
    "UserId": "user_1",
    "RTC": {
        "RoomId": "room_1",
        "AgentStreamId": "agent_s1",
        "AgentUserId": "agent_1",
        "UserStreamId": "user_s1",
    },
    "LLM": {"Url": "https://llm.example/v1/chat/completions", "ApiKey": "sk-live-123", "Model": "m"},
}


def _request(db: Any, *, sealer: Sealer | None = None, session_id: str = "s-1") -> Session:
    wanted = requesting.SessionRequest(Provider.ZEGO, APP_ID, PARAMS)
    return requesting.request_session(db, wanted, session_id=session_id, sealer=sealer, now=utcnow())


def test_a_requested_session_stores_its_spec_with_the_api_key_sealed(db: Any) -> None:
    """The stored spec can start the agent again, but the ApiKey is not in it in clear."""
    sealer = Sealer(Fernet.generate_key().decode())
    session = _request(db, sealer=sealer)
    assert session.state == SessionState.STARTING and session.origin == "api"
    assert "sk-live-123" not in str(session.spec)
    order = starting.claim_start(db, session.id, sealer=sealer, now=utcnow(), stale_after=60)
    assert order is not None and order.params == PARAMS and order.attempt == 1


def test_a_request_with_secrets_and_no_secret_key_is_refused(db: Any) -> None:
    """Without ROOMWARDEN_SECRET_KEY roomwarden refuses to store an ApiKey in clear."""
    with pytest.raises(requesting.RequestError, match="ROOMWARDEN_SECRET_KEY"):
        _request(db, sealer=None)


def test_a_start_claimed_by_one_task_is_left_alone_by_a_second(db: Any) -> None:
    """A duplicated start message does not call the vendor twice while the first is at it."""
    sealer = Sealer(Fernet.generate_key().decode())
    session = _request(db, sealer=sealer)
    now = utcnow()
    assert starting.claim_start(db, session.id, sealer=sealer, now=now, stale_after=60) is not None
    assert starting.claim_start(db, session.id, sealer=sealer, now=now, stale_after=60) is None
    # A claim left by a worker that died is taken over once it is stale.
    later = now + dt.timedelta(seconds=61)
    again = starting.claim_start(db, session.id, sealer=sealer, now=later, stale_after=60)
    assert again is not None and again.attempt == 2


def test_a_vendor_refusal_fails_the_session_with_the_vendors_code(db: Any) -> None:
    """Quota reached: the session shows failed with ZEGO's code and message, and is not retried."""
    sealer = Sealer(Fernet.generate_key().decode())
    session = _request(db, sealer=sealer)
    starting.claim_start(db, session.id, sealer=sealer, now=utcnow(), stale_after=60)
    starting.record_failed(db, session.id, code=410000011, message="concurrency limit", now=utcnow())
    assert (session.state, session.end_code, session.end_reason) == ("failed", 410000011, "vendor_error")
    assert starting.claim_start(db, session.id, sealer=sealer, now=utcnow(), stale_after=60) is None


def test_callbacks_that_arrive_before_the_start_is_recorded_end_up_on_the_session(
    db: Any, settings: Settings
) -> None:
    """AgentInstanceCreated and a first turn outran the worker: the API session still gets them."""
    sealer = Sealer(Fernet.generate_key().decode())
    session = _request(db, sealer=sealer)
    signer = Signer()
    ingest(
        db,
        [
            signer.callback("AgentInstanceCreated"),
            signer.callback("ASRResult"),
            signer.callback("LLMResult"),
        ],
    )
    apply_pending(db, settings)
    orphan = db.scalar(select(AgentInstance.session_id).where(AgentInstance.agent_instance_id == INSTANCE))
    assert orphan != session.id  # the drain filed it under a session of its own

    started = starting.Started(join_info={"agent_instance_id": INSTANCE}, agent_instance_id=INSTANCE)
    assert starting.record_started(db, session.id, started, now=utcnow()) is False
    db.flush()
    assert db.get(Session, orphan) is None
    assert [i.agent_instance_id for i in instances_of(db, session.id)] == [INSTANCE]
    assert session.state == SessionState.ACTIVE
    said = [(t.speaker, t.text) for t in transcripts.transcript(db, session.id)]
    assert said == [("user", "What's the weather like?"), ("agent", "It is sunny today.")]

    # And later callbacks go straight to it.
    ingest(db, [signer.callback("AgentInstanceDeleted", {"Code": 0, "DeletedTimestamp": 1})])
    apply_pending(db, settings)
    db.refresh(session)
    assert (session.state, session.end_reason) == ("ended", "deleted")


def instances_of(db: Any, session_id: str) -> list[AgentInstance]:
    return list(db.scalars(select(AgentInstance).where(AgentInstance.session_id == session_id)))


def test_ending_a_session_the_vendor_has_not_started_yet_cancels_it(db: Any) -> None:
    """DELETE before the agent exists: ended as cancelled, and a late start deletes what it made."""
    sealer = Sealer(Fernet.generate_key().decode())
    session = _request(db, sealer=sealer)
    order = starting.claim_start(db, session.id, sealer=sealer, now=utcnow(), stale_after=60)
    assert order is not None
    assert requesting.request_end(db, session, now=utcnow()) == "ended"
    assert (session.state, session.end_reason) == ("ended", "cancelled")
    started = starting.Started(join_info={}, agent_instance_id=INSTANCE)
    assert starting.record_started(db, session.id, started, now=utcnow()) is True
    assert ending.live_instances(db, session.id) == [(APP_ID, INSTANCE)]


def test_a_lost_start_message_is_found_again(db: Any) -> None:
    """A session stuck in starting with no claim is handed back to a worker by the resume job."""
    sealer = Sealer(Fernet.generate_key().decode())
    session = _request(db, sealer=sealer)
    soon = utcnow() + dt.timedelta(seconds=5)
    assert starting.starts_to_resume(db, now=soon, stale_after=60) == []
    later = utcnow() + dt.timedelta(seconds=120)
    assert starting.starts_to_resume(db, now=later, stale_after=60) == [session.id]


def test_the_policys_absent_limit_is_sent_as_zegos_max_idle_time_unless_the_request_sets_one(
    db: Any,
) -> None:
    """``idle.user_absent_seconds`` becomes AdvancedConfig.MaxIdleTime when the agent is made; the
    stored request is left as the app sent it, and a MaxIdleTime of the app's own is kept."""
    from worker.policies.config import parse

    sealer = Sealer(Fernet.generate_key().decode())
    book = parse("[defaults.idle]\nuser_absent_seconds = 30\n")
    session = _request(db, sealer=sealer)
    order = starting.claim_start(db, session.id, sealer=sealer, now=utcnow(), stale_after=60, book=book)
    assert order is not None and order.params["AdvancedConfig"] == {"MaxIdleTime": 30}
    assert "AdvancedConfig" not in sealer.unseal(session.spec or {})["params"]

    own = {**PARAMS, "AdvancedConfig": {"MaxIdleTime": 300, "DisableTTS": False}}
    wanted = requesting.SessionRequest(Provider.ZEGO, APP_ID, own)
    other = requesting.request_session(db, wanted, session_id="s-2", sealer=sealer, now=utcnow())
    kept = starting.claim_start(db, other.id, sealer=sealer, now=utcnow(), stale_after=60, book=book)
    assert kept is not None and kept.params["AdvancedConfig"] == {"MaxIdleTime": 300, "DisableTTS": False}

    plain = requesting.request_session(
        db,
        requesting.SessionRequest(Provider.ZEGO, APP_ID, PARAMS),
        session_id="s-3",
        sealer=sealer,
        now=utcnow(),
    )
    unset = starting.claim_start(db, plain.id, sealer=sealer, now=utcnow(), stale_after=60, book=parse(""))
    assert unset is not None and "AdvancedConfig" not in unset.params

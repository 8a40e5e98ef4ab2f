"""Policies for a live digital human: no user, so idle means "no say", and 1202 is not a user who left."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.orm import Session as DbSession

from tests.factories import APP_ID
from tests.worker.policies.rows import live_session
from worker import metrics
from worker.db import utcnow
from worker.models import Provider
from worker.policies import decisions, quotas, scans
from worker.policies.config import parse
from worker.sessions.lifecycle import end_reason
from worker.sessions.starting import with_absent_limit

BOOK = parse("[defaults.idle]\nafter_seconds = 600\nuser_absent_seconds = 60\n")
LIVE = Provider.ZEGO_LIVE_DIGITAL_HUMAN


def test_a_live_digital_human_is_idle_from_its_last_say_not_from_user_speech(db: DbSession) -> None:
    """No user ever speaks to it: it is recycled when nobody said anything through it for the threshold."""
    now = utcnow()
    driven, _ = live_session(
        db, provider=LIVE, quiet_for=None, started_ago=5000, last_activity_at=now - dt.timedelta(seconds=30)
    )
    forgotten, _ = live_session(
        db, provider=LIVE, quiet_for=None, started_ago=5000, last_activity_at=now - dt.timedelta(seconds=700)
    )
    recorded = scans.recycle_idle(db, BOOK, now)
    assert [a.session_id for a in recorded] == [forgotten.id]
    assert forgotten.last_activity_at is not None
    assert recorded[0].inputs["quiet_since"] == forgotten.last_activity_at.isoformat()
    assert driven.policy_reason is None
    voice, voice_agent = live_session(db, quiet_for=700, started_ago=5000, last_activity_at=now)
    decision = scans.idle_decision(BOOK.defaults, voice, voice_agent, now)
    assert decision is not None, "a voice agent's idleness is its user's silence, whatever was said to it"


def test_a_live_digital_human_never_said_anything_is_idle_from_its_creation(db: DbSession) -> None:
    """Created and never driven: the idle clock runs from the instance's creation."""
    session, agent = live_session(db, provider=LIVE, quiet_for=None, started_ago=601)
    decision = scans.idle_decision(BOOK.defaults, session, agent, utcnow())
    assert decision is not None and agent.created_at is not None
    assert decision.inputs["quiet_since"] == agent.created_at.isoformat()


@pytest.mark.parametrize("mode", ["close_room", "wait", "end"])
def test_1202_on_a_live_digital_human_is_not_a_user_who_left(db: DbSession, mode: str) -> None:
    """ZEGO's 1202 for it means "not driven for MaxIdleTime": no room closing, no waiting for a user."""
    policy = parse(f'[defaults.on_deleted]\nuser_absent = "{mode}"').defaults
    session, agent = live_session(db, provider=LIVE)
    assert decisions.on_deleted(policy, session, agent, 1202, recent_recreations=0, others_live=False) is None
    assert end_reason(1202, LIVE.value) == "idle"
    assert end_reason(1202, Provider.ZEGO.value) == "user_absent"


def test_the_user_absence_limit_is_not_sent_as_its_max_idle_time() -> None:
    """idle.user_absent_seconds becomes a voice agent's MaxIdleTime, never a live digital human's."""
    policy = BOOK.defaults
    assert with_absent_limit({}, Provider.ZEGO, policy) == {"AdvancedConfig": {"MaxIdleTime": 60}}
    assert with_absent_limit({}, LIVE, policy) == {}


def test_live_digital_humans_share_the_digital_human_quota(db: DbSession) -> None:
    """ZEGO counts live digital humans with the digital humans: so does roomwarden's quota."""
    live_session(db, provider=LIVE)
    live_session(db, provider=Provider.ZEGO_DIGITAL_HUMAN)
    live_session(db)
    assert quotas.in_use(db, APP_ID, LIVE.value) == 2
    assert quotas.in_use(db, APP_ID, Provider.ZEGO_DIGITAL_HUMAN.value) == 2
    assert quotas.in_use(db, APP_ID, Provider.ZEGO.value) == 1
    assert quotas.limit_for(BOOK.defaults, LIVE.value) == BOOK.defaults.quota.digital_human_instances
    slots = metrics.slots_in_use(db)  # what /metrics shows as roomwarden_agent_slots_in_use
    assert (slots[(APP_ID, "digital_human")], slots[(APP_ID, "voice")]) == (2, 1)

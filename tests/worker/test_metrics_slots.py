"""The /metrics slot gauges, counted for every app and kind at once, equal the quota's own count."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session as DbSession

from tests.factories import APP_ID
from tests.worker.policies.rows import deleted, live_session
from worker.db import utcnow
from worker.metrics import SLOT_KINDS, slots_in_use, snapshot
from worker.models import Provider, SessionState
from worker.policies import quotas
from worker.policies.config import PolicyBook

OTHER_APP = 7654321


def test_slots_in_use_equal_the_quota_count_for_every_app_and_kind(db: DbSession) -> None:
    """Live voice and digital-human agents, callback sessions (voice), ended agents and claimed
    starts of two apps: each gauge is what admission control counts for that app and kind."""
    for app_id in (APP_ID, OTHER_APP):
        for provider in (Provider.ZEGO, Provider.ZEGO_DIGITAL_HUMAN):
            session, agent = live_session(db, provider=provider)
            session.app_id = agent.app_id = app_id
        callback, agent = live_session(db, origin="callback")
        callback.app_id = agent.app_id = app_id
        session, agent = live_session(db, provider=Provider.ZEGO_DIGITAL_HUMAN)
        session.app_id = agent.app_id = app_id
        deleted(db, agent, 0)  # no longer holds a slot
        claimed, agent = live_session(db, provider=Provider.ZEGO_DIGITAL_HUMAN)
        claimed.app_id, claimed.state = app_id, SessionState.STARTING
        claimed.start_claimed_at, claimed.provisioned_at = utcnow() - dt.timedelta(seconds=1), None
        deleted(db, agent, 0)
    db.flush()
    used = slots_in_use(db)
    expected = {
        (app_id, kind): quotas.in_use(db, app_id, provider)
        for app_id in (APP_ID, OTHER_APP)
        for kind, provider in SLOT_KINDS.items()
    }
    assert expected == {(APP_ID, "voice"): 2, (APP_ID, "digital_human"): 2} | {
        (OTHER_APP, "voice"): 2,
        (OTHER_APP, "digital_human"): 2,
    }
    assert {key: used.get(key, 0) for key in expected} == expected
    slots = {(app, kind): n for app, kind, n, _limit in snapshot(db, PolicyBook(), utcnow()).slots}
    assert {key: slots[key] for key in expected} == expected

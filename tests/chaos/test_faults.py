"""Processes killed, Redis gone, Postgres restarted, while ZEGO's callbacks keep coming: the stored
sessions, transcripts, actions and the app's events are exactly the expected ones.
"""

from __future__ import annotations

import pytest

from tests.chaos import scenarios
from tests.chaos.scenarios import Lab

pytestmark = pytest.mark.slow
# Postgres only (the production shape): the embedded SQLite is the CLI demo's, not a deployment's.
on_postgres = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)

SESSIONS = 6
REDIS_OUTAGE_SECONDS = 30.0  # the figure, unscaled


@on_postgres
def test_a_worker_killed_mid_drain_loses_and_doubles_nothing(lab: Lab) -> None:
    """kill -9 of a worker (and its pool) while a drain is uncommitted: a new worker applies it all once."""
    scenarios.worker_killed_mid_drain(lab, sessions=SESSIONS)


@on_postgres
def test_a_receiver_killed_mid_request_loses_and_doubles_nothing(lab: Lab) -> None:
    """kill -9 of the receiver with requests in flight: retries reach its successor, each stored once."""
    scenarios.receiver_killed_mid_request(lab, sessions=SESSIONS)


@on_postgres
def test_beat_killed_mid_recycle_deletes_each_idle_agent_once(lab: Lab) -> None:
    """kill -9 of beat while idle recycles are in flight: every idle agent recycled, none twice."""
    scenarios.beat_killed_mid_recycle(lab, sessions=4)


@on_postgres
def test_thirty_seconds_without_redis_lose_and_double_nothing(lab: Lab) -> None:
    """Redis down for 30 s while callbacks arrive: all acknowledged, all applied once when it is back."""
    scenarios.redis_down(lab, sessions=SESSIONS, outage=REDIS_OUTAGE_SECONDS)


def test_a_postgres_restart_under_load_loses_and_doubles_nothing(private_lab: Lab) -> None:
    """Postgres restarted while callbacks arrive and drain: refused ones come back as ZEGO retries, once."""
    scenarios.postgres_restarted(private_lab, sessions=SESSIONS)

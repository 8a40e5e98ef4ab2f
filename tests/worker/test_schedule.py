"""Two beats (two hosts, or one by mistake) send each periodic job once per interval, not twice."""

from __future__ import annotations

import collections
import json
import sys
import time
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine

from tests.processes import Process, RedisServer, stack_env
from worker.celery_app import OUTBOUND_QUEUE, QUEUE
from worker.schedule import JOBS_QUEUE, beat_schedule
from worker.settings import Settings

INTERVAL = 1.0
RUN_FOR = 8.0


def _sent(url: str) -> collections.Counter[str]:
    """Messages waiting in the broker, by task name (no worker consumes them in this test)."""
    client = redis.Redis.from_url(url)
    counts: collections.Counter[str] = collections.Counter()
    for queue in (QUEUE, JOBS_QUEUE, OUTBOUND_QUEUE):
        for raw in client.lrange(queue, 0, -1):
            counts[json.loads(raw)["headers"]["task"].rsplit(".", 1)[-1]] += 1
    return counts


@pytest.mark.slow
def test_two_beats_send_each_job_once_a_round(
    clean_engine: Engine, database_url: str, tmp_path: Path
) -> None:
    if clean_engine.dialect.name != "postgresql":
        pytest.skip("several beats means several hosts, which means Postgres")
    broker = RedisServer(tmp_path)
    broker.start()
    env = {
        **stack_env(database_url, broker.url),
        "ROOMWARDEN_SWEEP_INTERVAL_SECONDS": str(INTERVAL),
        "ROOMWARDEN_POLICY_INTERVAL_SECONDS": str(INTERVAL),
        "ROOMWARDEN_START_STALE_SECONDS": str(INTERVAL),
        "ROOMWARDEN_COZE_POLL_INTERVAL_SECONDS": str(INTERVAL),
        "ROOMWARDEN_OUTBOUND_INTERVAL_SECONDS": str(INTERVAL),
        "ROOMWARDEN_ANALYSIS_INTERVAL_SECONDS": str(INTERVAL),
    }
    beats = [
        Process(
            f"beat-{n}", [sys.executable, "-m", "celery", "-A", "worker.celery_app", "beat"], env, tmp_path
        )
        for n in (1, 2)
    ]
    try:
        for beat in beats:
            beat.start()
        time.sleep(RUN_FOR)
        for beat in beats:
            beat.stop()
        sent = _sent(broker.url)
    finally:
        for beat in beats:
            beat.stop()
        broker.stop()

    every_second = [
        entry["task"].rsplit(".", 1)[-1]
        for entry in beat_schedule(Settings(**{"policy_interval_seconds": INTERVAL})).values()
        if entry["schedule"] != 3600.0
    ]
    logs = "\n".join(beat.output()[-3000:] for beat in beats)
    assert all(not (tmp_path / name).exists() for name in ("celerybeat-schedule", "var")), "no state on disk"
    for job in every_second:
        # Both beats ticked about RUN_FOR times each; one of them won each round.
        assert 3 <= sent[job] <= RUN_FOR / INTERVAL + 1, (job, sent, logs)

"""Bad input at volume against a real deployment, while valid conversations go on being delivered.

A receiver (the Procfile's uvicorn flags), a Celery worker and beat run on Postgres and Redis.
Valid conversations are posted at a fixed rate, first alone and then while another process
sends bad and stale signatures, replayed signatures, truncated, oversized, deeply nested and
non-UTF-8 bodies, lying Content-Lengths, slowloris connections, and bursts of connections past
the receiver's limit. The valid traffic's latency is printed and logged (``pytest -s`` shows
it), never asserted: speed belongs to benches.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from tests.chaos.bad_requests import Arsenal, Budgets, exchange
from tests.chaos.hostile import all_applied, check_stored, format_report, run_attack
from tests.factories import Signer
from tests.processes import RedisServer, Stack, stack_env, wait_until

pytestmark = pytest.mark.slow

log = logging.getLogger(__name__)

# The receiver's budgets, small so that slow clients are cut off within the test's few seconds.
BUDGETS = Budgets(max_body_bytes=256 * 1024, header_timeout_s=2.0, body_timeout_s=2.0, connection_limit=120)


@pytest.fixture
def stack(
    tmp_path: Path, database_url: str, clean_engine: Engine, private_redis: RedisServer
) -> Iterator[Stack]:
    if not database_url.startswith("postgresql"):
        pytest.skip("bad input at volume runs against the production pipeline, on Postgres")
    stack = Stack(tmp_path, {**stack_env(database_url, private_redis.url), **BUDGETS.env()})
    stack.start_receiver()
    stack.worker.start()
    stack.beat.start()
    yield stack
    stack.stop()


def test_bad_input_at_volume_is_refused_and_every_valid_callback_lands_exactly_once(
    stack: Stack, clean_engine: Engine, tmp_path: Path
) -> None:
    """Under attack, every bad request gets its documented answer, no 5xx but the connection
    limit's 503, nothing bad is stored, and the valid conversations are applied exactly."""
    assert stack.receiver.proc is not None
    report = asyncio.run(
        run_attack(
            stack.url,
            duration_s=12,
            attackers=4,
            valid_rate=40,
            baseline_s=4,
            retry_scale=0.5,
            slow_connections=8,
            bursts=1,
            budgets=BUDGETS,
            receiver_pid=stack.receiver.proc.pid,
        )
    )
    summary = format_report(report)
    print("\n" + summary)  # noqa: T201 - the figures are this test's report (pytest -s), never asserted
    log.info("hostile traffic report\n%s", summary)
    (tmp_path / "hostile-traffic-report.txt").write_text(summary + "\n")  # beside the processes' logs

    assert not report.unexpected, summary
    assert not report.unexercised, summary
    assert not report.undelivered, summary
    assert not report.valid_5xx, summary
    # A body that takes longer than its budget is 408 whoever sends it (an overloaded machine can
    # do that to a valid one; the sender retries); any other 4xx would refuse a valid callback.
    assert not [a for a in report.valid_answers if a[:1] == "4" and a != "408 body_timeout"], summary
    wait_until(lambda: all_applied(clean_engine, report), 60, "every valid callback applied")
    assert check_stored(clean_engine, report) == []

    assert stack.receiver.proc.poll() is None, stack.logs()
    assert httpx.get(f"{stack.url}/healthz", timeout=5).status_code == 200
    assert "Traceback" not in stack.receiver.output(), stack.receiver.output()[-4000:]


def test_a_megabyte_of_headers_sent_fast_is_refused_431(receiver_process: Callable[..., Stack]) -> None:
    """Headers past the size bound are refused and the connection closed, however fast they come."""
    stack = receiver_process(header_timeout_seconds="5")
    request = Arsenal(Signer(), Budgets(header_timeout_s=5)).oversized_headers()
    outcome = asyncio.run(exchange("127.0.0.1", stack.port, request, patience_s=30))
    assert outcome == "431 headers_too_large"
    assert httpx.get(f"{stack.url}/healthz", timeout=5).status_code == 200

"""Every line a Celery task logs names the task; nothing it bound survives it."""

from __future__ import annotations

from typing import Any

import structlog

from worker.celery_app import app

seen: list[dict[str, Any]] = []


@app.task(name="tests.log_probe")
def log_probe(leave_behind: bool) -> None:
    seen.append(dict(structlog.contextvars.get_contextvars()))
    if leave_behind:
        structlog.contextvars.bind_contextvars(session_id="left-behind")


def test_a_task_s_lines_carry_its_id_and_name_and_nothing_of_the_task_before() -> None:
    seen.clear()
    structlog.contextvars.clear_contextvars()
    first = log_probe.apply(args=(True,))
    second = log_probe.apply(args=(False,))

    assert seen[0]["task_id"] == first.id and seen[0]["task_name"] == "tests.log_probe"
    assert seen[1]["task_id"] == second.id
    assert "session_id" not in seen[1]
    assert structlog.contextvars.get_contextvars() == {}

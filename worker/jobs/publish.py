"""Sending a task message after the commit that made its work visible, the one way it is done.

A message is a wake-up call, never the record: the row it points at is committed first, so a
worker that receives it finds the work, and a message the broker cannot take now is only logged.
Every kind of work has a sweeper that finds rows whose message was lost (``sweep_inbox``,
``resume_starts``, ``sweep_actions``), so a broker outage delays work and loses none.
"""

from __future__ import annotations

from typing import Any, Protocol

import structlog

log = structlog.get_logger(__name__)


class Sendable(Protocol):
    name: str

    def apply_async(self, *args: Any, **kwargs: Any) -> Any: ...


def publish(
    task: Sendable,
    *args: Any,
    countdown: float | None = None,
    argsrepr: str | None = None,
    **kwargs: Any,
) -> bool:
    """Send one message for ``task``; False (and a warning) when the broker cannot take it now."""
    try:
        task.apply_async(
            args=list(args),
            kwargs=kwargs or None,
            countdown=countdown or None,
            retry=False,  # kombu would otherwise retry for a long while: the sweeper is the retry
            argsrepr=argsrepr,
        )
    except Exception as exc:  # kombu raises a zoo of connection errors; all mean "not now"
        name = task.name.rsplit(".", 1)[-1]
        log.warning("enqueue_failed", task=name, error=f"{type(exc).__name__}: {exc}")
        return False
    return True

"""An app's endpoint (a real HTTP server) hears the redacted words once redaction is on."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import Engine

from tests.factories import INSTANCE, Signer, changed, ingest
from tests.sinks import Sink
from tests.webhooks.test_pii_redaction import RAW_VALUES, REDACTED, SAID, conversation
from tests.worker.events.test_delivery import FAST, deliver_until_settled, register
from worker.db import session_scope
from worker.inbox.drain import drain_until_done
from worker.jobs.context import JobContext
from worker.settings import Settings


@pytest.mark.parametrize("mode", ["off", "read"])
def test_turn_events_reach_the_endpoint_redacted_unless_redaction_is_off(
    mode: str,
    settings: Settings,
    clean_engine: Engine,
    run_tasks_with: Callable[[JobContext], JobContext],
    signer: Signer,
    sinks: Callable[..., Sink],
) -> None:
    """turn.completed as delivered: the user's words with [EMAIL], [PHONE], [CARD] in read mode."""
    configured = changed(
        settings,
        pii_redaction=mode,
        endpoints_allow_private=True,
        delivery_retry_schedule=FAST,
        delivery_timeout_seconds=1.0,
        delivery_budget_seconds=5.0,
        secret_key=Fernet.generate_key().decode(),
    )
    job = run_tasks_with(JobContext.from_settings(configured))
    sink = sinks()
    endpoint_id, _ = register(job, sink.url)
    with session_scope(job.sessions) as db:
        ingest(db, conversation(signer))
    drain_until_done(job.sessions, [(signer.app_id, INSTANCE)], settings=job.settings)
    deliver_until_settled(job, endpoint_id)

    turns = [e["data"] for e in sink.events() if e["type"] == "turn.completed"]
    said = [t["text"] for t in turns if t["speaker"] == "user"]
    assert said == [SAID if mode == "off" else REDACTED]
    bodies = b"".join(r.body for r in sink.received).decode()
    assert any(value in bodies for value in RAW_VALUES) == (mode == "off")

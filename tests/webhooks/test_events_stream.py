"""The live stream on both databases: a real uvicorn receiver, events committed by another process."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine

from tests.factories import INSTANCE, Signer, apply_pending, ingest
from tests.processes import Stack
from tests.test_events_end_to_end import sse
from tests.worker.conversation import conversation
from worker.db import make_sessionmaker, session_scope
from worker.sessions.lifecycle import session_id_for
from worker.settings import Settings


def test_a_session_stream_delivers_what_another_process_commits(
    receiver_process: Callable[..., Stack], clean_engine: Engine, signer: Signer, settings: Settings
) -> None:
    stack = receiver_process()
    factory = make_sessionmaker(clean_engine)
    callbacks = conversation(signer)
    with session_scope(factory) as db:
        ingest(db, callbacks[:1])  # AgentInstanceCreated: the session exists, and is live
        apply_pending(db, settings)
    path = f"/v1/sessions/{session_id_for(signer.app_id, INSTANCE)}/events"
    first = sse(stack.url, path, until=lambda f: f[-1]["event"] == "session.active")
    assert [f["event"] for f in first] == ["session.created", "session.active"]

    with session_scope(factory) as db:
        ingest(db, callbacks[1:])
        apply_pending(db, settings)
    rest = sse(
        stack.url, path, last_event_id=first[-1]["id"], until=lambda f: f[-1]["event"] == "session.ended"
    )
    assert [f["event"] for f in rest] == ["turn.completed"] * 6 + ["session.ended"]
    bad = sse_status(stack.url, path, "not-a-number")
    assert bad == 400


def sse_status(url: str, path: str, last_event_id: str) -> int:
    import httpx

    from tests.conftest import API_TOKEN

    headers = {"Authorization": f"Bearer {API_TOKEN}", "Last-Event-ID": last_event_id}
    return httpx.get(url + path, headers=headers, timeout=10).status_code

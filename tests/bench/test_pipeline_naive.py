"""The naive peer of bench/pipeline: it must leave what roomwarden leaves, or the comparison is unfair."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.orm import Session as DbSession

from bench.naive_app import apply_callback
from tests.factories import INSTANCE, Signer, apply_pending, ingest
from tests.worker.conversation import EXPECTED_TURNS, conversation
from worker.sessions import reading, transcripts
from worker.settings import Settings


def seen(db: DbSession) -> dict[str, Any]:
    """The session and transcript a reader gets, minus the row's own creation time."""
    session = reading.find_session(db, INSTANCE)
    assert session is not None
    view = reading.describe(db, session)
    view.pop("created_at")
    return {"session": view, "turns": [t.as_dict() for t in transcripts.transcript(db, session.id)]}


def naive(db: DbSession, payloads: list[dict[str, Any]]) -> dict[str, Any]:
    """Each callback in its own transaction, as the naive task runs it; all undone afterwards."""
    outer = db.begin_nested()
    try:
        for payload in payloads:
            with db.begin_nested():
                apply_callback(db, payload)
        return seen(db)
    finally:
        outer.rollback()
        db.expunge_all()


@pytest.mark.parametrize("order", ["as sent", "reversed"])
def test_naive_task_leaves_the_transcript_roomwarden_leaves(
    db: DbSession, signer: Signer, settings: Settings, order: str
) -> None:
    """A conversation applied callback by callback by the naive task reads back exactly as roomwarden's drain leaves it."""
    payloads = conversation(signer)
    if order == "reversed":
        payloads.reverse()
    by_naive = naive(db, payloads)
    ingest(db, payloads)
    apply_pending(db, settings)
    by_roomwarden = seen(db)
    assert [turn["text"] for turn in by_naive["turns"]] == EXPECTED_TURNS
    assert by_naive == by_roomwarden

"""Rebuild: the inbox is the source of truth, and re-deriving from it gives the same answer."""

from __future__ import annotations

from sqlalchemy import Engine

from tests.factories import Signer, ingest
from tests.worker.conversation import conversation
from tests.worker.sessions.test_transcripts import snapshot
from worker.db import make_sessionmaker, session_scope
from worker.sessions.rebuild import rebuild
from worker.settings import Settings


def test_rebuild_gives_the_same_sessions_and_transcripts(clean_engine: Engine, settings: Settings) -> None:
    """After `roomwarden rebuild` every session, instance and turn reads exactly as before."""
    factory = make_sessionmaker(clean_engine)
    signer = Signer()
    with session_scope(factory) as db:
        ingest(db, conversation(signer))
        ingest(db, [Signer().callback("ASRResult", instance="7000000000000000001")])
    assert rebuild(factory, settings) == 23
    with session_scope(factory) as db:
        before = snapshot(db)
        assert len(before["turns"]) == 6
    assert rebuild(factory, settings) == 23
    with session_scope(factory) as db:
        assert snapshot(db) == before

"""Settled turns: only turns whose text is final are in the search indexes, and search still finds the rest."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import event, select, text
from sqlalchemy.orm import Session as DbSession

from tests.factories import Signer, apply_pending, ingest
from tests.worker.conversation import R1, R2, R3, conversation
from worker.analysis import catalog, search
from worker.models import AgentInstance, Turn
from worker.sessions.transcripts import settles
from worker.settings import Settings

EVERYTHING = catalog.SessionFilter()


def settled_flags(db: DbSession) -> dict[tuple[int, str], bool]:
    return {(t.round, t.speaker): t.settled for t in db.scalars(select(Turn))}


def completed_round(db: DbSession) -> int | None:
    return db.scalars(select(AgentInstance.completed_round)).one()


def test_a_turn_settles_when_its_round_is_over(db: DbSession, signer: Signer, settings: Settings) -> None:
    """The agent's turn stays out of the index while it is spoken and goes in once its Round is over."""
    script = conversation(signer)
    live = script[:12]  # up to R2's first sentence: R1 over (IDLE), R2 still spoken
    ingest(db, live)
    apply_pending(db, settings)
    assert settled_flags(db) == {
        (R1, "user"): True,
        (R1, "agent"): True,
        (R2, "user"): True,
        (R2, "agent"): False,
    }
    ingest(db, script[12:])
    apply_pending(db, settings)
    assert set(settled_flags(db).values()) == {True}  # the deletion ends every Round


def test_an_ending_settles_the_turns_its_batch_never_touched(
    db: DbSession, signer: Signer, settings: Settings
) -> None:
    """The deletion alone, in a batch of its own, settles the Round still being spoken before it."""
    script = conversation(signer)
    ingest(db, script[:12])
    apply_pending(db, settings)
    assert settled_flags(db)[(R2, "agent")] is False
    ingest(db, [script[-1]])  # AgentInstanceDeleted: no Round of its own
    apply_pending(db, settings)
    assert set(settled_flags(db).values()) == {True}


def test_a_batch_that_ends_rounds_writes_its_instance_once(
    db: DbSession, signer: Signer, settings: Settings
) -> None:
    """The Round mark moves with the rest of the instance's changes: one UPDATE a batch, not two."""
    script = conversation(signer)
    ingest(db, script[:3])  # R1's question
    apply_pending(db, settings)
    instance_updates: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.startswith("UPDATE agent_instances"):
            instance_updates.append(statement)

    bind = db.get_bind()
    event.listen(bind, "before_cursor_execute", seen)
    try:
        ingest(db, script[3:12])  # R1 answered and over (IDLE), R2 asked and answered in part
        apply_pending(db, settings)
    finally:
        event.remove(bind, "before_cursor_execute", seen)
    assert len(instance_updates) == 1 and "completed_round" in instance_updates[0]
    assert completed_round(db) == R2 - 1  # R2's question ended every earlier Round
    assert settled_flags(db)[(R1, "agent")] is True


def test_a_live_turn_is_found_by_word_and_by_substring(
    db: DbSession, signer: Signer, settings: Settings
) -> None:
    """Search finds what the agent is saying right now, not only what it said in finished Rounds."""
    ingest(db, conversation(signer)[:12])
    apply_pending(db, settings)
    [live] = [t for t in db.scalars(select(Turn)) if not t.settled]
    assert live.text == "Then 'Middlemarch',"
    for q in ("Middlemarch", "middlem"):  # a whole word (word index), part of a word (substring)
        hits = search.search(db, q, EVERYTHING)
        assert [(h.turn["round"], h.turn["speaker"]) for h in hits] == [(R2, "agent")]


def test_postgres_indexes_only_settled_turns(db: DbSession, signer: Signer, settings: Settings) -> None:
    """The GIN indexes' predicate is the flag the drain keeps (SQLite's FTS5 holds every turn)."""
    if db.get_bind().dialect.name != "postgresql":
        assert db.scalar(text("SELECT count(*) FROM sqlite_master WHERE name = 'turns_fts'")) == 1
        return
    predicates = dict(
        db.execute(
            text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'turns'"
                " AND indexname IN ('ix_turns_text_tsv', 'ix_turns_text_trgm', 'ix_turns_unsettled')"
            )
        ).all()
    )
    assert predicates["ix_turns_text_tsv"].endswith("WHERE settled")
    assert predicates["ix_turns_text_trgm"].endswith("WHERE settled")
    assert predicates["ix_turns_unsettled"].endswith("WHERE (NOT settled)")


def test_a_late_sentence_of_an_ended_round_goes_straight_in_settled(
    db: DbSession, signer: Signer, settings: Settings
) -> None:
    """A sentence that comes after its Round is over is written settled: no turn is left out for good."""
    script = conversation(signer)
    late = [cb for cb in script if cb["Event"] == "LLMResult" and cb["Data"]["Round"] == R3]
    ingest(db, [cb for cb in script if cb not in late])
    apply_pending(db, settings)
    assert (R3, "agent") not in settled_flags(db)
    ingest(db, late)
    apply_pending(db, settings)
    assert settled_flags(db)[(R3, "agent")] is True
    assert [h.turn["text"] for h in search.search(db, "Goodbye", EVERYTHING)] == ["再见！Goodbye!"]


@hsettings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    cut=st.integers(min_value=1, max_value=21),
    batches=st.integers(min_value=1, max_value=5),
)
def test_settled_is_a_function_of_the_callbacks_applied(
    db: DbSession, settings: Settings, seed: int, cut: int, batches: int
) -> None:
    """Any order and batching of the same callbacks settles the same turns: those of Rounds over."""
    signer = Signer()
    delivered = conversation(signer)[:cut]
    with db.begin_nested() as reference:
        ingest(db, delivered)
        apply_pending(db, settings)
        expected = settled_flags(db)
        reference.rollback()
    rng = random.Random(seed)
    shuffled = list(delivered)
    rng.shuffle(shuffled)
    cuts = sorted(rng.sample(range(1, len(shuffled)), min(batches, len(shuffled)) - 1))
    with db.begin_nested() as attempt:
        for start, end in zip([0, *cuts], [*cuts, len(shuffled)], strict=True):
            ingest(db, shuffled[start:end])
            apply_pending(db, settings)
        flags = settled_flags(db)
        assert flags == expected
        mark = completed_round(db)
        assert flags == {(r, speaker): settles(r, speaker, mark) for r, speaker in flags}
        attempt.rollback()

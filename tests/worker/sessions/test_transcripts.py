"""Transcripts: the turns a reader sees, whatever order and however often the callbacks came."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session as DbSession

from tests.factories import INSTANCE, Signer, apply_pending, ingest
from tests.worker.conversation import R1, R2, R3, conversation
from worker.models import InboxCallback
from worker.sessions import reading as sessions
from worker.sessions import transcripts
from worker.sessions.transcripts import join_sentences
from worker.settings import Settings


def snapshot(db: DbSession) -> dict[str, Any]:
    """Everything a reader can see of the session, minus row ids and bookkeeping times."""
    session = sessions.find_session(db, INSTANCE)
    assert session is not None
    view = sessions.describe(db, session)
    view.pop("created_at")
    return {"session": view, "turns": [t.as_dict() for t in transcripts.transcript(db, session.id)]}


def test_turns_by_round_with_sentences_joined_and_interruption(
    db: DbSession, signer: Signer, settings: Settings
) -> None:
    """Each Round gives a user turn and an agent turn; sentences join in order; the cut turn says what was heard."""
    ingest(db, conversation(signer))
    apply_pending(db, settings)
    turns = snapshot(db)["turns"]
    assert [(t["round"], t["speaker"], t["text"]) for t in turns] == [
        (R1, "user", "Can you recommend a book?"),
        (R1, "agent", "Sure. Try 'The Left Hand of Darkness'. It is short and strange."),
        (R2, "user", "Something longer?"),
        (R2, "agent", "Then 'Middlemarch', which follows a whole town over"),
        (R3, "user", "Thanks, bye."),
        (R3, "agent", "再见！Goodbye!"),
    ]
    r2_agent = turns[3]
    assert r2_agent["interrupted"] is True
    assert r2_agent["interrupt_reason"] == 1
    assert r2_agent["played_text"] == "Then 'Middlemarch', which"
    assert turns[1]["meta_info"] == {"emotion": "warm"}
    assert turns[0]["user_id"] == "user_1"
    assert not any(t["interrupted"] for i, t in enumerate(turns) if i != 3)


def test_a_later_asr_result_of_the_same_round_replaces_the_earlier(
    db: DbSession, signer: Signer, settings: Settings
) -> None:
    """When ZEGO sends a corrected recognition for a Round, the higher Sequence wins, in either order."""
    later = signer.callback("ASRResult", {"UserId": "u", "Round": 3, "Text": "book a table"}, sequence=20)
    earlier = signer.callback("ASRResult", {"UserId": "u", "Round": 3, "Text": "book a cable"}, sequence=19)
    ingest(db, [later])
    apply_pending(db, settings)
    ingest(db, [earlier])
    apply_pending(db, settings)
    assert [t["text"] for t in snapshot(db)["turns"]] == ["book a table"]


def test_interrupted_before_any_sentence_still_gives_an_agent_turn(
    db: DbSession, signer: Signer, settings: Settings
) -> None:
    """An interruption that arrives before the words marks the turn; the words fill in when they come."""
    interrupted = signer.callback("Interrupted", {"Round": 4, "Reason": 4}, sequence=30)
    sentence = signer.callback("LLMResult", {"Round": 4, "Text": "Let me"}, sequence=29)
    ingest(db, [interrupted])
    apply_pending(db, settings)
    [turn] = snapshot(db)["turns"]
    assert (turn["speaker"], turn["text"], turn["interrupted"], turn["interrupt_reason"]) == (
        "agent",
        "",
        True,
        4,
    )
    ingest(db, [sentence])
    apply_pending(db, settings)
    [turn] = snapshot(db)["turns"]
    assert (turn["text"], turn["interrupted"], turn["played_text"]) == ("Let me", True, None)


def test_sentences_join_with_spaces_for_latin_and_none_for_cjk() -> None:
    """Latin sentences get one space between them; CJK sentences are joined directly."""
    assert join_sentences(["Hello.", " How are you? ", ""]) == "Hello. How are you?"
    assert join_sentences(["你好。", "今天天气很好。"]) == "你好。今天天气很好。"
    assert join_sentences([]) == ""


@hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    duplicates=st.lists(st.integers(0, 21), max_size=8),
    batches=st.integers(min_value=1, max_value=5),
)
def test_any_order_and_duplication_gives_the_same_session_and_transcript(
    db: DbSession, settings: Settings, seed: int, duplicates: list[int], batches: int
) -> None:
    """Callbacks shuffled, duplicated and applied in several drains end in the same state as in order."""
    signer = Signer()
    callbacks = conversation(signer)
    with db.begin_nested() as reference:
        ingest(db, callbacks)
        apply_pending(db, settings)
        expected = snapshot(db)
        reference.rollback()

    rng = random.Random(seed)
    # A retry carries the same event and time, possibly under a fresh nonce and signature.
    delivery = callbacks + [
        signer.resign(callbacks[i], timestamp=callbacks[i]["Timestamp"]) if n % 2 else dict(callbacks[i])
        for n, i in enumerate(duplicates)
    ]
    rng.shuffle(delivery)
    cuts = sorted(rng.sample(range(1, len(delivery)), batches - 1))
    with db.begin_nested() as attempt:
        for start, end in zip([0, *cuts], [*cuts, len(delivery)], strict=True):
            ingest(db, delivery[start:end])
            apply_pending(db, settings)
        assert db.scalar(select(func.count()).select_from(InboxCallback)) == len(callbacks)
        assert snapshot(db) == expected
        attempt.rollback()

"""Gap repair: what the agent's context window gives back when ZEGO's callbacks were lost."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from tests.factories import INSTANCE, Signer, apply_pending, ingest
from tests.worker.conversation import EXPECTED_TURNS, R1, R2, R3, conversation
from worker.models import AgentInstance, Session
from worker.sessions import repair, transcripts
from worker.settings import Settings
from worker.vendors.zego.specs import Message

PLAYED_R2 = "Then 'Middlemarch', which"


def context(*pairs: tuple[str, str]) -> list[Message]:
    return [Message(role=role, content=content) for role, content in pairs]


# What the emulator's agent keeps: every question, every reply as played.
WHOLE = context(
    ("user", EXPECTED_TURNS[0]),
    ("assistant", EXPECTED_TURNS[1]),
    ("user", EXPECTED_TURNS[2]),
    ("assistant", PLAYED_R2),
    ("user", EXPECTED_TURNS[4]),
    ("assistant", EXPECTED_TURNS[5]),
)


def told(db: DbSession, signer: Signer, settings: Settings, lose: Any) -> tuple[AgentInstance, Session]:
    """The book conversation applied, less the callbacks ``lose`` picks."""
    payloads = [p for p in conversation(signer) if not lose(p["Event"], p["Data"])]
    ingest(db, payloads)
    apply_pending(db, settings)
    instance = db.scalars(select(AgentInstance).where(AgentInstance.agent_instance_id == INSTANCE)).one()
    return instance, db.get_one(Session, instance.session_id)


def lines(db: DbSession, session: Session) -> list[tuple[int, str, str, str | None]]:
    return [(t.round, t.speaker, t.text, t.source) for t in transcripts.transcript(db, session.id)]


def statuses(db: DbSession, session: Session) -> dict[int, tuple[str, bool]]:
    return {s.round: (s.status, s.repaired) for s in repair.round_statuses(db, session.id)}


def test_a_reply_whose_sentences_were_all_lost_is_filled_and_its_round_complete(
    db: DbSession, signer: Signer, settings: Settings
) -> None:
    """R1's three LLMResults never came (its agent turn holds only the meta info): the Round is
    partial, then the context fills the reply."""
    instance, session = told(db, signer, settings, lambda e, d: e == "LLMResult" and d["Round"] == R1)
    assert statuses(db, session)[R1] == ("partial", False)

    assert repair.fill(db, instance, WHOLE, settings=settings) == 1

    assert lines(db, session)[:2] == [
        (R1, "user", EXPECTED_TURNS[0], None),
        (R1, "agent", EXPECTED_TURNS[1], "repaired"),
    ]
    assert statuses(db, session) == {
        R1: ("complete", True),
        R2: ("complete", False),
        R3: ("complete", False),
    }


def test_a_lost_question_is_filled_from_the_reply_after_it(
    db: DbSession, signer: Signer, settings: Settings
) -> None:
    """R3's ASRResult never came: its reply anchors the Round, and the question before it is the user's."""
    instance, session = told(db, signer, settings, lambda e, d: e == "ASRResult" and d["Round"] == R3)

    assert repair.fill(db, instance, WHOLE, settings=settings) == 1

    [question] = [t for t in transcripts.transcript(db, session.id) if t.round == R3 and t.speaker == "user"]
    assert (question.text, question.source, question.user_id) == (EXPECTED_TURNS[4], "repaired", "user_1")


def test_what_the_callbacks_brought_is_never_overwritten(
    db: DbSession, signer: Signer, settings: Settings
) -> None:
    """The context holds R2's reply as played, the callbacks the whole of it: the callbacks win,
    and a reworded reply that anchors nothing changes nothing."""
    instance, session = told(db, signer, settings, lambda e, d: False)
    before = lines(db, session)
    reworded = context(("user", EXPECTED_TURNS[4]), ("assistant", "Bye for now!"))

    assert repair.fill(db, instance, [*WHOLE, *reworded], settings=settings) == 0
    assert lines(db, session) == before
    assert all(status == ("complete", False) for status in statuses(db, session).values())


def test_a_round_lost_whole_cannot_be_placed_and_stays_missing(
    db: DbSession, signer: Signer, settings: Settings
) -> None:
    """R1's question and reply both lost: nothing ties those two messages to a Round, so nothing
    is guessed; the agent was heard speaking in R1, so the Round is missing."""
    instance, session = told(
        db, signer, settings, lambda e, d: e in ("ASRResult", "LLMResult") and d["Round"] == R1
    )
    assert statuses(db, session)[R1] == ("missing", False)

    assert repair.fill(db, instance, WHOLE, settings=settings) == 0
    assert statuses(db, session)[R1] == ("missing", False)
    assert [line for line in lines(db, session) if line[0] == R1] == [(R1, "agent", "", None)]


def test_a_short_answer_said_twice_anchors_the_latest_round(
    db: DbSession, signer: Signer, settings: Settings
) -> None:
    """The window is the conversation's tail: a question asked in several Rounds belongs to the
    newest of them, so the lost reply after it fills R3, not R1."""
    payloads = conversation(signer)
    for p in payloads:
        if p["Event"] == "ASRResult" and p["Data"]["Round"] in (R1, R3):
            p["Data"]["Text"] = "Yes."
    lost = [p for p in payloads if not (p["Event"] == "LLMResult" and p["Data"]["Round"] == R3)]
    ingest(db, [signer.resign(p) for p in lost])
    apply_pending(db, settings)
    instance = db.scalars(select(AgentInstance).where(AgentInstance.agent_instance_id == INSTANCE)).one()
    session = db.get_one(Session, instance.session_id)

    assert (
        repair.fill(db, instance, context(("user", "Yes."), ("assistant", "Goodbye!")), settings=settings)
        == 1
    )
    assert [line for line in lines(db, session) if line[3] == "repaired"] == [
        (R3, "agent", "Goodbye!", "repaired")
    ]


def test_lost_sentences_that_arrive_after_the_repair_take_the_turn_back(
    db: DbSession, signer: Signer, settings: Settings
) -> None:
    """ZEGO's retries bring R1's LLMResults after the repair: the callbacks' words stand, and the
    turn is no longer marked repaired."""
    late = [p for p in conversation(signer) if p["Event"] == "LLMResult" and p["Data"]["Round"] == R1]
    instance, session = told(db, signer, settings, lambda e, d: e == "LLMResult" and d["Round"] == R1)
    repair.fill(db, instance, context(("user", EXPECTED_TURNS[0]), ("assistant", "Sure, a good one.")))
    assert lines(db, session)[1] == (R1, "agent", "Sure, a good one.", "repaired")

    ingest(db, late)
    apply_pending(db, settings)

    assert lines(db, session)[1] == (R1, "agent", EXPECTED_TURNS[1], None)
    assert statuses(db, session)[R1] == ("complete", False)

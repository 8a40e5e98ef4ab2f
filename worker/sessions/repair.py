"""Gap repair: the turns ZEGO's callbacks never delivered, filled from the agent's own context.

ZEGO says its callbacks are not fully reliable, and a lost LLMResult would otherwise be a hole
in the transcript forever. GetAgentInstanceMsgList returns the agent's LLM context window: the
last ``MessageHistory.WindowSize`` messages (20 by default), each a role and a content, with no
Round. So, before roomwarden deletes an instance (a policy's end, recycle or replacement, and
``DELETE /v1/sessions/{id}``) and when reconciliation finds a quiet instance still alive, it
reads that list outside any transaction (:func:`read_context`), then :func:`fill` lines it up
with the stored turns:

- a user message whose text equals a stored user turn's anchors that Round, and the assistant
  message right after it belongs to the same Round;
- an assistant message whose text equals a stored agent turn's anchors that Round likewise, and
  the user message right before it belongs to it too.

An anchored Round's agent turn that is absent, or empty and not interrupted, takes the assistant
message; its user turn, absent or empty, takes the user message. Those turns are written with
``source = 'repaired'``. A stored text is never overwritten: callbacks are the better witness.

What cannot be repaired (docs/gap-repair.md): Rounds older than the window; two neighbouring
messages both lost (nothing anchors them to a Round); text the context holds differently from
what was said; live digital humans, whose context ZEGO does not give (410001049).

:func:`round_statuses` is the read side: each Round ``complete``, ``partial`` or ``missing``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session as DbSession

from worker.db import insert_ignoring_conflicts
from worker.models import AgentInstance, Provider, Round, Session, Turn
from worker.privacy import turns as privacy_turns
from worker.vendors.zego.specs import Message

if TYPE_CHECKING:
    from worker.settings import Settings
    from worker.vendors.clients import Vendors

log = structlog.get_logger(__name__)

REPAIRED = "repaired"
ACTION = "GetAgentInstanceMsgList"
RoundStatusName = Literal["complete", "partial", "missing"]


def read_context(
    vendors: Vendors, app_id: int, agent_instance_id: str, provider: str | None
) -> list[Message] | None:
    """The instance's context window, or None when it cannot be had. Never raises: a repair that
    fails must not stop the deletion it precedes."""
    if provider in (Provider.COZE, Provider.ZEGO_LIVE_DIGITAL_HUMAN):
        return None  # Coze has its own message list; a live digital human answers 410001049
    try:
        return vendors.zego_agent(app_id).get_agent_instance_msg_list(agent_instance_id)
    except Exception as exc:  # any failure, vendor or network, only skips the repair
        log.warning("gap_repair_unread", agent_instance_id=agent_instance_id, error=type(exc).__name__)
        return None


@dataclass
class _Slot:
    user: Turn | None = None
    agent: Turn | None = None


def _norm(text: str | None) -> str:
    return " ".join((text or "").split())


def fill(
    db: DbSession,
    instance: AgentInstance,
    messages: Sequence[Message],
    *,
    settings: Settings | None = None,
) -> int:
    """Write the turns ``messages`` show and the callbacks missed; returns how many were filled."""
    turns = db.scalars(select(Turn).where(Turn.instance_id == instance.id).order_by(Turn.round)).all()
    slots: dict[int, _Slot] = {}
    for turn in turns:
        slot = slots.setdefault(turn.round, _Slot())
        if turn.speaker == "user":
            slot.user = turn
        else:
            slot.agent = turn
    placed = _place(messages, slots)
    session = db.get(Session, instance.session_id)
    if session is None:
        return 0
    filled: list[Turn] = []
    for round_, speaker, text in placed:
        written = _write(db, session, instance, slots.get(round_, _Slot()), round_, speaker, text)
        if written is not None:
            filled.append(written)
    if filled:
        privacy_turns.keep_redacted(session, filled, settings=settings)
        db.flush()
        log.info(
            "gap_repaired",
            session_id=session.id,
            agent_instance_id=instance.agent_instance_id,
            turns=len(filled),
        )
    return len(filled)


def _place(messages: Sequence[Message], slots: dict[int, _Slot]) -> list[tuple[int, str, str]]:
    """(Round, speaker, text) for each message that lines up with a Round, in message order."""
    speaker_of = {"user": "user", "assistant": "agent"}
    items = [(speaker_of[m.role], m.content) for m in messages if m.role in speaker_of and _norm(m.content)]
    rounds = sorted(slots)
    anchored: list[int | None] = [None] * len(items)
    # From the newest message back: the window is the conversation's tail, so a short reply said
    # in several Rounds ("yes") matches the latest one first, and Rounds only go down.
    # A user message may share its Round with the assistant message after it, nothing else may.
    ceiling: tuple[int, str] | None = None
    for i in range(len(items) - 1, -1, -1):
        speaker, text = items[i]
        for r in reversed(rounds):
            if ceiling is not None and (
                r > ceiling[0] or (r == ceiling[0] and (speaker, ceiling[1]) != ("user", "agent"))
            ):
                continue
            stored = slots[r].user if speaker == "user" else slots[r].agent
            if stored is not None and _norm(stored.text) == _norm(text):
                anchored[i], ceiling = r, (r, speaker)
                break
    placed: list[tuple[int, str, str]] = []
    for i, (speaker, text) in enumerate(items):
        round_ = anchored[i]
        if round_ is None and speaker == "agent" and i > 0 and items[i - 1][0] == "user":
            round_ = anchored[i - 1]  # the reply to an anchored question
        if round_ is None and speaker == "user" and i + 1 < len(items) and items[i + 1][0] == "agent":
            round_ = anchored[i + 1]  # the question of an anchored reply
        if round_ is not None and anchored[i] is None:
            placed.append((round_, speaker, text))
    return placed


def _write(
    db: DbSession,
    session: Session,
    instance: AgentInstance,
    slot: _Slot,
    round_: int,
    speaker: str,
    text: str,
) -> Turn | None:
    """Fill one turn if the callbacks left it empty; the stored one wins otherwise."""
    existing = slot.user if speaker == "user" else slot.agent
    if existing is not None:
        if existing.text or existing.interrupted:
            return None  # said (or cut before a word): nothing to fill
        result = db.execute(
            update(Turn)
            .where(Turn.id == existing.id, Turn.text == "")
            .values(text=text, source=REPAIRED, settled=True)
        )
        if not getattr(result, "rowcount", 0):
            return None
        db.refresh(existing)
        return existing
    made = db.execute(
        insert_ignoring_conflicts(Turn, db.get_bind().dialect.name)
        .values(
            session_id=session.id,
            instance_id=instance.id,
            round=round_,
            speaker=speaker,
            text=text,
            user_id=session.user_id if speaker == "user" else None,
            interrupted=False,
            settled=True,
            source=REPAIRED,
        )
        .returning(Turn.id)
    ).scalar()
    if made is None:
        return None  # a callback's turn arrived meanwhile: it wins
    counter = Session.user_turns if speaker == "user" else Session.agent_turns
    db.execute(update(Session).where(Session.id == session.id).values({counter: counter + 1}))
    return db.get(Turn, made)


def fill_session(
    db: DbSession, session_id: str, contexts: dict[str, list[Message]], *, settings: Settings | None = None
) -> int:
    """:func:`fill` for each instance of the session whose context was read."""
    filled = 0
    instances = db.scalars(
        select(AgentInstance).where(
            AgentInstance.session_id == session_id, AgentInstance.agent_instance_id.in_(list(contexts))
        )
    ).all()
    for instance in instances:
        filled += fill(db, instance, contexts[instance.agent_instance_id], settings=settings)
    return filled


def read_contexts(
    vendors: Vendors, instances: Iterable[tuple[int, str]], provider: str | None
) -> dict[str, list[Message]]:
    """:func:`read_context` for (AppId, AgentInstanceId) pairs; those that could not be read are left out."""
    found: dict[str, list[Message]] = {}
    for app_id, agent_instance_id in instances:
        messages = read_context(vendors, app_id, agent_instance_id, provider)
        if messages:
            found[agent_instance_id] = messages
    return found


# --- the read side ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoundStatus:
    agent_instance_id: str
    round: int
    status: RoundStatusName
    repaired: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "agent_instance_id": self.agent_instance_id,
            "round": self.round,
            "status": self.status,
            "repaired": self.repaired,
        }


def round_statuses(db: DbSession, session_id: str) -> list[RoundStatus]:
    """Each Round of the session, in conversation order, with how much of it the transcript holds.

    - ``complete``: the agent's turn has text (or was cut off before a word), and so has the
      user's when the user spoke (a Round the app started with say or messages has no user turn);
    - ``partial``: one of the two has text, the other is absent or empty;
    - ``missing``: neither has text, though the agent was heard speaking (its SPEAKING status).
    """
    rows = db.execute(
        select(
            AgentInstance.id,
            AgentInstance.agent_instance_id,
            Turn.round,
            Turn.speaker,
            Turn.text,
            Turn.interrupted,
            Turn.source,
        )
        .join(AgentInstance, AgentInstance.id == Turn.instance_id)
        .where(Turn.session_id == session_id)
    ).all()
    spoke = db.execute(
        select(AgentInstance.id, AgentInstance.agent_instance_id, Round.round)
        .join(AgentInstance, AgentInstance.id == Round.instance_id)
        .where(AgentInstance.session_id == session_id, Round.agent_speaking_at.is_not(None))
    ).all()
    seen: dict[tuple[int, int], dict[str, object]] = {}
    for pk, instance_id, round_, speaker, text, interrupted, source in rows:
        entry = seen.setdefault((pk, round_), {"instance": instance_id})
        entry[speaker] = bool(text) or (speaker == "agent" and bool(interrupted))
        entry[f"{speaker}_row"] = True
        if source == REPAIRED:
            entry["repaired"] = True
    for pk, instance_id, round_ in spoke:
        seen.setdefault((pk, round_), {"instance": instance_id})
    statuses: list[RoundStatus] = []
    for (_pk, round_), entry in sorted(seen.items()):
        user, agent = bool(entry.get("user")), bool(entry.get("agent"))
        status: RoundStatusName
        if not user and not agent:
            status = "missing"
        elif not agent or (entry.get("user_row") and not user):
            status = "partial"
        else:
            status = "complete"
        statuses.append(RoundStatus(str(entry["instance"]), round_, status, bool(entry.get("repaired"))))
    return statuses

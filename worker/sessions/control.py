"""Live control of a running ZEGO agent: say, interrupt, inject a message, update, read its context.

Each control is called inline, inside the API request, not through a task: the caller wants
the vendor's answer (the Round a ``say`` is spoken in, the context window), and a queued ``say``
spoken a minute late is worse than a clear ``503`` now. The wait is bounded by
``ROOMWARDEN_CONTROL_TIMEOUT_SECONDS``, rate-limit slot included.

Like a policy action, a control never holds a transaction open across the vendor call:

1. :func:`begin` (one transaction): the session must be live; a ``policy_actions`` row of the
   control's kind is written ``running``, so the request is on record before ZEGO hears of it;
2. :func:`call` (no database): the ZEGO call, its errors turned into a :class:`ControlError`
   whose status says what the caller should do (409 not live or busy, 429 rate limited, 503
   try again, 502 ZEGO refused);
3. :func:`finish` (one transaction): the row is ``done`` with the vendor's answer, or
   ``failed`` with the error; a ``say`` writes its Round's agent turn with ``source = 'say'``.

A process that dies between 1 and 3 leaves a ``running`` row; the policy executor finds it stale
and marks it failed (``worker.policies.actions.claim``), never repeats it: ZEGO may have spoken.
The rows are shown in the session's timeline (:func:`timeline_entries`).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session as DbSession

from worker.db import insert_ignoring_conflicts
from worker.models import (
    ActionKind,
    ActionState,
    AgentInstance,
    PolicyAction,
    Provider,
    Session,
    SessionState,
    Turn,
)
from worker.sealing import Sealer, secret_paths
from worker.settings import Settings
from worker.vendors.errors import SpecError
from worker.vendors.ratelimit import Limiter
from worker.vendors.retries import RetryPolicy
from worker.vendors.zego import specs
from worker.vendors.zego.agent import ZegoAgentClient
from worker.vendors.zego.errors import (
    ZegoError,
    ZegoHttpError,
    ZegoInstanceBusyError,
    ZegoNotFoundError,
    ZegoRateLimitError,
    ZegoTransientError,
    ZegoValidationError,
)

POLICY = "control"  # policy_actions.policy of every control
REASON = "manual"
UPDATABLE = ("LLM", "TTS", "ASR")
# The vendor codes that mean "slow down" (vendor facts 1.2): answered 429, not 503.
RATE_LIMIT_CODES = frozenset({410001029, 206, 207})


class ControlError(Exception):
    """Why a control was not carried out: the HTTP status, a stable code and a sentence."""

    def __init__(self, status: int, code: str, detail: str, *, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.retry_after = retry_after


@dataclass(frozen=True)
class Target:
    """The live agent a control goes to, copied out of the database before the vendor call."""

    session_id: str
    app_id: int
    agent_instance_id: str
    instance_pk: int
    action_id: int


@dataclass(frozen=True)
class Control:
    """One control to send: its kind, the ZEGO body without ``AgentInstanceId``, and what to
    record of it (``inputs`` never holds a secret: an update records only what it changed)."""

    kind: ActionKind
    body: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """What ZEGO answered: the Round (say, interrupt, message) or the context messages."""

    round: int | None = None
    messages: list[specs.Message] | None = None

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.round is not None:
            out["round"] = self.round
        if self.messages is not None:
            out["messages"] = len(self.messages)
        return out


# --- what the API accepts ---------------------------------------------------------------------


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ControlError(400, "invalid_request", "the body must be a JSON object")
    return body


def _only(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ControlError(400, "invalid_request", f"unknown field(s): {', '.join(unknown)}")


def _text(body: dict[str, Any], limit: int) -> str:
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ControlError(400, "invalid_request", "text is required: a non-empty string")
    if len(text) > limit:
        raise ControlError(400, "invalid_request", f"text must be at most {limit} characters")
    return text


def _flag(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise ControlError(400, "invalid_request", f"{name} must be true or false")
    return value


def say(body: Any) -> Control:
    """``{"text", "interrupt", "add_to_history"}``: ZEGO speaks at most 300 characters a call.
    ``interrupt`` (default true) cuts what the agent is saying (ClearAndInterrupt); false queues
    the text behind it (Enqueue, at most five waiting)."""
    asked = _object(body)
    _only(asked, ("text", "interrupt", "add_to_history"))
    text = _text(asked, 300)
    interrupt = _flag(asked, "interrupt", True)
    history = _flag(asked, "add_to_history", True)
    zego = {
        "Text": text,
        "AddHistory": history,
        "SamePriorityOption": "ClearAndInterrupt" if interrupt else "Enqueue",
    }
    return Control(ActionKind.SAY, zego, {"text": text, "interrupt": interrupt, "add_to_history": history})


def message(body: Any) -> Control:
    """``{"text"}``: the agent answers it through its LLM, as if the user had said it."""
    asked = _object(body)
    _only(asked, ("text",))
    text = _text(asked, 4000)
    return Control(ActionKind.MESSAGE, {"Text": text}, {"text": text})


def interrupt() -> Control:
    return Control(ActionKind.INTERRUPT)


def context() -> Control:
    return Control(ActionKind.CONTEXT)


def update_request(body: Any) -> Control:
    """``{"LLM"?, "TTS"?, "ASR"?}``, each complete (ZEGO replaces it wholesale), checked as
    ``specs.UpdateAgentInstance`` checks it (the creation's rules, and TTS.FilterText and
    TerminatorText refused) before anything is stored or sent."""
    asked = _object(body)
    unknown = sorted(set(asked) - set(UPDATABLE))
    if unknown:
        raise ControlError(
            400, "invalid_request", f"unknown field(s): {', '.join(unknown)}; a PATCH changes LLM, TTS or ASR"
        )
    if not any(asked.get(name) is not None for name in UPDATABLE):
        raise ControlError(400, "invalid_request", "name at least one of LLM, TTS, ASR to change")
    try:
        specs.UpdateAgentInstance.model_validate({**asked, "AgentInstanceId": "0"})
    except SpecError as exc:
        raise UpdateInvalid(exc) from None
    changed = [name for name in UPDATABLE if asked.get(name) is not None]
    return Control(ActionKind.UPDATE, {k: asked[k] for k in changed}, {"changed": changed})


class UpdateInvalid(ControlError):
    """A PATCH whose LLM / TTS / ASR ZEGO would refuse: 400 naming each field, as creation does."""

    def __init__(self, error: SpecError) -> None:
        super().__init__(400, "invalid_request", str(error))
        self.field = error.field
        self.errors = list(error.errors)


# --- 1. begin ---------------------------------------------------------------------------------


def begin(
    db: DbSession, session: Session, control: Control, *, settings: Settings, now: dt.datetime
) -> Target:
    """Record the control as running against the session's live agent, or raise 409: not live,
    or not controllable from here (no ServerSecret for its AppId: nothing could be signed)."""
    if session.provider == Provider.COZE:
        raise ControlError(409, "not_live", "a Coze room has no control API: live control is for ZEGO agents")
    if session.provider == Provider.ZEGO_LIVE_DIGITAL_HUMAN and control.kind is not ActionKind.SAY:
        # ZEGO answers 410001049 to anything but SendAgentInstanceTTS on a live digital human:
        # refused here, before a row is written or a request is signed.
        raise ControlError(
            409,
            "not_supported",
            f"a {Provider.ZEGO_LIVE_DIGITAL_HUMAN.value} session is driven only by say "
            f"(ZEGO refuses {control.kind.value} with 410001049)",
        )
    app = settings.zego_app(session.app_id)
    if app is None or app.server_secret is None:
        raise ControlError(
            409, "not_configured", f"no ZEGO ServerSecret is configured for AppId {session.app_id}"
        )
    if session.state != SessionState.ACTIVE:
        raise ControlError(
            409, "not_live", f"the session is {session.state}, not live: its agent cannot be controlled"
        )
    if session.end_requested_at is not None:
        raise ControlError(409, "not_live", "the session is ending (its end was requested): not live")
    instance = db.scalars(
        select(AgentInstance)
        .where(AgentInstance.session_id == session.id, AgentInstance.state != "deleted")
        .order_by(AgentInstance.first_seen_at.desc().nulls_last(), AgentInstance.id.desc())
        .limit(1)
    ).first()
    if instance is None:
        raise ControlError(409, "not_live", "the session has no running agent instance")
    row = PolicyAction(
        session_id=session.id,
        kind=control.kind.value,
        reason=REASON,
        policy=POLICY,
        trigger_key=f"control:{uuid.uuid4()}",
        app_id=instance.app_id,
        agent_instance_id=instance.agent_instance_id,
        inputs=control.inputs,
        state=ActionState.RUNNING,
        dry_run=False,
        attempts=1,
        not_before=now,
        claimed_at=now,
        created_at=now,
    )
    db.add(row)
    db.flush()
    return Target(session.id, instance.app_id, instance.agent_instance_id, instance.id, row.id)


# --- 2. call (no database) --------------------------------------------------------------------


def client_for(settings: Settings, app_id: int, limiter: Limiter) -> ZegoAgentClient:
    """A client for live control: the workers' rate-limit budget (``limiter``, shared through
    Redis), but a short wait for a slot and few retries, so a request ends within the timeout."""
    app = settings.zego_app(app_id)
    if app is None or app.server_secret is None:
        raise ControlError(
            503, "vendor_not_configured", f"no ZEGO ServerSecret is configured for AppId {app_id}"
        )
    budget = settings.control_timeout_seconds
    return ZegoAgentClient(
        settings.zego_api_url,
        app_id,
        app.server_secret.get_secret_value(),
        timeout=budget,
        connect_timeout=min(budget, 3.0),
        limiter=limiter,
        rate_limit_timeout=min(budget, 2.0),
        retry=RetryPolicy(attempts=2, base=0.2, cap=1.0, deadline=budget),
    )


def call(client: ZegoAgentClient, target: Target, control: Control) -> Outcome:
    """Send the control to ZEGO; every vendor error becomes a :class:`ControlError`."""
    body = {**control.body, "AgentInstanceId": target.agent_instance_id}
    send: dict[ActionKind, Callable[[], Outcome]] = {
        ActionKind.SAY: lambda: Outcome(round=client.send_agent_instance_tts(body)),
        ActionKind.MESSAGE: lambda: Outcome(round=client.send_agent_instance_llm(body)),
        ActionKind.INTERRUPT: lambda: Outcome(
            round=client.interrupt_agent_instance(target.agent_instance_id)
        ),
        ActionKind.CONTEXT: lambda: Outcome(
            messages=client.get_agent_instance_msg_list(target.agent_instance_id)
        ),
        ActionKind.UPDATE: lambda: _update(client, body),
    }
    try:
        return send[control.kind]()
    except ZegoError as exc:
        raise vendor_refusal(exc) from None
    except SpecError as exc:  # e.g. an AgentInstanceId ZEGO's rules would refuse: never sent
        raise ControlError(400, "invalid_request", str(exc)) from None


def _update(client: ZegoAgentClient, body: dict[str, Any]) -> Outcome:
    client.update_agent_instance(body)
    return Outcome()


def vendor_refusal(exc: ZegoError) -> ControlError:
    """What the caller is told: the vendor's code and message, never the request."""
    said = f"ZEGO answered {exc.code}: {exc.message}" if exc.code is not None else str(exc.message)
    if (
        isinstance(exc, ZegoRateLimitError)
        or exc.code in RATE_LIMIT_CODES
        or (isinstance(exc, ZegoHttpError) and exc.http_status == 429)
    ):
        return ControlError(
            429, "rate_limited", f"ZEGO's rate limit for this action is reached ({said})", retry_after=1
        )
    if isinstance(exc, ZegoTransientError):
        return ControlError(
            503, "vendor_unavailable", f"ZEGO did not carry it out; try again ({said})", retry_after=2
        )
    if isinstance(exc, ZegoNotFoundError):
        return ControlError(409, "not_live", f"ZEGO no longer runs this agent instance ({said})")
    if isinstance(exc, ZegoInstanceBusyError):
        return ControlError(409, "agent_busy", f"the agent cannot take this now ({said})")
    if isinstance(exc, ZegoValidationError):
        return ControlError(400, "vendor_rejected", f"ZEGO refused the request as invalid ({said})")
    return ControlError(502, "vendor_error", f"ZEGO refused the request ({said})")


# --- 3. finish --------------------------------------------------------------------------------


def finish(
    db: DbSession,
    target: Target,
    control: Control,
    outcome: Outcome | ControlError,
    *,
    now: dt.datetime,
    sealer: Sealer | None = None,
) -> PolicyAction:
    """Record what came of the control; a ``say`` marks its Round's agent turn, an ``update`` is
    kept in the session's spec (``sealer`` seals its secrets there)."""
    row = db.get(PolicyAction, target.action_id, with_for_update=True)
    assert row is not None
    row.finished_at = now
    if isinstance(outcome, ControlError):
        row.state = ActionState.FAILED
        row.error = outcome.detail
        row.result = {"status": outcome.status, "error": outcome.code}
        return row
    row.state = ActionState.DONE
    row.result = outcome.result()
    if control.kind is ActionKind.SAY and outcome.round is not None:
        mark_said(db, target, outcome.round, str(control.inputs["text"]), now=now)
    if control.kind is ActionKind.UPDATE:
        row.result = {**row.result, "spec_updated": keep_update(db, target, control, sealer=sealer)}
    return row


def keep_update(db: DbSession, target: Target, control: Control, *, sealer: Sealer | None) -> bool:
    """Write an applied update into the session's stored spec, secrets sealed, so that an agent a
    policy recreates speaks with the new voice, not the old one. False when there is no spec
    (a session heard of through callbacks) or its secrets could not be sealed (no secret key)."""
    session = db.get(Session, target.session_id, with_for_update=True)
    if session is None or not session.spec or not isinstance(session.spec.get("params"), dict):
        return False
    changed = dict(control.body)
    if sealer is not None:
        changed = sealer.seal(changed, secret_paths(changed))
    elif secret_paths(changed):
        return False
    # A new dict, not an edit in place: the JSON column sees only assignments.
    session.spec = {**session.spec, "params": {**session.spec["params"], **changed}}
    return True


def mark_said(db: DbSession, target: Target, round_: int, text: str, *, now: dt.datetime) -> None:
    """The ``say`` Round's agent turn, marked ``source = 'say'``.

    ZEGO sends no LLMResult for a TTS Round (the text is not the LLM's), so the turn is written
    here with the text; if a callback made the turn first, it is only marked. Its LLMResult
    sentences, should ZEGO send some, replace the text as for any agent turn.
    """
    dialect = db.get_bind().dialect.name
    # A say is activity: for a live digital human (no user) it is the only activity, and its
    # idleness is judged from it (worker.policies.scans.quiet_since), as ZEGO's MaxIdleTime is.
    db.execute(
        update(Session)
        .where(
            Session.id == target.session_id,
            or_(Session.last_activity_at.is_(None), Session.last_activity_at < now),
        )
        .values(last_activity_at=now)
    )
    made = db.execute(
        insert_ignoring_conflicts(Turn, dialect)
        .values(
            session_id=target.session_id,
            instance_id=target.instance_pk,
            round=round_,
            speaker="agent",
            text=text,
            spoken_at=now,
            interrupted=False,
            settled=False,
            source="say",
        )
        .returning(Turn.id)
    ).scalar()
    if made is not None:
        db.execute(
            update(Session).where(Session.id == target.session_id).values(agent_turns=Session.agent_turns + 1)
        )
        return
    db.execute(
        update(Turn)
        .where(Turn.instance_id == target.instance_pk, Turn.round == round_, Turn.speaker == "agent")
        .values(source="say")
    )


def remark_said(db: DbSession) -> int:
    """After a rebuild re-derived the turns from callbacks: mark the ``say`` Rounds again."""
    marked = 0
    rows = db.execute(
        select(PolicyAction, AgentInstance.id)
        .join(
            AgentInstance,
            (AgentInstance.app_id == PolicyAction.app_id)
            & (AgentInstance.agent_instance_id == PolicyAction.agent_instance_id),
        )
        .where(PolicyAction.kind == ActionKind.SAY, PolicyAction.state == ActionState.DONE)
    ).all()
    for action, instance_pk in rows:
        round_ = (action.result or {}).get("round")
        if not isinstance(round_, int):
            continue
        target = Target(
            action.session_id, action.app_id, str(action.agent_instance_id), instance_pk, action.id
        )
        at = action.finished_at or action.created_at
        mark_said(db, target, round_, str((action.inputs or {}).get("text", "")), now=at)
        marked += 1
    return marked


# --- the timeline -----------------------------------------------------------------------------


def timeline_entries(db: DbSession, session_id: str) -> list[tuple[dt.datetime, dict[str, Any]]]:
    """Each control as a timeline event ``Control`` at the time it was asked: what, and what came of it."""
    entries = []
    for row in db.scalars(
        select(PolicyAction).where(PolicyAction.session_id == session_id, PolicyAction.policy == POLICY)
    ):
        result = row.result or {}
        detail: dict[str, Any] = {"action": row.kind, "action_id": row.id, "state": row.state}
        if "text" in (row.inputs or {}):
            detail["text"] = row.inputs["text"]
        if "changed" in (row.inputs or {}):
            detail["changed"] = row.inputs["changed"]
        if row.error:
            detail["error"] = result.get("error")
        entries.append(
            (
                row.created_at,
                {
                    "at": row.created_at.isoformat(),
                    "event": "Control",
                    "round": result.get("round"),
                    "agent_instance_id": row.agent_instance_id,
                    "detail": detail,
                },
            )
        )
    return entries

"""Starting and ending agent sessions through the vendors' APIs.

roomwarden starts the sessions it will later have to recreate, so a session started through
``POST /v1/sessions`` keeps its whole vendor request (secrets sealed). The vendor call itself
runs in a Celery task, in three short steps that never hold a database transaction open across
an HTTP call (on the embedded SQLite that would stop every other writer):

1. ``claim_start``: mark the session as being started (a second task finding a fresh claim
   leaves it alone) and hand back the unsealed request;
2. ``call_vendor``: the vendor call, no database;
3. ``record_started`` / ``record_failed`` / ``release_claim``: what came of it.

Callbacks can outrun step 3: ZEGO may deliver AgentInstanceCreated before the task has written
the new AgentInstanceId down, and the drain then files the instance under a session of its own.
``record_started`` adopts such a session into the one the API made, so callbacks for instances
roomwarden started always end up on their session.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session as DbSession

from worker.db import insert_ignoring_conflicts
from worker.models import (
    COZE_APP_ID,
    AgentException,
    AgentInstance,
    Provider,
    Session,
    SessionState,
    TimelineEvent,
    Turn,
    UserAudio,
)
from worker.sealing import Sealer, secret_paths
from worker.sessions import templates
from worker.sessions.lifecycle import earliest, latest, refresh
from worker.settings import Settings

if TYPE_CHECKING:
    from worker.vendors.clients import Vendors


class RequestError(ValueError):
    """A session request that cannot be started; ``field`` names the part that is wrong."""

    def __init__(self, field: str | None, message: str, errors: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.field = field
        self.message = message
        self.errors = errors or ([(field, message)] if field else [])


@dataclass(frozen=True)
class SessionRequest:
    provider: Provider
    app_id: int
    params: dict[str, Any]
    template: str | None = None
    agent: dict[str, Any] | None = None


@dataclass(frozen=True)
class StartOrder:
    session_id: str
    provider: Provider
    app_id: int
    params: dict[str, Any]
    agent: dict[str, Any] | None
    attempt: int


@dataclass(frozen=True)
class Started:
    # Only what the vendor handed back and no column holds; the API adds room and user.
    join_info: dict[str, Any]
    agent_instance_id: str | None = None  # ZEGO; a Coze room is filed under its room id
    room_id: str | None = None  # Coze: the vendor names the room
    uid: str | None = None
    conversation_id: str | None = None


def parse_request(
    body: Any, *, settings: Settings, known_templates: dict[str, templates.Template]
) -> SessionRequest:
    """Check a POST /v1/sessions body against the vendor's documented constraints, before any call."""
    if not isinstance(body, dict):
        raise RequestError(None, "the body must be a JSON object")
    unknown = set(body) - {"provider", "app_id", "template", "params", "agent"}
    if unknown:
        raise RequestError(sorted(unknown)[0], f"unknown field(s): {', '.join(sorted(unknown))}")
    template = None
    if body.get("template") is not None:
        template = known_templates.get(str(body["template"]))
        if template is None:
            raise RequestError("template", f"no agent template named {body['template']!r}")
    provider_name = body.get("provider") or (template.provider if template else None)
    try:
        provider = Provider(str(provider_name))
    except ValueError:
        raise RequestError("provider", "provider must be one of zego, zego_digital_human, coze") from None
    params = body.get("params", {})
    agent = body.get("agent", template.agent if template else None)
    if not isinstance(params, dict) or (agent is not None and not isinstance(agent, dict)):
        raise RequestError("params", "params and agent must be JSON objects")
    if template is not None:
        params = templates.merged(template.params, params)
    if provider is Provider.COZE:
        _validate_coze(params)
        return SessionRequest(provider, COZE_APP_ID, params, template.name if template else None)
    app_id = _app_id(body.get("app_id", template.app_id if template else None), settings)
    _validate_zego(provider, params, agent)
    return SessionRequest(provider, app_id, params, template.name if template else None, agent)


def _app_id(given: Any, settings: Settings) -> int:
    configured = set(settings.zego_apps)
    if settings.zego_app_id is not None:
        configured.add(settings.zego_app_id)
    if given is None:
        if len(configured) != 1:
            raise RequestError("app_id", "app_id is required when several ZEGO apps are configured")
        given = next(iter(configured))
    if not isinstance(given, int) or isinstance(given, bool):
        raise RequestError("app_id", "app_id must be an integer")
    app = settings.zego_app(given)
    if app is None or app.server_secret is None:
        raise RequestError("app_id", f"no ZEGO ServerSecret is configured for AppId {given}")
    return given


def _raise_spec_error(exc: ValueError, prefix: str) -> None:
    field = getattr(exc, "field", None)
    errors = [(f"{prefix}.{f}", m) for f, m in getattr(exc, "errors", [])]
    raise RequestError(f"{prefix}.{field}" if field else prefix, str(exc), errors) from exc


def _validate_zego(provider: Provider, params: dict[str, Any], agent: dict[str, Any] | None) -> None:
    from worker.vendors.zego import specs

    model = (
        specs.CreateDigitalHumanAgentInstance
        if provider is Provider.ZEGO_DIGITAL_HUMAN
        else specs.CreateAgentInstance
    )
    try:
        model.model_validate(params)
    except ValueError as exc:
        _raise_spec_error(exc, "params")
    if agent is not None:
        try:
            specs.RegisterAgent.model_validate(agent)
        except ValueError as exc:
            _raise_spec_error(exc, "agent")


def _validate_coze(params: dict[str, Any]) -> None:
    from worker.vendors.coze import specs

    try:
        specs.CreateRoom.model_validate(params)
    except ValueError as exc:
        _raise_spec_error(exc, "params")


def request_session(
    db: DbSession, request: SessionRequest, *, session_id: str, sealer: Sealer | None, now: dt.datetime
) -> Session:
    """A new session in state ``starting``; the caller enqueues the start after committing."""
    params, agent = request.params, request.agent
    if sealer is not None:
        params = sealer.seal(params, secret_paths(params))
        agent = sealer.seal(agent, secret_paths(agent)) if agent is not None else None
    elif secret_paths(params) or (agent is not None and secret_paths(agent)):
        raise RequestError(None, "set ROOMWARDEN_SECRET_KEY: this request carries vendor secrets")
    spec: dict[str, Any] = {"params": params}
    if agent is not None:
        spec["agent"] = agent
    rtc = params.get("RTC") or {}
    coze = request.provider is Provider.COZE
    session = Session(
        id=session_id,
        app_id=request.app_id,
        origin="api",
        state=SessionState.STARTING,
        provider=request.provider.value,
        template=request.template,
        spec=spec,
        room_id=None if coze else rtc.get("RoomId"),
        user_id=params.get("uid") if coze else params.get("UserId"),
        agent_user_id=None if coze else rtc.get("AgentUserId"),
        agent_id=params.get("bot_id") if coze else params.get("AgentId"),
        created_at=now,
        start_attempts=0,
    )
    db.add(session)
    db.flush()
    return session


def claim_start(
    db: DbSession, session_id: str, *, sealer: Sealer | None, now: dt.datetime, stale_after: float
) -> StartOrder | None:
    """The request to send, if this session still needs starting and nobody else is at it."""
    session = db.scalars(select(Session).where(Session.id == session_id).with_for_update()).one_or_none()
    if session is None or session.state != SessionState.STARTING or session.provisioned_at is not None:
        return None
    if session.start_claimed_at is not None and now - session.start_claimed_at < dt.timedelta(
        seconds=stale_after
    ):
        return None
    spec = session.spec or {}
    if sealer is not None:
        spec = sealer.unseal(spec)
    session.start_claimed_at = now
    session.start_attempts = (session.start_attempts or 0) + 1
    return StartOrder(
        session_id=session.id,
        provider=Provider(str(session.provider)),
        app_id=session.app_id,
        params=spec.get("params", {}),
        agent=spec.get("agent"),
        attempt=session.start_attempts,
    )


def release_claim(db: DbSession, session_id: str) -> None:
    """A transient failure: let the retry claim the start again."""
    db.execute(update(Session).where(Session.id == session_id).values(start_claimed_at=None))


def record_failed(
    db: DbSession, session_id: str, *, code: int | None, message: str, now: dt.datetime
) -> None:
    session = db.scalars(select(Session).where(Session.id == session_id).with_for_update()).one_or_none()
    if session is None or session.state != SessionState.STARTING or session.provisioned_at is not None:
        return
    session.state = SessionState.FAILED
    session.end_reason = "vendor_error"
    session.end_code = code
    session.failure_message = message[:1024]
    session.ended_at = now
    session.start_claimed_at = None


def record_started(db: DbSession, session_id: str, started: Started, *, now: dt.datetime) -> bool:
    """Write down what the vendor made. True when the session was ended meanwhile: delete it now."""
    session = db.scalars(select(Session).where(Session.id == session_id).with_for_update()).one()
    session.join_info = started.join_info
    session.provisioned_at = now
    session.start_claimed_at = None
    cancelled = session.state == SessionState.ENDED or session.end_requested_at is not None
    if session.provider == Provider.COZE:
        _record_coze_room(db, session, started, now=now)
    elif started.agent_instance_id is not None:
        attach_instance(db, session, started.agent_instance_id)
    return cancelled


def _record_coze_room(db: DbSession, session: Session, started: Started, *, now: dt.datetime) -> None:
    # A Coze bot is in its room (and billing) from the moment the room exists.
    session.conversation_id = started.conversation_id
    session.room_id = started.room_id
    session.user_id = started.uid or session.user_id
    session.state = SessionState.ACTIVE
    session.started_at = session.last_activity_at = now
    db.execute(
        insert_ignoring_conflicts(AgentInstance, db.get_bind().dialect.name).values(
            app_id=COZE_APP_ID,
            agent_instance_id=f"coze:{session.room_id}",
            session_id=session.id,
            state="active",
            room_id=session.room_id,
            agent_id=session.agent_id,
            created_at=now,
            first_seen_at=now,
            last_event_at=now,
        )
    )


def attach_instance(db: DbSession, session: Session, agent_instance_id: str) -> None:
    """File a new ZEGO instance under ``session``, adopting whatever its callbacks already built."""
    db.execute(
        insert_ignoring_conflicts(AgentInstance, db.get_bind().dialect.name).values(
            app_id=session.app_id,
            agent_instance_id=agent_instance_id,
            session_id=session.id,
            state="starting",
            agent_user_id=session.agent_user_id,
            room_id=session.room_id,
            agent_id=session.agent_id,
        )
    )
    owner = db.scalar(
        select(AgentInstance.session_id).where(
            AgentInstance.app_id == session.app_id, AgentInstance.agent_instance_id == agent_instance_id
        )
    )
    if owner is not None and owner != session.id:
        adopt(db, session, owner)


def adopt(db: DbSession, session: Session, orphan_id: str) -> None:
    """Move everything callbacks filed under session ``orphan_id`` into ``session`` and drop it."""
    orphan = db.scalars(select(Session).where(Session.id == orphan_id).with_for_update()).one_or_none()
    if orphan is None or orphan.origin != "callback":
        return  # another API session owns it: not ours to take
    for model in (AgentInstance, Turn, TimelineEvent, AgentException, UserAudio):
        db.execute(update(model).where(model.session_id == orphan_id).values(session_id=session.id))
    if orphan.started_at is not None:
        session.started_at = earliest(session.started_at, orphan.started_at)
    for name in ("last_activity_at", "last_user_speech_at"):
        value = getattr(orphan, name)
        if value is not None:
            setattr(session, name, latest(getattr(session, name), value))
    session.agent_name = session.agent_name or orphan.agent_name
    db.execute(delete(Session).where(Session.id == orphan_id))
    db.expire(session, ["instances"])
    refresh(db, session)


def request_end(db: DbSession, session: Session, *, now: dt.datetime) -> str:
    """What DELETE /v1/sessions/{id} does: ``ended``, ``deleting`` (the task will call the vendor)."""
    if session.state in (SessionState.ENDED, SessionState.FAILED):
        return "ended"
    if session.provider == Provider.COZE:
        raise RequestError(
            None,
            "Coze has no API to end a room: it closes when the user leaves "
            "(3 minutes without a user, or the silence timeout)",
        )
    if session.provisioned_at is None:
        session.state = SessionState.ENDED
        session.end_reason = "cancelled"
        session.ended_at = now
        session.end_requested_at = now
        return "ended"
    session.end_requested_at = session.end_requested_at or now
    return "deleting"


def live_instances(db: DbSession, session_id: str) -> list[tuple[int, str]]:
    """The (AppId, AgentInstanceId) of every instance of the session not known to be deleted."""
    rows = db.execute(
        select(AgentInstance.app_id, AgentInstance.agent_instance_id).where(
            AgentInstance.session_id == session_id, AgentInstance.state != "deleted"
        )
    )
    return [(app_id, instance_id) for app_id, instance_id in rows]


def starts_to_resume(db: DbSession, *, now: dt.datetime, stale_after: float) -> list[str]:
    """API sessions whose start message was lost or whose worker died mid-start."""
    cutoff = now - dt.timedelta(seconds=stale_after)
    return list(
        db.scalars(
            select(Session.id)
            .where(
                Session.origin == "api",
                Session.state == SessionState.STARTING,
                Session.provisioned_at.is_(None),
                Session.created_at < cutoff,
            )
            .where((Session.start_claimed_at.is_(None)) | (Session.start_claimed_at < cutoff))
            .limit(100)
        )
    )


def call_vendor(order: StartOrder, vendors: Vendors) -> Started:
    """The vendor call that makes the agent; raises the vendor's typed errors."""
    if order.provider is Provider.COZE:
        coze = vendors.coze()
        params = dict(order.params)
        # Passing our own conversation is the practical way to read the room's messages later.
        conversation_id = params.get("conversation_id") or coze.create_conversation(str(params["bot_id"]))
        params["conversation_id"] = conversation_id
        room = coze.create_room(params)
        return Started(
            join_info={"app_id": room.app_id, "token": room.token},
            room_id=room.room_id,
            uid=room.uid,
            conversation_id=conversation_id,
        )
    from worker.vendors.zego.errors import ZegoConflictError

    client = vendors.zego_agent(order.app_id)
    if order.agent is not None:
        # Registered already (by an earlier session or attempt): just what we wanted.
        with contextlib.suppress(ZegoConflictError):
            client.register_agent(order.agent)
    if order.provider is Provider.ZEGO_DIGITAL_HUMAN:
        human = client.create_digital_human_agent_instance(order.params)
        join = {
            "agent_instance_id": human.agent_instance_id,
            "digital_human_config": human.digital_human_config,
        }
        return Started(join_info=join, agent_instance_id=human.agent_instance_id)
    created = client.create_agent_instance(order.params)
    return Started(
        join_info={"agent_instance_id": created.agent_instance_id},
        agent_instance_id=created.agent_instance_id,
    )


def delete_instances(vendors: Vendors, instances: list[tuple[int, str]], *, graceful: bool) -> int:
    """DeleteAgentInstance for each; an instance ZEGO no longer knows is already what we want."""
    from worker.vendors.zego.errors import ZegoNotFoundError

    deleted = 0
    for app_id, agent_instance_id in instances:
        try:
            vendors.zego_agent(app_id).delete_agent_instance(agent_instance_id, graceful=graceful)
            deleted += 1
        except ZegoNotFoundError:
            continue
    return deleted

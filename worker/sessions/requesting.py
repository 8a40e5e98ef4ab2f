"""What the sessions API asks for: a checked request to start a session, or to end one.

A request is validated against the vendor's own constraints before anything is stored (a bad
field is a 400 naming it), and its vendor request is kept whole, secrets sealed, because
roomwarden starts the sessions it may later have to recreate. The vendor is called later, by a
worker (``worker.sessions.starting``, ``worker.sessions.ending``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session as DbSession

from worker.events import sessions as session_events
from worker.models import (
    COZE_APP_ID,
    Provider,
    Session,
    SessionState,
)
from worker.sealing import Sealer, secret_paths
from worker.sessions import templates
from worker.settings import Settings

if TYPE_CHECKING:
    pass


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
        names = ", ".join(p.value for p in Provider)
        raise RequestError("provider", f"provider must be one of {names}") from None
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

    models: dict[Provider, type[specs.ZegoRequest]] = {
        Provider.ZEGO_DIGITAL_HUMAN: specs.CreateDigitalHumanAgentInstance,
        Provider.ZEGO_LIVE_DIGITAL_HUMAN: specs.CreateLiveDigitalHumanAgentInstance,
    }
    model = models.get(provider, specs.CreateAgentInstance)
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
    session_events.created(db, session)
    return session


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
        before = session.state
        session.state = SessionState.ENDED
        session.end_reason = "cancelled"
        session.ended_at = now
        session.end_requested_at = now
        session_events.changed(db, session, before, instances=[], learned="api")
        return "ended"
    session.end_requested_at = session.end_requested_at or now
    return "deleting"

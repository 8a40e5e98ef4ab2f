"""The ZEGO AI Agent server API (``POST /?Action=...``) as a Starlette app.

A request goes: gateway checks (emulator.zego_gateway), the per-action rate limit, injected API
faults, the JSON body (``410000004`` if it is not a JSON object), body validation
(emulator.zego_validation, ``410000003`` naming the field), then the action against the world.
The control endpoints (emulator.control) are mounted on the same app under ``/_emulator``.
Every answer with a non-zero Code is counted in the world's ledger (emulator.zego_ledger).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from emulator import control
from emulator.zego_conversation import InstanceNotRunning, QueueFull
from emulator.zego_gateway import ApiFaults, RateLimiter, ZegoError, check_request, envelope
from emulator.zego_validation import validate
from emulator.zego_world import Instance, World

AGENT_RATE_PER_S = 10
Handler = Callable[[World, int, dict[str, Any]], Any]


def _register(world: World, app_id: int, body: dict[str, Any]) -> None:
    world.register_agent(app_id, body)


def _update_agent(world: World, app_id: int, body: dict[str, Any]) -> None:
    world.update_agent(app_id, body)


def _unregister(world: World, app_id: int, body: dict[str, Any]) -> None:
    world.unregister_agent(app_id, body["AgentId"])


def _list_agents(world: World, app_id: int, body: dict[str, Any]) -> dict[str, Any]:
    return world.list_agents(app_id, body.get("Limit"), body.get("Cursor"))


def _query_agents(world: World, app_id: int, body: dict[str, Any]) -> dict[str, Any]:
    return world.query_agents(app_id, body["AgentIds"])


def _create(world: World, app_id: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"AgentInstanceId": world.create_instance(app_id, body).agent_instance_id}


def _create_digital_human(world: World, app_id: int, body: dict[str, Any]) -> dict[str, Any]:
    instance = world.create_instance(app_id, body)
    return {
        "AgentInstanceId": instance.agent_instance_id,
        "DigitalHumanConfig": world.digital_human_config(instance),
    }


def _create_live_digital_human(world: World, app_id: int, body: dict[str, Any]) -> dict[str, Any]:
    instance = world.create_instance(app_id, body, live=True)
    return {
        "AgentInstanceId": instance.agent_instance_id,
        "DigitalHumanConfig": world.digital_human_config(instance),
    }


# After creation a live digital human takes only TTS driving (and deletion, and the status
# query, which read or end rather than drive it: an assumption, the facts say "only TTS
# driving"); every other operation on it answers 410001049.
LIVE_REFUSED = frozenset(
    {
        "UpdateAgentInstance",
        "SendAgentInstanceLLM",
        "InterruptAgentInstance",
        "GetAgentInstanceMsgList",
        "AddAgentInstanceMsg",
        "ResetAgentInstanceMsgList",
        "StartListening",
        "StopListening",
    }
)


def _refuse_live(world: World, app_id: int, body: dict[str, Any]) -> None:
    if world.instance(app_id, body["AgentInstanceId"]).live:
        raise ZegoError(410001049, "API operations on live digital human instances are prohibited")


def _update_instance(world: World, app_id: int, body: dict[str, Any]) -> None:
    world.update_instance(world.instance(app_id, body["AgentInstanceId"]), body)


def _delete(world: World, app_id: int, body: dict[str, Any]) -> None:
    instance = world.instance(app_id, body["AgentInstanceId"])
    timeout = body.get("GracefulShutdownTimeout") or 30
    world.request_delete(instance, graceful=bool(body.get("GracefulShutdown")), timeout_s=timeout)


def _status(world: World, app_id: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"Status": world.instance(app_id, body["AgentInstanceId"]).status}


def _not_listening(world: World, app_id: int, body: dict[str, Any]) -> Instance:
    instance = world.instance(app_id, body["AgentInstanceId"])
    if instance.status == "LISTENING":
        raise ZegoError(410001013, "agent is listening, LLM/TTS cannot be triggered")
    return instance


def _send_llm(world: World, app_id: int, body: dict[str, Any]) -> dict[str, Any]:
    instance = _not_listening(world, app_id, body)
    try:
        round_ = world.conversation.send_llm(
            instance,
            body["Text"],
            priority=body.get("Priority") or "Medium",
            same_priority_option=body.get("SamePriorityOption") or "ClearAndInterrupt",
            add_question_to_history=bool(body.get("AddQuestionToHistory", False)),
            add_answer_to_history=bool(body.get("AddAnswerToHistory", True)),
        )
    except QueueFull:
        raise ZegoError(410001006, "active LLM call failed: the request queue is full") from None
    return {"Round": round_}


def _send_tts(world: World, app_id: int, body: dict[str, Any]) -> dict[str, Any]:
    instance = _not_listening(world, app_id, body)
    if instance.advanced_config.get("DisableTTS"):
        raise ZegoError(410000003, "invalid parameter: AdvancedConfig.DisableTTS is true, TTS is disabled")
    try:
        round_ = world.conversation.send_tts(
            instance,
            body["Text"],
            priority=body.get("Priority") or "Medium",
            same_priority_option=body.get("SamePriorityOption") or "ClearAndInterrupt",
            add_history=bool(body.get("AddHistory", True)),
        )
    except QueueFull:
        raise ZegoError(410001007, "active TTS call failed: the request queue is full") from None
    world.driven(instance)
    return {"Round": round_}


def _interrupt(world: World, app_id: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"Round": world.conversation.interrupt(world.instance(app_id, body["AgentInstanceId"]))}


def _messages(world: World, app_id: int, body: dict[str, Any]) -> dict[str, Any]:
    window = world.context_window(world.instance(app_id, body["AgentInstanceId"]))
    return {"Total": len(window), "MessageList": window}


def _add_messages(world: World, app_id: int, body: dict[str, Any]) -> None:
    instance = world.instance(app_id, body["AgentInstanceId"])
    for message in body["Messages"]:
        world.add_message(instance, message["Role"], message["Content"])


def _reset_messages(world: World, app_id: int, body: dict[str, Any]) -> None:
    world.instance(app_id, body["AgentInstanceId"]).messages.clear()


def _listening(start: bool) -> Handler:
    """Walkie-talkie mode: StartListening puts the agent in LISTENING, StopListening ends it."""

    def handle(world: World, app_id: int, body: dict[str, Any]) -> dict[str, Any]:
        instance = world.instance(app_id, body["AgentInstanceId"])
        if instance.advanced_config.get("CommunicationMode") != 2:
            raise ZegoError(410001042, "not in walkie-talkie mode")
        user_id = body.get("UserId") or instance.user_id
        sequence = body.get("Sequence")
        if sequence is not None:
            if sequence <= instance.listen_sequence.get(user_id, -(2**63)):
                raise ZegoError(410001043, "Sequence outdated, request ignored")
            instance.listen_sequence[user_id] = sequence
        if start:
            instance.status = "LISTENING"
            return {"Round": instance.next_round()}
        instance.status = "IDLE"
        return {"Round": instance.round}

    return handle


HANDLERS: dict[str, Handler] = {
    "RegisterAgent": _register,
    "UpdateAgent": _update_agent,
    "UnregisterAgent": _unregister,
    "ListAgents": _list_agents,
    "QueryAgents": _query_agents,
    "CreateAgentInstance": _create,
    "CreateDigitalHumanAgentInstance": _create_digital_human,
    "CreateLiveDigitalHumanAgentInstance": _create_live_digital_human,
    "UpdateAgentInstance": _update_instance,
    "DeleteAgentInstance": _delete,
    "QueryAgentInstanceStatus": _status,
    "SendAgentInstanceLLM": _send_llm,
    "SendAgentInstanceTTS": _send_tts,
    "InterruptAgentInstance": _interrupt,
    "GetAgentInstanceMsgList": _messages,
    "AddAgentInstanceMsg": _add_messages,
    "ResetAgentInstanceMsgList": _reset_messages,
    "StartListening": _listening(start=True),
    "StopListening": _listening(start=False),
}
ACTIONS = frozenset(HANDLERS)


def create_agent_app(world: World) -> Starlette:
    limiter = RateLimiter()
    faults = ApiFaults()
    # Requests per action that passed the gateway (signature, AppId, time): what ZEGO would bill
    # and rate-limit, shown in the control state so tests can count what roomwarden asked.
    calls: Counter[str] = Counter()
    config = world.config

    async def handle(request: Request) -> Response:
        try:
            action, app_id = check_request(
                request.query_params, ACTIONS, config.zego_apps, world.clock.now_s()
            )
            calls[action] += 1
            if config.rate_limits and not limiter.allow((app_id, action), AGENT_RATE_PER_S):
                raise ZegoError(
                    config.agent_rate_limit_code, "insufficient service resources, try again later"
                )
            fault = faults.take(action)
            if fault is not None:
                raise fault
            body = _json_object(await request.body())
            validate(action, body)
            if action in LIVE_REFUSED:
                _refuse_live(world, app_id, body)
            data = HANDLERS[action](world, app_id, body)
        except InstanceNotRunning:
            world.ledger.refused("agent", request.query_params.get("Action", ""), 410001002)
            return envelope(410001002, "agent instance not found")
        except ZegoError as error:
            world.ledger.refused("agent", request.query_params.get("Action", ""), error.code)
            return envelope(error.code, error.message)
        return envelope(0, "success", data)

    app = Starlette(
        routes=[
            Route("/", handle, methods=["POST"]),
            Mount("/_emulator", routes=control.routes(world, faults, calls)),
        ]
    )
    app.state.world = world
    app.state.faults = faults
    return app


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ZegoError(410000004, "json parse failed") from None
    if not isinstance(body, dict):
        raise ZegoError(410000004, "json parse failed: the body must be an object")
    return body

"""Policy actions: what policies decided, why a session is where it is, running one by hand."""

from __future__ import annotations

from typing import Literal

from webhooks.contract.common import Json, Model, Time

ManualAction = Literal["end", "recycle", "recreate", "close_room"]


class RunPolicy(Model):
    action: ManualAction


class Action(Model):
    id: int
    session_id: str
    action: str
    reason: str | None = None
    policy: str | None = None
    state: str
    dry_run: bool
    app_id: int | None = None
    agent_instance_id: str | None = None
    attempts: int
    inputs: Json | None = None
    result: Json | None = None
    error: str | None = None
    created_at: Time | None = None
    not_before: Time | None = None
    claimed_at: Time | None = None
    finished_at: Time | None = None


class ActionPage(Model):
    actions: list[Action]
    next_before: int | None = None


class SessionActions(ActionPage):
    session_id: str


class InstanceEnd(Model):
    agent_instance_id: str
    state: str
    created_at: Time | None = None
    deleted_at: Time | None = None
    delete_code: int | None = None
    delete_reason: str | None = None


class Why(Model):
    session_id: str
    state: str
    because: str
    end_reason: str | None = None
    end_code: int | None = None
    policy_reason: str | None = None
    flag: str | None = None
    failure_message: str | None = None
    recovering_since: Time | None = None
    queued_at: Time | None = None
    ended_at: Time | None = None
    deciding_action: Action | None = None
    actions: list[Action]
    instances: list[InstanceEnd]


class PolicyExplained(Model):
    session_id: str
    state: str
    source: str
    app_id: int
    template: str | None = None
    agent_instance_id: str | None = None
    dry_run: dict[str, bool]
    policy: Json
    rules: dict[str, Json | str]

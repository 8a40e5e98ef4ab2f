"""ZEGO's books: billed agent-seconds, the part with no user in the room, refusals, per-instance faults."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from emulator import Emulator
from emulator.clock import Clock
from emulator.zego_ledger import Ledger, overlap
from tests.emulator_fixture import ZegoApi, instance_body, register_agent, wait_for

SCALE = 600.0  # the 120 s idle rule fires after 0.2 real seconds


def _start(emulator_factory: Callable[..., Emulator], **changes: Any) -> tuple[Emulator, ZegoApi]:
    emu = emulator_factory(**changes)
    api = ZegoApi(emu.zego_agent_url)
    register_agent(api)
    return emu, api


def _create(api: ZegoApi, n: int) -> str:
    result = api.post("CreateAgentInstance", instance_body(n))
    assert result["Code"] == 0, result
    return str(result["Data"]["AgentInstanceId"])


def _billed(emu: Emulator, instance_id: str) -> dict[str, Any]:
    [entry] = [i for i in emu.control.ledger()["Instances"] if i["AgentInstanceId"] == instance_id]
    return entry


def _deleted(emu: Emulator, instance_id: str) -> dict[str, Any]:
    return dict(wait_for(lambda: (e := _billed(emu, instance_id))["DeletedS"] is not None and e, timeout=10))


def test_overlap_counts_only_the_covered_part_of_a_span() -> None:
    """Presence before, inside and across the billed span counts only where they meet."""
    assert overlap((10.0, 50.0), [(0.0, 5.0), (8.0, 20.0), (30.0, 35.0), (45.0, 90.0)]) == 10 + 5 + 5
    assert overlap((10.0, 50.0), []) == 0.0
    assert overlap((10.0, 50.0), [(50.0, 60.0)]) == 0.0


def test_a_ledger_without_presence_bills_every_second_as_no_user() -> None:
    """An agent whose user never came: all it billed was billed with nobody there."""
    ledger = Ledger(Clock(SCALE))
    ledger.agent_started(1, "i1", "r1", "u1", digital_human=False)
    ledger.agent_stopped("i1", 1202)
    [entry] = ledger.report()["Instances"]
    assert entry["NoUserS"] == entry["BilledS"] > 0
    assert entry["UserPresentS"] == 0.0 and entry["DeletedCode"] == 1202


def test_a_user_in_the_room_throughout_leaves_no_unattended_seconds(
    emulator_factory: Callable[..., Emulator],
) -> None:
    """User in the room before the agent and after its deletion: billed time is all attended."""
    emu, api = _start(emulator_factory, time_scale=SCALE)
    emu.control.join("room_1", "user_1")
    instance_id = _create(api, 1)
    assert _billed(emu, instance_id)["Running"] is True
    assert api.post("DeleteAgentInstance", {"AgentInstanceId": instance_id})["Code"] == 0
    entry = _deleted(emu, instance_id)
    emu.control.leave("room_1", "user_1")

    entry = _billed(emu, instance_id)
    assert entry["DeletedCode"] == 0 and entry["Running"] is False
    assert entry["NoUserS"] == 0.0
    assert entry["UserPresentS"] == entry["BilledS"] == entry["DeletedS"] - entry["CreatedS"]


def test_a_user_who_leaves_without_hanging_up_costs_the_idle_rule(
    emulator_factory: Callable[..., Emulator],
) -> None:
    """The user leaves, nobody deletes the agent: ZEGO bills at least its 120 s rule with nobody there."""
    emu, api = _start(emulator_factory, time_scale=SCALE)
    emu.control.join("room_1", "user_1")
    instance_id = _create(api, 1)
    emu.control.leave("room_1", "user_1")

    entry = _deleted(emu, instance_id)
    assert entry["DeletedCode"] == 1202
    assert entry["NoUserS"] >= 120.0
    assert entry["NoUserS"] + entry["UserPresentS"] == pytest.approx(entry["BilledS"])
    [visit] = emu.control.ledger("room_1")["Presence"][0]["Visits"]
    assert visit[0] < entry["CreatedS"] < visit[1] < entry["DeletedS"]  # joined first, left before 1202
    assert visit[1] - entry["CreatedS"] == pytest.approx(entry["UserPresentS"])


def test_a_lost_heartbeat_ends_presence_at_once_though_zego_waits(
    emulator_factory: Callable[..., Emulator],
) -> None:
    """The person is gone when the heartbeat stops; ZEGO drops them 100 s later, then waits 120 s."""
    emu, api = _start(emulator_factory, time_scale=SCALE)
    emu.control.join("room_1", "user_1")
    instance_id = _create(api, 1)
    emu.control.disconnect("room_1", "user_1")

    entry = _deleted(emu, instance_id)
    assert entry["DeletedCode"] == 1202
    assert entry["NoUserS"] >= 100.0 + 120.0


def test_a_room_filter_reports_only_that_room(emulator_factory: Callable[..., Emulator]) -> None:
    """``ledger(room_id)`` carries that room's instances and visitors only; ``running`` counts live ones."""
    emu, api = _start(emulator_factory, time_scale=SCALE)
    emu.control.join("room_1", "user_1")
    first, second = _create(api, 1), _create(api, 2)
    assert emu.control.running() == 2
    assert api.post("DeleteAgentInstance", {"AgentInstanceId": first})["Code"] == 0
    assert emu.control.running() == 1 and emu.control.ledger()["Running"] == 1
    report = emu.control.ledger("room_2")
    assert [i["AgentInstanceId"] for i in report["Instances"]] == [second]
    assert report["Presence"] == []
    assert {i["AgentInstanceId"] for i in emu.control.ledger()["Instances"]} == {first, second}


def test_quota_and_rate_limit_refusals_are_counted(emulator_factory: Callable[..., Emulator]) -> None:
    """Each refused request is counted by API, action and code: quota 410000011, CloseRoom 206."""
    emu, api = _start(emulator_factory, voice_quota=1)
    _create(api, 1)
    assert api.post("CreateAgentInstance", instance_body(2))["Code"] == 410000011
    rtc = ZegoApi(emu.zego_rtc_url)
    emu.control.join("room_9", "user_9")
    codes = [rtc.get("CloseRoom", [("RoomId", "room_9")])["Code"] for _ in range(2)]
    assert codes == [0, 206]

    refusals = {(r["Api"], r["Action"], r["Code"]): r["Count"] for r in emu.control.ledger()["Refusals"]}
    assert refusals == {("agent", "CreateAgentInstance", 410000011): 1, ("rtc", "CloseRoom", 206): 1}


def test_a_callback_fault_can_name_one_instance(emulator_factory: Callable[..., Emulator]) -> None:
    """A drop aimed at one instance's deletion leaves another instance's deletion alone."""
    emu, api = _start(emulator_factory)
    first, second = _create(api, 1), _create(api, 2)
    emu.control.callback_fault("drop", event="AgentInstanceDeleted", agent_instance_id=second)
    for instance_id in (first, second):
        assert api.post("DeleteAgentInstance", {"AgentInstanceId": instance_id})["Code"] == 0

    faults = {c["agent_instance_id"]: c["fault"] for c in emu.control.callbacks("AgentInstanceDeleted")}
    assert faults == {first: None, second: "drop"}

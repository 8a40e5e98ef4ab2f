"""Policies end to end: a real receiver, worker and beat on Postgres and a private Redis, with the
emulator playing ZEGO's part (its 120 s idle rule runs in about 1.3 s at this time scale).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.deployment import Deployment, zego_request
from tests.factories import Signer, encode_body
from tests.processes import wait_until

pytestmark = pytest.mark.slow

INTERVAL = 1.0  # beat cadence of the policy jobs in these tests
FAST = {"ROOMWARDEN_POLICY_INTERVAL_SECONDS": str(INTERVAL)}
QUIET = """
[defaults.idle]
after_seconds = 0
[defaults.reconcile]
silent_seconds = 600
unconfirmed_seconds = 600
"""


def policies(extra: str = "") -> str:
    """Idle recycling and reconciliation out of the way unless a test turns them on."""
    return QUIET + extra


def emulator_instances(d: Deployment, room: str) -> list[dict[str, Any]]:
    return [i for i in d.control.state()["instances"] if i["RoomId"] == room]


def active_instances(session: dict[str, Any]) -> list[str]:
    return [str(i["agent_instance_id"]) for i in session["instances"] if i["state"] == "active"]


def live_instance(d: Deployment, session_id: str) -> str:
    session = d.session(session_id)
    [instance] = active_instances(session)
    return instance


def start_in_room(d: Deployment, room: str, user: str = "user_1", n: int = 1) -> tuple[str, str]:
    """The user is in the room before the agent comes, as an app would have it."""
    d.control.join(room, user)
    session_id = d.start(zego_request(room, user, n))
    d.wait_state(session_id, "active")
    return session_id, live_instance(d, session_id)


def wait_new_instance(d: Deployment, session_id: str, old: str, timeout: float = 20) -> str:
    def replaced() -> bool:
        session = d.session(session_id)  # one snapshot: state and instances read together
        live = active_instances(session)
        return session["state"] == "active" and len(live) == 1 and live != [old]

    wait_until(
        replaced, timeout, f"a new instance replacing {old}: {d.session(session_id)}\n{d.stack.logs()}"
    )
    return live_instance(d, session_id)


def parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


def test_1202_closes_the_room_and_ends_the_session_with_its_reason(
    deploy: Callable[..., Deployment],
) -> None:
    """The user walks away: ZEGO deletes the agent (1202), roomwarden closes the room and says why."""
    d = deploy(policies=policies('[defaults.on_deleted]\nuser_absent = "close_room"\n'), env=FAST)
    d.control.join("room_gone", "observer")
    session_id, _ = start_in_room(d, "room_gone")
    d.control.leave("room_gone", "user_1")

    ended = d.wait_state(session_id, "ended")
    assert (ended["end_reason"], ended["end_code"]) == ("user_absent", 1202)
    wait_until(lambda: d.actions(session_id) and d.actions(session_id)[0]["state"] == "done", 15,
               f"the close_room action to be done: {d.actions(session_id)}")  # fmt: skip
    [action] = d.actions(session_id)
    assert (action["action"], action["reason"]) == ("close_room", "user_absent")
    assert "seen" in action["result"]  # DescribeUsers asked before destroying
    assert "room_gone" not in d.control.state()["rooms"]  # the observer was put out with the room


def test_a_user_who_leaves_without_hanging_up_costs_the_policys_absent_limit_not_zegos_120_s(
    deploy: Callable[..., Deployment],
) -> None:
    """With ``idle.user_absent_seconds = 20`` ZEGO ends the agent 20 s (its clock) after the user
    leaves, not 120 s: the agent-seconds billed with nobody there, as ZEGO's ledger counts them."""
    quiet_but_absent = QUIET.replace("after_seconds = 0\n", "after_seconds = 0\nuser_absent_seconds = 20\n")
    d = deploy(policies=quiet_but_absent, env=FAST)
    session_id, instance = start_in_room(d, "room_left")
    [made] = emulator_instances(d, "room_left")
    assert made["MaxIdleTime"] == 20
    d.control.leave("room_left", "user_1")

    ended = d.wait_state(session_id, "ended")
    assert (ended["end_reason"], ended["end_code"]) == ("user_absent", 1202)
    [billed] = [i for i in d.control.ledger("room_left")["Instances"] if i["AgentInstanceId"] == instance]
    assert 20 <= billed["NoUserS"] < 60, billed


def test_1205_recreates_the_agent_in_the_same_room_and_the_transcript_goes_on(
    deploy: Callable[..., Deployment],
) -> None:
    """The agent drops out of the room (1205): a new one joins the same session and the talk goes on."""
    d = deploy(policies=policies("[defaults.on_deleted]\nbackoff_seconds = 0.2\n"), env=FAST)
    session_id, first = start_in_room(d, "room_rtc")
    said = d.control.say(first, "Is the pool open?", ["Yes, until ten."])
    d.control.wait_status(first, said, "IDLE")

    d.control.rtc_fault(first, 1205)
    second = wait_new_instance(d, session_id, first)
    said = d.control.say(second, "And the spa?", ["From nine."])
    d.control.wait_status(second, said, "IDLE")

    session = d.session(session_id)
    assert session["state"] == "active" and session["room_id"] == "room_rtc"
    assert [(i["agent_instance_id"], i["delete_code"]) for i in session["instances"]] == [
        (first, 1205),
        (second, None),
    ]
    assert [i["RoomId"] for i in emulator_instances(d, "room_rtc")] == ["room_rtc", "room_rtc"]
    wait_until(lambda: len(d.turns(session_id)) == 4 and all(t["text"] for t in d.turns(session_id)), 15,
               f"four turns, got {d.turns(session_id)}")  # fmt: skip
    turns = d.turns(session_id)
    assert [t["text"] for t in turns] == [
        "Is the pool open?",
        "Yes, until ten.",
        "And the spa?",
        "From nine.",
    ]
    assert [t["new_instance"] for t in turns] == [False, False, True, False]
    [action] = d.actions(session_id)
    assert (action["action"], action["reason"], action["state"]) == ("recreate", "disconnected", "done")
    assert action["result"]["agent_instance_id"] == second


def test_three_1205_in_a_row_give_up_after_the_configured_recreations(
    deploy: Callable[..., Deployment],
) -> None:
    """An agent that keeps dropping out is recreated N times, then the session ends as gave_up."""
    d = deploy(
        policies=policies("[defaults.on_deleted]\nmax_recreations = 2\nbackoff_seconds = 0.2\n"), env=FAST
    )
    session_id, instance = start_in_room(d, "room_flaky")
    for _ in range(2):
        d.control.rtc_fault(instance, 1205)
        instance = wait_new_instance(d, session_id, instance)
    d.control.rtc_fault(instance, 1205)

    ended = d.wait_state(session_id, "ended")
    assert ended["end_reason"] == "gave_up" and ended["end_code"] == 1205
    kinds = sorted((a["action"], a["reason"]) for a in d.actions(session_id))
    assert kinds == [("end", "gave_up"), ("recreate", "disconnected"), ("recreate", "disconnected")]
    assert len(emulator_instances(d, "room_flaky")) == 3


def test_a_dropped_deletion_callback_is_caught_by_reconciliation(
    deploy: Callable[..., Deployment],
) -> None:
    """ZEGO's AgentInstanceDeleted is lost: within two beat intervals of going quiet, ZEGO is asked and the session ends."""
    silent = 2.0
    d = deploy(
        policies=f"[defaults.idle]\nafter_seconds = 0\n[defaults.reconcile]\nsilent_seconds = {silent}\n"
        f"unconfirmed_seconds = {silent}\nrecheck_seconds = 0.5\n",
        env=FAST,
    )
    session_id, instance = start_in_room(d, "room_lost")
    d.control.callback_fault("drop", event="AgentInstanceDeleted")
    d.control.rtc_fault(instance, 1205)
    assert d.session(session_id)["state"] == "active"  # roomwarden has not heard

    ended = d.wait_state(session_id, "ended", timeout=silent + 2 * INTERVAL + 3)
    assert ended["end_reason"] == "reconciled"
    [action] = d.actions(session_id)
    assert (action["action"], action["reason"], action["policy"]) == ("end", "reconciled", "reconcile")
    assert [c["outcome"] for c in d.control.callbacks("AgentInstanceDeleted")] == ["dropped_by_fault"]


def test_an_idle_session_is_recycled_after_its_threshold_and_not_before(
    deploy: Callable[..., Deployment],
) -> None:
    """Nobody speaks for T: the agent is deleted between T and T plus one beat interval."""
    idle = 4.0
    d = deploy(policies=f"[defaults.idle]\nafter_seconds = {idle}\n", env=FAST)
    session_id, instance = start_in_room(d, "room_idle")
    said = d.control.say(instance, "Hello?", ["Hi there."])
    d.control.wait_status(instance, said, "IDLE")
    wait_until(
        lambda: d.session(session_id)["last_user_speech_at"] is not None, 10, "the user's speech on record"
    )
    spoke = parse_time(d.session(session_id)["last_user_speech_at"])

    ended = d.wait_state(session_id, "ended", timeout=idle + 3 * INTERVAL + 5)
    assert ended["end_reason"] == "idle"
    wait_until(lambda: [a["state"] for a in d.actions(session_id)] == ["done"], 10, "the recycle to be done")
    [action] = d.actions(session_id)
    assert (action["action"], action["reason"], action["state"]) == ("recycle", "idle", "done")
    decided = parse_time(action["created_at"]) - spoke
    assert dt.timedelta(seconds=idle) <= decided <= dt.timedelta(seconds=idle + INTERVAL + 1.0)


@pytest.mark.parametrize("when_full", ["queue", "recycle_idle"])
def test_the_eleventh_concurrent_session_waits_or_makes_room_and_is_never_lost(
    deploy: Callable[..., Deployment], when_full: str
) -> None:
    """Ten agents running: the eleventh is queued, or the longest-idle one is recycled to make room."""
    d = deploy(policies=policies(f'[defaults.quota]\nwhen_full = "{when_full}"\n'), env=FAST)
    running = [start_in_room(d, f"room_q{n}", f"user_{n}", n)[0] for n in range(10)]
    d.control.join("room_q10", "user_10")
    eleventh = d.start(zego_request("room_q10", "user_10", 10))
    if when_full == "queue":
        d.wait_state(eleventh, "queued")
        time.sleep(2 * INTERVAL)
        assert d.session(eleventh)["state"] == "queued"  # waits for as long as it takes
        assert d.api.delete(f"/v1/sessions/{running[3]}").status_code == 202
        victim = running[3]
    else:
        victim = running[0]  # started first, nobody spoke since: the longest idle
    d.wait_state(eleventh, "active", timeout=30)
    assert d.session(eleventh)["queued_at"] is not None  # it did wait its turn
    assert d.session(victim)["state"] == "ended"
    if when_full == "recycle_idle":
        assert d.session(victim)["end_reason"] == "quota"
    live = [s for s in running if d.session(s)["state"] == "active"]
    assert (
        len(live) == 9 and len([i for i in d.control.state()["instances"] if i["State"] != "deleted"]) == 10
    )


def test_the_same_deletion_delivered_five_times_recreates_once(
    deploy: Callable[..., Deployment],
) -> None:
    """ZEGO retries a 1205 deletion five times (new signatures each time): exactly one new agent."""
    d = deploy(policies=policies("[defaults.on_deleted]\nbackoff_seconds = 0.2\n"), env=FAST)
    session_id, first = start_in_room(d, "room_dup")
    d.control.callback_fault("duplicate", event="AgentInstanceDeleted")
    d.control.rtc_fault(first, 1205)
    wait_until(lambda: d.control.callbacks("AgentInstanceDeleted"), 10, "the deletion callback")
    body = d.control.callbacks("AgentInstanceDeleted")[0]["body"]
    signer = Signer()
    with httpx.Client(base_url=d.stack.url, timeout=10) as receiver:
        for _ in range(3):
            retry = signer.resign(body)
            response = receiver.post("/callbacks/zego", content=encode_body(retry))
            assert response.status_code == 200, response.text

    second = wait_new_instance(d, session_id, first)
    time.sleep(3 * INTERVAL)  # time for any second recreation to show up
    assert live_instance(d, session_id) == second
    assert len(emulator_instances(d, "room_dup")) == 2
    assert [a["action"] for a in d.actions(session_id)] == ["recreate"]


def test_dry_run_records_what_it_would_do_and_touches_nothing_at_the_vendor(
    deploy: Callable[..., Deployment],
) -> None:
    """A dry-run policy writes its decision down for review; ZEGO sees no new agent."""
    d = deploy(policies="[defaults]\ndry_run = true\n" + policies(), env=FAST)
    session_id, instance = start_in_room(d, "room_dry")
    d.control.rtc_fault(instance, 1205)

    ended = d.wait_state(session_id, "ended")
    assert ended["end_reason"] == "disconnected"
    wait_until(lambda: d.actions(session_id), 10, "the dry-run decision")
    [action] = d.actions(session_id)
    assert (action["action"], action["state"], action["dry_run"]) == ("recreate", "dry_run", True)
    time.sleep(2 * INTERVAL)
    assert len(emulator_instances(d, "room_dry")) == 1
    assert d.actions(session_id)[0]["state"] == "dry_run"


def test_1202_in_wait_mode_brings_the_agent_back_when_the_user_returns(
    deploy: Callable[..., Deployment],
) -> None:
    """Configured to wait: the user steps out (1202), comes back, and finds a new agent in the room."""
    d = deploy(
        policies=policies(
            '[defaults.on_deleted]\nuser_absent = "wait"\nwait_seconds = 60\nwait_poll_seconds = 0.5\n'
        ),
        env=FAST,
    )
    session_id, first = start_in_room(d, "room_back")
    d.control.leave("room_back", "user_1")
    d.wait_state(session_id, "recovering")
    d.control.join("room_back", "user_1")

    second = wait_new_instance(d, session_id, first)
    assert second != first
    kinds = [(a["action"], a["state"]) for a in sorted(d.actions(session_id), key=lambda a: a["id"])]
    assert kinds == [("await_user", "done"), ("recreate", "done")]


def json_events(output: str) -> list[dict[str, Any]]:
    """Every JSON log event in a process's output. The worker's prefork children share one stdout,
    so two events can land on one line: decode object after object, not line by line."""
    decoder, events = json.JSONDecoder(), []
    for line in output.splitlines():
        at = line.find("{")
        while at != -1:
            try:
                event, end = decoder.raw_decode(line, at)
            except json.JSONDecodeError:
                at = line.find("{", at + 1)
                continue
            if isinstance(event, dict):
                events.append(event)
            at = line.find("{", end)
    return events


def test_a_mass_disconnect_recovers_every_session_within_zegos_rate_limit(
    deploy: Callable[..., Deployment],
) -> None:
    """Twelve agents drop out at once (1205): all come back, and ZEGO never answers "too many requests"."""
    count = 12  # more than ZEGO's 10 CreateAgentInstance a second
    d = deploy(
        policies=policies(
            f"[defaults.quota]\nvoice_instances = {count}\n[defaults.on_deleted]\nbackoff_seconds = 0.5\n"
        ),
        env=FAST,
        voice_quota=count,
    )
    started = [start_in_room(d, f"room_m{n}", f"user_{n}", n) for n in range(count)]
    for _, instance in started:
        d.control.rtc_fault(instance, 1205)

    for session_id, instance in started:
        wait_new_instance(d, session_id, instance, timeout=30)
    calls = [event for event in json_events(d.stack.worker.output()) if event.get("event") == "zego_api_call"]
    creates = [c for c in calls if c["action"] == "CreateAgentInstance"]
    assert len(creates) == 2 * count  # one start and one recreation each, no retries
    # Expected answers: 410001008 (the agent is registered already), 410001002 (confirming the
    # old instance is gone). No 410000010, the emulator's answer past 10 requests a second.
    refused = [c for c in calls if c["code"] not in (0, 410001008, 410001002)]
    assert refused == [], refused

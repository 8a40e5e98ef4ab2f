"""Events out, end to end: a real receiver, worker, beat and outbound worker on Postgres and a
private Redis, the emulator as ZEGO, and app endpoints that are real HTTP servers (tests/sinks.py).
Signatures are checked with a verifier written from the Standard Webhooks specification.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import API_TOKEN
from tests.deployment import Deployment
from tests.factories import Signer, encode_body
from tests.processes import wait_until
from tests.sinks import Sink, dead_url, verify
from tests.test_policies_end_to_end import FAST, INTERVAL, policies, start_in_room, wait_new_instance

pytestmark = pytest.mark.slow

OUTBOUND = {
    **FAST,
    "ROOMWARDEN_ENDPOINTS_ALLOW_PRIVATE": "true",
    "ROOMWARDEN_OUTBOUND_INTERVAL_SECONDS": "0.3",
    "ROOMWARDEN_DELIVERY_RETRY_SCHEDULE": "[0.5, 0.5, 1, 1, 2, 2, 5]",
    "ROOMWARDEN_DELIVERY_TIMEOUT_SECONDS": "2",
    "ROOMWARDEN_DELIVERY_BUDGET_SECONDS": "2",
}


def register(d: Deployment, url: str, **fields: Any) -> tuple[str, str]:
    made = d.api.post("/v1/endpoints", json={"url": url, **fields})
    assert made.status_code == 201, made.text
    return made.json()["id"], made.json()["secret"]


def talk(d: Deployment, instance: str, lines: list[tuple[str, str]]) -> None:
    for said, answer in lines:
        round_ = d.control.say(instance, said, [answer])
        d.control.wait_status(instance, round_, "IDLE")


def of_session(sink: Sink, session_id: str) -> list[dict[str, Any]]:
    """The session's events in the order first received, each webhook-id once."""
    seen: dict[str, dict[str, Any]] = {}
    for request in list(sink.received):
        event = request.event
        if event["data"].get("session_id") == session_id:
            seen.setdefault(request.headers["webhook-id"], event)
    return list(seen.values())


def wait_for(sink: Sink, session_id: str, event_type: str, timeout: float = 30) -> list[dict[str, Any]]:
    wait_until(
        lambda: any(e["type"] == event_type for e in of_session(sink, session_id)),
        timeout,
        f"{event_type} for {session_id}; got {[e['type'] for e in of_session(sink, session_id)]}",
    )
    return of_session(sink, session_id)


def test_a_conversation_reaches_a_good_endpoint_while_a_slow_and_a_dead_one_wait(
    deploy: Callable[..., Deployment], sinks: Callable[..., Sink]
) -> None:
    """Signed, in order, each event once; a slow and a dead endpoint delay nobody else."""
    d = deploy(policies=policies(), env=OUTBOUND, outbound=True)
    slow = sinks(delay=5.0)  # past the 2 s timeout: every attempt times out
    register(d, slow.url)
    register(d, dead_url())
    good = sinks()
    _, secret = register(d, good.url)

    session_id, instance = start_in_room(d, "room_events")
    talk(d, instance, [("Is breakfast included?", "Yes, from seven."), ("And parking?", "Free for guests.")])
    assert d.api.delete(f"/v1/sessions/{session_id}").status_code == 202
    events = wait_for(good, session_id, "session.ended")

    types = [e["type"] for e in events]
    assert types == [
        "session.created",
        "session.active",
        "turn.completed",
        "turn.completed",
        "turn.completed",
        "turn.completed",
        "session.ended",
    ]
    assert [e["data"]["text"] for e in events if e["type"] == "turn.completed"] == [
        "Is breakfast included?",
        "Yes, from seven.",
        "And parking?",
        "Free for guests.",
    ]
    ended = events[-1]["data"]
    assert (ended["learned"], ended["turn_count"], ended["room_id"]) == ("api", 4, "room_events")
    assert ended["agent_instance_id"] == instance and ended["user_id"] == "user_1"
    for request in good.received:
        assert verify(secret, request.headers, request.body)
    assert slow.received, "the slow endpoint was tried too"


def test_exactly_one_session_ended_under_duplicates_and_a_recreation(
    deploy: Callable[..., Deployment], sinks: Callable[..., Sink]
) -> None:
    """A 1205 delivered five times: one recovering, one new agent, and later one session.ended."""
    d = deploy(
        policies=policies("[defaults.on_deleted]\nbackoff_seconds = 0.2\n"), env=OUTBOUND, outbound=True
    )
    sink = sinks()
    register(d, sink.url, events=["session."])
    session_id, first = start_in_room(d, "room_dup_events")
    d.control.callback_fault("duplicate", event="AgentInstanceDeleted")
    d.control.rtc_fault(first, 1205)
    wait_until(lambda: bool(d.control.callbacks("AgentInstanceDeleted")), 10, "the deletion callback")
    body = d.control.callbacks("AgentInstanceDeleted")[0]["body"]
    with httpx.Client(base_url=d.stack.url, timeout=10) as receiver:
        for _ in range(3):
            assert (
                receiver.post("/callbacks/zego", content=encode_body(Signer().resign(body))).status_code
                == 200
            )
    second = wait_new_instance(d, session_id, first)
    d.control.clear_callback_faults()
    assert d.api.delete(f"/v1/sessions/{session_id}").status_code == 202
    wait_for(sink, session_id, "session.ended")
    time.sleep(3 * INTERVAL)  # time for a second one to show up
    events = of_session(sink, session_id)
    assert [(e["type"], e["data"]["agent_instance_id"]) for e in events] == [
        ("session.created", None),
        ("session.active", first),
        ("session.recovering", first),
        ("session.active", second),
        ("session.ended", second),
    ]
    assert events[2]["data"]["reason"] is None or isinstance(events[2]["data"]["reason"], str)


def test_exactly_one_session_ended_when_reconciliation_finds_a_dropped_deletion(
    deploy: Callable[..., Deployment], sinks: Callable[..., Sink]
) -> None:
    silent = 2.0
    d = deploy(
        policies=f"[defaults.idle]\nafter_seconds = 0\n[defaults.reconcile]\nsilent_seconds = {silent}\n"
        f"unconfirmed_seconds = {silent}\nrecheck_seconds = 0.5\n",
        env=OUTBOUND,
        outbound=True,
    )
    sink = sinks()
    register(d, sink.url, events=["session.ended", "action."])
    session_id, instance = start_in_room(d, "room_lost_events")
    d.control.callback_fault("drop", event="AgentInstanceDeleted")
    d.control.rtc_fault(instance, 1205)
    events = wait_for(sink, session_id, "session.ended", timeout=silent + 2 * INTERVAL + 15)
    time.sleep(3 * INTERVAL)
    ended = [e for e in of_session(sink, session_id) if e["type"] == "session.ended"]
    assert len(ended) == 1
    assert (ended[0]["data"]["learned"], ended[0]["data"]["end_reason"]) == ("reconciliation", "reconciled")
    assert [e["type"] for e in events].count("session.ended") == 1


def test_a_worker_killed_mid_delivery_loses_nothing(
    deploy: Callable[..., Deployment], sinks: Callable[..., Sink]
) -> None:
    """kill -9 of the outbound worker while an endpoint is answering: after a restart every event arrives."""
    d = deploy(
        policies=policies(),
        env={**OUTBOUND, "ROOMWARDEN_DELIVERY_TIMEOUT_SECONDS": "5"},
        outbound=True,
    )
    sink = sinks(delay=1.5)
    register(d, sink.url)
    session_id, instance = start_in_room(d, "room_kill")
    wait_until(lambda: bool(sink.received), 20, "a first request at the endpoint")
    d.stack.outbound.stop(signal.SIGKILL)  # mid-request: the endpoint is still sleeping
    talk(d, instance, [("Late checkout?", "Until noon.")])
    assert d.api.delete(f"/v1/sessions/{session_id}").status_code == 202
    d.wait_state(session_id, "ended")
    sink.delay = 0.0
    d.stack.outbound.start()
    events = wait_for(sink, session_id, "session.ended", timeout=40)
    assert [e["type"] for e in events] == ["session.created", "session.active"] + ["turn.completed"] * 2 + [
        "session.ended"
    ]


def sse(url: str, path: str, *, last_event_id: str | None = None, until: Callable[[list[dict[str, str]]], bool],
        timeout: float = 30) -> list[dict[str, str]]:  # fmt: skip
    """Read a text/event-stream until ``until(frames)`` holds; each frame as {id, event, data}."""
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    frames: list[dict[str, str]] = []
    frame: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    with httpx.stream("GET", url + path, headers=headers, timeout=httpx.Timeout(timeout)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line == "":
                if "data" in frame:
                    frames.append(frame)
                    if until(frames):
                        return frames
                frame = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                frame[name] = value.removeprefix(" ")
            assert time.monotonic() < deadline, f"stream gave {frames}"
    return frames


def test_the_live_stream_follows_a_conversation_and_resumes_with_last_event_id(
    deploy: Callable[..., Deployment],
) -> None:
    """A client reading a session's stream through the real receiver sees each event as it commits;
    after a disconnect, Last-Event-ID brings exactly the rest."""
    d = deploy(policies=policies(), env=OUTBOUND)
    session_id, instance = start_in_room(d, "room_stream")
    path = f"/v1/sessions/{session_id}/events"
    first = sse(d.stack.url, path, until=lambda f: [x["event"] for x in f][-1:] == ["session.active"])
    assert [f["event"] for f in first] == ["session.created", "session.active"]

    talk(d, instance, [("Any vegan options?", "Yes, three.")])
    assert d.api.delete(f"/v1/sessions/{session_id}").status_code == 202
    rest = sse(
        d.stack.url, path, last_event_id=first[-1]["id"], until=lambda f: f[-1]["event"] == "session.ended"
    )
    assert [f["event"] for f in rest] == ["turn.completed", "turn.completed", "session.ended"]
    ids = [int(f["id"]) for f in first + rest]
    assert len(set(ids)) == len(ids)
    everything = sse(d.stack.url, path, until=lambda f: f[-1]["event"] == "session.ended")
    assert [f["id"] for f in everything] == [f["id"] for f in first + rest]


def test_the_global_stream_filters_by_type_from_now_on(deploy: Callable[..., Deployment]) -> None:
    import threading

    d = deploy(policies=policies(), env=OUTBOUND)
    got: list[list[dict[str, str]]] = []
    reader = threading.Thread(
        target=lambda: got.append(
            sse(d.stack.url, "/v1/events?type=session.ended&type=session.active", until=lambda f: len(f) >= 2)
        )
    )
    reader.start()
    time.sleep(1.0)  # the stream is open before anything happens
    session_id, _ = start_in_room(d, "room_global")
    assert d.api.delete(f"/v1/sessions/{session_id}").status_code == 202
    reader.join(30)
    [frames] = got
    assert [f["event"] for f in frames] == ["session.active", "session.ended"]
    assert all(session_id in f["data"] for f in frames)

"""The emulator's ZEGO callbacks over real HTTP: signed, complete, sequenced, retried, faulty on demand.

A tiny HTTP server in a thread plays roomwarden's receiver and records what arrives. The emulator's
world runs in an asyncio loop of the test's own; the signature is re-checked here with hashlib.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from emulator.clock import Clock
from emulator.config import EmulatorConfig, ZegoAppSecrets
from emulator.zego_callbacks import callback_signature
from emulator.zego_world import Instance, World

APP_ID = 1234567
CALLBACK_SECRET = "cb-secret-for-tests"
DOCUMENTED_RETRY_DELAYS = (2, 4, 8, 16, 32)  # vendor seconds between attempts
ALL_FLAGS = {
    "ASRResult": 1,
    "LLMResult": 1,
    "Interrupted": 1,
    "UserSpeakAction": 1,
    "AgentInstanceStatus": 1,
    "UserAudioData": 1,
}
TOP_LEVEL = {
    "AppId",
    "AgentId",
    "Name",
    "AgentInstanceId",
    "AgentUserId",
    "RoomId",
    "Event",
    "Nonce",
    "Timestamp",
    "Signature",
    "Sequence",
    "Data",
}


@dataclass
class Arrival:
    at: float  # time.monotonic()
    raw: bytes
    body: dict[str, Any]
    status: int


class Receiver:
    """Records every POST; ``answer`` decides the HTTP status per body (200 unless told otherwise)."""

    def __init__(self) -> None:
        self.arrivals: list[Arrival] = []
        self.answer: Callable[[dict[str, Any]], int] = lambda body: 200
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                body = json.loads(raw)
                status = receiver.answer(body)
                with receiver._lock:
                    receiver.arrivals.append(Arrival(time.monotonic(), raw, body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/callbacks/zego"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    def bodies(self, event: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [a.body for a in self.arrivals if event is None or a.body["Event"] == event]

    def events(self) -> list[str]:
        return [b["Event"] for b in self.bodies()]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@asynccontextmanager
async def running_world(
    url: str | None, *, scale: float = 50.0, rtc_url: str | None = None
) -> AsyncIterator[World]:
    """A world whose AI Agent callbacks go to ``url`` and RTC room callbacks to ``rtc_url``."""
    config = EmulatorConfig(
        zego_apps={APP_ID: ZegoAppSecrets(server_secret="server-secret", callback_secret=CALLBACK_SECRET)},
        callback_url=url,
        rtc_callback_url=rtc_url,
        time_scale=scale,
        rate_limits=False,
    )
    world = World(config, Clock(scale))
    world.register_agent(APP_ID, {"AgentId": "agent_1", "Name": "Helpful agent"})
    await world.start()
    try:
        yield world
    finally:
        await world.aclose()


def new_instance(
    world: World,
    *,
    flags: dict[str, Any] | None = None,
    advanced: dict[str, Any] | None = None,
    n: int = 1,
) -> Instance:
    world.user_join(f"room_{n}", "user_1")
    return world.create_instance(
        APP_ID,
        {
            "AgentId": "agent_1",
            "UserId": "user_1",
            "RTC": {
                "RoomId": f"room_{n}",
                "AgentStreamId": f"agent_stream_{n}",
                "AgentUserId": f"agent_user_{n}",
                "UserStreamId": "user_stream_1",
            },
            "CallbackConfig": ALL_FLAGS if flags is None else flags,
            "AdvancedConfig": advanced or {},
        },
    )


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def verify(body: dict[str, Any], secret: str = CALLBACK_SECRET) -> bool:
    joined = "".join(sorted([secret, str(body["Timestamp"]), body["Nonce"]]))
    return hashlib.sha1(joined.encode()).hexdigest() == body["Signature"]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_signature_matches_the_documented_vector() -> None:
    """ZEGO's documented example (secret, 1470820198, 123412) signs to 5bd59fd6...4517."""
    assert callback_signature("secret", 1470820198, "123412") == "5bd59fd62953a8059fb7eaba95720f66d19e4517"
    assert callback_signature("secret", "1470820198", "123412") == "5bd59fd62953a8059fb7eaba95720f66d19e4517"


def test_every_callback_carries_every_field_and_verifies(receiver: Receiver) -> None:
    """A receiver gets every top-level field on every callback, and each signature checks out."""

    async def scenario() -> None:
        async with running_world(receiver.url) as world:
            instance = new_instance(world)
            await world.conversation.user_round(instance, text="Tell me a joke please", reply=["Ha.", "Ha!"])
            await eventually(lambda: "IDLE" in [b["Data"].get("Status") for b in receiver.bodies()])
            world.delete_instance(instance, 0, reason_exception=False)
            await eventually(lambda: "AgentInstanceDeleted" in receiver.events())
            await world.sender.drain()
            events = set(receiver.events())
            assert {"AgentInstanceCreated", "UserSpeakAction", "UserAudioData", "ASRResult"} <= events
            assert {"AgentInstanceStatus", "LLMResult", "AgentInstanceDeleted"} <= events
            now_ms = time.time() * 1000
            for arrival in receiver.arrivals:
                body = arrival.body
                assert set(body) == TOP_LEVEL, body["Event"]
                assert verify(body), body["Event"]
                assert body["AppId"] == APP_ID and isinstance(body["AppId"], int)
                assert body["AgentId"] == "agent_1" and body["Name"] == "Helpful agent"
                assert body["AgentInstanceId"] == instance.agent_instance_id
                assert body["AgentUserId"] == "agent_user_1" and body["RoomId"] == "room_1"
                assert isinstance(body["Timestamp"], int) and abs(now_ms - body["Timestamp"]) < 10_000
                assert isinstance(body["Nonce"], str) and body["Nonce"]
                assert isinstance(body["Sequence"], int) and isinstance(body["Data"], dict)
                assert not verify(body, secret="some-other-secret")

    run(scenario())


def test_sequence_ascends_per_instance_in_arrival_order(receiver: Receiver) -> None:
    """Callbacks of one instance arrive in build order with strictly rising Sequence numbers."""

    async def scenario() -> None:
        async with running_world(receiver.url) as world:
            first, second = new_instance(world, n=1), new_instance(world, n=2)
            for _ in range(3):
                await world.conversation.user_round(first, text="hi", reply=["One.", "Two."])
                await world.conversation.user_round(second, text="hey", reply=["Three."])
                await world.conversation.wait_idle(first)
                await world.conversation.wait_idle(second)
            await world.sender.drain()
            for instance in (first, second):
                seqs = [
                    b["Sequence"]
                    for b in receiver.bodies()
                    if b["AgentInstanceId"] == instance.agent_instance_id
                ]
                assert len(seqs) > 20
                assert all(a < b for a, b in itertools.pairwise(seqs)), seqs

    run(scenario())


def test_created_timestamp_is_a_little_before_the_callback(receiver: Receiver) -> None:
    """AgentInstanceCreated arrives shortly after creation, its CreatedTimestamp ~18 ms before Timestamp."""

    async def scenario() -> None:
        async with running_world(receiver.url) as world:
            new_instance(world, flags={})
            await eventually(lambda: bool(receiver.bodies("AgentInstanceCreated")))
            body = receiver.bodies("AgentInstanceCreated")[0]
            assert 10 <= body["Timestamp"] - body["Data"]["CreatedTimestamp"] <= 40

    run(scenario())


def test_flags_gate_the_chatty_events(receiver: Receiver) -> None:
    """With no CallbackConfig flags only Created, Deleted and Exception arrive; a flag adds its event."""

    async def scenario() -> None:
        async with running_world(receiver.url) as world:
            quiet = new_instance(world, flags={}, n=1)
            llm_only = new_instance(world, flags={"LLMResult": 1, "ASRResult": 0}, n=2)
            for instance in (quiet, llm_only):
                await eventually(
                    lambda i=instance: any(
                        b["AgentInstanceId"] == i.agent_instance_id
                        for b in receiver.bodies("AgentInstanceCreated")
                    )
                )
                await world.conversation.user_round(
                    instance, text="A question long enough for audio", reply=["One.", "Two."]
                )
                await world.conversation.wait_idle(instance)
                assert instance.status == "IDLE"
                world.sender.emit(instance, "Exception", {"Code": 2201, "Message": "LLM error", "Round": 1})
                world.delete_instance(instance, 0, reason_exception=False)
            await world.sender.drain()

            def of(instance: Instance) -> list[str]:
                return [
                    b["Event"]
                    for b in receiver.bodies()
                    if b["AgentInstanceId"] == instance.agent_instance_id
                ]

            assert of(quiet) == ["AgentInstanceCreated", "Exception", "AgentInstanceDeleted"]
            assert of(llm_only) == [
                "AgentInstanceCreated",
                "LLMResult",
                "LLMResult",
                "Exception",
                "AgentInstanceDeleted",
            ]

    run(scenario())


def test_failed_callback_is_retried_at_2_4_8_16_32_seconds_then_dropped(receiver: Receiver) -> None:
    """A receiver answering 500 sees the same signed body six times, gaps doubling from 2 s, then no more."""
    # 2 s of the vendor is 40 ms here: the whole schedule takes 1.24 s, long enough that a
    # scheduler or GC pause of a loaded CI machine (seen: 190 ms) cannot pass for a wrong gap.
    scale = 50.0
    receiver.answer = lambda body: 500 if body["Event"] == "Exception" else 200

    async def scenario() -> None:
        async with running_world(receiver.url, scale=scale) as world:
            instance = new_instance(world, flags={})
            world.sender.emit(instance, "Exception", {"Code": 2201, "Message": "LLM error", "Round": 7})
            entry = world.sender.log[-1]
            await world.sender.drain(timeout=5)
            assert entry["outcome"] == "dropped"
            assert [a["kind"] for a in entry["attempts"]] == ["first"] + ["retry"] * 5
            assert all(a["status"] == 500 for a in entry["attempts"])
            await asyncio.sleep(0.2)  # nothing after the last retry

    started = time.monotonic()
    run(scenario())
    assert time.monotonic() - started < 3.0
    tries = [a for a in receiver.arrivals if a.body["Event"] == "Exception"]
    assert len(tries) == 1 + len(DOCUMENTED_RETRY_DELAYS)
    assert len({a.raw for a in tries}) == 1  # same bytes: same Nonce, Timestamp and Signature
    assert verify(tries[0].body)
    gaps = [b.at - a.at for a, b in itertools.pairwise(tries)]
    for gap, vendor_delay in zip(gaps, DOCUMENTED_RETRY_DELAYS, strict=True):
        expected = vendor_delay / scale
        assert expected * 0.85 <= gap <= expected + 0.25, (gaps, DOCUMENTED_RETRY_DELAYS)
    # The bounds alone say the gaps grow: the last is at least 544 ms, the first at most 290 ms.
    assert gaps[-1] > gaps[0]


def test_a_retry_that_succeeds_stops_and_later_callbacks_are_not_held_back(receiver: Receiver) -> None:
    """After two 500s the third try lands; newer callbacks arrived meanwhile, so order is by Sequence."""
    failures = {"left": 2}

    def answer(body: dict[str, Any]) -> int:
        if body["Event"] == "Exception" and failures["left"] > 0:
            failures["left"] -= 1
            return 500
        return 200

    receiver.answer = answer

    async def scenario() -> None:
        async with running_world(receiver.url, scale=200.0) as world:
            instance = new_instance(world, flags={"LLMResult": 1})
            world.sender.emit(instance, "Exception", {"Code": 2201, "Message": "LLM error", "Round": 7})
            entry = world.sender.log[-1]
            world.sender.emit(instance, "LLMResult", {"Round": 9, "Text": "Later."})
            await world.sender.drain()
            assert entry["outcome"] == "delivered"
            assert [a["status"] for a in entry["attempts"]] == [500, 500, 200]

    run(scenario())
    events = [e for e in receiver.events() if e != "AgentInstanceCreated"]
    assert events == ["Exception", "LLMResult", "Exception", "Exception"]
    exception, later = receiver.bodies("Exception")[0], receiver.bodies("LLMResult")[0]
    assert exception["Sequence"] < later["Sequence"]


def test_unreachable_receiver_is_retried_then_dropped() -> None:
    """With nothing listening, each callback is tried six times (connection errors) and then given up."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def scenario() -> None:
        async with running_world(f"http://127.0.0.1:{port}/cb", scale=300.0) as world:
            instance = new_instance(world, flags={})
            world.sender.emit(instance, "Exception", {"Code": 2201, "Message": "LLM error", "Round": 7})
            entry = world.sender.log[-1]
            await world.sender.drain()
            assert entry["outcome"] == "dropped"
            assert len(entry["attempts"]) == 6
            assert all(a["status"] is None and a["error"] for a in entry["attempts"])

    run(scenario())


def test_without_a_callback_url_callbacks_are_only_logged() -> None:
    """With callback_url None the control state still shows every callback, none of them sent."""

    async def scenario() -> None:
        async with running_world(None) as world:
            instance = new_instance(world)
            await world.conversation.user_round(instance, text="hi", reply=["Hello."])
            await world.conversation.wait_idle(instance)
            log = world.state()["callbacks"]
            assert {"UserSpeakAction", "ASRResult", "LLMResult"} <= {c["event"] for c in log}
            assert all(c["outcome"] == "not_sent" and c["attempts"] == [] for c in log)
            assert all(set(c["body"]) == TOP_LEVEL for c in log)
            json.dumps(log)  # the state endpoint can serve it

    run(scenario())


def test_host_tag_picks_the_matching_callback_url(receiver: Receiver) -> None:
    """An instance created with a HostTag gets its callbacks at the URL configured for that tag."""
    other = Receiver()
    try:

        async def scenario() -> None:
            async with running_world(receiver.url) as world:
                world.config.callback_urls = {"eu": other.url}  # type: ignore[attr-defined]
                tagged = new_instance(world, flags={"HostTag": "eu"}, n=1)
                untagged = new_instance(world, flags={}, n=2)
                world.sender.emit(tagged, "Exception", {"Code": 1001, "Message": "x", "Round": 1})
                world.sender.emit(untagged, "Exception", {"Code": 1001, "Message": "x", "Round": 1})
                await world.sender.drain()
                assert [b["AgentInstanceId"] for b in other.bodies("Exception")] == [tagged.agent_instance_id]
                assert [b["AgentInstanceId"] for b in receiver.bodies("Exception")] == [
                    untagged.agent_instance_id
                ]

        run(scenario())
    finally:
        other.close()


def test_nothing_is_sent_for_an_instance_after_its_deleted_callback(receiver: Receiver) -> None:
    """Once AgentInstanceDeleted has gone out, that instance sends nothing more."""

    async def scenario() -> None:
        async with running_world(receiver.url) as world:
            instance = new_instance(world)
            world.delete_instance(instance, 0, reason_exception=False)
            world.sender.emit(instance, "LLMResult", {"Round": 3, "Text": "too late"})
            world.sender.emit(instance, "Exception", {"Code": 1001, "Message": "too late", "Round": 3})
            await world.sender.drain()
            await asyncio.sleep(0.05)

    run(scenario())
    assert receiver.events()[-1] == "AgentInstanceDeleted"
    assert "LLMResult" not in receiver.events()


def emit_numbered(world: World, instance: Instance, count: int) -> None:
    for i in range(count):
        world.sender.emit(instance, "LLMResult", {"Round": 100, "Text": f"S{i}"})


def texts(receiver: Receiver) -> list[str]:
    return [b["Data"]["Text"] for b in receiver.bodies("LLMResult")]


def test_drop_fault_loses_callbacks(receiver: Receiver) -> None:
    """A drop fault on LLMResult loses the next two of them; the Sequence shows the gap."""

    async def scenario() -> None:
        async with running_world(receiver.url) as world:
            instance = new_instance(world, flags={"LLMResult": 1})
            world.sender.add_fault("drop", event="LLMResult", count=2)
            world.sender.emit(instance, "Exception", {"Code": 1001, "Message": "kept", "Round": 1})
            emit_numbered(world, instance, 4)
            await world.sender.drain()
            dropped = [c for c in world.sender.log if c["outcome"] == "dropped_by_fault"]
            assert [c["body"]["Data"]["Text"] for c in dropped] == ["S0", "S1"]
            assert world.sender.faults == []

    run(scenario())
    assert texts(receiver) == ["S2", "S3"]
    assert len(receiver.bodies("Exception")) == 1


def test_duplicate_fault_sends_the_same_callback_twice(receiver: Receiver) -> None:
    """A duplicate fault delivers one callback twice, byte for byte, back to back."""

    async def scenario() -> None:
        async with running_world(receiver.url) as world:
            instance = new_instance(world, flags={"LLMResult": 1})
            world.sender.add_fault("duplicate")
            emit_numbered(world, instance, 3)
            await world.sender.drain()

    run(scenario())
    assert texts(receiver) == ["S0", "S0", "S1", "S2"]
    llm = [a.raw for a in receiver.arrivals if a.body["Event"] == "LLMResult"]
    assert llm[0] == llm[1]


def test_reorder_fault_swaps_a_callback_with_the_next(receiver: Receiver) -> None:
    """A reorder fault makes a callback arrive after the one built after it."""

    async def scenario() -> None:
        async with running_world(receiver.url) as world:
            instance = new_instance(world, flags={"LLMResult": 1})
            await eventually(lambda: bool(receiver.bodies("AgentInstanceCreated")))
            world.sender.add_fault("reorder", event="LLMResult")
            emit_numbered(world, instance, 3)
            await world.sender.drain()

    run(scenario())
    assert texts(receiver) == ["S1", "S0", "S2"]
    seqs = [b["Sequence"] for b in receiver.bodies("LLMResult")]
    assert seqs[0] > seqs[1] < seqs[2]


def test_delay_fault_holds_a_callback_while_later_ones_go_ahead(receiver: Receiver) -> None:
    """A delayed callback turns up after later ones, about delay_seconds (vendor time) late."""
    scale = 100.0

    async def scenario() -> None:
        async with running_world(receiver.url, scale=scale) as world:
            instance = new_instance(world, flags={"LLMResult": 1})
            world.sender.add_fault("delay", event="LLMResult", delay_seconds=20.0)
            emit_numbered(world, instance, 3)
            await world.sender.drain()

    run(scenario())
    assert texts(receiver) == ["S1", "S2", "S0"]
    llm = [a for a in receiver.arrivals if a.body["Event"] == "LLMResult"]
    assert llm[2].at - llm[1].at >= 20.0 / scale * 0.8


def test_faults_can_be_cleared_and_bad_ones_are_refused(receiver: Receiver) -> None:
    """Clearing faults restores normal delivery; an unknown mode or event is refused up front."""

    async def scenario() -> None:
        async with running_world(receiver.url) as world:
            instance = new_instance(world, flags={"LLMResult": 1})
            world.sender.add_fault("drop", count=10)
            world.sender.clear_faults()
            emit_numbered(world, instance, 2)
            await world.sender.drain()
            with pytest.raises(ValueError, match="mode"):
                world.sender.add_fault("explode")
            with pytest.raises(ValueError, match="event"):
                world.sender.add_fault("drop", event="Nope")

    run(scenario())
    assert texts(receiver) == ["S0", "S1"]

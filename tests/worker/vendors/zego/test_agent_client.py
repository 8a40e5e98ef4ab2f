"""The ZEGO AI Agent client against the emulator, over real HTTP."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import structlog

from emulator import Emulator
from tests.emulator_fixture import wait_for
from tests.worker.vendors.zego.support import (
    CountingTransport,
    FakeSleep,
    agent_client,
    create_body,
    digital_human_body,
    register_body,
    started,
)
from worker.vendors.ratelimit import LocalLimiter
from worker.vendors.retries import RetryPolicy
from worker.vendors.zego.errors import (
    ZegoAuthError,
    ZegoConflictError,
    ZegoConnectError,
    ZegoNotFoundError,
    ZegoQuotaError,
    ZegoTimeoutError,
    ZegoTransientError,
    ZegoValidationError,
)


def test_instance_lifecycle(emulator: Emulator) -> None:
    """Register, create, query, speak, interrupt, read history, delete; a second delete is not found."""
    client = agent_client(emulator.zego_agent_url)
    client.register_agent(register_body())
    created = client.create_agent_instance(create_body())
    instance = created.agent_instance_id
    assert len(instance) == 19 and instance.isdigit()
    assert created.request_id and created.request_id.isdigit()
    assert client.query_agent_instance_status(instance) in {"IDLE", "LISTENING", "THINKING", "SPEAKING"}

    llm_round = client.send_agent_instance_llm({"AgentInstanceId": instance, "Text": "Tell me a joke"})
    tts_round = client.send_agent_instance_tts(
        {
            "AgentInstanceId": instance,
            "Text": "Hello there",
            "Priority": "High",
            "SamePriorityOption": "Enqueue",
        }
    )
    assert tts_round > llm_round > 0
    interrupt_round = client.interrupt_agent_instance(instance)
    assert interrupt_round >= tts_round
    messages = client.get_agent_instance_msg_list(instance)
    assert all(m.role in {"user", "assistant"} for m in messages)

    client.delete_agent_instance(instance, graceful=True, graceful_timeout=5)
    wait_for(lambda: client_state(emulator, instance) == "deleted")
    with pytest.raises(ZegoNotFoundError) as caught:
        client.delete_agent_instance(instance)
    assert caught.value.code == 410001002
    with pytest.raises(ZegoNotFoundError):
        client.query_agent_instance_status(instance)


def client_state(emulator: Emulator, instance: str) -> str | None:
    for item in emulator.control.state()["instances"]:
        if item["AgentInstanceId"] == instance:
            return str(item["State"])
    return None


def test_update_instance_and_agent(emulator: Emulator) -> None:
    """A running instance's LLM can be replaced and its user stream switched; the agent re-registered."""
    client = agent_client(emulator.zego_agent_url)
    instance = started(client)
    client.update_agent_instance(
        {
            "AgentInstanceId": instance,
            "LLM": register_body()["LLM"],
            "RTC": {"UserStreamId": "user_stream_rejoined"},
        }
    )
    client.update_agent({**register_body(), "Name": "Renamed"})


def test_register_twice_is_a_conflict(emulator: Emulator) -> None:
    """Registering an AgentId that exists fails with ZegoConflictError (410001008), not retried."""
    transport = CountingTransport()
    client = agent_client(emulator.zego_agent_url, transport)
    client.register_agent(register_body())
    with pytest.raises(ZegoConflictError) as caught:
        client.register_agent(register_body())
    assert caught.value.code == 410001008
    assert transport.actions == ["RegisterAgent", "RegisterAgent"]


def test_unknown_agent_is_not_found(emulator: Emulator) -> None:
    """Creating an instance of an agent never registered fails with ZegoNotFoundError (410001009)."""
    client = agent_client(emulator.zego_agent_url)
    with pytest.raises(ZegoNotFoundError) as caught:
        client.create_agent_instance(create_body())
    assert caught.value.code == 410001009


def test_digital_human_instance(emulator: Emulator) -> None:
    """A digital-human create returns the instance id and a DigitalHumanConfig the SDK can decode."""
    client = agent_client(emulator.zego_agent_url)
    client.register_agent(register_body())
    created = client.create_digital_human_agent_instance(digital_human_body())
    assert created.agent_instance_id.isdigit()
    decoded = created.decoded_digital_human_config
    assert decoded["DigitalHumanId"] == "dh_1"
    assert decoded["Streams"][0]["RoomId"] == "room_1"


def test_voice_quota_is_a_quota_error_and_not_retried(emulator_factory: Callable[..., Emulator]) -> None:
    """With a quota of one running instance, the second create fails with ZegoQuotaError after one try."""
    emu = emulator_factory(voice_quota=1)
    transport = CountingTransport()
    client = agent_client(emu.zego_agent_url, transport)
    started(client, 1)
    with pytest.raises(ZegoQuotaError) as caught:
        client.create_agent_instance(create_body(2))
    assert caught.value.code == 410000011
    assert "410000011" in str(caught.value)
    assert transport.actions.count("CreateAgentInstance") == 2


def test_transient_fault_is_retried_and_succeeds(emulator: Emulator) -> None:
    """Two 'insufficient resources' answers are retried with backoff; the third create succeeds."""
    transport = CountingTransport()
    sleep = FakeSleep()
    client = agent_client(emulator.zego_agent_url, transport, sleep=sleep)
    client.register_agent(register_body())
    emulator.control.api_fault("CreateAgentInstance", 410000010, count=2)
    with structlog.testing.capture_logs() as events:
        created = client.create_agent_instance(create_body())
    assert created.agent_instance_id.isdigit()
    assert transport.actions.count("CreateAgentInstance") == 3
    assert len(sleep.sleeps) == 2
    attempts = [(e["attempt"], e["code"]) for e in events if e["event"] == "zego_api_call"]
    assert attempts == [(1, 410000010), (2, 410000010), (3, 0)]


def test_transient_faults_give_up_at_the_bound(emulator: Emulator) -> None:
    """A fault that outlasts the policy surfaces as the transient error after ``attempts`` tries."""
    transport = CountingTransport()
    client = agent_client(
        emulator.zego_agent_url, transport, sleep=FakeSleep(), retry=RetryPolicy(attempts=3)
    )
    instance = started(client)
    emulator.control.api_fault("QueryAgentInstanceStatus", 410000001, count=10)
    with pytest.raises(ZegoTransientError) as caught:
        client.query_agent_instance_status(instance)
    assert caught.value.code == 410000001
    assert transport.actions.count("QueryAgentInstanceStatus") == 3


def test_permanent_fault_is_not_retried(emulator: Emulator) -> None:
    """A parameter error from ZEGO (410000003) is raised after one request, with ZEGO's message."""
    transport = CountingTransport()
    sleep = FakeSleep()
    client = agent_client(emulator.zego_agent_url, transport, sleep=sleep)
    instance = started(client)
    emulator.control.api_fault("SendAgentInstanceTTS", 410000003, message="invalid parameter: Text", count=1)
    with pytest.raises(ZegoValidationError) as caught:
        client.send_agent_instance_tts({"AgentInstanceId": instance, "Text": "hi"})
    assert "invalid parameter: Text" in str(caught.value)
    assert transport.actions.count("SendAgentInstanceTTS") == 1
    assert sleep.sleeps == []


def test_wrong_secret_is_an_auth_error(emulator: Emulator) -> None:
    """A wrong ServerSecret fails with ZegoAuthError (100000005) at once, and the secret is not shown."""
    transport = CountingTransport()
    client = agent_client(emulator.zego_agent_url, transport, secret="0" * 32)
    with pytest.raises(ZegoAuthError) as caught:
        client.register_agent(register_body())
    assert caught.value.code == 100000005
    assert transport.actions == ["RegisterAgent"]
    assert "0" * 32 not in str(caught.value)


def test_clock_skew_is_an_auth_error(emulator: Emulator) -> None:
    """A host clock 11 minutes slow gets 'signature expired' (100000004) as a ZegoAuthError."""
    client = agent_client(emulator.zego_agent_url, clock=lambda: time.time() - 660)
    with pytest.raises(ZegoAuthError) as caught:
        client.register_agent(register_body())
    assert caught.value.code == 100000004


def test_unreachable_zego_is_a_connect_error_after_the_bound() -> None:
    """Nothing listening: the call is retried (it cannot have been processed), then ZegoConnectError."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sleep = FakeSleep()
    client = agent_client(f"http://127.0.0.1:{port}", sleep=sleep, retry=RetryPolicy(attempts=3))
    with pytest.raises(ZegoConnectError):
        client.create_agent_instance(create_body())
    assert len(sleep.sleeps) == 2


@pytest.fixture
def silent_server() -> Iterator[tuple[str, list[int]]]:
    """An HTTP server that reads requests and never answers; yields its URL and a request counter."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    seen: list[int] = []
    held: list[socket.socket] = []
    stop = threading.Event()

    def run() -> None:
        server.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            conn.recv(65536)
            seen.append(1)
            held.append(conn)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", seen
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_read_timeout_create_is_retried_as_documented(silent_server: tuple[str, list[int]]) -> None:
    """A create whose answer never comes is repeated (same AgentUserId), then ZegoTimeoutError(read)."""
    url, seen = silent_server
    client = agent_client(url, sleep=FakeSleep(), retry=RetryPolicy(attempts=3), timeout=0.2)
    with pytest.raises(ZegoTimeoutError) as caught:
        client.create_agent_instance(create_body())
    assert caught.value.phase == "read"
    assert caught.value.maybe_processed
    assert len(seen) == 3


def test_read_timeout_create_not_retried_when_disabled(silent_server: tuple[str, list[int]]) -> None:
    """With retry_create_on_read_timeout=False a create that may have happened is tried once."""
    url, seen = silent_server
    client = agent_client(
        url, sleep=FakeSleep(), retry=RetryPolicy(attempts=3), timeout=0.2, retry_create_on_read_timeout=False
    )
    with pytest.raises(ZegoTimeoutError):
        client.create_agent_instance(create_body())
    assert len(seen) == 1


def test_read_timeout_send_is_not_retried(silent_server: tuple[str, list[int]]) -> None:
    """An LLM send that may have been processed is not repeated: the agent would answer twice."""
    url, seen = silent_server
    client = agent_client(url, sleep=FakeSleep(), retry=RetryPolicy(attempts=3), timeout=0.2)
    with pytest.raises(ZegoTimeoutError):
        client.send_agent_instance_llm({"AgentInstanceId": "1912122918452641792", "Text": "hi"})
    assert len(seen) == 1


def test_read_timeout_query_is_retried(silent_server: tuple[str, list[int]]) -> None:
    """A status query is safe to repeat, so a read timeout is retried up to the bound."""
    url, seen = silent_server
    client = agent_client(url, sleep=FakeSleep(), retry=RetryPolicy(attempts=3), timeout=0.2)
    with pytest.raises(ZegoTimeoutError):
        client.query_agent_instance_status("1912122918452641792")
    assert len(seen) == 3


def test_a_repeated_create_kicks_the_orphan(emulator: Emulator) -> None:
    """What a retried create relies on: the same AgentUserId again deletes the older instance with 1203."""
    client = agent_client(emulator.zego_agent_url)
    orphan = started(client)
    survivor = client.create_agent_instance(create_body()).agent_instance_id
    wait_for(lambda: client_state(emulator, orphan) == "deleted")
    assert client_state(emulator, survivor) == "running"
    deleted = [
        c
        for c in emulator.control.callbacks("AgentInstanceDeleted")
        if c.get("body", c)["AgentInstanceId"] == orphan
    ]
    assert deleted and deleted[0].get("body", deleted[0])["Data"]["Code"] == 1203


def test_requests_are_rate_limited_per_action() -> None:
    """Each action and AppId gets 10 requests/s: the third query waits 0.2 s (fake time)."""
    now = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    limiter = LocalLimiter(clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        limiter.acquire("zego:1:QueryAgentInstanceStatus", 10.0, 30.0)
    assert waits == pytest.approx([0.1, 0.1])


def test_the_client_draws_from_the_limiter(emulator: Emulator) -> None:
    """Every attempt takes a slot under zego:<AppId>:<Action> at 9/s: ZEGO's 10/s with headroom."""
    taken: list[tuple[str, float]] = []

    class Recording:
        def acquire(self, key: str, rate_per_second: float, timeout: float) -> None:
            taken.append((key, rate_per_second))

    client = agent_client(emulator.zego_agent_url, limiter=Recording())
    client.register_agent(register_body())
    assert taken == [("zego:1234567:RegisterAgent", 9.0)]

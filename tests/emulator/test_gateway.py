"""The ZEGO gateway in front of both emulated APIs: signature checks, their codes, the envelope."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest

from emulator import Emulator
from emulator.zego_gateway import sign
from tests.emulator_fixture import ZegoApi, register_agent, zego_signature
from tests.factories import APP_ID


def test_signature_matches_the_documented_vector() -> None:
    """The emulator signs like ZEGO's documented example, so a correct client is accepted."""
    expected = "43e5cfcca828314675f91b001390566a"
    assert sign(12345, "4fd24687296dd9f3", "9193cc662a4c0ec135ec71fb57194b38", 1615186943) == expected
    assert (
        zego_signature(12345, "4fd24687296dd9f3", "9193cc662a4c0ec135ec71fb57194b38", 1615186943) == expected
    )


def test_a_signed_request_succeeds_with_the_full_envelope(emulator: Emulator) -> None:
    """A correctly signed call answers Code 0 with Code, Message, RequestId (19 digits) and Data."""
    result = ZegoApi(emulator.zego_agent_url).post("ListAgents", {})
    assert set(result) == {"Code", "Message", "RequestId", "Data"}
    assert result["Code"] == 0
    assert re.fullmatch(r"[1-9]\d{18}", result["RequestId"])
    assert result["Data"] == {"Total": 0, "Agents": [], "Cursor": ""}


def test_errors_use_http_200_and_the_same_envelope(emulator: Emulator) -> None:
    """A business error still answers HTTP 200 with the envelope; only Code says it failed."""
    api = ZegoApi(emulator.zego_agent_url)
    response = api.post_raw("QueryAgentInstanceStatus", {"AgentInstanceId": "1912122918452641792"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"Code", "Message", "RequestId", "Data"}
    assert body["Code"] == 410001002
    assert body["Data"] is None
    assert re.fullmatch(r"\d{19}", body["RequestId"])


def test_request_ids_differ_between_requests(emulator: Emulator) -> None:
    """Every answer carries its own RequestId."""
    api = ZegoApi(emulator.zego_agent_url)
    ids = {api.post("ListAgents", {})["RequestId"] for _ in range(5)}
    assert len(ids) == 5


def _ts(offset: int = 0) -> int:
    return int(time.time()) + offset


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        pytest.param({"Action": None}, 100000006, id="action-missing"),
        pytest.param({"Action": "StartTheWorld"}, 100000007, id="action-unknown"),
        pytest.param({"Timestamp": None}, 100000002, id="timestamp-missing"),
        pytest.param({"SignatureNonce": None}, 100000008, id="nonce-missing"),
        pytest.param({"Signature": None}, 100000009, id="signature-missing"),
        pytest.param({"SignatureVersion": None}, 100000013, id="version-missing"),
        pytest.param({"AppId": "12ab"}, 100000001, id="appid-not-numeric"),
        pytest.param({"Timestamp": "yesterday"}, 100000003, id="timestamp-bad"),
        pytest.param({"SignatureVersion": "1.0"}, 100000014, id="version-unsupported"),
        pytest.param({"Signature": "0" * 32}, 100000005, id="signature-wrong"),
    ],
)
def test_gateway_codes(emulator: Emulator, overrides: dict[str, object], code: int) -> None:
    """Each broken common parameter is refused with its own documented gateway code."""
    api = ZegoApi(emulator.zego_agent_url)
    action = "ListAgents" if "Action" not in overrides else str(overrides["Action"])
    result = api.post(action, {}, **overrides)
    assert result["Code"] == code, result


def test_stale_timestamp_is_expired(emulator: Emulator) -> None:
    """A request signed more than 10 minutes ago (or ahead) is refused with 100000004."""
    for offset in (-601, 601):
        api = ZegoApi(emulator.zego_agent_url)
        params = api.params("ListAgents", Timestamp=_ts(offset))
        params["Signature"] = zego_signature(
            APP_ID, params["SignatureNonce"], api.secret, params["Timestamp"]
        )
        assert api.post("ListAgents", {}, **params)["Code"] == 100000004


def test_timestamp_inside_the_window_is_accepted(emulator: Emulator) -> None:
    """Clock skew of a few minutes is tolerated."""
    api = ZegoApi(emulator.zego_agent_url)
    params = api.params("ListAgents", Timestamp=_ts(-500))
    params["Signature"] = zego_signature(APP_ID, params["SignatureNonce"], api.secret, params["Timestamp"])
    assert api.post("ListAgents", {}, **params)["Code"] == 0


def test_unknown_app_id(emulator: Emulator) -> None:
    """An AppId the account does not have is refused with 100000010."""
    result = ZegoApi(emulator.zego_agent_url, app_id=7654321).post("ListAgents", {})
    assert result["Code"] == 100000010


def test_wrong_server_secret(emulator: Emulator) -> None:
    """Signing with another secret is refused with 100000005, and the message shows no secret."""
    result = ZegoApi(emulator.zego_agent_url, secret="not-the-secret").post("ListAgents", {})
    assert result["Code"] == 100000005
    assert "not-the-secret" not in result["Message"]


def test_upper_case_signature_is_refused(emulator: Emulator) -> None:
    """The signature is 32 lower-case hex characters; anything else does not match."""
    api = ZegoApi(emulator.zego_agent_url)
    params = api.params("ListAgents")
    params["Signature"] = params["Signature"].upper()
    assert api.post("ListAgents", {}, **params)["Code"] == 100000005


@pytest.mark.parametrize("content", [b"not json", b"[1, 2]", b"\xff\xfe"])
def test_body_that_is_not_a_json_object(emulator: Emulator, content: bytes) -> None:
    """A body that is not a JSON object is refused with 410000004."""
    response = ZegoApi(emulator.zego_agent_url).post_raw("ListAgents", None, content=content)
    assert response.json()["Code"] == 410000004


def test_gateway_runs_before_the_body(emulator: Emulator) -> None:
    """A bad signature is reported even when the body is broken too."""
    response = ZegoApi(emulator.zego_agent_url, secret="wrong").post_raw("ListAgents", None, content=b"{")
    assert response.json()["Code"] == 100000005


def test_agent_rate_limit_answers_insufficient_resources(emulator: Emulator) -> None:
    """More than 10 calls of one action in a second: the 11th gets 410000010 (retryable)."""
    api = ZegoApi(emulator.zego_agent_url)
    codes = [api.post("ListAgents", {})["Code"] for _ in range(11)]
    assert codes[:10] == [0] * 10
    assert codes[10] == 410000010
    assert api.post("QueryAgents", {"AgentIds": ["a"]})["Code"] == 0, "the limit is per action"


def test_rate_limits_can_be_turned_off(emulator_factory: Callable[..., Emulator]) -> None:
    """With rate_limits=False a burst goes through."""
    emu = emulator_factory(rate_limits=False)
    api = ZegoApi(emu.zego_agent_url)
    assert {api.post("ListAgents", {})["Code"] for _ in range(15)} == {0}


def test_rtc_api_uses_the_same_gateway(emulator: Emulator) -> None:
    """The RTC API checks the same signature and answers with the same envelope."""
    rtc = ZegoApi(emulator.zego_rtc_url)
    assert rtc.get("DescribeUserNum", [("RoomId[]", "r1")])["Code"] == 0
    assert ZegoApi(emulator.zego_rtc_url, secret="x").get("DescribeUserNum", [("RoomId[]", "r1")])[
        "Code"
    ] == (100000005)
    assert rtc.get("CreateAgentInstance")["Code"] == 100000007


def test_agent_actions_are_post_only(emulator: Emulator) -> None:
    """The AI Agent API takes POST with a JSON body; the RTC actions are not served there."""
    api = ZegoApi(emulator.zego_agent_url)
    register_agent(api)
    assert api.post("CloseRoom", {"RoomId": "r"})["Code"] == 100000007

"""What a callback may carry: every impossible value refused by its field's name, the first in a
fixed order when there are several, and everything ZEGO sends let through."""

from __future__ import annotations

from typing import Any

import pytest

from tests.factories import Signer
from worker.inbox.callback_fields import check
from worker.inbox.callbacks import MalformedCallback


def refusal(payload: dict[str, Any]) -> str | None:
    try:
        check(payload)
    except MalformedCallback as exc:
        return str(exc)
    return None


@pytest.mark.parametrize(
    ("event", "data"),
    [
        ("LLMResult", {"Round": 3, "Text": "Sure, Thursday at three."}),
        ("AgentInstanceStatus", {"Status": "RUNNING", "Code": 0}),
        ("Exception", {"Code": -2147483648, "Message": "x" * 5000}),
        ("UserAudioData", {"UserId": "u1", "Audio": "AAEC", "SampleRate": 16000, "Format": "pcm"}),
        ("AgentInstanceDeleted", {"DeletedTimestamp": 253_402_300_799_999, "Reason": 1}),
        ("ASRResult", None),
    ],
)
def test_what_zego_sends_is_let_through(event: str, data: dict[str, Any] | None) -> None:
    assert refusal(Signer().callback(event, data, Sequence="", RoomId="r" * 128)) is None


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"AppId": True}, "AppId must be an integer from 1 to 4294967295"),
        ({"Timestamp": 1.5}, "Timestamp must be an integer"),
        ({"Sequence": -1}, "Sequence must be an integer"),
        ({"RoomId": "r" * 129}, "RoomId must be at most 128 characters"),
        ({"AgentId": 7}, "AgentId must be a string"),
        ({"Data": {"Round": "3"}}, "Data.Round must be an integer"),
        ({"Data": {"Code": 2**31}}, "Data.Code must be an integer"),
        ({"Data": {"Status": "S" * 17}}, "Data.Status must be at most 16 characters"),
        ({"Data": {"Text": ["not", "text"]}}, "Data.Text must be a string"),
        ({"Data": {"Audio": "not base64!"}}, "Data.Audio must be base64"),
        ({"Data": {"Audio": 12}}, "Data.Audio must be a string"),
    ],
)
def test_each_impossible_value_is_refused_by_its_field(change: dict[str, Any], named: str) -> None:
    found = refusal(Signer().callback("LLMResult", {"Round": 1, "Text": "hi"}) | change)
    assert found is not None and found.startswith(named), found


def test_with_several_impossible_values_the_first_in_order_is_named() -> None:
    """Top-level integers, then top-level strings, then Data's: whatever order the body lists them in."""
    bad = {"Data": {"Round": -1}, "RoomId": "r" * 200, "Sequence": 1.5}  # listed last to first
    payload = bad | {k: v for k, v in Signer().callback("LLMResult").items() if k not in bad}
    assert (refusal(payload) or "").startswith("Sequence")
    del payload["Sequence"]
    assert (refusal(payload) or "").startswith("RoomId")
    del payload["RoomId"]
    assert (refusal(payload) or "").startswith("Data.Round")

"""Parsing callback bodies in the three shapes ZEGO may send, and the keys a callback is stored under."""

from __future__ import annotations

import urllib.parse
from typing import Any

import pytest

from tests.factories import APP_ID, BODY_FORMS, EVENT_DATA, INSTANCE, Signer, encode_body
from worker.inbox.callbacks import (
    Callback,
    MalformedCallback,
    content_hash,
    int_field,
    parse_body,
    payload_hash,
    text_field,
)
from worker.inbox.signatures import InvalidSignature, verify_callback


@pytest.mark.parametrize("event", sorted(EVENT_DATA))
def test_three_body_shapes_give_the_same_payload(event: str, signer: Signer) -> None:
    """Plain JSON, percent-encoded JSON and a form with Data as JSON all parse to the same callback."""
    payload = signer.callback(event, Text="1 + 1 = 2 & more", Unicode="你好 é")
    parsed = {form: parse_body(encode_body(payload, form)) for form in BODY_FORMS}
    assert parsed == {
        "json": (payload, "json"),
        "percent-encoded": (payload, "form"),
        "form": (payload, "form"),
    }


def test_form_numbers_become_integers_and_other_fields_stay_text() -> None:
    """In a form body AppId, Timestamp and Sequence are integers; everything else keeps its text."""
    body = b"AppId=1234567&Timestamp=1745000000000&Sequence=-3&Nonce=00123&AgentInstanceId=42&Name="
    payload, form = parse_body(body)
    assert form == "form"
    assert payload == {
        "AppId": 1234567,
        "Timestamp": 1745000000000,
        "Sequence": -3,
        "Nonce": "00123",
        "AgentInstanceId": "42",
        "Name": "",
    }


def test_surrounding_whitespace_is_ignored(signer: Signer) -> None:
    """A trailing newline (as curl adds) does not make a JSON body unreadable."""
    payload = signer.callback("ASRResult")
    assert parse_body(b"\n  " + encode_body(payload) + b"\r\n") == (payload, "json")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   \n",
        b"{not json",
        b'{"AppId": 1,}',
        b"\xff\xfe{",
        b"hello world",
        b"[1, 2, 3]",
        b'"a string"',
        b"42",
        b"null",
        b"%7Bnot json",
        urllib.parse.quote("[1, 2]").encode(),
    ],
    ids=[
        "empty",
        "blank",
        "truncated-json",
        "trailing-comma",
        "not-utf8",
        "garbage",
        "json-array",
        "json-string",
        "json-number",
        "json-null",
        "percent-encoded-garbage",
        "percent-encoded-array",
    ],
)
def test_unreadable_or_non_object_body_is_malformed(body: bytes) -> None:
    """Anything that is not a JSON object (plain, percent-encoded or as a form) is refused as malformed."""
    with pytest.raises(MalformedCallback):
        parse_body(body)


@pytest.mark.parametrize(
    ("raw", "text"), [("--1", "--1"), ("%C2%B2", "\u00b2")], ids=["minus", "superscript"]
)
def test_form_number_that_only_looks_numeric_stays_text(raw: str, text: str) -> None:
    """A form AppId that is not a plain 64-bit integer is kept as text, so verification refuses it."""
    payload, form = parse_body(f"AppId={raw}&Timestamp=1470820198&Nonce=1&Signature=x".encode())
    assert form == "form"
    assert payload["AppId"] == text
    with pytest.raises(InvalidSignature) as caught:
        verify_callback(payload, secret_for={APP_ID: "s"}.get, now=1470820198.0, window_seconds=600)
    assert caught.value.reason == "bad_fields"


def test_form_text_that_starts_with_a_bracket_stays_text(signer: Signer) -> None:
    """A form field whose text merely begins with a bracket parses the same as its JSON twin."""
    payload = signer.callback("ASRResult", Name="[beta] Weather bot", Note="{not json}")
    assert parse_body(encode_body(payload, "form")) == (payload, "form")


def test_form_data_that_is_not_json_is_refused_by_name(signer: Signer) -> None:
    """A form whose Data is not JSON parses, then is refused as malformed, naming Data."""
    body = encode_body(signer.callback("ASRResult"), "form") + b"&Data=%7Bbroken"
    payload, _ = parse_body(body)
    assert payload["Data"] == "{broken"
    with pytest.raises(MalformedCallback, match="Data"):
        Callback.from_payload(payload)


def test_callback_exposes_its_routing_fields(signer: Signer) -> None:
    """The stored columns come from the payload: ms timestamp, lower-case signature, integer Sequence."""
    payload = signer.callback("LLMResult", sequence=17, timestamp=1_745_000_000_123)
    payload["Signature"] = payload["Signature"].upper()
    cb = Callback.from_payload(payload)
    assert (cb.app_id, cb.event, cb.agent_instance_id, cb.sequence) == (APP_ID, "LLMResult", INSTANCE, 17)
    assert cb.timestamp_ms == 1_745_000_000_123
    assert cb.signature == payload["Signature"].lower()
    assert cb.data == EVENT_DATA["LLMResult"]


def test_seconds_timestamp_is_stored_in_milliseconds(signer: Signer) -> None:
    """A Timestamp in seconds (RTC style) is kept in milliseconds like the AI Agent ones."""
    cb = Callback.from_payload(signer.callback("ASRResult", timestamp=1_745_000_000))
    assert cb.timestamp_ms == 1_745_000_000_000


def test_numeric_agent_instance_id_and_string_sequence_are_normalised(signer: Signer) -> None:
    """An AgentInstanceId sent as a number is a string, a Sequence sent as text is an integer."""
    cb = Callback.from_payload(signer.callback("ASRResult", AgentInstanceId=1912, Sequence="88"))
    assert (cb.agent_instance_id, cb.sequence) == ("1912", 88)


def test_dedup_key_uses_sequence_when_present(signer: Signer) -> None:
    """With a Sequence, a callback's key is AppId:AgentInstanceId:Event:Sequence."""
    cb = Callback.from_payload(signer.callback("ASRResult", sequence=5))
    assert cb.dedup_key == f"{APP_ID}:{INSTANCE}:ASRResult:5"


def test_dedup_key_falls_back_to_a_content_hash_without_sequence(signer: Signer) -> None:
    """Without a Sequence the key ends with a hash of the content; different content, different key."""
    first = signer.callback("ASRResult", with_sequence=False)
    cb = Callback.from_payload(first)
    assert cb.sequence is None
    assert cb.dedup_key == f"{APP_ID}:{INSTANCE}:ASRResult:h:{content_hash(first)}"
    assert len(content_hash(first)) == 64
    other = signer.callback("ASRResult", {**EVENT_DATA["ASRResult"], "Text": "Other"}, with_sequence=False)
    assert Callback.from_payload(other).dedup_key != cb.dedup_key


def test_empty_sequence_counts_as_absent(signer: Signer) -> None:
    """A form's empty Sequence field means no Sequence, so the hash key is used."""
    cb = Callback.from_payload(signer.callback("ASRResult", Sequence=""))
    assert cb.sequence is None
    assert ":h:" in cb.dedup_key


def test_resigned_retry_has_the_same_content_hash_and_key(signer: Signer) -> None:
    """A retry with a new Nonce, Timestamp and Signature is recognised as the same callback."""
    original = signer.callback("ASRResult", with_sequence=False, timestamp=1_745_000_000_000)
    retry = signer.resign(original, timestamp=1_745_000_005_000)
    assert retry["Signature"] != original["Signature"]
    assert content_hash(retry) == content_hash(original)
    assert Callback.from_payload(retry).dedup_key == Callback.from_payload(original).dedup_key
    assert payload_hash(retry) != payload_hash(original)


def test_content_hash_ignores_key_order_but_not_content(signer: Signer) -> None:
    """The hash does not depend on field order, but any change of what is said changes it."""
    payload = signer.callback("ASRResult", with_sequence=False)
    reordered = dict(reversed(list(payload.items())))
    assert content_hash(reordered) == content_hash(payload)
    assert content_hash({**payload, "RoomId": "room_2"}) != content_hash(payload)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"Event": None}, "Event"),
        ({"Event": ""}, "Event"),
        ({"Event": 7}, "Event"),
        ({"Event": "E" * 65}, "Event"),
        ({"AgentInstanceId": None}, "AgentInstanceId"),
        ({"AgentInstanceId": ""}, "AgentInstanceId"),
        ({"AgentInstanceId": ["1912"]}, "AgentInstanceId"),
        ({"AgentInstanceId": "9" * 129}, "AgentInstanceId"),
        ({"Sequence": "seven"}, "Sequence"),
        ({"Sequence": [7]}, "Sequence"),
        ({"Data": "not an object"}, "Data"),
        ({"Data": [1, 2]}, "Data"),
    ],
    ids=[
        "no-event",
        "empty-event",
        "number-event",
        "overlong-event",
        "no-instance",
        "empty-instance",
        "list-instance",
        "overlong-instance",
        "text-sequence",
        "list-sequence",
        "string-data",
        "list-data",
    ],
)
def test_bad_routing_field_is_malformed(signer: Signer, changes: dict[str, Any], field: str) -> None:
    """Event, AgentInstanceId, Sequence and Data must have the right type and size; the error names it."""
    payload = signer.callback("ASRResult")
    payload.update(changes)
    payload = {k: v for k, v in payload.items() if v is not None}
    with pytest.raises(MalformedCallback, match=field):
        Callback.from_payload(payload)


@pytest.mark.parametrize("sequence", [2**63, -1, "9" * 19], ids=["2^63", "negative", "19-nines"])
def test_sequence_outside_the_stored_range_is_malformed(signer: Signer, sequence: int | str) -> None:
    """A Sequence that is negative or does not fit a signed 64-bit column is refused as malformed."""
    with pytest.raises(MalformedCallback, match="Sequence"):
        Callback.from_payload(signer.callback("ASRResult", Sequence=sequence))


def test_sequence_at_the_bounds_is_accepted(signer: Signer) -> None:
    """Sequence 0 and the largest signed 64-bit value are valid."""
    for sequence in (0, 2**63 - 1):
        assert Callback.from_payload(signer.callback("ASRResult", sequence=sequence)).sequence == sequence


@pytest.mark.parametrize("app_id", [0, -5, 2**63], ids=["zero", "negative", "2^63"])
def test_app_id_outside_the_stored_range_is_malformed(signer: Signer, app_id: int) -> None:
    """An AppId that is not a positive signed 64-bit integer is refused as malformed."""
    with pytest.raises(MalformedCallback, match="AppId"):
        Callback.from_payload(signer.callback("ASRResult", AppId=app_id))


def test_longest_allowed_event_and_instance_are_accepted(signer: Signer) -> None:
    """64-character events and 128-character instance ids are within the limits."""
    cb = Callback.from_payload(signer.callback("E" * 64, instance="9" * 128))
    assert (len(cb.event), len(cb.agent_instance_id)) == (64, 128)


def test_int_and_text_fields_tolerate_what_zego_sends() -> None:
    """Numbers may come as text; absent, empty and garbled values read as None."""
    assert [int_field(v) for v in (7, "7", None, "", "x", True, [1])] == [7, 7, None, None, None, None, None]
    assert [text_field(v) for v in ("a", 3, None, "")] == ["a", "3", None, None]

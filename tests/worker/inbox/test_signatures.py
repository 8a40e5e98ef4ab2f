"""ZEGO callback signatures: the documented vector, then one test per thing that can be broken."""

from __future__ import annotations

from typing import Any

import pytest

from worker.inbox.signatures import InvalidSignature, callback_signature, timestamp_seconds, verify_callback

# The vector from ZEGO's SignatureVerification snippet (vendor facts, section 2).
DOC_SECRET = "secret"
DOC_TIMESTAMP = 1470820198
DOC_NONCE = "123412"
DOC_SIGNATURE = "5bd59fd62953a8059fb7eaba95720f66d19e4517"

APP_ID = 1234567
OTHER_APP_ID = 7654321
SECRETS = {APP_ID: DOC_SECRET, OTHER_APP_ID: "another-apps-secret"}
WINDOW = 600
NOW = float(DOC_TIMESTAMP + 30)  # half a minute after ZEGO signed the doc's vector


def signed(**changes: Any) -> dict[str, Any]:
    """The doc's vector as a callback payload, with fields replaced (a value of None removes it)."""
    payload: dict[str, Any] = {
        "AppId": APP_ID,
        "Event": "ASRResult",
        "Nonce": DOC_NONCE,
        "Timestamp": DOC_TIMESTAMP,
        "Signature": DOC_SIGNATURE,
        "AgentInstanceId": "1912122918452641792",
        "Data": {"Round": 1, "Text": "hello"},
    }
    payload.update(changes)
    return {key: value for key, value in payload.items() if value is not None}


def resigned(secret: str, timestamp: int, nonce: str = "n-1", **changes: Any) -> dict[str, Any]:
    """A payload properly signed with ``secret`` at ``timestamp``."""
    return signed(
        Timestamp=timestamp, Nonce=nonce, Signature=callback_signature(secret, timestamp, nonce), **changes
    )


def verify(payload: dict[str, Any], *, now: float = NOW, window: int = WINDOW) -> None:
    verify_callback(payload, secret_for=SECRETS.get, now=now, window_seconds=window)


def reason(payload: dict[str, Any], *, now: float = NOW, window: int = WINDOW) -> str:
    with pytest.raises(InvalidSignature) as caught:
        verify(payload, now=now, window=window)
    assert caught.value.detail
    return caught.value.reason


def test_documented_vector_gives_the_documented_signature() -> None:
    """sha1 of sorted(secret, timestamp, nonce) reproduces ZEGO's published example."""
    assert callback_signature(DOC_SECRET, DOC_TIMESTAMP, DOC_NONCE) == DOC_SIGNATURE
    assert callback_signature(DOC_SECRET, str(DOC_TIMESTAMP), int(DOC_NONCE)) == DOC_SIGNATURE


def test_documented_vector_verifies() -> None:
    """A callback carrying the doc's vector is accepted half a minute after it was signed."""
    verify(signed())


def test_signature_in_upper_case_verifies() -> None:
    """Hex case does not matter: an upper-case signature is the same signature."""
    verify(signed(Signature=DOC_SIGNATURE.upper()))


def test_string_app_id_and_timestamp_verify() -> None:
    """AppId and Timestamp sent as digit strings (as a form body carries them) are accepted."""
    verify(signed(AppId=str(APP_ID), Timestamp=str(DOC_TIMESTAMP)))


def test_millisecond_timestamp_verifies() -> None:
    """AI Agent callbacks carry Timestamp in milliseconds; the window applies to it all the same."""
    timestamp_ms = DOC_TIMESTAMP * 1000 + 250
    verify(resigned(DOC_SECRET, timestamp_ms))
    assert timestamp_seconds(timestamp_ms) == DOC_TIMESTAMP + 0.25
    assert timestamp_seconds(DOC_TIMESTAMP) == DOC_TIMESTAMP


def test_timestamp_on_the_edge_of_the_window_verifies() -> None:
    """A callback exactly ``window`` seconds old is still accepted; the window is inclusive."""
    verify(signed(), now=DOC_TIMESTAMP + WINDOW)
    verify(signed(), now=DOC_TIMESTAMP - WINDOW)


@pytest.mark.parametrize("field", ["AppId", "Timestamp", "Nonce", "Signature"])
def test_missing_signed_field_is_rejected(field: str) -> None:
    """Each of the four signed fields is required; its absence is named in the detail."""
    with pytest.raises(InvalidSignature) as caught:
        verify(signed(**{field: None}))
    assert caught.value.reason == "missing_fields"
    assert field in caught.value.detail


@pytest.mark.parametrize("field", ["AppId", "Timestamp", "Nonce", "Signature"])
def test_empty_signed_field_is_rejected(field: str) -> None:
    """An empty string counts as missing for every signed field."""
    assert reason(signed(**{field: ""})) == "missing_fields"


@pytest.mark.parametrize(
    ("field", "value"),
    [("AppId", "app-1234567"), ("AppId", [APP_ID]), ("Timestamp", "yesterday"), ("Timestamp", "1.5e9")],
)
def test_non_integer_app_id_or_timestamp_is_rejected(field: str, value: Any) -> None:
    """AppId and Timestamp must be integers (or digit strings)."""
    assert reason(signed(**{field: value})) == "bad_fields"


def test_non_string_signature_is_rejected() -> None:
    """A Signature that is not a string is a bad field, not a crash."""
    assert reason(signed(Signature=12345)) == "bad_fields"


def test_unknown_app_id_is_rejected() -> None:
    """A callback for an AppId this deployment has no secret for is refused."""
    assert reason(signed(AppId=999)) == "unknown_app"


def test_timestamp_too_old_in_seconds_is_rejected() -> None:
    """A seconds Timestamp older than the window is stale, even though its signature is right."""
    assert reason(signed(), now=DOC_TIMESTAMP + WINDOW + 1) == "stale_timestamp"


def test_timestamp_too_far_in_the_future_in_seconds_is_rejected() -> None:
    """A seconds Timestamp further ahead than the window is stale too."""
    assert reason(signed(), now=DOC_TIMESTAMP - WINDOW - 1) == "stale_timestamp"


def test_timestamp_too_old_in_milliseconds_is_rejected() -> None:
    """A millisecond Timestamp older than the window is stale."""
    old = (DOC_TIMESTAMP - WINDOW - 1) * 1000
    assert reason(resigned(DOC_SECRET, old), now=DOC_TIMESTAMP) == "stale_timestamp"


def test_timestamp_too_far_in_the_future_in_milliseconds_is_rejected() -> None:
    """A millisecond Timestamp further ahead than the window is stale."""
    ahead = (DOC_TIMESTAMP + WINDOW + 1) * 1000
    assert reason(resigned(DOC_SECRET, ahead), now=DOC_TIMESTAMP) == "stale_timestamp"


def test_smaller_window_is_honoured() -> None:
    """The window is the caller's: 30 seconds old passes at 60 and fails at 10."""
    verify(signed(), window=60)
    assert reason(signed(), window=10) == "stale_timestamp"


def test_wrong_signature_is_rejected() -> None:
    """A signature that is not sha1(sorted(secret, timestamp, nonce)) is refused."""
    assert reason(signed(Signature="0" * 40)) == "bad_signature"


def test_truncated_signature_is_rejected() -> None:
    """A prefix of the right signature is not the right signature."""
    assert reason(signed(Signature=DOC_SIGNATURE[:20])) == "bad_signature"


def test_signature_made_with_another_apps_secret_is_rejected() -> None:
    """A callback signed with app B's secret but claiming app A's AppId is refused."""
    forged = resigned(SECRETS[OTHER_APP_ID], DOC_TIMESTAMP, AppId=APP_ID)
    assert reason(forged) == "bad_signature"
    verify(resigned(SECRETS[OTHER_APP_ID], DOC_TIMESTAMP, AppId=OTHER_APP_ID))


def test_nonce_altered_after_signing_is_rejected() -> None:
    """Changing the Nonce of a signed callback breaks its signature."""
    assert reason(signed(Nonce="123413")) == "bad_signature"


def test_timestamp_altered_after_signing_is_rejected() -> None:
    """Moving the Timestamp of a signed callback (even within the window) breaks its signature."""
    assert reason(signed(Timestamp=DOC_TIMESTAMP + 1)) == "bad_signature"

"""Vendor secrets in stored specs: sealed at rest, opened only to call the vendor, never shown."""

from __future__ import annotations

import json

import pytest
from cryptography.fernet import Fernet

from worker.sealing import REDACTED, SEALED, Sealer, SealingError, redact

BODY = {
    "AgentId": "concierge",
    "LLM": {"Url": "https://llm.example/v1/chat/completions", "ApiKey": "sk-live-123", "Model": "m"},
    "TTS": {"Vendor": "MiniMax", "Params": {"app": {"group_id": "g-1", "api_key": "mm-secret"}}},
}
PATHS = [("LLM", "ApiKey"), ("TTS", "Params", "app", "group_id"), ("TTS", "Params", "app", "api_key")]


def test_sealed_spec_keeps_no_secret_in_clear_and_opens_to_the_original() -> None:
    """What is stored has no secret in it, and unsealing gives back exactly what was asked."""
    sealer = Sealer(Fernet.generate_key().decode())
    sealed = sealer.seal(BODY, PATHS)
    stored = json.dumps(sealed)
    assert "sk-live-123" not in stored and "mm-secret" not in stored
    assert sealed["LLM"]["Url"] == BODY["LLM"]["Url"]  # the rest stays readable
    assert SEALED in sealed["LLM"]["ApiKey"]
    assert sealer.unseal(sealed) == BODY


def test_sealing_twice_does_not_seal_a_sealed_value_again() -> None:
    """Re-sealing a stored spec (a recreation copying it) still opens to the original."""
    sealer = Sealer(Fernet.generate_key().decode())
    assert sealer.unseal(sealer.seal(sealer.seal(BODY, PATHS), PATHS)) == BODY


def test_redacted_spec_shows_stars_where_secrets_were() -> None:
    """The API shows the spec with *** in place of each secret and nothing else changed."""
    sealer = Sealer(Fernet.generate_key().decode())
    shown = redact(sealer.seal(BODY, PATHS))
    assert shown["LLM"]["ApiKey"] == REDACTED
    assert shown["TTS"]["Params"]["app"] == {"group_id": REDACTED, "api_key": REDACTED}
    assert shown["LLM"]["Model"] == "m"


def test_rotated_keys_still_open_values_sealed_under_the_old_key() -> None:
    """Rotation: with "new,old" configured, old specs still open and new ones use the new key."""
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    sealed_old = Sealer(old).seal(BODY, PATHS)
    rotated = Sealer(f"{new},{old}")
    assert rotated.unseal(sealed_old) == BODY
    assert Sealer(new).unseal(rotated.seal(BODY, PATHS)) == BODY


def test_a_value_sealed_under_a_lost_key_fails_clearly() -> None:
    """A spec sealed under a key the deployment no longer has is an error, not garbage sent on."""
    sealed = Sealer(Fernet.generate_key().decode()).seal(BODY, PATHS)
    with pytest.raises(SealingError, match="does not open"):
        Sealer(Fernet.generate_key().decode()).unseal(sealed)


@pytest.mark.parametrize("key", ["", "not-a-fernet-key", "short,also-short"])
def test_a_bad_key_is_refused_with_how_to_make_one(key: str) -> None:
    """A mistyped ROOMWARDEN_SECRET_KEY fails at start-up and says how to generate a good one."""
    with pytest.raises(SealingError):
        Sealer(key)

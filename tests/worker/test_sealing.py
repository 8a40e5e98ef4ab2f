"""Vendor secrets in stored specs: sealed at rest, opened only to call the vendor, never shown."""

from __future__ import annotations

import json

import pytest
from cryptography.fernet import Fernet

from tests.worker.vendors.zego.support import create_body
from worker.sealing import REDACTED, SEALED, Sealer, SealingError, redact, secret_paths
from worker.vendors.zego import specs

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


def test_secret_paths_point_at_every_secret_of_a_zego_request() -> None:
    """The known places: the LLM key and each TTS app credential (moved here from zego/test_specs)."""
    body = specs.CreateAgentInstance.model_validate(create_body()).to_body()
    assert secret_paths(body) == [
        ("LLM", "ApiKey"),
        ("TTS", "Params", "app", "appid"),
        ("TTS", "Params", "app", "token"),
        ("TTS", "Params", "app", "cluster"),
    ]
    assert secret_paths({"AgentInstanceId": "1912122918452641792"}) == []


FREE_FORM = {
    "AgentId": "concierge",
    "LLM": {
        "Url": "https://llm.example/v1/chat/completions",
        "Model": "m",
        "Params": {
            "temperature": 0.3,
            "max_tokens": 512,
            "api_key": "llm-param-key",
            "headers": [{"Authorization": "Bearer llm-bearer"}, {"X-Trace": "t-1"}],
            "vendor": {"client_secret": {"id": "c-1", "secret": "llm-client-secret"}},
        },
    },
    "TTS": {"Vendor": "ByteDanceV3", "Params": {"access_token": "tts-access-token", "TokenLimit": 300}},
    "ASR": {"Params": {"api_key": "asr-api-key", "hotwords": "refund|order", "Password": 1234}},
    "RTC": {"RoomId": "room-1", "AgentUserId": "agent_1"},
}
SECRETS = ("llm-param-key", "llm-bearer", "llm-client-secret", "tts-access-token", "asr-api-key")


def test_credentials_anywhere_in_a_spec_are_found_by_their_names() -> None:
    """LLM.Params, TTS.Params and ASR.Params are free-form: keys that name a credential are sealed
    wherever they sit (lists included, objects whole), and look-alikes such as max_tokens are not."""
    paths = secret_paths(FREE_FORM)
    assert sorted(map(str, paths)) == sorted(
        map(
            str,
            [
                ("LLM", "Params", "api_key"),
                ("LLM", "Params", "headers", 0, "Authorization"),
                ("LLM", "Params", "vendor", "client_secret"),
                ("TTS", "Params", "access_token"),
                ("ASR", "Params", "api_key"),
                ("ASR", "Params", "Password"),
            ],
        )
    )


def test_every_credential_is_sealed_shown_as_stars_and_opened_exactly() -> None:
    sealer = Sealer(Fernet.generate_key().decode())
    sealed = sealer.seal(FREE_FORM, secret_paths(FREE_FORM))
    stored = json.dumps(sealed)
    assert not any(secret in stored for secret in SECRETS)
    assert "1234" not in stored and "c-1" not in stored
    shown = json.dumps(redact(sealed))
    assert not any(secret in shown for secret in SECRETS)
    assert redact(sealed)["LLM"]["Params"]["max_tokens"] == 512
    assert redact(sealed)["TTS"]["Params"]["TokenLimit"] == 300
    assert redact(sealed)["ASR"]["Params"]["Password"] == REDACTED
    # Numbers and objects come back as numbers and objects, not as their text.
    assert sealer.unseal(sealed) == FREE_FORM

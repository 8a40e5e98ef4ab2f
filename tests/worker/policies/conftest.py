"""Vendor clients pointed at the emulator, shared by the policy tests that call ZEGO."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from emulator import Emulator
from emulator.control import EmulatorControl
from tests.emulator_fixture import SERVER_SECRET, ZegoApi, register_agent
from tests.factories import APP_ID, CALLBACK_SECRET
from worker.settings import Settings
from worker.vendors.clients import Vendors


def settings_against(database_url: str, emulator: Emulator) -> Settings:
    """Settings for the test app, its ZEGO APIs served by ``emulator`` (agent registered)."""
    register_agent(ZegoApi(emulator.zego_agent_url))
    return Settings(
        database_url=database_url,
        zego_app_id=APP_ID,
        zego_callback_secret=CALLBACK_SECRET,
        zego_server_secret=SERVER_SECRET,
        zego_api_url=emulator.zego_agent_url,
        zego_rtc_url=emulator.zego_rtc_url,
        rate_limit_redis_url="",
        _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture
def zego_settings(database_url: str, emulator: Emulator) -> Settings:
    return settings_against(database_url, emulator)


@pytest.fixture
def vendors(zego_settings: Settings) -> Iterator[Vendors]:
    made = Vendors(zego_settings)
    yield made
    made.close()


@pytest.fixture
def control(emulator: Emulator) -> EmulatorControl:
    return emulator.control

"""Stand-ins for the ZEGO AI Agent, ZEGO RTC and Coze APIs, over real HTTP.

Written from the vendor facts, independently of roomwarden's own clients (nothing here imports
``worker``), so that a mistake shared by client and emulator cannot hide.
"""

from emulator.config import EmulatorConfig, ZegoAppSecrets
from emulator.server import Emulator

__all__ = ["Emulator", "EmulatorConfig", "ZegoAppSecrets"]

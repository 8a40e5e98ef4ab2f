"""ZEGO clients: the AI Agent API (``agent``) and the RTC room API (``rtc``), their request
models (``specs``), request signing (``signing``) and the typed error tree (``errors``)."""

from worker.vendors.errors import SpecError
from worker.vendors.zego.agent import ZegoAgentClient
from worker.vendors.zego.errors import ZegoError, ZegoPermanentError, ZegoTransientError
from worker.vendors.zego.rtc import ZegoRtcClient

__all__ = [
    "SpecError",
    "ZegoAgentClient",
    "ZegoError",
    "ZegoPermanentError",
    "ZegoRtcClient",
    "ZegoTransientError",
]

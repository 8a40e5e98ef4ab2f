"""A conversation in which the user says an e-mail address, a phone number and a card number.

The agent repeats the e-mail address (agents do), the user's first words come with audio, and
the agent is cut off while reading the card number back: every place words are kept holds them.
"""

from __future__ import annotations

import base64
import time
from typing import Any

from tests.factories import Signer

EMAIL = "alice.liddell@example.com"
PHONE = "+44 20 7946 0958"
CARD = "4111 1111 1111 1111"
AUDIO = b"PCM-OF-ALICE-SAYING-HER-CARD-0123456789"
# What must be nowhere after an erasure: each value, and distinctive parts a search would use.
RAW = (EMAIL, PHONE, CARD, "liddell", "7946 0958", AUDIO.decode())
USER = "user_pii_1"
R1, R2, R3 = 300_001, 300_002, 300_003


def conversation(signer: Signer, *, instance: str, user: str = USER) -> list[dict[str, Any]]:
    base = int(time.time() * 1000) - 60_000
    audio = base64.b64encode(AUDIO).decode()
    script: list[tuple[str, dict[str, Any]]] = [
        ("AgentInstanceCreated", {"CreatedTimestamp": base}),
        ("UserSpeakAction", {"UserId": user, "Action": "SPEAK_BEGIN", "Round": R1}),
        (
            "UserAudioData",
            {"UserId": user, "Round": R1, "SampleRate": 16000, "Format": "pcm", "Audio": audio},
        ),
        ("UserSpeakAction", {"UserId": user, "Action": "SPEAK_END", "Round": R1}),
        ("ASRResult", {"UserId": user, "Round": R1, "Text": f"My e-mail is {EMAIL}."}),
        ("AgentInstanceStatus", {"Status": "THINKING", "Round": R1}),
        ("LLMResult", {"Round": R1, "Text": f"Thanks, I have {EMAIL}."}),
        ("AgentInstanceStatus", {"Status": "SPEAKING", "Round": R1}),
        ("LLMResult", {"Round": R1, "Text": "What is your phone number?"}),
        ("AgentInstanceStatus", {"Status": "IDLE", "Round": R1}),
        ("UserSpeakAction", {"UserId": user, "Action": "SPEAK_END", "Round": R2}),
        ("ASRResult", {"UserId": user, "Round": R2, "Text": f"It is {PHONE}, and my card is {CARD}."}),
        ("LLMResult", {"Round": R2, "Text": f"Your card {CARD} is noted."}),
        ("AgentInstanceStatus", {"Status": "SPEAKING", "Round": R2}),
        ("UserSpeakAction", {"UserId": user, "Action": "SPEAK_BEGIN", "Round": R3}),
        ("Interrupted", {"Round": R2, "Reason": 1, "PlayedText": f"Your card {CARD}"}),
        ("AgentInstanceStatus", {"Status": "IDLE", "Round": R2}),
        ("ASRResult", {"UserId": user, "Round": R3, "Text": "Thanks, bye."}),
        ("LLMResult", {"Round": R3, "Text": "Goodbye!"}),
        (
            "AgentInstanceDeleted",
            {"Code": 0, "DeletedTimestamp": base + 60_000, "LatencyData": {"LLMTTFT": 250}},
        ),
    ]
    return [
        signer.callback(event, data, instance=instance, sequence=10 + 2 * i, timestamp=base + 1_000 * i)
        for i, (event, data) in enumerate(script)
    ]

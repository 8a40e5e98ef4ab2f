"""A conversation's callbacks for the transcript tests: rounds, sentences, an interruption, an ending."""

from __future__ import annotations

import time
from typing import Any

from tests.factories import Signer

R1, R2, R3 = 158_422_001, 158_422_009, 158_422_014

# The turns that conversation leaves, in order: what every end-to-end test expects to read back.
EXPECTED_TURNS = [
    "Can you recommend a book?",
    "Sure. Try 'The Left Hand of Darkness'. It is short and strange.",
    "Something longer?",
    "Then 'Middlemarch', which follows a whole town over",
    "Thanks, bye.",
    "再见！Goodbye!",
]


def conversation(signer: Signer, *, base: int | None = None) -> list[dict[str, Any]]:
    """Timestamped over the last minute by default, inside the receiver's signature window."""
    base = base if base is not None else int(time.time() * 1000) - 60_000
    script: list[tuple[str, dict[str, Any]]] = [
        ("AgentInstanceCreated", {"CreatedTimestamp": base}),
        ("UserSpeakAction", {"UserId": "user_1", "Action": "SPEAK_BEGIN", "Round": R1}),
        ("ASRResult", {"UserId": "user_1", "Round": R1, "Text": "Can you recommend a book?"}),
        ("AgentInstanceStatus", {"Status": "THINKING", "Round": R1}),
        ("LLMResult", {"Round": R1, "Text": "Sure."}),
        ("LLMResult", {"Round": R1, "Text": "Try 'The Left Hand of Darkness'."}),
        ("LLMResult", {"Round": R1, "Text": "It is short and strange."}),
        ("AgentInstanceStatus", {"Status": "SPEAKING", "Round": R1}),
        ("AgentInstanceMetaInfo", {"Round": R1, "MetaInfo": {"emotion": "warm"}}),
        ("AgentInstanceStatus", {"Status": "IDLE", "Round": R1}),
        ("ASRResult", {"UserId": "user_1", "Round": R2, "Text": "Something longer?"}),
        ("LLMResult", {"Round": R2, "Text": "Then 'Middlemarch',"}),
        ("LLMResult", {"Round": R2, "Text": "which follows a whole town over"}),
        ("AgentInstanceStatus", {"Status": "SPEAKING", "Round": R2}),
        ("UserSpeakAction", {"UserId": "user_1", "Action": "SPEAK_BEGIN", "Round": R3}),
        ("Interrupted", {"Round": R2, "Reason": 1, "PlayedText": "Then 'Middlemarch', which"}),
        ("AgentInstanceStatus", {"Status": "IDLE", "Round": R2}),
        ("ASRResult", {"UserId": "user_1", "Round": R3, "Text": "Thanks, bye."}),
        ("LLMResult", {"Round": R3, "Text": "再见！"}),
        ("LLMResult", {"Round": R3, "Text": "Goodbye!"}),
        ("Exception", {"Code": 2301, "Message": "TTS general error", "Round": R3}),
        (
            "AgentInstanceDeleted",
            {"Code": 0, "DeletedTimestamp": base + 60_000, "LatencyData": {"LLMTTFT": 250}},
        ),
    ]
    return [
        signer.callback(event, data, sequence=10 + 2 * i, timestamp=base + 1_000 * i)
        for i, (event, data) in enumerate(script)
    ]

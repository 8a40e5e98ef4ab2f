"""PII redaction's cost per callback: the detectors over typical ASR/LLM sentences, in one process.

No database, no HTTP: the receiver pays ``redact_payload`` per callback in ``store`` mode and the
drain pays ``redacted_or_none`` per touched turn in ``read`` mode; with redaction off neither
runs (the receiver checks one ``None``). Prints microseconds per call for sentences with and
without personal data, short and long.

    .venv/bin/python bench/redaction.py [--calls 20000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from worker.privacy.payloads import redact_payload
from worker.privacy.redaction import DEFAULT_RULES, redact

SENTENCES = {
    "short, nothing to find": "Can you recommend a book?",
    "short, CJK, nothing": "\u4f60\u597d\uff0c\u8bf7\u95ee\u4eca\u5929\u5929\u6c14\u600e\u4e48\u6837\uff1f",
    "one e-mail": "Please send it to jane.doe@example.com when you can.",
    "phone + card + e-mail": (
        "My email is jane.doe@example.com, my phone is 13812345678 and my card is 4111 1111 1111 1111."
    ),
    "long agent reply (600 chars), nothing": (
        "Sure. Try 'The Left Hand of Darkness'. It is short and strange, and the planet it is set on "
        "has winters that last for years. "
    )
    * 5,
    "long with digits (order numbers, times)": (
        "Your order 20261204 ships at 10:30, version 1.2.3, room 1024, about 42 people. " * 6
    ),
}


def per_call_us(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    print(f"{'text':<42} {'chars':>6} {'redact us':>10} {'payload us':>11}")
    for name, sentence in SENTENCES.items():
        payload = {"AppId": 1, "Event": "ASRResult", "Data": {"Round": 1, "Text": sentence, "UserId": "u"}}
        text_us = per_call_us(lambda s=sentence: redact(s, DEFAULT_RULES), args.calls)
        payload_us = per_call_us(lambda p=payload: redact_payload(p, DEFAULT_RULES), args.calls)
        print(f"{name:<42} {len(sentence):>6} {text_us:>10.1f} {payload_us:>11.1f}")


if __name__ == "__main__":
    main()

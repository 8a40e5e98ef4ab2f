"""The bad requests of the hostile-traffic scenario, written byte by byte, and their documented answers.

Raw HTTP/1.1 over asyncio streams rather than an HTTP client: most of these requests are ones no
client library will send (a Content-Length that lies, a body that is not UTF-8, headers dribbled
a byte at a time), and an attacker's request must cost the attacking process far less CPU than
the receiver spends refusing it, or the scenario measures the client instead of the receiver.

Each answer is classified as ``"<status> <code>"`` (``code``: the JSON ``error`` or ``status``
field; ``limit`` for uvicorn's own 503 past the connection limit, ``invalid_http`` for its 400 on
unparseable HTTP), or ``closed`` (the server ended the connection without a word), ``reset``, or
``hung`` (no answer and no close long after the receiver's budgets ran out).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from tests.factories import Signer
from worker.inbox.callbacks import MAX_DEPTH

# Every attacker callback names one of these instances, so a stored one is easy to find.
ATTACK_INSTANCE_PREFIX = "66600000000"
# uvicorn's own answers, not the application's: past ``limit_concurrency`` and on broken HTTP.
UVICORN_LIMIT_BODY = b"Service Unavailable"
UVICORN_INVALID_BODY = b"Invalid HTTP request received."
# What any request may get while connections are over the receiver's limit (documented: 503).
OVER_THE_LIMIT = "503 limit"


@dataclass(frozen=True, slots=True)
class BadRequest:
    """What the client sends and which answers are documented for it. The client then waits for
    the receiver to answer or close, whether or not the request was complete; ``dribble``: seconds
    between bytes (slowloris)."""

    kind: str
    data: bytes
    expected: frozenset[str]
    dribble: float = 0.0


@dataclass(slots=True)
class Budgets:
    """The receiver's limits the requests are sized against (its settings, as the stack runs it)."""

    max_body_bytes: int = 1024 * 1024
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    connection_limit: int = 1000

    def env(self) -> dict[str, str]:
        """The receiver's environment for these budgets, so that the stack runs with what the
        requests are sized against."""
        return {
            "ROOMWARDEN_MAX_BODY_BYTES": str(self.max_body_bytes),
            "ROOMWARDEN_HEADER_TIMEOUT_SECONDS": str(self.header_timeout_s),
            "ROOMWARDEN_BODY_TIMEOUT_SECONDS": str(self.body_timeout_s),
            "ROOMWARDEN_MAX_CONNECTIONS": str(self.connection_limit),
        }

    @property
    def patience_s(self) -> float:
        """How long to wait for an answer or a close before calling the receiver hung: well past
        every budget, so a busy machine is never mistaken for a hang."""
        return max(self.header_timeout_s, self.body_timeout_s) + 20.0


def request_bytes(body: bytes, *, content_type: str = "application/json", length: int | None = None) -> bytes:
    head = (
        "POST /callbacks/zego HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body) if length is None else length}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


def chunked_request(body: bytes, chunk: int = 64 * 1024) -> bytes:
    head = (
        b"POST /callbacks/zego HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    parts = [
        b"%x\r\n%s\r\n" % (len(body[i : i + chunk]), body[i : i + chunk]) for i in range(0, len(body), chunk)
    ]
    return head + b"".join(parts) + b"0\r\n\r\n"


@dataclass
class Arsenal:
    """Builds each kind of bad request; ``replays`` are valid callbacks the receiver stored, as
    an eavesdropper would have seen them go by."""

    signer: Signer
    budgets: Budgets
    rng: random.Random = field(default_factory=lambda: random.Random(15))
    replays: list[dict[str, Any]] = field(default_factory=list)

    def attacker_callback(self, **top: Any) -> dict[str, Any]:
        instance = ATTACK_INSTANCE_PREFIX + f"{self.rng.randrange(10**8):08d}"
        event = self.rng.choice(["ASRResult", "LLMResult", "AgentInstanceStatus", "AgentInstanceMetaInfo"])
        return self.signer.callback(event, instance=instance, sequence=self.rng.randrange(1, 10**6), **top)

    def builders(self) -> dict[str, Callable[[], BadRequest | None]]:
        return {
            "bad_signature": self.bad_signature,
            "stale_timestamp": self.stale_timestamp,
            "unknown_app": self.unknown_app,
            "missing_signature": self.missing_signature,
            "replayed_other_body": self.replayed_other_body,
            "replayed_same_body": self.replayed_same_body,
            "truncated_json": self.truncated_json,
            "oversized_body": self.oversized_body,
            "oversized_chunked": self.oversized_chunked,
            "length_beyond_limit": self.length_beyond_limit,
            "length_short_of_body": self.length_short_of_body,
            "oversized_headers": self.oversized_headers,
            "deeply_nested": self.deeply_nested,
            "non_utf8": self.non_utf8,
        }

    def bad_signature(self) -> BadRequest:
        payload = self.attacker_callback(Signature=secrets.token_hex(20))
        return BadRequest(
            "bad_signature", request_bytes(orjson.dumps(payload)), frozenset({"401 bad_signature"})
        )

    def stale_timestamp(self) -> BadRequest:
        """Correctly signed, but an hour old: a captured callback played back later."""
        payload = self.signer.resign(self.attacker_callback(), timestamp=int((time.time() - 3600) * 1000))
        return BadRequest(
            "stale_timestamp", request_bytes(orjson.dumps(payload)), frozenset({"401 stale_timestamp"})
        )

    def unknown_app(self) -> BadRequest:
        payload = Signer(app_id=3_141_592, secret="not-ours").callback("ASRResult", instance="66600000001")
        return BadRequest("unknown_app", request_bytes(orjson.dumps(payload)), frozenset({"401 unknown_app"}))

    def missing_signature(self) -> BadRequest:
        payload = self.attacker_callback()
        del payload["Signature"]
        return BadRequest(
            "missing_signature", request_bytes(orjson.dumps(payload)), frozenset({"401 missing_fields"})
        )

    def replayed_other_body(self) -> BadRequest | None:
        """A stored callback's signature (Nonce, Timestamp, Signature) on another body: the
        same stream with other words, or another stream altogether."""
        if not self.replays:
            return None
        payload = dict(self.rng.choice(self.replays))
        if self.rng.random() < 0.5:
            payload["Data"] = {**payload.get("Data", {}), "Text": "forged words", "Round": 1}
        else:
            payload["AgentInstanceId"] = ATTACK_INSTANCE_PREFIX + "00000002"
        return BadRequest(
            "replayed_other_body", request_bytes(orjson.dumps(payload)), frozenset({"401 replayed_signature"})
        )

    def replayed_same_body(self) -> BadRequest | None:
        """A stored callback sent again as it was: harmless, answered as the duplicate it is."""
        if not self.replays:
            return None
        payload = self.rng.choice(self.replays)
        return BadRequest(
            "replayed_same_body", request_bytes(orjson.dumps(payload)), frozenset({"200 duplicate"})
        )

    def truncated_json(self) -> BadRequest:
        """Validly signed, cut short: no strict prefix of a JSON object is JSON."""
        body = orjson.dumps(self.attacker_callback())
        cut = body[: self.rng.randrange(1, len(body))]
        return BadRequest("truncated_json", request_bytes(cut), frozenset({"400 malformed"}))

    def _big_body(self) -> bytes:
        text = "x" * (self.budgets.max_body_bytes + 1024)
        return orjson.dumps(self.attacker_callback(Data={"Round": 1, "Text": text}))

    def oversized_body(self) -> BadRequest:
        """Over the limit and saying so in Content-Length: refused from the header alone."""
        return BadRequest(
            "oversized_body", request_bytes(self._big_body()), frozenset({"413 body_too_large"})
        )

    def oversized_chunked(self) -> BadRequest:
        """Over the limit with no Content-Length at all: refused while it is read."""
        return BadRequest(
            "oversized_chunked", chunked_request(self._big_body()), frozenset({"413 body_too_large"})
        )

    def length_beyond_limit(self) -> BadRequest:
        """A Content-Length far beyond the limit on a small body."""
        body = orjson.dumps(self.attacker_callback())
        return BadRequest(
            "length_beyond_limit", request_bytes(body, length=10**12), frozenset({"413 body_too_large"})
        )

    def length_short_of_body(self) -> BadRequest:
        """A Content-Length that covers the start of the body only; the rest, over the limit, is
        what the server then takes for the next request on the connection."""
        body = self._big_body()
        return BadRequest(
            "length_short_of_body",
            request_bytes(body, length=self.rng.randrange(16, 256)),
            frozenset({"400 malformed"}),
        )

    def oversized_headers(self) -> BadRequest:
        """A megabyte of headers at full speed, well within the header time budget: what a slow
        client cannot do, a fast one must not do either (each header byte is held in memory)."""
        payload = self.attacker_callback(Signature=secrets.token_hex(20))
        body = orjson.dumps(payload)
        head = (
            b"POST /callbacks/zego HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"p" * 2**20 + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        )
        return BadRequest("oversized_headers", head + body, frozenset({"431 headers_too_large"}))

    def deeply_nested(self) -> BadRequest:
        """Validly signed, nested past MAX_DEPTH: just past it, past orjson's writer (254), past
        its reader (1,024), and as deep as fits under the size limit; objects or arrays."""
        room = (self.budgets.max_body_bytes - 1024) // 6  # the deepest that fits under the size limit
        depth = min(room, self.rng.choice([MAX_DEPTH + 1, 300, 5_000, 100_000]))
        opening, closing = (b'{"a":', b"}") if self.rng.random() < 0.5 else (b"[", b"]")
        payload = self.attacker_callback(Data={"Round": 1, "MetaInfo": "__deep__"})
        body = orjson.dumps(payload).replace(b'"__deep__"', opening * depth + b"1" + closing * depth)
        return BadRequest("deeply_nested", request_bytes(body), frozenset({"400 malformed"}))

    def non_utf8(self) -> BadRequest:
        """Validly signed bodies that are not UTF-8 (or carry an unpaired surrogate), as JSON, as
        form fields and as bare bytes; the percent-encoded form decodes leniently, so its copy
        carries no valid signature."""
        payload = self.attacker_callback(Data={"Round": 1, "Text": "__text__"})
        json_body = orjson.dumps(payload)
        variant = self.rng.randrange(5)
        if variant == 0:
            body = json_body.replace(b"__text__", b"caf\xe9 \xff\xfe")
        elif variant == 1:
            body = json_body.replace(b"__text__", b"\\ud800 alone")
        elif variant == 2:
            form = "&".join(f"{k}={v}" for k, v in payload.items() if not isinstance(v, dict))
            return BadRequest(
                "non_utf8",
                request_bytes(
                    form.encode() + b"&Data=\xff\xfe", content_type="application/x-www-form-urlencoded"
                ),
                frozenset({"400 malformed"}),
            )
        elif variant == 3:
            body = b"\xff\xfe" + secrets.token_bytes(200)
        else:
            unsigned = orjson.dumps({**payload, "Signature": secrets.token_hex(20)})
            quoted = "".join(f"%{byte:02X}" for byte in unsigned).encode().replace(b"__text__", b"%FF%FE")
            return BadRequest("non_utf8", request_bytes(quoted), frozenset({"401 bad_signature"}))
        return BadRequest("non_utf8", request_bytes(body), frozenset({"400 malformed"}))

    # --- Slow clients: each holds a connection until the receiver ends it. ---

    def slow_headers(self) -> BadRequest:
        head = b"POST /callbacks/zego HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Slow: " + b"a" * 4096
        pause = self.budgets.header_timeout_s / 8
        # Reset, not closed, when the next byte crosses the server's close (a write to a closed socket).
        return BadRequest("slowloris_headers", head, frozenset({"closed", "reset"}), dribble=pause)

    def silent(self) -> BadRequest:
        return BadRequest("slowloris_silent", b"", frozenset({"closed"}))

    def slow_body(self) -> BadRequest:
        body = orjson.dumps(self.attacker_callback())
        data = request_bytes(body, length=len(body) + 500)
        return BadRequest("slowloris_body", data, frozenset({"408 body_timeout"}))

    def beyond_limit(self) -> BadRequest:
        return BadRequest(
            "beyond_connection_limit", b"POST /callbacks/zego HTTP/1.1\r\nHo", frozenset({"closed"})
        )


def classify(said: bytes) -> str:
    """``"<status> <code>"`` for the first answer in ``said``; ``closed`` when there was none."""
    if not said:
        return "closed"
    line, _, rest = said.partition(b"\r\n")
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return "garbled"
    head, _, body = rest.partition(b"\r\n\r\n")
    length = _content_length(head)
    return describe(int(parts[1]), body if length is None else body[:length])


def describe(status: int, body: bytes) -> str:
    """An answer as ``"<status> <code>"``: the application's JSON ``error`` or ``status``, or which
    of uvicorn's own plain-text answers it is."""
    if body == UVICORN_LIMIT_BODY:
        return f"{status} limit"
    if body == UVICORN_INVALID_BODY:
        return f"{status} invalid_http"
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return f"{status} ?"
    code = (answer.get("error") or answer.get("status")) if isinstance(answer, dict) else None
    return f"{status} {code}"


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return int(value.strip())
    return None


async def exchange(host: str, port: int, request: BadRequest, patience_s: float) -> str:
    """Send ``request`` (while reading, so an early answer is never lost behind a blocked write)
    and classify what came back."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        return f"connect_failed {type(exc).__name__}"
    said = bytearray()

    async def send() -> None:
        with contextlib.suppress(OSError):
            if request.dribble:
                for index in range(len(request.data)):
                    writer.write(request.data[index : index + 1])
                    await writer.drain()
                    await asyncio.sleep(request.dribble)
            else:
                writer.write(request.data)
                await writer.drain()

    sending = asyncio.create_task(send())
    outcome: str | None = None
    try:
        async with asyncio.timeout(patience_s):
            while chunk := await reader.read(65536):
                said += chunk
                if _complete(said):
                    break
    except TimeoutError:
        outcome = "hung"
    except OSError:
        outcome = "reset" if not said else None
    finally:
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await sending
        writer.transport.abort()
    return outcome or classify(bytes(said))


def _complete(said: bytearray) -> bool:
    """Whether the first answer in ``said`` is whole (headers and Content-Length bytes of body)."""
    head_end = said.find(b"\r\n\r\n")
    if head_end < 0:
        return False
    length = _content_length(bytes(said[:head_end]))
    return length is not None and len(said) - head_end - 4 >= length

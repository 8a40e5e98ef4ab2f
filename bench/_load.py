"""A paced vendor: many live conversations sending signed ZEGO callbacks as a person would talk.

Each conversation is an agent instance whose callbacks are a pure function of (conversation,
position): AgentInstanceCreated, then rounds of the user's ASRResult, three LLMResult sentences
and an AgentInstanceStatus (every tenth round an Exception instead, an ASR code that no policy
acts on). Because a callback can be rebuilt from its position, nothing is kept per callback, and
the transcript a conversation must leave follows from how many of its callbacks were sent.

Bodies are built and signed when they are due rather than all beforehand: 10,000 conversations
over five minutes are about a million bodies (600 MB), while building one costs a few
microseconds (``Sender.cpu_seconds`` says how many in all). What a real ZEGO does that the
receiver must survive, at chosen rates:

- duplicates: the same bytes again 0.5-3 s later, as ZEGO's retries send them;
- reorders: a callback and the next one of its conversation swapped;
- lost answers: the request written and the connection dropped before the answer, then the
  same bytes again 2 s later (ZEGO's first retry);
- bad signatures: a copy of a callback with its Signature altered, which must be refused (401).

The sender is one asyncio loop (uvloop when installed) in a thread of its own, so that its CPU
can be told apart from the benchmark's other threads: it plays the vendor, not the system.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import _common as common
import orjson

PATH = "/callbacks/zego"
STEPS_PER_ROUND = 5  # ASRResult, LLMResult x 3, AgentInstanceStatus (or Exception)
SENTENCES_PER_REPLY = 3
EXCEPTION_EVERY = 10  # rounds: the round's last callback is an Exception instead of a status
EXCEPTION_CODE = 2101  # ASR family: the default policy ends nothing for it
TICK = 0.01  # seconds: the pacing's resolution, far below a conversation's seconds between callbacks
ANSWER_STORED = b'{"status":"stored"}'
ANSWER_DUPLICATE = b'{"status":"duplicate"}'


@dataclass(frozen=True)
class Faults:
    """Shares of callbacks sent with each fault (independently drawn per callback)."""

    duplicate: float = 0.10
    reorder: float = 0.05
    lost_answer: float = 0.005
    bad_signature: float = 0.002


# --------------------------------------------------------------------------- conversations


class Conversations:
    """The script of every conversation, and the transcript a sent prefix of it must leave."""

    def __init__(self, count: int, secret: str, seed: int) -> None:
        self.instances = common.instance_ids(count, random.Random(seed))
        self.secret = secret
        self._nonces = itertools.count(random.Random(seed + 1).randrange(10**12, 10**13) * 10**6)

    def event(self, index: int, position: int) -> tuple[str, dict[str, Any]]:
        """Callback ``position`` (0-based; its Sequence is position + 1) of conversation ``index``."""
        if position == 0:
            return "AgentInstanceCreated", {"CreatedTimestamp": int(time.time() * 1000)}
        round_, step = divmod(position - 1, STEPS_PER_ROUND)
        round_ += 1
        if step == 0:
            return "ASRResult", {
                "Round": round_,
                "Text": self.user_text(index, round_),
                "UserId": f"u{index}",
            }
        if step <= SENTENCES_PER_REPLY:
            return "LLMResult", {"Round": round_, "Text": self.agent_sentence(index, round_, step)}
        if round_ % EXCEPTION_EVERY == 0:
            return "Exception", {"Round": round_, "Code": EXCEPTION_CODE, "Message": "ASR general error"}
        return "AgentInstanceStatus", {"Round": round_, "Status": "LISTENING"}

    @staticmethod
    def user_text(index: int, round_: int) -> str:
        return (
            f"Caller {index}, question {round_}: {common.SENTENCES[(index + round_) % len(common.SENTENCES)]}"
        )

    @staticmethod
    def agent_sentence(index: int, round_: int, step: int) -> str:
        return (
            f"Answer {round_}.{step} to caller {index}: {common.SENTENCES[(index * 7 + round_ + step) % 6]}"
        )

    def body(self, index: int, position: int) -> bytes:
        event, data = self.event(index, position)
        instance = self.instances[index]
        nonce = str(next(self._nonces))
        timestamp = int(time.time() * 1000)
        suffix = instance[-6:]
        return orjson.dumps(
            {
                "AppId": common.APP_ID,
                "Event": event,
                "Nonce": nonce,
                "Timestamp": timestamp,
                "Signature": common.sign(self.secret, timestamp, nonce),
                "AgentInstanceId": instance,
                "AgentUserId": f"agent_user_{suffix}",
                "AgentId": "customer_service_agent_v2",
                "Name": "Customer Service Assistant",
                "RoomId": f"room_support_{suffix}",
                "Sequence": position + 1,
                "Data": data,
            }
        )

    def expected(self, index: int, sent: int) -> list[tuple[int, str, str]]:
        """(Round, speaker, text) in transcript order once callbacks 0..sent-1 are all applied.

        Built from the script alone, not with roomwarden's code: Latin sentences joined by one space.
        """
        turns: list[tuple[int, str, str]] = []
        for position in range(1, sent, STEPS_PER_ROUND):
            round_ = (position - 1) // STEPS_PER_ROUND + 1
            turns.append((round_, "user", self.user_text(index, round_)))
            said = [
                self.agent_sentence(index, round_, step)
                for step in range(1, SENTENCES_PER_REPLY + 1)
                if position + step < sent
            ]
            if said:
                turns.append((round_, "agent", " ".join(said)))
        return turns

    @staticmethod
    def exceptions(sent: int) -> int:
        """How many Exception callbacks are among positions 0..sent-1."""
        # Round r's last callback is at position STEPS_PER_ROUND * r.
        return max(0, sent - 1) // STEPS_PER_ROUND // EXCEPTION_EVERY


def signature_of(body: bytes) -> str:
    """The Signature of a body this module built (a fixed-width hex field, found without parsing)."""
    start = body.index(b'"Signature":"') + 13
    return body[start : start + 40].decode()


def with_bad_signature(body: bytes) -> bytes:
    sig = signature_of(body)
    forged = ("0" if sig[0] != "0" else "1") + sig[1:]
    return body.replace(sig.encode(), forged.encode(), 1)


# --------------------------------------------------------------------------- sending


@dataclass
class Counts:
    """What the receiver answered, for one phase of the load."""

    statuses: dict[int, int] = field(default_factory=dict)
    stored: int = 0
    duplicate: int = 0
    first_sends: int = 0
    duplicates_sent: int = 0
    reordered: int = 0
    lost_answers: int = 0
    bad_signatures: int = 0
    bad_signatures_refused: int = 0
    reconnects: int = 0
    latencies: list[float] = field(default_factory=list)
    first_ack: float = float("inf")
    last_ack: float = 0.0


# A queued request: (bytes, kind, signature to time or None). Kinds: "first", "again", "forged".
Request = tuple[bytes, str, str | None]


class Sender:
    """Keeps ``connections`` keep-alive connections to the receiver and sends what it is given.

    ``burst`` sends a list as fast as answered; ``paced`` runs every conversation at its own pace
    for a while. Acknowledgements of sampled callbacks are reported to ``on_ack(signature, t)``
    (``time.perf_counter``), from the sender's thread.
    """

    def __init__(
        self,
        port: int,
        conversations: Conversations,
        connections: int,
        faults: Faults,
        on_ack: Callable[[str, float], None],
        seed: int,
    ) -> None:
        self.port = port
        self.conv = conversations
        self.connections = connections
        self.faults = faults
        self.on_ack = on_ack
        self.rng = random.Random(seed)
        self.sent = [0] * len(conversations.instances)  # positions 0..sent-1 have been queued
        self.cpu_seconds = 0.0
        self.native_id: int | None = None  # the sending thread's, while one runs
        self.stored_total = 0  # answered "stored", every phase so far
        self._held: dict[int, int] = {}  # conversation -> position swapped behind the next one
        self._later: list[tuple[float, int, bytes]] = []  # (due, tiebreak, body): retries, duplicates
        self._tiebreak = itertools.count()
        self._counts = Counts()

    # -- the two ways to drive it, each run to completion in a thread of its own

    def burst(self, positions: Iterable[tuple[int, int]], sample: float) -> Counts:
        """Send callbacks (conversation, position), in order, unpaced and without faults."""
        todo = list(positions)
        return self._in_thread(self._burst(todo, sample))

    def paced(self, rate: float, seconds: float, sample: float) -> Counts:
        """Every conversation sends its next callback every ``len/rate`` s (jitter +-50%) for ``seconds``."""
        return self._in_thread(self._paced(rate, seconds, sample))

    @property
    def live(self) -> Counts:
        """The running phase's counts so far (read from another thread: plain integers, no lock)."""
        return self._counts

    def _in_thread(self, coro: Any) -> Counts:
        result: list[Counts] = []
        failure: list[BaseException] = []

        def run() -> None:
            self.native_id = threading.get_native_id()
            started = time.thread_time()
            try:
                try:
                    import uvloop

                    result.append(uvloop.run(coro))
                except ImportError:
                    result.append(asyncio.run(coro))
            except BaseException as exc:
                failure.append(exc)
            finally:
                self.cpu_seconds += time.thread_time() - started
                self.native_id = None

        thread = threading.Thread(target=run, name="vendor", daemon=True)
        thread.start()
        thread.join()
        if failure:
            raise failure[0]
        return result[0]

    async def _burst(self, todo: list[tuple[int, int]], sample: float) -> Counts:
        self._counts = Counts()
        queue: asyncio.Queue[Request | None] = asyncio.Queue()
        for index, position in todo:
            body = self.conv.body(index, position)
            self.sent[index] = max(self.sent[index], position + 1)
            self._counts.first_sends += 1
            queue.put_nowait((body, "first", signature_of(body) if self.rng.random() < sample else None))
        for _ in range(self.connections):
            queue.put_nowait(None)
        await asyncio.gather(*(self._connection(queue) for _ in range(self.connections)))
        return self._counts

    async def _paced(self, rate: float, seconds: float, sample: float) -> Counts:
        self._counts = Counts()
        count = len(self.sent)
        interval = count / rate
        queue: asyncio.Queue[Request | None] = asyncio.Queue()
        workers = [asyncio.ensure_future(self._connection(queue)) for _ in range(self.connections)]
        loop = asyncio.get_running_loop()
        start = loop.time()
        end = start + seconds
        due = [(start + self.rng.random() * interval, index) for index in range(count)]
        heapq.heapify(due)
        lost: set[asyncio.Future[None]] = set()
        while due and due[0][0] < end:
            now = loop.time()
            while due and due[0][0] <= now:
                when, index = heapq.heappop(due)
                self._next(index, queue, sample, lost)
                heapq.heappush(due, (when + interval * (0.5 + self.rng.random()), index))
            self._release_later(queue)
            # A fixed tick, not a wake-up per callback: 10,000 conversations are due every 0.5 ms
            # at 2,000/s, and waking for each would cost the vendor more than the sending.
            await asyncio.sleep(TICK)
        # The run is over: what is held back or waiting to be retried goes out now.
        for index, position in list(self._held.items()):
            queue.put_nowait(self._request(self.conv.body(index, position), "first", sample))
        self._held.clear()
        await asyncio.gather(*lost)
        self._release_later(queue, everything=True)
        for _ in workers:
            queue.put_nowait(None)
        await asyncio.gather(*workers)
        return self._counts

    def _next(
        self, index: int, queue: asyncio.Queue[Request | None], sample: float, lost: set[asyncio.Future[None]]
    ) -> None:
        """Conversation ``index``'s next callback, with whatever fault the dice pick."""
        if index in self._held:
            position = self._held.pop(index)
        else:
            position = self.sent[index]
            self.sent[index] += 1
            if position > 0 and self.rng.random() < self.faults.reorder:
                # Send the next one now and this one at the following turn.
                self._held[index] = position
                position = self.sent[index]
                self.sent[index] += 1
                self._counts.reordered += 1
        body = self.conv.body(index, position)
        roll = self.rng.random()
        now = time.monotonic()
        if roll < self.faults.lost_answer:
            self._counts.lost_answers += 1
            task = asyncio.ensure_future(self._lose(body))
            lost.add(task)
            task.add_done_callback(lost.discard)
            self._later_push(now + 2.0, body)
            return
        queue.put_nowait(self._request(body, "first", sample))
        if roll < self.faults.lost_answer + self.faults.duplicate:
            self._counts.duplicates_sent += 1
            self._later_push(now + 0.5 + 2.5 * self.rng.random(), body)
        if self.rng.random() < self.faults.bad_signature:
            self._counts.bad_signatures += 1
            queue.put_nowait((with_bad_signature(body), "forged", None))

    def _request(self, body: bytes, kind: str, sample: float) -> Request:
        self._counts.first_sends += kind == "first"
        return body, kind, signature_of(body) if self.rng.random() < sample else None

    def _later_push(self, due: float, body: bytes) -> None:
        heapq.heappush(self._later, (due, next(self._tiebreak), body))

    def _release_later(self, queue: asyncio.Queue[Request | None], *, everything: bool = False) -> None:
        moment = float("inf") if everything else time.monotonic()
        while self._later and self._later[0][0] <= moment:
            _, _, body = heapq.heappop(self._later)
            queue.put_nowait((body, "again", None))

    async def _lose(self, body: bytes) -> None:
        """Write the request and hang up before the answer: the receiver may or may not have it."""
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            writer.write(common.http_post(PATH, body))
            await writer.drain()
            writer.close()
        except OSError:
            pass

    async def _connection(self, queue: asyncio.Queue[Request | None]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        counts = self._counts
        try:
            while (item := await queue.get()) is not None:
                body, kind, sampled = item
                request = common.http_post(PATH, body)
                for attempt in itertools.count():
                    started = time.perf_counter()
                    try:
                        writer.write(request)
                        head = await reader.readuntil(b"\r\n\r\n")
                        length = 0
                        for line in head.split(b"\r\n"):
                            if line[:15].lower() == b"content-length:":
                                length = int(line[15:])
                        answer = await reader.readexactly(length) if length else b""
                        break
                    except (OSError, asyncio.IncompleteReadError):
                        # The receiver closed this connection (an idle timeout): reconnect, send again.
                        if attempt >= 5:
                            raise
                        counts.reconnects += 1
                        writer.close()
                        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                now = time.perf_counter()
                status = int(head[9:12])
                counts.statuses[status] = counts.statuses.get(status, 0) + 1
                counts.latencies.append(now - started)
                counts.first_ack = min(counts.first_ack, now)
                counts.last_ack = max(counts.last_ack, now)
                if kind == "forged":
                    counts.bad_signatures_refused += status == 401
                elif answer == ANSWER_STORED:
                    counts.stored += 1
                    self.stored_total += 1
                    if sampled is not None:
                        self.on_ack(sampled, now)
                elif answer == ANSWER_DUPLICATE:
                    counts.duplicate += 1
        finally:
            writer.close()

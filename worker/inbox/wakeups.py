"""One drain message per stream at a time: a mark in Redis says one is queued or being worked.

A drain message is a wake-up call for streams whose callbacks are stored. Without this, every
receiver publish and every sweep sent one whatever was already on its way: under load the
sweeper re-sent every stream pending over a few seconds (72k in one five-minute run) onto a
queue that was already long, and two pool processes drained the same streams at once, most of
their transactions finding nothing.

The mark is a Redis key per stream, shared by every receiver and worker host:

- whoever sends a message (a receiver's enqueuer, the sweeper, a drain handing its streams
  back) first sets the mark if absent (``claim``), and sends only for streams it marked; if the
  broker refuses the message it takes its marks away again (``unclaim``);
- a drain that takes a message deletes its marks (``release``) before it reads the streams: a
  callback stored after that sends a message of its own, one stored before is in the read. A
  quiet stream is done after one pass;
- a stream the drain finds busy it marks again with a short expiry (``taken``) and keeps while
  it loops, so what is stored meanwhile is picked up by that loop, not by a second message to
  the other pool process. Before it lets such a stream go it deletes the mark and then reads the
  stream's due callbacks once more: a callback stored while the mark was set sent no message,
  but it was committed before the mark went, so that read finds it.

Deleting a mark is always safe (at worst a message too many); keeping one is what could strand a
callback, so every mark expires: ``QUEUED_SECONDS`` for a message waiting in the queue (a message
lost with the broker) and ``TAKEN_SECONDS`` for a drain at work (a worker killed mid-drain, whose
message dies with it on a Redis broker). After that the sweeper, which skips marked streams,
sends the stream again. If Redis cannot be reached, marks fail open: every message is sent, as
before. Without a Redis (the embedded SQLite broker, RabbitMQ with no ``ROOMWARDEN_REDIS_URL``)
there are no marks at all.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import redis
import structlog

from worker.inbox.store import StreamKey
from worker.settings import Settings

log = structlog.get_logger(__name__)

# A queued message older than this is taken for lost: the sweeper and receivers send another.
# Longer than a healthy queue's wait, short enough that a lost message costs about a minute.
QUEUED_SECONDS = 60
# A drain works a message for one slice (drain.SLICE_SECONDS, 2 s) and a batch: a worker killed
# mid-drain leaves its streams to the sweeper after this.
TAKEN_SECONDS = 15

_PREFIX = "roomwarden:drain-queued:"
# A mark is an optimisation: a Redis that is slow to answer must not hold up a publish for long.
_SOCKET_SECONDS = 0.5


class Wakeups:
    """The marks of one deployment's streams; ``Wakeups(None)`` keeps none (every message is sent)."""

    def __init__(self, client: redis.Redis | None) -> None:
        self._client = client

    @property
    def enabled(self) -> bool:
        return self._client is not None

    def claim(self, streams: Sequence[StreamKey], *, seconds: int = QUEUED_SECONDS) -> list[StreamKey]:
        """Mark the streams that have no message on its way; returns them, the ones to send."""
        if self._client is None or not streams:
            return list(streams)
        try:
            pipe = self._client.pipeline(transaction=False)
            for stream in streams:
                pipe.set(_key(stream), b"q", nx=True, ex=seconds)
            answers = pipe.execute()
        except redis.RedisError as exc:
            _warn("claim", exc)
            return list(streams)
        return [stream for stream, marked in zip(streams, answers, strict=True) if marked]

    def taken(self, streams: Sequence[StreamKey]) -> None:
        """A drain keeps these busy streams: marked while it loops, for a short while only."""
        self._set(streams, TAKEN_SECONDS, "taken")

    def requeued(self, streams: Sequence[StreamKey]) -> None:
        """A drain hands streams it holds back to the queue: their mark becomes a queued one."""
        self._set(streams, QUEUED_SECONDS, "requeued")

    def release(self, streams: Sequence[StreamKey]) -> None:
        """Let the streams go: from now on a new callback sends a message. The caller reads the
        streams once more afterwards (what was stored while they were marked sent nothing)."""
        if self._client is None or not streams:
            return
        try:
            self._client.delete(*[_key(stream) for stream in streams])
        except redis.RedisError as exc:
            _warn("release", exc)  # the marks expire: the sweeper sends these streams then

    unclaim = release  # a message the broker did not take: its streams are not on their way

    def _set(self, streams: Sequence[StreamKey], seconds: int, what: str) -> None:
        if self._client is None or not streams:
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            for stream in streams:
                pipe.set(_key(stream), b"t", ex=seconds)
            pipe.execute()
        except redis.RedisError as exc:
            _warn(what, exc)


def _key(stream: StreamKey) -> str:
    return f"{_PREFIX}{stream[0]}:{stream[1]}"


def _warn(what: str, exc: redis.RedisError) -> None:
    log.warning("drain_marks_unavailable", step=what, error=f"{type(exc).__name__}: {exc}")


def marks_url(settings: Settings) -> str | None:
    """The Redis every receiver and worker shares: ``ROOMWARDEN_REDIS_URL``, else a Redis broker."""
    if settings.redis_url:
        return settings.redis_url
    return settings.broker_url if settings.broker_url.startswith(("redis://", "rediss://")) else None


def for_settings(settings: Settings) -> Wakeups:
    """This process's marks for the deployment ``settings`` describe (one connection pool each)."""
    return _for_url(marks_url(settings), os.getpid())


@functools.cache
def _for_url(url: str | None, pid: int) -> Wakeups:  # pid: never a pool inherited across a fork
    if url is None:
        return Wakeups(None)
    client = redis.Redis.from_url(url, socket_timeout=_SOCKET_SECONDS, socket_connect_timeout=_SOCKET_SECONDS)
    return Wakeups(client)

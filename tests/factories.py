"""Building ZEGO callbacks the way ZEGO sends them: every top-level field, signed."""

from __future__ import annotations

import itertools
import secrets
import time
from typing import Any

from worker.inbox.signatures import callback_signature

APP_ID = 1234567
CALLBACK_SECRET = "test-callback-secret-7f3a"
INSTANCE = "1912122918452641792"

# One realistic Data object per event type the vendor facts list (section 2).
EVENT_DATA: dict[str, dict[str, Any]] = {
    "ASRResult": {"UserId": "user_1", "Round": 650459806, "Text": "What's the weather like?"},
    "LLMResult": {"Round": 650459806, "Text": "It is sunny today."},
    "Exception": {"Code": 2203, "Message": "LLM authentication failed", "Round": 650459806},
    "Interrupted": {"Round": 650459806, "Reason": 1, "PlayedText": "It is"},
    "UserSpeakAction": {"UserId": "user_1", "Action": "SPEAK_BEGIN", "Round": 650459806},
    "AgentSpeakAction": {"Action": "SPEAK_BEGIN"},
    "AgentInstanceStatus": {"Status": "SPEAKING", "Round": 650459806},
    "UserAudioData": {
        "UserId": "user_1",
        "Round": 650459806,
        "SampleRate": 16000,
        "Format": "pcm",
        "Audio": "AAECAwQFBgcICQ==",
    },
    "AgentInstanceCreated": {"CreatedTimestamp": 1_745_000_000_000},
    "AgentInstanceDeleted": {
        "Code": 1202,
        "DeletedTimestamp": 1_745_000_100_000,
        "LatencyData": {"LLMTTFT": 300, "LLMTPS": 42.5, "TTSAudioFirstFrameTime": 200, "TotalCost": 800},
    },
    "AgentInstanceMetaInfo": {"Round": 650459806, "MetaInfo": {"emotion": "happy"}},
}


class Signer:
    """Makes signed callbacks with rising Sequence numbers, as one agent instance would send them."""

    def __init__(self, app_id: int = APP_ID, secret: str = CALLBACK_SECRET) -> None:
        self.app_id = app_id
        self.secret = secret
        self._sequence = itertools.count(1)

    def callback(
        self,
        event: str,
        data: dict[str, Any] | None = None,
        *,
        instance: str = INSTANCE,
        sequence: int | None = None,
        timestamp: int | None = None,
        with_sequence: bool = True,
        **top: Any,
    ) -> dict[str, Any]:
        ts = timestamp if timestamp is not None else int(time.time() * 1000)
        nonce = secrets.token_hex(8)
        payload: dict[str, Any] = {
            "AppId": self.app_id,
            "Event": event,
            "Nonce": nonce,
            "Timestamp": ts,
            "Signature": callback_signature(self.secret, ts, nonce),
            "AgentInstanceId": instance,
            "AgentUserId": "agent_1",
            "AgentId": "weather-bot",
            "Name": "Weather bot",
            "RoomId": "room_1",
            "Data": dict(EVENT_DATA.get(event, {}) if data is None else data),
        }
        if with_sequence:
            payload["Sequence"] = sequence if sequence is not None else next(self._sequence)
        payload.update(top)
        return payload

    def resign(self, payload: dict[str, Any], *, timestamp: int | None = None) -> dict[str, Any]:
        """The same callback as a retry would carry it: new nonce and timestamp, new signature."""
        ts = timestamp if timestamp is not None else int(time.time() * 1000)
        nonce = secrets.token_hex(8)
        return {
            **payload,
            "Nonce": nonce,
            "Timestamp": ts,
            "Signature": callback_signature(self.secret, ts, nonce),
        }


class RoomSigner:
    """Makes signed RTC room callbacks (vendor facts 3.1) as ZEGO sends them for one room: string
    values, ``timestamp`` in seconds, ``user_update_seq`` rising per user, ``stream_seq`` per stream."""

    def __init__(self, room_id: str = "room_1", app_id: int = APP_ID, secret: str = CALLBACK_SECRET) -> None:
        self.room_id, self.app_id, self.secret = room_id, app_id, secret
        self._user_seq: dict[str, int] = {}
        self._stream_seq: dict[str, int] = {}
        self._login: dict[str, tuple[str, int]] = {}

    def _signed(self, event: str, fields: dict[str, Any]) -> dict[str, Any]:
        ts, nonce = int(time.time()), secrets.token_hex(8)
        return {
            "event": event,
            "appid": str(self.app_id),
            "timestamp": str(ts),
            "nonce": nonce,
            "signature": callback_signature(self.secret, ts, nonce),
            "room_id": self.room_id,
            **fields,
        }

    def _next_user_seq(self, user: str) -> str:
        self._user_seq[user] = self._user_seq.get(user, 0) + 1
        return str(self._user_seq[user])

    def login(self, user: str = "user_1", *, at_ms: int | None = None) -> dict[str, Any]:
        at = at_ms if at_ms is not None else int(time.time() * 1000)
        session = secrets.token_hex(6)
        self._login[user] = (session, at)
        return self._signed(
            "room_login",
            {
                "room_name": self.room_id,
                "room_seq": "7301",
                "user_account": user,
                "user_nickname": user,
                "session_id": session,
                "login_time": str(at),
                "user_role": "1",
                "auth_level": "1",
                "relogin": "0",
                "user_update_seq": self._next_user_seq(user),
                "callback_data": "",
                "term_type": "6",
            },
        )

    def logout(self, user: str = "user_1", *, at_ms: int | None = None, reason: str = "0") -> dict[str, Any]:
        at = at_ms if at_ms is not None else int(time.time() * 1000)
        session, login_at = self._login.get(user, ("", 0))
        return self._signed(
            "room_logout",
            {
                "room_seq": "7301",
                "user_account": user,
                "user_nickname": user,
                "session_id": session,
                "login_time": str(login_at),
                "logout_time": str(at),
                "reason": reason,
                "user_role": "1",
                "user_update_seq": self._next_user_seq(user),
            },
        )

    def stream(
        self, event: str, stream_id: str, user: str = "user_1", *, at_ms: int | None = None
    ) -> dict[str, Any]:
        """``stream_create`` or ``stream_close`` of ``user``'s stream."""
        at = at_ms if at_ms is not None else int(time.time() * 1000)
        self._stream_seq[stream_id] = self._stream_seq.get(stream_id, 0) + 1
        times = (
            {"create_time": str(at // 1000), "create_time_ms": str(at)}
            if event == "stream_create"
            else {"type": "0", "create_time_ms": str(at), "destroy_timemillis": str(at)}
        )
        return self._signed(
            event,
            {
                "room_session_id": "7301",
                "user_id": user,
                "user_name": user,
                "channel_id": "0",
                "stream_id": stream_id,
                "stream_sid": f"s-{stream_id}",
                "stream_alias": "",
                "stream_seq": str(self._stream_seq[stream_id]),
                **times,
            },
        )

    def resign(self, payload: dict[str, Any]) -> dict[str, Any]:
        """ZEGO's retry of the same callback: new nonce and timestamp, new signature."""
        ts, nonce = int(time.time()), secrets.token_hex(8)
        signature = callback_signature(self.secret, ts, nonce)
        return {**payload, "timestamp": str(ts), "nonce": nonce, "signature": signature}


def ingest_rtc(db: Any, payloads: list[dict[str, Any]]) -> list[str]:
    """Store room callbacks in the inbox as the receiver would."""
    import orjson

    from worker.db import utcnow
    from worker.inbox.callbacks import payload_hash
    from worker.inbox.rtc_callbacks import as_inbox_callback, parse_rtc_event
    from worker.inbox.store import NewCallback, store_batch

    items = [
        NewCallback(
            as_inbox_callback(p, parse_rtc_event(p)), orjson.dumps(p).decode(), "json", payload_hash(p)
        )
        for p in payloads
    ]
    return list(store_batch(db.connection(), items, received_at=utcnow()))


def ingest(db: Any, payloads: list[dict[str, Any]]) -> list[str]:
    """Store callbacks in the inbox as the receiver would (same function, same transaction rules)."""
    import orjson

    from worker.db import utcnow
    from worker.inbox.callbacks import Callback, payload_hash
    from worker.inbox.store import NewCallback, store_batch

    items = []
    for payload in payloads:
        body = orjson.dumps(payload)
        items.append(
            NewCallback(Callback.from_payload(payload), body.decode(), "json", payload_hash(payload))
        )
    return list(store_batch(db.connection(), items, received_at=utcnow()))


def apply_pending(db: Any, settings: Any, *, instance: str = INSTANCE, app_id: int = APP_ID) -> int:
    """Drain one stream until nothing is left, as the worker's task does."""
    from worker.inbox.drain import drain_stream

    applied = 0
    while True:
        result = drain_stream(db, app_id=app_id, agent_instance_id=instance, settings=settings)
        applied += result.applied
        if not result.more:
            return applied


# --- Posting callbacks to the receiver, and reading back what it stored. ---

BODY_FORMS = ("json", "percent-encoded", "form")


def encode_body(payload: dict[str, Any], form: str = "json") -> bytes:
    """A payload as ZEGO may post it: plain JSON, percent-encoded JSON, or a form with Data as JSON."""
    import json
    import urllib.parse

    if form == "json":
        return json.dumps(payload).encode()
    if form == "percent-encoded":
        return urllib.parse.quote(json.dumps(payload)).encode()
    if form == "form":
        fields = {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in payload.items()}
        return urllib.parse.urlencode(fields).encode()
    raise ValueError(f"unknown body form {form!r}")


def content_type(form: str = "json") -> str:
    return "application/x-www-form-urlencoded" if form == "form" else "application/json"


def inbox_rows(engine: Any) -> list[Any]:
    """Every row of the ``inbox`` table, oldest first, read in a fresh session."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from worker.models import InboxCallback

    with Session(engine) as db:
        return list(db.scalars(select(InboxCallback).order_by(InboxCallback.id)))


def changed(settings: Any, **changes: Any) -> Any:
    """A copy of ``settings`` with ``changes`` validated as the environment's would be (tokens
    become SecretStr, JSON strings dicts), unlike ``model_copy``, which stores them as given."""
    return type(settings)(**{**settings.model_dump(), **changes}, _env_file=None)


def receiver_client(settings: Any, *, raise_server_exceptions: bool = True, **changes: Any) -> Any:
    """A TestClient (use it as a context manager) on a fresh app built from a copy of ``settings``."""
    from starlette.testclient import TestClient

    from webhooks.app import create_app

    return TestClient(
        create_app(changed(settings, **changes)), raise_server_exceptions=raise_server_exceptions
    )

"""ZEGO's RTC room callbacks as the RTC service sends them (vendor facts 3.1).

``room_login`` and ``room_logout`` for every user of a room (end users and agents alike; a
receiver picks its own), ``stream_create`` and ``stream_close`` for the streams end users
publish. Fields are lower_snake_case and nearly all values strings; ``timestamp`` is in seconds
(the AI Agent's is in ms); the signature is the same sha1 over the sorted callback secret,
timestamp and nonce. ``user_update_seq`` rises by one per login or logout of a user in a room and
``stream_seq`` per create or close of a stream: what a receiver orders by, since delivery (the
same lanes, retries and faults as the AI Agent's callbacks, one lane per room, in
``emulator.zego_callbacks``) may reorder them.

Which app a room belongs to: ZEGO's RTC rooms live in one app, the emulator's rooms in none, so
the app of an agent instance in the room is taken, else the smallest configured app (the
emulator's usual single app).
"""

from __future__ import annotations

import secrets
import zlib
from dataclasses import dataclass, field

from emulator.clock import Clock
from emulator.config import EmulatorConfig
from emulator.zego_callbacks import CallbackSender, callback_signature

# room_logout reasons (vendor facts 3.1) and the stream_close type that goes with each.
NORMAL, HEARTBEAT, KICKED = "0", "1", "3"
_CLOSE_TYPE = {NORMAL: "0", HEARTBEAT: "1", KICKED: "3"}


@dataclass
class _Visit:
    session_id: str
    login_ms: int
    stream_id: str | None = None


@dataclass
class RoomCallbacks:
    config: EmulatorConfig
    clock: Clock
    sender: CallbackSender
    user_seq: dict[tuple[str, str], int] = field(default_factory=dict)
    stream_seq: dict[tuple[str, str], int] = field(default_factory=dict)
    visits: dict[tuple[str, str], _Visit] = field(default_factory=dict)

    def login(self, app_id: int | None, room_id: str, user_id: str, stream_id: str | None = None) -> None:
        """A login (a relogin when already in), then the user's stream if they publish a new one."""
        key = (room_id, user_id)
        before = self.visits.get(key)
        visit = _Visit(secrets.token_hex(8), self.clock.now_ms(), before.stream_id if before else None)
        self.visits[key] = visit
        self._send(
            app_id,
            "room_login",
            room_id,
            {
                "room_name": room_id,
                "room_seq": _room_seq(room_id),
                "user_account": user_id,
                "user_nickname": user_id,
                "session_id": visit.session_id,
                "login_time": str(visit.login_ms),
                "user_role": "1",
                "auth_level": "1",
                "relogin": "1" if before is not None else "0",
                "user_update_seq": self._next(self.user_seq, key),
                "callback_data": "",
                "term_type": "6",
            },
        )
        if stream_id and stream_id != visit.stream_id:
            if visit.stream_id:
                self._stream_close(app_id, room_id, user_id, visit.stream_id, NORMAL)
            visit.stream_id = stream_id
            self._stream_create(app_id, room_id, user_id, stream_id)

    def logout(self, app_id: int | None, room_id: str, user_id: str, reason: str = NORMAL) -> None:
        """The user's stream closes, then the logout (as ZEGO tears a leaving user down)."""
        visit = self.visits.pop((room_id, user_id), None)
        if visit is None:
            return
        if visit.stream_id:
            self._stream_close(app_id, room_id, user_id, visit.stream_id, reason)
        self._send(
            app_id,
            "room_logout",
            room_id,
            {
                "room_seq": _room_seq(room_id),
                "user_account": user_id,
                "user_nickname": user_id,
                "session_id": visit.session_id,
                "login_time": str(visit.login_ms),
                "logout_time": str(self.clock.now_ms()),
                "reason": reason,
                "user_role": "1",
                "user_update_seq": self._next(self.user_seq, (room_id, user_id)),
            },
        )

    def _stream_create(self, app_id: int | None, room_id: str, user_id: str, stream_id: str) -> None:
        now = self.clock.now_ms()
        self._send(
            app_id,
            "stream_create",
            room_id,
            {
                **self._stream_fields(room_id, user_id, stream_id),
                "title": "",
                "stream_attr": '{"cid":0}',
                "create_time": str(now // 1000),
                "create_time_ms": str(now),
                "extra_info": "",
                "recreate": "0",
                "publish_id": "",
                "publish_name": "",
            },
        )

    def _stream_close(self, app_id: int | None, room_id: str, user_id: str, stream_id: str, why: str) -> None:
        now = self.clock.now_ms()
        self._send(
            app_id,
            "stream_close",
            room_id,
            {
                **self._stream_fields(room_id, user_id, stream_id),
                "type": _CLOSE_TYPE.get(why, "0"),
                "third_define_data": "",
                "create_time_ms": str(now),
                "destroy_timemillis": str(now),
            },
        )

    def _stream_fields(self, room_id: str, user_id: str, stream_id: str) -> dict[str, str]:
        return {
            "room_session_id": _room_seq(room_id),
            "user_id": user_id,
            "user_name": user_id,
            "channel_id": "0",
            "stream_id": stream_id,
            "stream_sid": f"s-{stream_id}",
            "stream_alias": "",
            "stream_seq": self._next(self.stream_seq, (room_id, stream_id)),
        }

    def _send(self, app_id: int | None, event: str, room_id: str, fields: dict[str, str]) -> None:
        app = app_id if app_id is not None else min(self.config.zego_apps, default=None)
        if app is None:
            return  # no ZEGO app configured: nobody to sign for
        secret = self.config.zego_apps[app].callback_secret
        timestamp = int(self.clock.now_s())
        nonce = str(secrets.randbelow(9 * 10**18) + 10**18)
        body = {
            "event": event,
            "appid": str(app),
            "timestamp": str(timestamp),
            "nonce": nonce,
            "signature": callback_signature(secret, timestamp, nonce),
            "room_id": room_id,
            **fields,
        }
        self.sender.emit_room(room_id, event, body)

    @staticmethod
    def _next(counters: dict[tuple[str, str], int], key: tuple[str, str]) -> str:
        counters[key] = counters.get(key, 0) + 1
        return str(counters[key])


def _room_seq(room_id: str) -> str:
    """ZEGO's room session id, stable per room name here (a real room gets a new one per life)."""
    return str(zlib.crc32(room_id.encode()))

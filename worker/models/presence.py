"""Who is in which RTC room, folded from ZEGO's room callbacks (worker/sessions/rooms.py).

One row per user per room, kept apart from sessions: a user often logs in before the agent is
created, and the callbacks that say so must not be lost for want of a session to hold them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, Boolean, String
from sqlalchemy.orm import Mapped, mapped_column

from worker.db import Base, JSONType, UTCDateTime


class RoomUser(Base):
    __tablename__ = "room_users"

    app_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    room_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    present: Mapped[bool] = mapped_column(Boolean, default=False)
    # ZEGO's user_update_seq of the login or logout the state comes from: a lower one is stale.
    user_seq: Mapped[int] = mapped_column(BigInteger, default=-1)
    zego_session_id: Mapped[str | None] = mapped_column(String(64))
    login_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    absent_since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    logout_reason: Mapped[str | None] = mapped_column(String(8))
    stream_id: Mapped[str | None] = mapped_column(String(128))
    stream_seq: Mapped[int] = mapped_column(BigInteger, default=-1)
    # When that stream was created, or the last one closed: orders two streams' callbacks.
    stream_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Every login and logout heard, as [user_update_seq, "in" | "out", at_ms], by seq: the billed
    # absence is summed from these, so a late logout still counts once it arrives.
    changes: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

"""A seeded set of realistic conversations, Chinese and English, for the analyst views' tests.

Every session is built the way production builds it: signed ZEGO callbacks stored in the inbox
and drained by the worker's own code. ``SEEDS`` is the plan, kept as plain data so that a test
can compute what it expects (which sessions a filter finds, a median duration, a p90) from the
plan itself, independently of the code under test.

Use ``seed(db, settings)`` inside the rolled-back ``db`` fixture, or ``seed_committed`` for tests
whose code reads through its own connections (the API, the CLI, a page).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from tests.factories import APP_ID, CALLBACK_SECRET, Signer, apply_pending, ingest
from worker.models import Session
from worker.sessions.lifecycle import session_id_for
from worker.settings import Settings

OTHER_APP_ID = 7654321
DAY = dt.datetime(2026, 11, 16, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Round:
    user: str
    agent: list[str]  # LLMResult sentences, in order
    # How long the user spoke, and how long after SPEAK_END the first LLMResult came (the
    # response time roomwarden measures).
    speech_ms: int = 1200
    response_ms: int = 900
    # What the user heard before cutting the agent off; None when the agent finished.
    played: str | None = None
    exception: tuple[int, str] | None = None  # (Code, Message) during this Round


@dataclass(frozen=True)
class Seed:
    key: str  # AgentInstanceId
    app_id: int
    room_id: str
    user_id: str
    agent_id: str
    start: dt.datetime
    rounds: list[Round]
    # None: still live (no AgentInstanceDeleted yet).
    delete_code: int | None = 0
    latency: dict[str, float] = field(default_factory=dict)
    # Set on the row afterwards, as if the session had been started through the API.
    provider: str | None = None
    template: str | None = None
    round_gap_ms: int = 4000  # from one Round's SPEAK_BEGIN to the next

    @property
    def session_id(self) -> str:
        return session_id_for(self.app_id, self.key)

    @property
    def started_at(self) -> dt.datetime:
        return self.start

    @property
    def ended_at(self) -> dt.datetime | None:
        return None if self.delete_code is None else self.start + dt.timedelta(milliseconds=self.length_ms)

    @property
    def length_ms(self) -> int:
        return 2000 + len(self.rounds) * self.round_gap_ms + 3000

    @property
    def duration_seconds(self) -> float | None:
        return None if self.delete_code is None else self.length_ms / 1000

    @property
    def turns(self) -> int:
        return 2 * len(self.rounds)

    @property
    def interrupted(self) -> bool:
        return any(r.played is not None for r in self.rounds)

    @property
    def exceptions(self) -> list[tuple[int, str]]:
        return [r.exception for r in self.rounds if r.exception is not None]

    def round_number(self, index: int) -> int:
        return 1000 + 7 * index


def _at(moment: dt.datetime, ms: int = 0) -> int:
    return int(moment.timestamp() * 1000) + ms


def callbacks(seed: Seed) -> list[dict[str, Any]]:
    """The callbacks ZEGO would send for one seeded session, signed, Sequence rising."""
    signer = Signer(seed.app_id, CALLBACK_SECRET)
    top = {"instance": seed.key, "AgentUserId": f"agent_{seed.user_id}", "AgentId": seed.agent_id}
    top["RoomId"] = seed.room_id
    base = _at(seed.start)
    script: list[tuple[int, str, dict[str, Any]]] = [(0, "AgentInstanceCreated", {"CreatedTimestamp": base})]
    for i, r in enumerate(seed.rounds):
        n = seed.round_number(i)
        t = 2000 + i * seed.round_gap_ms
        end = t + r.speech_ms
        out = end + r.response_ms
        script += [
            (t, "UserSpeakAction", {"UserId": seed.user_id, "Action": "SPEAK_BEGIN", "Round": n}),
            (end, "UserSpeakAction", {"UserId": seed.user_id, "Action": "SPEAK_END", "Round": n}),
            (end + 80, "ASRResult", {"UserId": seed.user_id, "Round": n, "Text": r.user}),
            (end + 100, "AgentInstanceStatus", {"Status": "THINKING", "Round": n}),
        ]
        script += [(out + 150 * j, "LLMResult", {"Round": n, "Text": s}) for j, s in enumerate(r.agent)]
        script.append((out + 120, "AgentInstanceStatus", {"Status": "SPEAKING", "Round": n}))
        if r.exception is not None:
            code, message = r.exception
            script.append((out + 200, "Exception", {"Code": code, "Message": message, "Round": n}))
        if r.played is not None:
            script.append((out + 1500, "Interrupted", {"Round": n, "Reason": 1, "PlayedText": r.played}))
        script.append((out + 1600, "AgentInstanceStatus", {"Status": "IDLE", "Round": n}))
    if seed.delete_code is not None:
        script.append(
            (
                seed.length_ms,
                "AgentInstanceDeleted",
                {
                    "Code": seed.delete_code,
                    "DeletedTimestamp": base + seed.length_ms,
                    "LatencyData": seed.latency,
                },
            )
        )
    return [
        signer.callback(event, data, sequence=10 + i, timestamp=base + offset, **top)
        for i, (offset, event, data) in enumerate(script)
    ]


def _latency(ttft: float, first_frame: float, cost: float) -> dict[str, float]:
    return {"LLMTTFT": ttft, "LLMTPS": 40.0, "TTSAudioFirstFrameTime": first_frame, "TotalCost": cost}


def _day(n: int, hour: int, minute: int = 0) -> dt.datetime:
    return DAY + dt.timedelta(days=n, hours=hour, minutes=minute)


SEEDS: list[Seed] = [
    Seed(
        key="inst-zh-refund",
        app_id=APP_ID,
        room_id="room-shop-1",
        user_id="u-li",
        agent_id="support-bot",
        start=_day(0, 9),
        rounds=[
            Round("你好，我想申请退款", ["您好！", "请问是哪一笔订单需要退款？"], response_ms=820),
            Round(
                "订单号是二零二六一一",
                ["好的，已查到您的订单。", "退款将在三个工作日内到账。"],
                response_ms=1040,
            ),
            Round("谢谢你", ["不客气，祝您生活愉快！"], response_ms=610),
        ],
        latency=_latency(310, 220, 900),
        template="support-zh",
        provider="zego",
    ),
    Seed(
        key="inst-en-weather",
        app_id=APP_ID,
        room_id="room-home-2",
        user_id="u-amy",
        agent_id="weather-bot",
        start=_day(0, 10, 30),
        rounds=[
            Round(
                "What's the weather like in Shanghai tomorrow?",
                ["Tomorrow in Shanghai:", "light rain, 14 degrees."],
                response_ms=700,
            ),
            Round(
                "Should I take an umbrella?",
                ["Yes, take an umbrella,", "the rain starts around noon and lasts into the evening."],
                response_ms=950,
                played="Yes, take an umbrella,",
            ),
            Round("Thanks, that's all", ["You're welcome, stay dry!"], response_ms=640),
        ],
        latency=_latency(280, 190, 760),
    ),
    Seed(
        key="inst-zh-absent",
        app_id=APP_ID,
        room_id="room-shop-3",
        user_id="u-wang",
        agent_id="support-bot",
        start=_day(0, 14),
        rounds=[Round("查一下我的快递到哪里了", ["您的快递已到达上海转运中心。"], response_ms=1300)],
        delete_code=1202,
        latency=_latency(450, 300, 1200),
        template="support-zh",
        provider="zego",
    ),
    Seed(
        key="inst-en-booking",
        app_id=APP_ID,
        room_id="room-hotel-4",
        user_id="u-bob",
        agent_id="concierge",
        start=_day(1, 8, 15),
        rounds=[
            Round(
                "I'd like to book a table for two tonight",
                ["Of course.", "What time would you like?"],
                response_ms=560,
            ),
            Round(
                "Around seven thirty",
                ["I have seven thirty by the window.", "Shall I book it?"],
                response_ms=880,
            ),
            Round(
                "Yes please, and add a birthday cake",
                ["Booked for seven thirty,", "and the pastry chef will prepare a birthday cake for you."],
                response_ms=1500,
                played="Booked for seven thirty,",
            ),
            Round("Perfect, thank you", ["Enjoy your evening!"], response_ms=500),
        ],
        latency=_latency(240, 170, 650),
        template="concierge-en",
        provider="zego_digital_human",
    ),
    Seed(
        key="inst-zh-tts-errors",
        app_id=APP_ID,
        room_id="room-shop-5",
        user_id="u-zhao",
        agent_id="support-bot",
        start=_day(1, 11),
        rounds=[
            Round(
                "我的会员什么时候到期",
                ["您的会员将于下个月五号到期。"],
                response_ms=900,
                exception=(2301, "TTS general error"),
            ),
            Round(
                "能帮我续费吗",
                ["可以的，", "续费一年需要一百九十八元，", "确认续费吗？"],
                response_ms=1150,
                played="可以的，续费一年",
                exception=(2301, "TTS general error"),
            ),
        ],
        delete_code=1205,
        latency=_latency(520, 410, 1500),
        template="support-zh",
        provider="zego",
    ),
    Seed(
        key="inst-en-llm-auth",
        app_id=OTHER_APP_ID,
        room_id="room-bank-6",
        user_id="u-carol",
        agent_id="bank-assistant",
        start=_day(1, 16, 45),
        rounds=[
            Round(
                "What is my account balance?",
                ["Let me check that for you."],
                response_ms=2100,
                exception=(2203, "LLM authentication failed"),
            ),
        ],
        delete_code=0,
        latency=_latency(900, 350, 2600),
    ),
    Seed(
        key="inst-zh-hotel",
        app_id=OTHER_APP_ID,
        room_id="room-hotel-7",
        user_id="u-chen",
        agent_id="concierge",
        start=_day(2, 7, 50),
        rounds=[
            Round("请帮我预订明天早上的叫醒服务", ["好的，", "请问几点叫醒您？"], response_ms=760),
            Round("六点半", ["已为您设置明早六点半的叫醒服务。"], response_ms=690),
            Round(
                "再帮我叫一辆去机场的出租车",
                ["没问题，", "出租车将在七点十分到酒店大堂等候，", "车牌号稍后发送到您的手机。"],
                response_ms=1220,
                played="没问题，出租车将在七点十分",
            ),
            Round("好的", ["祝您旅途愉快！"], response_ms=530),
            Round("再见", ["再见！"], response_ms=480),
        ],
        latency=_latency(300, 200, 820),
        template="concierge-zh",
        provider="zego_digital_human",
    ),
    Seed(
        key="inst-en-support-live",
        app_id=APP_ID,
        room_id="room-help-8",
        user_id="u-dan",
        agent_id="support-bot",
        start=_day(2, 12),
        rounds=[
            Round(
                "My router keeps dropping the connection",
                ["Sorry to hear that.", "Have you tried restarting it?"],
                response_ms=870,
            ),
            Round("Yes, twice already", ["Then let's check the firmware version."], response_ms=990),
        ],
        delete_code=None,
    ),
    Seed(
        key="inst-en-short",
        app_id=APP_ID,
        room_id="room-home-9",
        user_id="u-amy",
        agent_id="weather-bot",
        start=_day(2, 18, 5),
        rounds=[
            Round(
                "Is it going to snow this weekend?",
                ["No snow, but it will be cold: minus two on Sunday."],
                response_ms=600,
            )
        ],
        delete_code=1202,
        latency=_latency(260, 180, 700),
    ),
    Seed(
        key="inst-zh-asr-error",
        app_id=APP_ID,
        room_id="room-shop-10",
        user_id="u-sun",
        agent_id="support-bot",
        start=_day(2, 20, 30),
        rounds=[
            Round(
                "我要投诉物流太慢",
                ["非常抱歉给您带来不便。", "我已经为您加急处理。"],
                response_ms=1010,
                exception=(2101, "ASR general error"),
            ),
            Round("多久能到", ["预计明天下午送达。"], response_ms=730),
        ],
        delete_code=0,
        latency=_latency(350, 240, 980),
        template="support-zh",
        provider="zego",
    ),
]


def seed(db: DbSession, settings: Settings, seeds: list[Seed] = SEEDS) -> list[Seed]:
    """Ingest and drain every seeded session; set provider and template on those 'started by API'."""
    for s in seeds:
        ingest(db, callbacks(s))
        apply_pending(db, settings, instance=s.key, app_id=s.app_id)
    for s in seeds:
        if s.provider is None and s.template is None:
            continue
        row = db.scalars(select(Session).where(Session.id == s.session_id)).one()
        row.provider, row.template = s.provider, s.template
    db.flush()
    return seeds


def seed_committed(factory: Any, settings: Settings, seeds: list[Seed] = SEEDS) -> list[Seed]:
    """The same, committed, for code that reads through its own connection."""
    with factory() as db:
        seed(db, settings, seeds)
        db.commit()
    return seeds


def by_key(seeds: list[Seed]) -> Iterator[tuple[str, Seed]]:
    return ((s.session_id, s) for s in seeds)

"""The emulator's conversations: the order of a round's callbacks, interruptions, API-driven rounds, scripts.

Callbacks are read the way a receiver reads them, over real HTTP, ordered by Sequence. Rounds are
written as N, M, ... in the order they first appear, so the expected flows read like the vendor's.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import time
from collections.abc import Iterator
from typing import Any

import pytest

from emulator import Emulator
from emulator.zego_conversation import InstanceNotRunning, join_sentences, split_sentences
from emulator.zego_world import Instance, World
from tests.emulator.test_callbacks import Receiver, eventually, new_instance, run, running_world, verify
from tests.emulator_fixture import ZegoApi, emulator_config, instance_body, register_agent, wait_for
from tests.factories import CALLBACK_SECRET

LABELS = "NMPQRSTUVW"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def of(receiver: Receiver, instance: Instance) -> list[dict[str, Any]]:
    bodies = [b for b in receiver.bodies() if b["AgentInstanceId"] == instance.agent_instance_id]
    return sorted(bodies, key=lambda b: b["Sequence"])


def flow(
    receiver: Receiver, instance: Instance, *, skip: tuple[str, ...] = ("AgentInstanceCreated",)
) -> list[str]:
    """Callbacks as short labels, e.g. ``SPEAK_BEGIN N``, ``THINKING N``, ``Interrupted N 1``."""
    names: dict[int, str] = {}
    out = []
    for body in of(receiver, instance):
        event, data = body["Event"], body["Data"]
        if event in skip:
            continue
        round_ = data.get("Round")
        name = names.setdefault(round_, LABELS[len(names)]) if isinstance(round_, int) else "-"
        if event == "UserSpeakAction":
            out.append(f"{data['Action']} {name}")
        elif event == "AgentInstanceStatus":
            out.append(f"{data['Status']} {name}")
        elif event == "Interrupted":
            out.append(f"Interrupted {name} {data['Reason']}")
        elif event in ("Exception", "AgentInstanceDeleted"):
            out.append(f"{event} {data['Code']}")
        else:
            out.append(f"{event} {name}")
    return out


async def idle(world: World, instance: Instance) -> None:
    await world.conversation.wait_idle(instance)
    await world.sender.drain()


def test_a_user_turn_follows_the_documented_order(receiver: Receiver) -> None:
    """A user turn arrives as speech, ASR, THINKING, one LLMResult per sentence, SPEAKING, IDLE."""
    reply = ["Sure.", "Here is one.", "Why did the chicken cross?"]

    async def scenario() -> None:
        async with running_world(receiver.url) as world:
            instance = new_instance(world)
            round_ = await world.conversation.user_round(instance, text="Tell me a joke now", reply=reply)
            await idle(world, instance)
            bodies = of(receiver, instance)
            assert all(verify(b) for b in bodies)
            assert {b["Data"]["Round"] for b in bodies if "Round" in b["Data"]} == {round_}
            asr = next(b["Data"] for b in bodies if b["Event"] == "ASRResult")
            assert asr == {"UserId": "user_1", "Round": round_, "Text": "Tell me a joke now"}
            assert [b["Data"]["Text"] for b in bodies if b["Event"] == "LLMResult"] == reply
            assert instance.status == "IDLE"
            assert world.context_window(instance) == [
                {"Role": "user", "Content": "Tell me a joke now"},
                {"Role": "assistant", "Content": "Sure. Here is one. Why did the chicken cross?"},
            ]

    run(scenario())
    assert flow(receiver, instance_of(receiver)) == [
        "SPEAK_BEGIN N",
        "SPEAK_END N",
        "UserAudioData N",
        "ASRResult N",
        "THINKING N",
        "LLMResult N",
        "LLMResult N",
        "LLMResult N",
        "SPEAKING N",
        "IDLE N",
    ]


def instance_of(receiver: Receiver) -> Instance:
    """A stand-in carrying just the id, for reading a finished run's callbacks."""
    instance_id = receiver.bodies()[0]["AgentInstanceId"]
    return Instance(
        app_id=0, agent_instance_id=instance_id, agent_id="", agent_name="", user_id="", room_id="",
        agent_user_id="", agent_stream_id="", user_stream_id="", callback_config={}, advanced_config={},
        digital_human=None, created_ms=0,
    )  # fmt: skip


def test_rounds_rise_but_skip(receiver: Receiver) -> None:
    """Each turn, LLM and TTS request gets a new Round: always larger, never the next integer."""

    async def scenario() -> None:
        async with running_world(receiver.url) as world:
            instance = new_instance(world)
            rounds = []
            for i in range(4):
                rounds.append(await world.conversation.user_round(instance, text=f"q{i}", reply=["a."]))
                await world.conversation.wait_idle(instance)
            rounds.append(world.conversation.send_llm(instance, "What time is it?"))
            await world.conversation.wait_idle(instance)
            rounds.append(world.conversation.send_tts(instance, "It is noon."))
            await idle(world, instance)
            assert all(b - a > 1 for a, b in itertools.pairwise(rounds)), rounds
            seen = [b["Data"]["Round"] for b in of(receiver, instance) if "Round" in b["Data"]]
            assert sorted(set(seen)) == rounds
            assert seen == sorted(seen)

    run(scenario())


def test_user_barging_in_interrupts_the_agent(receiver: Receiver) -> None:
    """A user speaking over the agent cuts its Round (Reason 1, PlayedText so far); the new Round follows."""
    reply = ["First sentence.", "Second sentence.", "Third sentence."]

    async def scenario() -> None:
        async with running_world(receiver.url) as world:
            instance = new_instance(world)
            first = await world.conversation.user_round(
                instance, text="Tell a joke", reply=reply, interrupt_after=1
            )
            second = await world.conversation.user_round(instance, text="Stop that", reply=["Sorry."])
            await idle(world, instance)
            bodies = of(receiver, instance)
            cut = next(b["Data"] for b in bodies if b["Event"] == "Interrupted")
            assert cut == {"Round": first, "Reason": 1, "PlayedText": "First sentence."}
            last_of_first = max(i for i, b in enumerate(bodies) if b["Data"].get("Round") == first)
            assert bodies[last_of_first]["Data"] == {"Status": "IDLE", "Round": first}
            assert all(b["Data"].get("Round") in (first, second, None) for b in bodies)
            assert world.context_window(instance) == [
                {"Role": "user", "Content": "Tell a joke"},
                {"Role": "assistant", "Content": "First sentence."},
                {"Role": "user", "Content": "Stop that"},
                {"Role": "assistant", "Content": "Sorry."},
            ]
            assert flow(receiver, instance) == [
                "SPEAK_BEGIN N",
                "SPEAK_END N",
                "ASRResult N",
                "THINKING N",
                "LLMResult N",
                "LLMResult N",
                "LLMResult N",
                "SPEAKING N",
                "SPEAK_BEGIN M",
                "Interrupted N 1",
                "IDLE N",
                "SPEAK_END M",
                "ASRResult M",
                "THINKING M",
                "LLMResult M",
                "SPEAKING M",
                "IDLE M",
            ]

    run(scenario())


def test_barging_in_mid_sentence_cuts_at_once(receiver: Receiver) -> None:
    """Without a pause point, a user who speaks while the agent talks interrupts it straight away."""

    async def scenario() -> None:
        async with running_world(receiver.url, scale=20.0) as world:
            instance = new_instance(world)
            reply = [f"Sentence {i}." for i in range(8)]
            first = await world.conversation.user_round(instance, text="Go on", reply=reply)
            await eventually(lambda: instance.status == "SPEAKING")
            await asyncio.sleep(0.01)
            await world.conversation.user_round(instance, text="Enough", reply=["OK."])
            await idle(world, instance)
            cut = next(b["Data"] for b in of(receiver, instance) if b["Event"] == "Interrupted")
            assert cut["Round"] == first and cut["Reason"] == 1
            assert cut["PlayedText"] != join_sentences(reply)
            assert join_sentences(reply).startswith(cut["PlayedText"])

    run(scenario())


def test_interrupt_mode_1_lets_the_agent_finish(receiver: Receiver) -> None:
    """With InterruptMode 1 the agent finishes its answer before the user's next turn starts."""

    async def scenario() -> None:
        async with running_world(receiver.url) as world:
            instance = new_instance(world, advanced={"InterruptMode": 1})
            await world.conversation.user_round(
                instance, text="Hi", reply=["One.", "Two."], interrupt_after=1
            )
            await world.conversation.user_round(instance, text="Hey", reply=["Three."])
            await idle(world, instance)
            labels = flow(receiver, instance)
            assert "Interrupted N 1" not in labels
            assert labels.index("IDLE N") < labels.index("SPEAK_BEGIN M")
            assert labels.count("LLMResult N") == 2

    run(scenario())


def test_send_llm_runs_a_round_without_asr_and_cuts_the_current_one(receiver: Receiver) -> None:
    """SendAgentInstanceLLM answers in a new Round; sent while the agent talks it interrupts (Reason 2)."""

    async def scenario() -> None:
        async with running_world(receiver.url) as world:
            instance = new_instance(world)
            alone = world.conversation.send_llm(instance, "Say hi", reply=["Hi.", "Nice to meet you."])
            await world.conversation.wait_idle(instance)
            talking = await world.conversation.user_round(
                instance, text="Story", reply=["Once.", "Upon.", "A time."], interrupt_after=1
            )
            await eventually(lambda: instance.status == "SPEAKING")
            await asyncio.sleep(0.01)
            cutting = world.conversation.send_llm(instance, "Change topic", reply=["New topic."])
            await idle(world, instance)
            bodies = of(receiver, instance)
            assert [
                b["Data"]["Text"] for b in bodies if b["Data"].get("Round") == alone and "Text" in b["Data"]
            ] == [
                "Hi.",
                "Nice to meet you.",
            ]
            cut = next(b["Data"] for b in bodies if b["Event"] == "Interrupted")
            assert cut["Round"] == talking and cut["Reason"] == 2
            assert alone < talking < cutting

    run(scenario())
    labels = flow(receiver, instance_of(receiver))
    assert labels[:5] == ["THINKING N", "LLMResult N", "LLMResult N", "SPEAKING N", "IDLE N"]
    assert labels[-7:] == [
        "SPEAKING M",
        "Interrupted M 2",
        "IDLE M",
        "THINKING P",
        "LLMResult P",
        "SPEAKING P",
        "IDLE P",
    ]


def test_send_tts_speaks_and_queues_or_cuts_by_priority(receiver: Receiver) -> None:
    """TTS speaks in a new Round with no LLMResult; Enqueue keeps SPEAKING across Rounds, High cuts (Reason 3)."""

    async def scenario() -> None:
        async with running_world(receiver.url) as world:
            instance = new_instance(world)
            world.conversation.send_tts(instance, "Welcome. Glad you came!")
            world.conversation.send_tts(instance, "Queued line.", same_priority_option="Enqueue")
            await world.conversation.wait_idle(instance)
            world.conversation.send_tts(instance, "A long announcement. With parts. And more.")
            await eventually(lambda: instance.status == "SPEAKING")
            world.conversation.send_tts(instance, "Urgent.", priority="High", same_priority_option="Enqueue")
            await idle(world, instance)
            messages = [m["Content"] for m in world.context_window(instance)]
            assert messages[:2] == ["Welcome. Glad you came!", "Queued line."]
            assert messages[-1] == "Urgent."

    run(scenario())
    assert flow(receiver, instance_of(receiver)) == [
        "SPEAKING N",
        "SPEAKING M",
        "IDLE M",
        "SPEAKING P",
        "Interrupted P 3",
        "IDLE P",
        "SPEAKING Q",
        "IDLE Q",
    ]


def test_interrupt_agent_instance_cuts_with_reason_4(receiver: Receiver) -> None:
    """InterruptAgentInstance stops the agent mid-answer (Reason 4) and returns that Round."""

    async def scenario() -> None:
        async with running_world(receiver.url) as world:
            instance = new_instance(world)
            assert world.conversation.interrupt(instance) == instance.round  # nothing to cut: no callback
            round_ = await world.conversation.user_round(
                instance, text="Hi", reply=["A.", "B."], interrupt_after=1
            )
            await eventually(lambda: instance.status == "SPEAKING")
            await asyncio.sleep(0.02)
            assert world.conversation.interrupt(instance) == round_
            await idle(world, instance)
            assert instance.status == "IDLE"
            cut = [b["Data"] for b in of(receiver, instance) if b["Event"] == "Interrupted"]
            assert cut == [{"Round": round_, "Reason": 4, "PlayedText": "A."}]

    run(scenario())


def test_status_walks_the_round_even_when_status_callbacks_are_off(receiver: Receiver) -> None:
    """QueryAgentInstanceStatus sees THINKING, SPEAKING, IDLE although no status callback is configured."""

    async def scenario() -> None:
        async with running_world(receiver.url, scale=5.0) as world:
            instance = new_instance(world, flags={})
            seen: list[str] = []

            async def sample() -> None:
                while True:
                    if not seen or seen[-1] != instance.status:
                        seen.append(instance.status)
                    await asyncio.sleep(0.002)

            sampler = asyncio.get_running_loop().create_task(sample())
            await world.conversation.user_round(instance, text="Hi", reply=["A.", "B."])
            await world.conversation.wait_idle(instance)
            await asyncio.sleep(0.01)
            sampler.cancel()
            assert seen == ["IDLE", "THINKING", "SPEAKING", "IDLE"]
            await world.sender.drain()
            assert {b["Event"] for b in of(receiver, instance)} == {"AgentInstanceCreated"}

    run(scenario())


def test_user_audio_is_sent_only_for_utterances_of_a_second_or_more(receiver: Receiver) -> None:
    """A long utterance brings 1-1.5 s of 16 kHz PCM in UserAudioData; a short one brings none."""

    async def scenario() -> None:
        async with running_world(receiver.url) as world:
            instance = new_instance(world)
            short = await world.conversation.user_round(instance, text="Hi", reply=["Hello."])
            await world.conversation.wait_idle(instance)
            long = await world.conversation.user_round(
                instance, text="Could you please tell me about the weather tomorrow?", reply=["Sunny."]
            )
            await idle(world, instance)
            audio = [b["Data"] for b in of(receiver, instance) if b["Event"] == "UserAudioData"]
            assert [a["Round"] for a in audio] == [long]
            assert short != long
            data = audio[0]
            assert data["UserId"] == "user_1" and data["SampleRate"] == 16000 and data["Format"] == "pcm"
            pcm = base64.b64decode(data["Audio"])
            assert 16000 * 2 * 1.0 <= len(pcm) <= 16000 * 2 * 1.5
            assert len(pcm) % 2 == 0

    run(scenario())


def test_meta_info_comes_between_speaking_and_idle_when_configured(receiver: Receiver) -> None:
    """With AdvancedConfig.LLMMetaInfo set, each answer brings AgentInstanceMetaInfo before IDLE."""

    async def scenario() -> None:
        async with running_world(receiver.url) as world:
            meta = {"BeginCharacters": "{{", "EndCharacters": "}}", "SendMetaKeys": ["emotion"]}
            instance = new_instance(world, advanced={"LLMMetaInfo": meta})
            await world.conversation.user_round(instance, text="Hi", reply=["Hello."])
            await world.conversation.wait_idle(instance)
            await world.conversation.user_round(
                instance, text="Hi", reply=["Hello."], meta_info={"emotion": "happy"}
            )
            await idle(world, instance)
            infos = [
                b["Data"]["MetaInfo"] for b in of(receiver, instance) if b["Event"] == "AgentInstanceMetaInfo"
            ]
            assert infos == [{"emotion": ""}, {"emotion": "happy"}]

    run(scenario())
    labels = flow(receiver, instance_of(receiver))
    assert labels[labels.index("SPEAKING N") + 1 : labels.index("IDLE N") + 1] == [
        "AgentInstanceMetaInfo N",
        "IDLE N",
    ]


def test_a_script_plays_turns_interruptions_and_an_rtc_fault(receiver: Receiver) -> None:
    """A scripted conversation runs on its own: a barge-in, an LLM error, then the agent drops out (1205)."""
    turns: list[dict[str, Any]] = [
        {"after": 0, "say": "Tell me a story", "reply": ["Once.", "Upon.", "A time."], "interrupt_after": 1},
        {"after": 0.1, "say": "A shorter one", "reply": ["The end."]},
        {"after": 0.1, "exception": {"code": 2201, "message": "LLM general error"}},
        {"after": 0.1, "tts": "Still here."},
        {"after": 0.2, "rtc_fault": 1205},
        {"after": 0, "say": "never said", "reply": ["never answered"]},
    ]

    async def scenario() -> None:
        async with running_world(receiver.url) as world:
            instance = new_instance(world)
            world.conversation.start_script(instance, turns)
            await eventually(lambda: instance.state == "deleted")
            await world.sender.drain()
            await asyncio.sleep(0.1)
            assert "never said" not in [m["Content"] for m in instance.messages]

    run(scenario())
    labels = flow(
        receiver,
        instance_of(receiver),
        skip=("AgentInstanceCreated", "LLMResult", "ASRResult", "UserAudioData"),
    )
    assert labels == [
        "SPEAK_BEGIN N",
        "SPEAK_END N",
        "THINKING N",
        "SPEAKING N",
        "SPEAK_BEGIN M",
        "Interrupted N 1",
        "IDLE N",
        "SPEAK_END M",
        "THINKING M",
        "SPEAKING M",
        "IDLE M",
        "Exception 2201",
        "SPEAKING P",
        "IDLE P",
        "Exception 1205",
        "AgentInstanceDeleted 1205",
    ]


def test_a_fatal_rtc_exception_in_a_script_deletes_the_instance(receiver: Receiver) -> None:
    """An RTC exception code (1201-1207) in a script ends the instance with that code."""

    async def scenario() -> None:
        async with running_world(receiver.url) as world:
            instance = new_instance(world, flags={})
            world.conversation.start_script(
                instance, [{"exception": {"code": 1204, "message": "login failed"}}]
            )
            await eventually(lambda: instance.state == "deleted")
            await world.sender.drain()
            assert instance.deleted_code == 1204

    run(scenario())
    assert flow(receiver, instance_of(receiver)) == ["Exception 1204", "AgentInstanceDeleted 1204"]


def test_malformed_scripts_are_refused() -> None:
    """A script with an unknown or ill-typed turn is refused before anything runs."""

    async def scenario() -> None:
        async with running_world(None) as world:
            instance = new_instance(world)
            for bad in (
                [{"shout": "x"}],
                [{"say": "x", "tts": "y"}],
                [{"say": "x", "after": -1}],
                [{"say": "x", "reply": "not a list"}],
                [{"say": "x", "interrupt_after": "1"}],
                [{"exception": {"message": "no code"}}],
                ["not an object"],
            ):
                with pytest.raises(ValueError, match=r"turn|after|reply|interrupt_after|exception"):
                    world.conversation.start_script(instance, bad)  # type: ignore[arg-type]

    run(scenario())


def test_a_deleted_instance_says_nothing_more(receiver: Receiver) -> None:
    """Deleting an instance mid-answer stops it: AgentInstanceDeleted is the last callback, new turns fail."""

    async def scenario() -> None:
        async with running_world(receiver.url, scale=20.0) as world:
            instance = new_instance(world)
            await world.conversation.user_round(instance, text="Hi", reply=[f"S{i}." for i in range(6)])
            await world.conversation.user_round(instance, text="Hi", reply=["x"], interrupt_after=0)
            await eventually(lambda: instance.status == "THINKING")
            world.delete_instance(instance, 0, reason_exception=False)
            await asyncio.sleep(0.3)  # longer than the rest of the answer would take
            await world.sender.drain()
            with pytest.raises(InstanceNotRunning):
                await world.conversation.user_round(instance, text="Hello?", reply=["..."])
            with pytest.raises(InstanceNotRunning):
                world.conversation.send_llm(instance, "Hello?")

    run(scenario())
    labels = flow(receiver, instance_of(receiver))
    assert labels[-1] == "AgentInstanceDeleted 0"
    assert "SPEAKING M" not in labels


def test_sentences_are_split_and_joined_like_speech() -> None:
    """TTS text is spoken sentence by sentence; played sentences join with spaces, CJK without."""
    assert split_sentences("Hello there. How are you? Fine!") == ["Hello there.", "How are you?", "Fine!"]
    assert split_sentences("你好。再见！") == ["你好。", "再见！"]
    assert split_sentences("no stop") == ["no stop"]
    assert join_sentences(["Hello.", "Bye."]) == "Hello. Bye."
    assert join_sentences(["你好。", "再见！"]) == "你好。再见！"


def test_a_conversation_through_the_running_emulator(receiver: Receiver) -> None:
    """Over the emulator's HTTP APIs: created, a user turn, an LLM push, faults and a script, all signed."""
    with Emulator(emulator_config(callback_url=receiver.url, time_scale=50.0)) as emu:
        api = ZegoApi(emu.zego_agent_url)
        register_agent(api)
        flags = {
            "ASRResult": 1,
            "LLMResult": 1,
            "Interrupted": 1,
            "UserSpeakAction": 1,
            "AgentInstanceStatus": 1,
        }
        created = api.post("CreateAgentInstance", instance_body(1, CallbackConfig=flags))
        assert created["Code"] == 0, created
        instance_id = created["Data"]["AgentInstanceId"]
        emu.control.join("room_1", "user_1")
        wait_for(lambda: receiver.bodies("AgentInstanceCreated"))

        round_ = emu.control.say(instance_id, "What is the weather?", ["Sunny.", "Warm too."])
        wait_for(lambda: any(b["Data"] == {"Status": "IDLE", "Round": round_} for b in receiver.bodies()))
        status = api.post("QueryAgentInstanceStatus", {"AgentInstanceId": instance_id})
        assert status["Data"]["Status"] == "IDLE"

        pushed = api.post("SendAgentInstanceLLM", {"AgentInstanceId": instance_id, "Text": "Say goodbye"})
        assert pushed["Code"] == 0 and pushed["Data"]["Round"] > round_
        wait_for(
            lambda: any(
                b["Data"] == {"Status": "IDLE", "Round": pushed["Data"]["Round"]} for b in receiver.bodies()
            )
        )

        msgs = api.post("GetAgentInstanceMsgList", {"AgentInstanceId": instance_id})["Data"]["MessageList"]
        assert msgs[:2] == [
            {"Role": "user", "Content": "What is the weather?"},
            {"Role": "assistant", "Content": "Sunny. Warm too."},
        ]

        emu.control.callback_fault("duplicate", event="ASRResult")
        emu.control.script(
            instance_id,
            [
                {"after": 0, "say": "Long story please", "reply": ["One.", "Two."], "interrupt_after": 1},
                {"after": 0.05, "say": "Stop", "reply": ["OK."]},
                {"after": 0.1, "rtc_fault": 1205},
            ],
        )
        wait_for(lambda: receiver.bodies("AgentInstanceDeleted"))
        time.sleep(0.1)

        log = emu.control.callbacks()
        assert all(entry["outcome"] == "delivered" for entry in log)
        assert len(log) == len(receiver.bodies()) - 1  # the duplicated ASRResult arrives twice

    bodies = receiver.bodies()
    assert all(verify(b, CALLBACK_SECRET) for b in bodies)
    assert bodies[-1]["Event"] == "AgentInstanceDeleted" and bodies[-1]["Data"]["Code"] == 1205
    assert [b["Data"]["Reason"] for b in receiver.bodies("Interrupted")] == [1]
    asr = [b["Data"]["Text"] for b in receiver.bodies("ASRResult")]
    assert asr == ["What is the weather?", "Long story please", "Long story please", "Stop"]

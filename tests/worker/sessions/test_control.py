"""Live control's domain: what it accepts, when a session is live, how a `say` marks its turn."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session as DbSession

from tests.factories import APP_ID, INSTANCE, Signer, ingest
from tests.worker.conversation import conversation
from worker.db import make_sessionmaker, session_scope
from worker.inbox.drain import drain_until_done
from worker.models import ActionState, AgentInstance, PolicyAction, Session, SessionState, Turn
from worker.policies.actions import claim
from worker.sealing import Sealer
from worker.sessions import control
from worker.sessions.rebuild import rebuild
from worker.settings import Settings
from worker.vendors.zego.errors import error_for_code, error_for_http_status

NOW = dt.datetime(2026, 12, 5, 9, 0, tzinfo=dt.UTC)
SETTINGS = Settings(
    zego_app_id=APP_ID, zego_server_secret="s" * 32, zego_callback_secret="c" * 32, _env_file=None
)  # type: ignore[call-arg]


def _live_session(db: DbSession, *, state: str = SessionState.ACTIVE, provider: str = "zego") -> Session:
    session = Session(
        id="5e551011-0000-4000-8000-000000000001",
        app_id=APP_ID,
        origin="api",
        state=state,
        provider=provider,
        created_at=NOW,
    )
    db.add(session)
    db.flush()
    db.add(
        AgentInstance(
            app_id=APP_ID,
            agent_instance_id=INSTANCE,
            session_id=session.id,
            state="active",
            first_seen_at=NOW,
        )
    )
    db.flush()
    return session


def test_a_say_body_is_checked_before_anything_is_recorded() -> None:
    """Text is required and at most 300 characters; the flags are booleans; nothing else is taken."""
    wanted = control.say({"text": "Hello", "interrupt": False})
    assert wanted.body == {"Text": "Hello", "AddHistory": True, "SamePriorityOption": "Enqueue"}
    for bad, words in (
        ({"text": "  "}, "text is required"),
        ({"text": "x" * 301}, "at most 300"),
        ({"text": "hi", "add_to_history": 1}, "add_to_history must be true or false"),
        ({"text": "hi", "voice": "x"}, "unknown field(s): voice"),
        (["hi"], "JSON object"),
    ):
        with pytest.raises(control.ControlError, match=re.escape(words)) as refused:
            control.say(bad)
        assert refused.value.status == 400


def test_an_update_is_checked_like_a_creation_and_records_no_secret() -> None:
    """A PATCH names the field ZEGO would refuse; a good one records only what it changes."""
    with pytest.raises(control.UpdateInvalid) as refused:
        control.update_request({"LLM": {"Url": "https://x.example", "ApiKey": "k", "Model": "m", "TopP": 2}})
    assert refused.value.field == "LLM.TopP"
    with pytest.raises(control.UpdateInvalid, match="cannot be changed on a running instance"):
        control.update_request(
            {"TTS": {"Vendor": "MiniMax", "Params": {"app": {"api_key": "k"}}, "FilterText": []}}
        )
    wanted = control.update_request({"ASR": {"Vendor": "Tencent"}, "LLM": None})
    assert wanted.inputs == {"changed": ["ASR"]} and wanted.body == {"ASR": {"Vendor": "Tencent"}}


def test_vendor_errors_become_answers_that_say_what_to_do() -> None:
    """Rate limits are 429, transient failures 503, a gone instance 409 not_live, a busy agent 409."""
    cases = {
        410001029: (429, "rate_limited"),
        410000010: (503, "vendor_unavailable"),
        410001002: (409, "not_live"),
        410001013: (409, "agent_busy"),
        410000003: (400, "vendor_rejected"),
        410000002: (502, "vendor_error"),
    }
    for code, (status, name) in cases.items():
        answer = control.vendor_refusal(
            error_for_code(code, "m", request_id=None, action="SendAgentInstanceTTS")
        )
        assert (answer.status, answer.code) == (status, name), code
    assert control.vendor_refusal(error_for_http_status(429, action="X")).status == 429


def test_only_a_live_zego_session_can_be_controlled(db: DbSession) -> None:
    """An ended session or a Coze room is 409 not_live, and nothing is recorded."""
    ended = _live_session(db, state=SessionState.ENDED)
    with pytest.raises(control.ControlError, match="ended, not live") as refused:
        control.begin(db, ended, control.interrupt(), settings=SETTINGS, now=NOW)
    assert refused.value.status == 409
    ended.state, ended.provider = SessionState.ACTIVE, "coze"
    with pytest.raises(control.ControlError, match="Coze"):
        control.begin(db, ended, control.interrupt(), settings=SETTINGS, now=NOW)
    assert db.scalars(select(PolicyAction)).all() == []


def test_a_say_writes_its_rounds_agent_turn_marked_say_and_counted(db: DbSession) -> None:
    """ZEGO sends no LLMResult for a TTS Round: the turn is written with the text, once."""
    session = _live_session(db)
    wanted = control.say({"text": "Welcome!"})
    target = control.begin(db, session, wanted, settings=SETTINGS, now=NOW)
    row = control.finish(db, target, wanted, control.Outcome(round=41), now=NOW)
    assert (row.state, row.result, row.policy) == (ActionState.DONE, {"round": 41}, "control")
    turn = db.scalars(select(Turn)).one()
    assert (turn.round, turn.speaker, turn.text, turn.source) == (41, "agent", "Welcome!", "say")
    db.refresh(session)
    assert session.agent_turns == 1
    entry = control.timeline_entries(db, session.id)[0][1]
    assert entry["event"] == "Control" and entry["round"] == 41 and entry["detail"]["text"] == "Welcome!"


def test_a_say_whose_turn_a_callback_made_first_only_marks_it(db: DbSession) -> None:
    """The callbacks can outrun the API's answer: the turn they made keeps its text and gets the mark."""
    session = _live_session(db)
    instance = db.scalars(select(AgentInstance)).one()
    db.add(Turn(session_id=session.id, instance_id=instance.id, round=7, speaker="agent", text="Hi there."))
    db.flush()
    wanted = control.say({"text": "Hi there"})
    target = control.begin(db, session, wanted, settings=SETTINGS, now=NOW)
    control.finish(db, target, wanted, control.Outcome(round=7), now=NOW)
    turn = db.scalars(select(Turn)).one()
    assert (turn.text, turn.source) == ("Hi there.", "say")


def test_a_failed_control_is_recorded_with_the_answer_given(db: DbSession) -> None:
    """ZEGO's refusal is a failed action carrying the status the caller got."""
    session = _live_session(db)
    wanted = control.message({"text": "Hello?"})
    target = control.begin(db, session, wanted, settings=SETTINGS, now=NOW)
    refusal = control.ControlError(503, "vendor_unavailable", "try again")
    row = control.finish(db, target, wanted, refusal, now=NOW)
    assert (row.state, row.result, row.error) == (
        ActionState.FAILED,
        {"status": 503, "error": "vendor_unavailable"},
        "try again",
    )
    assert db.scalars(select(Turn)).all() == []


def test_an_app_whose_server_secret_is_not_configured_cannot_be_controlled(db: DbSession) -> None:
    """Nothing could be signed for it: 409 not_configured before anything is recorded."""
    session = _live_session(db)
    elsewhere = Settings(
        zego_app_id=APP_ID + 1, zego_server_secret="s" * 32, zego_callback_secret="c" * 32, _env_file=None
    )  # type: ignore[call-arg]
    with pytest.raises(control.ControlError, match="no ZEGO ServerSecret") as refused:
        control.begin(db, session, control.context(), settings=elsewhere, now=NOW)
    assert (refused.value.status, refused.value.code) == (409, "not_configured")
    assert db.scalars(select(PolicyAction)).all() == []


def test_a_control_whose_request_died_is_closed_as_failed_never_repeated(db: DbSession) -> None:
    """The policy executor finds the stale running row and fails it: ZEGO may have spoken it already."""
    session = _live_session(db)
    target = control.begin(db, session, control.say({"text": "Once"}), settings=SETTINGS, now=NOW)
    later = NOW + dt.timedelta(hours=1)
    assert claim(db, target.action_id, sealer=None, now=later, stale_after=60) is None
    row = db.get(PolicyAction, target.action_id)
    assert row is not None and row.state == ActionState.FAILED and "not repeated" in (row.error or "")


def test_a_rebuild_keeps_the_say_marks(clean_engine: Engine, settings: Settings) -> None:
    """Rebuilding the turns from the callbacks marks the `say` Rounds again."""
    factory = make_sessionmaker(clean_engine)
    with session_scope(factory) as db:
        ingest(db, conversation(Signer()))
    drain_until_done(factory, [(APP_ID, INSTANCE)], settings=settings)
    with session_scope(factory) as db:
        turn = db.scalars(select(Turn).where(Turn.speaker == "agent").order_by(Turn.round)).first()
        assert turn is not None
        said_round, session_id = turn.round, turn.session_id
        # Started through the API, as a controlled session is: a rebuild keeps its row and actions.
        db.execute(update(Session).where(Session.id == session_id).values(origin="api"))
        db.add(
            PolicyAction(
                session_id=session_id,
                kind="say",
                reason="manual",
                policy="control",
                trigger_key="control:test",
                app_id=APP_ID,
                agent_instance_id=INSTANCE,
                inputs={"text": "x"},
                state=ActionState.DONE,
                result={"round": said_round},
                not_before=NOW,
                created_at=NOW,
            )
        )
    rebuild(factory, settings)
    with session_scope(factory) as db:
        sources = {t.round: t.source for t in db.scalars(select(Turn).where(Turn.speaker == "agent"))}
    assert sources[said_round] == "say"
    assert [r for r, s in sources.items() if s == "say"] == [said_round]


def test_an_applied_update_is_kept_sealed_in_the_spec_a_recreation_sends(db: DbSession) -> None:
    """A recreated agent keeps the new LLM: the stored spec changes, its key sealed, never plain."""
    session = _live_session(db)
    session.spec = {
        "params": {"AgentId": "a", "LLM": {"Url": "https://old.example", "ApiKey": "k0", "Model": "m"}}
    }
    db.flush()
    sealer = Sealer(Fernet.generate_key().decode())
    wanted = control.update_request(
        {"LLM": {"Url": "https://new.example", "ApiKey": "sk-new-7", "Model": "m2"}}
    )
    target = control.begin(db, session, wanted, settings=SETTINGS, now=NOW)
    row = control.finish(db, target, wanted, control.Outcome(), now=NOW, sealer=sealer)
    assert row.result == {"spec_updated": True} and "sk-new-7" not in str(row.inputs)
    db.flush()
    db.refresh(session)
    assert session.spec is not None and "sk-new-7" not in str(session.spec)
    opened = sealer.unseal(session.spec)["params"]
    assert opened["LLM"]["ApiKey"] == "sk-new-7" and opened["AgentId"] == "a"
    unsealed = control.update_request({"LLM": {"Url": "https://x.example", "ApiKey": "plain", "Model": "m"}})
    target = control.begin(db, session, unsealed, settings=SETTINGS, now=NOW)
    assert control.finish(db, target, unsealed, control.Outcome(), now=NOW).result == {"spec_updated": False}


@pytest.mark.parametrize(
    "wanted",
    [control.interrupt(), control.context(), control.message({"text": "hi"}),
     control.update_request({"ASR": {"Vendor": "Tencent"}})],
)  # fmt: skip
def test_a_live_digital_human_refuses_all_but_say_up_front(db: DbSession, wanted: control.Control) -> None:
    """ZEGO answers 410001049 to those: roomwarden says 409 not_supported, names the provider, records nothing."""
    session = _live_session(db, provider="zego_live_digital_human")
    with pytest.raises(control.ControlError, match="zego_live_digital_human") as refused:
        control.begin(db, session, wanted, settings=SETTINGS, now=NOW)
    assert (refused.value.status, refused.value.code) == (409, "not_supported")
    assert db.scalars(select(PolicyAction)).all() == []


def test_a_say_is_the_activity_a_live_digital_human_idles_from(db: DbSession) -> None:
    """A say moves the session's last activity forward (never back): the idle clock of a session with no user."""
    session = _live_session(db, provider="zego_live_digital_human")
    wanted = control.say({"text": "Good evening."})
    target = control.begin(db, session, wanted, settings=SETTINGS, now=NOW)
    control.finish(db, target, wanted, control.Outcome(round=7), now=NOW)
    db.refresh(session)
    assert session.last_activity_at == NOW
    control.mark_said(
        db, target, 7, "Good evening.", now=NOW - dt.timedelta(minutes=5)
    )  # a rebuild's re-mark
    db.refresh(session)
    assert session.last_activity_at == NOW

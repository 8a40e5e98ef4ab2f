"""``roomwarden say | interrupt | message | context | update``: live control from a shell.

The same three steps as the API routes (``worker.sessions.control``): recorded as an action,
ZEGO called with the same bounded client, the outcome recorded. Exit 1 with the reason when the
session is not live or ZEGO refuses; 3 when ZEGO asks to retry (429, 503).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from roomwarden import analyst

if TYPE_CHECKING:
    from worker.sessions.control import Control

Key = Annotated[str, typer.Argument(help="A session id or an AgentInstanceId.")]


def _run(key: str, wanted: Control) -> dict[str, Any]:
    from worker.db import session_scope, sessions_for, utcnow
    from worker.policies import reports
    from worker.sessions import control
    from worker.settings import get_settings
    from worker.vendors.clients import Vendors

    settings = get_settings()
    factory = sessions_for(settings.database_url)
    try:
        with session_scope(factory) as db:
            found = analyst.session_or_exit(db, key)
            target = control.begin(db, found, wanted, settings=settings, now=utcnow())
    except control.ControlError as exc:
        typer.echo(f"{exc.code}: {exc.detail}", err=True)
        raise typer.Exit(1) from None
    vendors = Vendors(settings)
    outcome: control.Outcome | control.ControlError
    try:
        with control.client_for(settings, target.app_id, vendors.limiter()) as client:
            outcome = control.call(client, target, wanted)
    except control.ControlError as exc:
        outcome = exc
    finally:
        vendors.close()
    with session_scope(factory) as db:
        done = control.finish(db, target, wanted, outcome, now=utcnow(), sealer=_sealer(settings))
        row = reports.action_dict(done)
    if isinstance(outcome, control.ControlError):
        typer.echo(f"{outcome.code}: {outcome.detail}", err=True)
        raise typer.Exit(3 if outcome.status in (429, 503) else 1)
    shown: dict[str, Any] = {"session_id": target.session_id, "action": row}
    if outcome.round is not None:
        shown["round"] = outcome.round
    if outcome.messages is not None:
        shown["messages"] = [{"role": m.role, "content": m.content} for m in outcome.messages]
    return shown


def _sealer(settings: Any) -> Any:
    from worker.sealing import Sealer

    key = settings.secret_key
    return Sealer(key.get_secret_value()) if key is not None else None


def _parsed(parse: Any, body: Any) -> Control:
    from worker.sessions import control

    try:
        parsed: Control = parse(body)
    except control.ControlError as exc:
        typer.echo(f"{exc.code}: {exc.detail}", err=True)
        raise typer.Exit(2) from None
    return parsed


def say(
    key: Key,
    text: Annotated[str, typer.Argument(help="What the agent says, verbatim (at most 300 characters).")],
    interrupt: Annotated[
        bool, typer.Option("--interrupt/--queue", help="Cut in (ZEGO's default), or wait for the agent.")
    ] = True,
    add_to_history: Annotated[
        bool, typer.Option("--add-to-history/--no-history", help="Keep the text in the LLM context.")
    ] = True,
) -> None:
    """Have a running agent say TEXT (SendAgentInstanceTTS); its turn is marked 'say'."""
    from worker.sessions import control

    body = {"text": text, "interrupt": interrupt, "add_to_history": add_to_history}
    shown = _run(key, _parsed(control.say, body))
    typer.echo(f"said in Round {shown['round']} (action #{shown['action']['id']})")


def interrupt(key: Key) -> None:
    """Cut a running agent off mid-sentence (InterruptAgentInstance)."""
    from worker.sessions import control

    shown = _run(key, control.interrupt())
    typer.echo(f"interrupted Round {shown['round']} (action #{shown['action']['id']})")


def message(
    key: Key, text: Annotated[str, typer.Argument(help="What the agent answers through its LLM.")]
) -> None:
    """Have a running agent answer TEXT through its LLM (SendAgentInstanceLLM)."""
    from worker.sessions import control

    shown = _run(key, _parsed(control.message, {"text": text}))
    typer.echo(f"answering in Round {shown['round']} (action #{shown['action']['id']})")


def context(key: Key) -> None:
    """Print a running agent's LLM context window as JSON (GetAgentInstanceMsgList)."""
    from worker.sessions import control

    typer.echo(json.dumps(_run(key, control.context())["messages"], indent=2, ensure_ascii=False))


def update(
    key: Key,
    json_file: Annotated[
        Path, typer.Option("--json", help="A JSON file with LLM, TTS and/or ASR, each complete.", exists=True)
    ],
) -> None:
    """Replace a running agent's LLM / TTS / ASR (UpdateAgentInstance), checked as creation is."""
    from worker.sessions import control

    try:
        body = json.loads(json_file.read_text())
    except ValueError:
        typer.echo(f"{json_file} is not JSON", err=True)
        raise typer.Exit(2) from None
    shown = _run(key, _parsed(control.update_request, body))
    typer.echo(f"updated {', '.join(shown['action']['inputs']['changed'])} (action #{shown['action']['id']})")


COMMANDS = (say, interrupt, message, context, update)

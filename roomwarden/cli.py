"""The ``roomwarden`` command line. Each command is a thin shell around a domain function."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from sqlalchemy.orm import Session as DbSession
    from sqlalchemy.orm import sessionmaker

app = typer.Typer(
    help="roomwarden: the back end beside hosted voice and digital-human AI agents.",
    no_args_is_help=True,
    add_completion=False,
)
inbox_app = typer.Typer(help="Look at and operate the callback inbox.", no_args_is_help=True)
app.add_typer(inbox_app, name="inbox")

ROOT = Path(__file__).resolve().parent.parent


def _migrate(database_url: str | None = None) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["configure_logging"] = False
    if database_url:
        config.set_main_option("sqlalchemy.url", database_url)
    command.upgrade(config, "head")


def _factory() -> sessionmaker[DbSession]:
    from worker.db import sessions_for
    from worker.settings import get_settings

    return sessions_for(get_settings().database_url)


@app.command()
def migrate() -> None:
    """Bring the database schema up to date (alembic upgrade head)."""
    _migrate()
    typer.echo("database is at the latest revision")


@app.command()
def run(
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default ROOMWARDEN_PORT or 8080).")] = None,
    demo: Annotated[
        bool, typer.Option("--demo", help="Also run the vendor emulator and the demo conversation.")
    ] = False,
    with_emulator: Annotated[
        bool, typer.Option("--emulator", help="Point roomwarden at a local vendor emulator.")
    ] = False,
) -> None:
    """Run the receiver, a worker and beat together, on the embedded default unless configured."""
    raise typer.Exit(_serve(host, port, demo=demo, emulator=demo or with_emulator, stay=True))


@app.command("demo")
def demo_command(
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default ROOMWARDEN_PORT or 8080).")] = None,
) -> None:
    """Run roomwarden and the vendor emulator, start a session, let a scripted user talk, print it."""
    raise typer.Exit(_serve(host, port, demo=True, emulator=True, stay=False))


def _serve(host: str | None, port: int | None, *, demo: bool, emulator: bool, stay: bool) -> int:
    from roomwarden import devsecrets, runner
    from worker.settings import Settings

    env = devsecrets.apply_defaults()
    extra: dict[str, list[str]] = {}
    control_url = None
    settings = Settings()
    host = host or settings.host
    port = port or settings.port
    if emulator:
        env, extra["emulator"], control_url = runner.with_emulator(host, port, env)
    os.environ.update(env)
    settings = Settings()
    _migrate(settings.database_url)
    typer.echo(f"database: {_redact(settings.database_url)}  broker: {_redact(settings.broker_url)}")
    if control_url:
        typer.echo(f"vendor emulator: ZEGO {settings.zego_api_url}, Coze {settings.coze_api_url}")
    outcome = {"ok": True}
    on_ready = None
    if demo:
        assert control_url is not None

        def on_ready(url: str) -> bool:
            outcome["ok"] = _run_demo(url, env, control_url)
            if stay:
                typer.echo("\nStill running: Ctrl-C stops receiver, worker, beat and the emulator.")
            return stay

    log_dir = Path("var/logs") if demo else None
    code = runner.supervise(host, port, env, on_ready=on_ready, echo=typer.echo, log_dir=log_dir, extra=extra)
    return code if outcome["ok"] else 1


def _run_demo(url: str, env: dict[str, str], control_url: str) -> bool:
    from emulator.control import EmulatorControl
    from roomwarden.demo import run_demo

    control = EmulatorControl(control_url)
    try:
        return run_demo(url, env["ROOMWARDEN_API_TOKEN"], control, typer.echo)
    finally:
        control.close()


@app.command(
    "emulator",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
)
def emulator_command(ctx: typer.Context) -> None:
    """Run the stand-in ZEGO and Coze servers (python -m emulator --help lists the options)."""
    from emulator.__main__ import main as emulator_main

    raise typer.Exit(emulator_main(ctx.args))


@app.command()
def transcript(
    key: Annotated[str, typer.Argument(help="A session id or an AgentInstanceId.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print the transcript of a session."""
    from worker import sessions, transcripts
    from worker.db import session_scope

    with session_scope(_factory()) as db:
        session = sessions.find_session(db, key)
        if session is None:
            typer.echo(f"no session with id or agent instance id {key}", err=True)
            raise typer.Exit(1)
        turns = transcripts.transcript(db, session.id)
        if as_json:
            typer.echo(
                json.dumps({"session_id": session.id, "turns": [t.as_dict() for t in turns]}, indent=2)
            )
            return
        typer.echo(
            f"session {session.id} ({session.state}{', ' + session.end_reason if session.end_reason else ''})"
        )
        for turn in turns:
            if turn.new_instance:
                typer.echo(f"  -- agent replaced: instance {turn.agent_instance_id} --")
            who = "user " if turn.speaker == "user" else "agent"
            suffix = f"  [interrupted: {turn.played_text!r}]" if turn.interrupted else ""
            typer.echo(f"  {turn.round:>12} {who}: {turn.text}{suffix}")


@app.command()
def session(key: Annotated[str, typer.Argument(help="A session id or an AgentInstanceId.")]) -> None:
    """Print a session as JSON: state, end reason, instances, exceptions."""
    from worker import sessions
    from worker.db import session_scope

    with session_scope(_factory()) as db:
        found = sessions.find_session(db, key)
        if found is None:
            typer.echo(f"no session with id or agent instance id {key}", err=True)
            raise typer.Exit(1)
        typer.echo(json.dumps(sessions.describe(db, found), indent=2))


@app.command()
def rebuild() -> None:
    """Re-derive every session and transcript from the stored callbacks. Stop the workers first."""
    from worker.rebuild import rebuild as do_rebuild
    from worker.settings import get_settings

    applied = do_rebuild(_factory(), get_settings())
    typer.echo(f"rebuilt from the inbox: {applied} callbacks applied")


@inbox_app.command("list")
def inbox_list(
    state: Annotated[str | None, typer.Option(help="pending, done or failed.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
) -> None:
    """List stored callbacks, newest first."""
    from worker import inbox
    from worker.db import session_scope
    from worker.models import InboxState

    chosen = InboxState(state) if state else None
    with session_scope(_factory()) as db:
        for row in inbox.list_callbacks(db, state=chosen, limit=limit):
            error = f"  {row.last_error}" if row.last_error else ""
            typer.echo(
                f"{row.id:>8} {row.state:<8} {row.event:<22} {row.agent_instance_id} "
                f"seq={row.sequence} attempts={row.attempts}{error}"
            )


@inbox_app.command("replay")
def inbox_replay(
    ids: Annotated[list[int] | None, typer.Argument(help="Inbox ids; all failed ones if none.")] = None,
) -> None:
    """Put failed (parked) callbacks back in line and ask a worker to apply them."""
    from worker import inbox
    from worker.db import session_scope
    from worker.tasks import enqueue_drain

    with session_scope(_factory()) as db:
        streams = inbox.replay_failed(db, ids=ids or None)
    queued = enqueue_drain(streams) if streams else True
    typer.echo(
        f"replaying {len(streams)} stream(s)"
        + ("" if queued else "; broker unavailable, the sweeper will pick them up")
    )


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url.split("+", 1)[1] if url.startswith("sqla+") else url).render_as_string(
            hide_password=True
        )
    except Exception:
        return url.split("@")[-1]


def main() -> None:
    sys.path.insert(0, os.getcwd())
    app()

"""The ``roomwarden`` command line. Each command is a thin shell around a domain function."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from roomwarden import analyst
from roomwarden import control as live_control
from roomwarden.analyze import analyze
from roomwarden.endpoints import endpoints_app

if TYPE_CHECKING:
    from sqlalchemy.orm import Session as DbSession
    from sqlalchemy.orm import sessionmaker

    from worker.policies.config import PolicyBook

app = typer.Typer(
    help="roomwarden: the back end beside hosted voice and digital-human AI agents.",
    no_args_is_help=True,
    add_completion=False,
)
inbox_app = typer.Typer(help="Look at and operate the callback inbox.", no_args_is_help=True)
app.add_typer(inbox_app, name="inbox")
policy_app = typer.Typer(
    help="See and run the policies (recreate, close, recycle, end).", no_args_is_help=True
)
app.add_typer(policy_app, name="policy")
app.add_typer(analyst.sessions_app, name="sessions")
app.add_typer(endpoints_app, name="endpoints")
for _command in (analyst.transcript, analyst.search, analyst.stats, analyst.export, analyze):
    app.command(_command.__name__)(_command)
for _control in live_control.COMMANDS:  # say, interrupt, message, context, update
    app.command(_control.__name__)(_control)

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


_session_or_exit = analyst.session_or_exit


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
    """Run the receiver, the workers (callbacks, events out) and beat; the embedded default unless set."""
    raise typer.Exit(_serve(host, port, demo=demo, emulator=demo or with_emulator, stay=True))


@app.command("demo")
def demo_command(
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default ROOMWARDEN_PORT or 8080).")] = None,
) -> None:
    """Run roomwarden and the vendor emulator, start a session, let a scripted user talk, print it."""
    raise typer.Exit(_serve(host, port, demo=True, emulator=True, stay=False))


def _fresh_metrics_dir(env: dict[str, str]) -> None:
    """One /metrics for all the processes ``run`` starts (prometheus_client's multiprocess mode),
    counting from zero at each start, as a restarted process's counters do."""
    from worker.settings import VAR_DIR

    directory = Path(env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(VAR_DIR / "metrics")))
    directory.mkdir(parents=True, exist_ok=True)
    for left in directory.glob("*.db"):
        left.unlink()


def _serve(host: str | None, port: int | None, *, demo: bool, emulator: bool, stay: bool) -> int:
    from roomwarden import devsecrets, runner
    from worker.settings import ProductionMisconfigured, Settings

    env = devsecrets.apply_defaults()
    extra: dict[str, list[str]] = {}
    control_url = None
    settings = Settings()
    host = host or settings.host
    port = port or settings.port
    if emulator:
        env, extra["emulator"], control_url = runner.with_emulator(host, port, env)
    if demo:
        env.setdefault("ROOMWARDEN_ENDPOINTS_ALLOW_PRIVATE", "true")  # the demo's endpoint is local
    _fresh_metrics_dir(env)
    os.environ.update(env)
    settings = Settings()
    missing = settings.missing_for_production(serves_api=True)
    if missing:
        typer.echo(f"roomwarden: {ProductionMisconfigured(missing)}", err=True)
        return 2
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
                typer.echo(
                    f"\nLook at it in the analyst page: {url}/ui (it asks for ROOMWARDEN_READ_TOKEN,"
                    " in var/dev-credentials.json unless you set it)."
                )
                typer.echo("Still running: Ctrl-C stops receiver, workers, beat and the emulator.")
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
def session(key: Annotated[str, typer.Argument(help="A session id or an AgentInstanceId.")]) -> None:
    """Print a session as JSON: state, end reason, instances, exceptions."""
    from worker.db import session_scope
    from worker.sessions import reading as sessions

    with session_scope(_factory()) as db:
        found = _session_or_exit(db, key)
        typer.echo(json.dumps(sessions.describe(db, found), indent=2))


@app.command()
def erase(
    user: Annotated[str, typer.Option("--user", help="The user id (sessions' user_id) to erase.")],
    vacuum: Annotated[
        bool, typer.Option("--vacuum", help="Postgres: also VACUUM the touched tables afterwards.")
    ] = False,
) -> None:
    """Erase what a user said (transcripts, stored callbacks, audio, events' text); print the record."""
    import getpass

    from worker.logging import configure_logging
    from worker.privacy import erasure
    from worker.settings import get_settings

    configure_logging(get_settings())  # logs to stderr: stdout is the record, as JSON
    done = erasure.erase(_factory(), user, requested_by=f"cli:{getpass.getuser()}", vacuum=vacuum)
    if done is None:
        typer.echo("no session has that user id: there is nothing to erase", err=True)
        raise typer.Exit(1)
    typer.echo(
        json.dumps({**done.record, "user_id": user, "erased_anything": done.erased_anything}, indent=2)
    )
    if not done.erased_anything:
        typer.echo("nothing left to erase: an earlier erasure or retention removed it", err=True)


@app.command()
def rebuild() -> None:
    """Re-derive every session and transcript from the stored callbacks (refused while workers run)."""
    from worker.sessions.rebuild import WorkersRunning
    from worker.sessions.rebuild import rebuild as do_rebuild
    from worker.settings import get_settings

    try:
        applied = do_rebuild(_factory(), get_settings())
    except WorkersRunning as exc:
        typer.echo(f"roomwarden: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"rebuilt from the inbox: {applied} callbacks applied")


@inbox_app.command("list")
def inbox_list(
    state: Annotated[str | None, typer.Option(help="pending, done, failed or conflict.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
) -> None:
    """List stored callbacks, newest first."""
    from worker.db import session_scope
    from worker.inbox import store as inbox
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
    from worker.db import session_scope
    from worker.inbox import store as inbox
    from worker.tasks import enqueue_drain

    with session_scope(_factory()) as db:
        streams = inbox.replay_failed(db, ids=ids or None)
    queued = enqueue_drain(streams) if streams else True
    typer.echo(
        f"replaying {len(streams)} stream(s)"
        + ("" if queued else "; broker unavailable, the sweeper will pick them up")
    )


@app.command()
def actions(
    session: Annotated[str | None, typer.Option(help="Only this session (id or AgentInstanceId).")] = None,
    state: Annotated[
        str | None, typer.Option(help="pending, running, done, failed, skipped, dry_run.")
    ] = None,
    action: Annotated[
        str | None, typer.Option(help="recreate, end, close_room, recycle, await_user, follow_stream.")
    ] = None,
    reason: Annotated[str | None, typer.Option(help="gave_up, user_absent, idle, manual, ...")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List what the policies decided and what came of it, newest first."""
    from worker.db import session_scope
    from worker.models import ActionKind, ActionState
    from worker.policies import reports

    for value, allowed, name in ((state, ActionState, "--state"), (action, ActionKind, "--action")):
        if value is not None and value not in {m.value for m in allowed}:
            typer.echo(f"{name} must be one of {', '.join(m.value for m in allowed)}", err=True)
            raise typer.Exit(2)
    with session_scope(_factory()) as db:
        session_id = None
        if session is not None:
            found = _session_or_exit(db, session)
            session_id = found.id
        rows = reports.list_actions(
            db, session_id=session_id, state=state, kind=action, reason=reason, limit=limit
        )
        if as_json:
            typer.echo(json.dumps({"actions": [reports.action_dict(a) for a in rows]}, indent=2))
            return
        for a in rows:
            error = f"  {a.error}" if a.error else ""
            typer.echo(
                f"{a.id:>8} {a.created_at:%Y-%m-%d %H:%M:%S} {a.kind:<10} {a.state:<8} {a.reason:<16} "
                f"{a.policy:<12} session={a.session_id} attempts={a.attempts}{error}"
            )


@app.command()
def why(
    key: Annotated[str, typer.Argument(help="A session id or an AgentInstanceId.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Say why a session is in its state: the policy action, or the vendor's deletion code."""
    from worker.db import session_scope
    from worker.policies import reports

    with session_scope(_factory()) as db:
        found = _session_or_exit(db, key)
        told = reports.why(db, found)
    if as_json:
        typer.echo(json.dumps(told, indent=2))
        return
    typer.echo(f"session {told['session_id']}: {told['state']}: {told['because']}")
    if told["flag"]:
        typer.echo(f"  flagged: {told['flag']}")
    for i in told["instances"]:
        code = f" code {i['delete_code']} ({i['delete_reason']})" if i["delete_code"] is not None else ""
        typer.echo(f"  instance {i['agent_instance_id']}: {i['state']}{code}")
    for a in told["actions"]:
        typer.echo(
            f"  action #{a['id']} {a['created_at']} {a['action']} {a['reason']} ({a['policy']}): {a['state']}"
        )


@policy_app.command("explain")
def policy_explain(
    key: Annotated[str, typer.Argument(help="A session id or an AgentInstanceId.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the session's policy and what each rule would decide now (records nothing)."""
    from worker.db import session_scope, utcnow
    from worker.policies import reports

    book = _book()
    with session_scope(_factory()) as db:
        found = _session_or_exit(db, key)
        told = reports.explain(db, found, book, utcnow())
    if as_json:
        typer.echo(json.dumps(told, indent=2))
        return
    dry = [name for name, on in told["dry_run"].items() if on]
    typer.echo(
        f"session {told['session_id']} ({told['state']}), policy from {told['source']}"
        f" for app {told['app_id']}, template {told['template'] or '-'}"
        + (f"; dry run: {', '.join(dry)}" if dry else "")
    )
    for rule, verdict in told["rules"].items():
        # on_deleted and on_exception answer per code; idle and max_length with one verdict.
        cases = verdict.items() if isinstance(verdict, dict) and "action" not in verdict else [("", verdict)]
        for case, said in cases:
            typer.echo(f"  {f'{rule} {case}'.strip():<24} {_verdict(said)}")


def _verdict(said: object) -> str:
    if not isinstance(said, dict):
        return str(said)
    delay = f" after {said['delay_seconds']:g} s" if said.get("delay_seconds") else ""
    dry = " (dry run: recorded only)" if said.get("dry_run") else ""
    return f"{said['action']} ({said['reason']}){delay}{dry}"


@policy_app.command("run")
def policy_run(
    key: Annotated[str, typer.Argument(help="A session id or an AgentInstanceId.")],
    what: Annotated[str, typer.Argument(metavar="ACTION", help="end, recreate, recycle or close_room.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Run a policy action on a session by hand (reason manual); a dry-run policy only records it."""
    from worker.db import session_scope, utcnow
    from worker.models import ActionState
    from worker.policies import reports
    from worker.tasks import enqueue_actions

    if what not in reports.MANUAL_ACTIONS:
        typer.echo(f"ACTION must be one of {', '.join(reports.MANUAL_ACTIONS)}", err=True)
        raise typer.Exit(2)
    book = _book()
    with session_scope(_factory()) as db:
        found = _session_or_exit(db, key)
        try:
            shown = reports.action_dict(reports.run_by_hand(db, found, book, utcnow(), what))
        except reports.ManualError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(1) from None
    if shown["state"] == ActionState.PENDING:  # after the commit, or a worker may not see the row
        enqueue_actions([(shown["id"], 0.0)])
    if as_json:
        typer.echo(json.dumps(shown, indent=2))
        return
    typer.echo(f"action #{shown['id']} {shown['action']} on session {shown['session_id']}: {shown['state']}")


@policy_app.command("check")
def policy_check(
    file: Annotated[
        Path | None, typer.Argument(help="A policy file (default: ROOMWARDEN_POLICIES_FILE).")
    ] = None,
    app_id: Annotated[int | None, typer.Option("--app", help="Show the policy for this ZEGO AppId.")] = None,
    template: Annotated[str | None, typer.Option(help="Show the policy for this agent template.")] = None,
) -> None:
    """Validate a policy file and print the resolved policy (the defaults unless --app/--template)."""
    from worker.policies.config import PolicyError, load
    from worker.settings import get_settings

    try:
        book = load(file if file is not None else get_settings().policies_file)
    except PolicyError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    policy = book.for_session(app_id, template) if app_id or template else book.defaults
    scope = (f"; app {app_id}" if app_id else "") + (f"; template {template}" if template else "")
    typer.echo(f"# {book.source}: valid{scope}")
    typer.echo(json.dumps(policy.model_dump(mode="json"), indent=2))


def _book() -> PolicyBook:
    from worker.policies.config import PolicyError, book_for
    from worker.settings import get_settings

    try:
        return book_for(get_settings().policies_file)
    except PolicyError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


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

"""The analyst's commands: find sessions, read a transcript, search what was said, count, export.

Each command reads the database through the same functions as the read API (the modules of
``worker.analysis``: catalog, search, stats, exports), prints a table in a terminal and JSON
with ``--json``. The session filters are the API's query parameters as options (``--since``,
``--has-interruptions true``...), parsed by the same ``SessionFilter.from_query``.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from roomwarden.terminal import lines, markup, plain

if TYPE_CHECKING:
    from sqlalchemy.orm import Session as DbSession

    from worker.analysis.catalog import SessionFilter

sessions_app = typer.Typer(help="Find sessions and look at one.", no_args_is_help=True)

FILTERS: dict[str, str] = {
    "since": "Sessions that started at or after this time (ISO 8601; a date means its midnight UTC).",
    "until": "Sessions that started before this time.",
    "app_id": "ZEGO AppId.",
    "room_id": "RTC room.",
    "user_id": "The end user.",
    "agent_id": "The registered agent (AgentId).",
    "template": "roomwarden template name.",
    "provider": "zego, zego_digital_human, zego_live_digital_human or coze.",
    "state": "starting, active, recovering, queued, ended or failed.",
    "end_reason": "deleted, user_absent, disconnected, gave_up, idle, ...",
    "has_interruptions": "true: only sessions where the user cut the agent off; false: none.",
    "has_exceptions": "true: only sessions with a vendor exception; false: none.",
    "min_turns": "At least this many turns (user and agent).",
    "agent_instance_id": "Sessions that had this agent instance.",
}

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _console() -> Console:
    # Wide enough for a table when output goes to a pipe or a test's buffer.
    return Console(width=None if sys.stdout.isatty() else 160, soft_wrap=False)


def _factory() -> Any:
    from worker.db import sessions_for
    from worker.settings import get_settings

    return sessions_for(get_settings().database_url)


def with_filters(command: Callable[..., None]) -> Callable[..., None]:
    """Give a command the session filters as options, handed to it as ``where: SessionFilter``.

    The options are written once, here, for list, search, stats and export alike; a bad value
    exits 2 naming the option, with the API's own message.
    """
    from worker.analysis.catalog import FilterError, SessionFilter

    # The command's own options with their annotations resolved for typer (they are strings
    # under ``from __future__``); ``where`` is filled in here, its type imported only for mypy.
    hints = typing.get_type_hints(command, include_extras=True, localns={"SessionFilter": SessionFilter})
    own = [
        p.replace(annotation=hints[p.name])
        for p in inspect.signature(command).parameters.values()
        if p.name != "where"
    ]
    added = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[str | None, typer.Option(help=text, rich_help_panel="Filters")],
        )
        for name, text in FILTERS.items()
    ]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        raw = {name: kwargs.pop(name) for name in FILTERS}
        try:
            where = SessionFilter.from_query({k: v for k, v in raw.items() if v is not None})
        except FilterError as exc:
            typer.echo(f"--{exc.field.replace('_', '-')}: {exc.message}", err=True)
            raise typer.Exit(2) from None
        command(*args, where=where, **kwargs)

    params = own + added
    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper


def session_or_exit(db: DbSession, key: str) -> Any:
    """The session with this id or AgentInstanceId; exit 1 with a message when there is none."""
    from worker.sessions import reading as sessions

    found = sessions.find_session(db, key)
    if found is None:
        typer.echo(f"no session with id or agent instance id {key}", err=True)
        raise typer.Exit(1)
    return found


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes}:{seconds:02d}"


def _when(iso: str | None) -> str:
    return iso[:19].replace("T", " ") if iso else "-"


@sessions_app.command("list")
@with_filters
def sessions_list(
    *,
    where: SessionFilter,
    sort: Annotated[str, typer.Option(help="started_at or duration.")] = "started_at",
    order: Annotated[str, typer.Option(help="desc or asc.")] = "desc",
    limit: Annotated[int, typer.Option(help="Sessions per page (1-500).")] = 50,
    cursor: Annotated[str | None, typer.Option(help="next_cursor of the previous page.")] = None,
    as_json: AsJson = False,
) -> None:
    """List sessions, newest first, with the filters below."""
    from worker.analysis import catalog
    from worker.db import session_scope

    try:
        with session_scope(_factory()) as db:
            page = catalog.list_sessions(db, where, sort=sort, order=order, limit=limit, cursor=cursor)
    except catalog.FilterError as exc:
        typer.echo(f"--{exc.field.replace('_', '-')}: {exc.message}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps({"sessions": page.sessions, "next_cursor": page.next_cursor}, indent=2))
        return
    table = Table(box=None, header_style="bold")
    for column in ("started", "session", "app", "room", "user", "agent", "state", "end", "length"):
        table.add_column(column)
    table.add_column("turns", justify="right")
    table.add_column("cut", justify="right")
    table.add_column("errors", justify="right")
    for s in page.sessions:
        table.add_row(
            _when(s["started_at"]),
            markup(s["id"]),
            str(s["app_id"]),
            markup(s["room_id"] or "-"),
            markup(s["user_id"] or "-"),
            markup(s["template"] or s["agent_id"] or "-"),
            s["state"],
            markup(s["end_reason"] or "-"),
            _seconds(s["duration_seconds"]),
            str(s["turns"]),
            str(s["interruptions"]),
            str(s["exceptions"]),
        )
    console = _console()
    console.print(table)
    if page.next_cursor:
        console.print(f"more: --cursor {page.next_cursor}", style="dim", highlight=False)


@sessions_app.command("show")
def sessions_show(
    key: Annotated[str, typer.Argument(help="A session id or an AgentInstanceId.")],
    as_json: AsJson = False,
) -> None:
    """One session: instances, how it ended, policy actions, latency, exceptions."""
    from worker.analysis.detail import session_detail
    from worker.db import session_scope

    with session_scope(_factory()) as db:
        detail = session_detail(db, session_or_exit(db, key))
    if as_json:
        typer.echo(json.dumps(detail, indent=2, ensure_ascii=False))
        return
    console = _console()
    s = detail["summary"]
    ending = f", {s['end_reason']}" if s["end_reason"] else ""
    console.print(f"[bold]session {s['id']}[/bold]  {s['state']}{ending}", highlight=False)
    facts = Table(box=None, show_header=False)
    facts.add_column(style="dim")
    facts.add_column()
    for label, value in (
        (
            "app / room / user",
            f"{s['app_id']} / {markup(s['room_id'] or '-')} / {markup(s['user_id'] or '-')}",
        ),
        (
            "agent",
            f"{markup(s['agent_id'] or '-')}  template {markup(s['template'] or '-')}  "
            f"provider {s['provider'] or '-'}",
        ),
        ("started / ended", f"{_when(s['started_at'])} / {_when(s['ended_at'])}"),
        ("length", _seconds(s["duration_seconds"])),
        ("no user", _seconds(detail["no_user_seconds"])),
        ("user in room", _presence(detail["presence"])),
        ("turns", f"{s['turns']} ({s['interruptions']} interrupted), {s['exceptions']} exceptions"),
    ):
        facts.add_row(label, value)
    console.print(facts)
    instances = Table(title="agent instances", title_justify="left", box=None, header_style="bold")
    for column in ("instance", "state", "created", "deleted", "code", "LLM TTFT", "TTS first frame"):
        instances.add_column(column)
    for i in detail["instances"]:
        latency = i["latency"] or {}
        instances.add_row(
            markup(i["agent_instance_id"]),
            i["state"],
            _when(i["created_at"]),
            _when(i["deleted_at"]),
            str(i["delete_code"]) if i["delete_code"] is not None else "-",
            f"{latency['LLMTTFT']} ms" if "LLMTTFT" in latency else "-",
            f"{latency['TTSAudioFirstFrameTime']} ms" if "TTSAudioFirstFrameTime" in latency else "-",
        )
    console.print(instances)
    timed = [r for r in detail["rounds"] if r["response_ms"] is not None]
    if timed:
        rounds = Table(title="response time per round", title_justify="left", box=None, header_style="bold")
        rounds.add_column("round")
        rounds.add_column("ms", justify="right")
        rounds.add_column("")
        longest = max(r["response_ms"] for r in timed) or 1
        for r in timed:
            rounds.add_row(
                str(r["round"]), f"{r['response_ms']:.0f}", "█" * max(1, int(30 * r["response_ms"] / longest))
            )
        console.print(rounds)
    for e in detail["exceptions"]:
        console.print(
            f"exception {e['code']} ({e['family']}) {_when(e['at'])}: {markup(e['message'])}", highlight=False
        )
    for a in detail["actions"]:
        console.print(f"policy {a['action']} ({a['reason']}): {a['state']}", highlight=False)


def _presence(presence: dict[str, Any]) -> str:
    """A dash when no room callback was heard: roomwarden cannot tell then, which is not "no"."""
    if presence["user_present"] is None:
        return "-"
    if presence["user_present"]:
        return "yes"
    reason = presence["logout_reason"]
    why = f" (logout reason {markup(reason)})" if reason else ""
    return f"no, since {_when(presence['absent_since'])}{why}"


def transcript(
    key: Annotated[str, typer.Argument(help="A session id or an AgentInstanceId.")],
    format_: Annotated[str, typer.Option("--format", help="text, vtt (WebVTT) or json.")] = "text",
    as_json: AsJson = False,
) -> None:
    """Print a session's transcript: as text, WebVTT subtitles, or JSON."""
    from worker.analysis import transcript_formats
    from worker.db import session_scope
    from worker.sessions import repair, transcripts

    chosen = "json" if as_json else format_
    if chosen not in ("text", "vtt", "json"):
        typer.echo("--format must be one of text, vtt, json", err=True)
        raise typer.Exit(2)
    with session_scope(_factory()) as db:
        session = session_or_exit(db, key)
        turns = transcripts.transcript(db, session.id)
        start = session.started_at or session.created_at
        if chosen == "json":
            typer.echo(
                json.dumps(
                    transcript_formats.as_json(
                        session.id, turns, start, repair.round_statuses(db, session.id)
                    ),
                    indent=2,
                    ensure_ascii=False,
                )
            )
        elif chosen == "vtt":
            typer.echo(lines(transcript_formats.as_webvtt(turns, start)), nl=False)
        else:
            ending = f", {session.end_reason}" if session.end_reason else ""
            typer.echo(plain(f"session {session.id} ({session.state}{ending})"))
            typer.echo(lines(transcript_formats.as_text(turns, start)), nl=False)


@with_filters
def search(
    query: Annotated[str, typer.Argument(help="Words or, in Chinese, any part of a sentence.")],
    *,
    where: SessionFilter,
    limit: Annotated[int, typer.Option(help="At most this many matching turns.")] = 20,
    context: Annotated[int, typer.Option(help="Turns shown before and after each match.")] = 1,
    as_json: AsJson = False,
) -> None:
    """Find turns by what was said, with the session and the turns around them."""
    from worker.analysis import search as searching
    from worker.db import session_scope

    if not query.strip():
        typer.echo("give words to search for", err=True)
        raise typer.Exit(2)
    with session_scope(_factory()) as db:
        hits = [h.as_dict() for h in searching.search(db, query, where, limit=limit, context=context)]
    if as_json:
        typer.echo(json.dumps({"query": query, "hits": hits}, indent=2, ensure_ascii=False))
        return
    console = _console()
    if not hits:
        console.print("no turn matches", style="dim")
    for hit in hits:
        s = hit["session"]
        console.print(
            f"[bold]{markup(s['id'])}[/bold]  {_when(s['started_at'])}  "
            f"room {markup(s['room_id'] or '-')}  user {markup(s['user_id'] or '-')}",
            highlight=False,
        )
        for turn in hit["before"]:
            console.print(f"    {turn['speaker']:>5}: {markup(turn['text'])}", style="dim", highlight=False)
        console.print(f"  > {hit['turn']['speaker']:>5}: {markup(hit['turn']['text'])}", highlight=False)
        for turn in hit["after"]:
            console.print(f"    {turn['speaker']:>5}: {markup(turn['text'])}", style="dim", highlight=False)


@with_filters
def stats(*, where: SessionFilter, as_json: AsJson = False) -> None:
    """Count sessions, turns, end reasons, interruptions and exceptions; latency percentiles; cost."""
    from worker.analysis import stats as counting
    from worker.db import session_scope
    from worker.settings import get_settings

    settings = get_settings()
    with session_scope(_factory()) as db:
        figures = counting.compute(db, where, rates=settings.cost_per_minute, currency=settings.cost_currency)
    if as_json:
        typer.echo(json.dumps(figures, indent=2))
        return
    console = _console()
    duration = figures["duration_seconds"]
    overview = Table(box=None, show_header=False)
    overview.add_column(style="dim")
    overview.add_column(justify="right")
    for label, value in (
        ("sessions", f"{figures['sessions']} ({figures['ended_sessions']} ended)"),
        ("total length", _seconds(duration["total"])),
        ("median length", _seconds(duration["median"])),
        ("no user", _no_user(figures["no_user_seconds"])),
        ("turns", str(figures["turns"])),
        (
            "interruption rate",
            f"{figures['interruption_rate']:.1%}" if figures["interruption_rate"] is not None else "-",
        ),
        ("estimated cost", f"{figures['cost']['total']:.2f} {figures['cost']['currency']}"),
    ):
        overview.add_row(label, value)
    console.print(overview)
    for title, counts in (
        ("end reasons", figures["end_reasons"]),
        ("deletion codes", figures["deletion_codes"]),
        ("exceptions by family", figures["exceptions"]),
    ):
        table = Table(title=title, title_justify="left", box=None, header_style="bold", min_width=28)
        table.add_column("")
        table.add_column("count", justify="right")
        for name, count in sorted(counts.items(), key=lambda kv: -kv[1]):
            table.add_row(str(name), str(count))
        console.print(table)
    latency = Table(title="latency (ms)", title_justify="left", box=None, header_style="bold")
    for column in ("", "n", "p50", "p90", "p99"):
        latency.add_column(column, justify="right" if column else "left")
    for name, figure in figures["latency"].items():
        cells = [figure[p] for p in ("p50", "p90", "p99")]
        latency.add_row(name, str(figure["count"]), *("-" if c is None else f"{c:.0f}" for c in cells))
    console.print(latency)


def _no_user(figure: dict[str, Any]) -> str:
    """Says over how many sessions: the figure is known only where a room callback was heard."""
    if not figure["sessions"]:
        return "-"
    n = figure["sessions"]
    return (
        f"{_seconds(figure['total'])} total, median {_seconds(figure['median'])} "
        f"(known for {n} ended session{'' if n == 1 else 's'})"
    )


@with_filters
def export(
    kind: Annotated[str, typer.Argument(help="sessions or turns.")],
    *,
    where: SessionFilter,
    format_: Annotated[str, typer.Option("--format", help="jsonl, csv or parquet.")] = "jsonl",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write; - or none for stdout.")
    ] = None,
    progress: Annotated[
        bool, typer.Option(help="Show a progress bar (on by default when writing a file).")
    ] = True,
) -> None:
    """Export sessions or turns, streamed at constant memory, for a warehouse or a spreadsheet."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from worker.analysis import exports
    from worker.db import session_scope

    if kind not in exports.KINDS:
        typer.echo(f"kind must be one of {', '.join(exports.KINDS)}", err=True)
        raise typer.Exit(2)
    if format_ not in exports.FORMATS:
        typer.echo(f"--format must be one of {', '.join(exports.FORMATS)}", err=True)
        raise typer.Exit(2)
    factory = _factory()
    to_stdout = output is None or str(output) == "-"
    if to_stdout and format_ == "parquet" and sys.stdout.isatty():
        typer.echo("Parquet is binary: write it to a file with --output", err=True)
        raise typer.Exit(2)
    out = sys.stdout.buffer if to_stdout else open(output, "wb")  # type: ignore[arg-type]  # noqa: SIM115
    try:
        if to_stdout or not progress:
            written = exports.write(factory, kind, format_, where, out, None)
        else:
            with session_scope(factory) as db:
                total = exports.count(db, kind, where)
            bar = Progress(
                TextColumn(f"exporting {kind}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            with bar:
                task = bar.add_task(kind, total=total)
                written = exports.write(factory, kind, format_, where, out, lambda n: bar.advance(task, n))
    finally:
        if not to_stdout:
            out.close()
    if not to_stdout:
        typer.echo(f"{written} {kind} written to {output}", err=True)

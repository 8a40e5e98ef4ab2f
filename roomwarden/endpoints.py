"""``roomwarden endpoints``: the app's event endpoints from the command line.

The same domain functions as ``/v1/endpoints`` (worker/events/), on the configured database;
``test`` and ``replay`` wake the outbound worker as the API does. A secret is printed once,
by ``create`` and ``rotate-secret``.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from roomwarden.terminal import markup, plain

if TYPE_CHECKING:
    from sqlalchemy.orm import Session as DbSession

    from worker.models import Endpoint

endpoints_app = typer.Typer(
    help="Where roomwarden sends events: register, test, replay, inspect.", no_args_is_help=True
)

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
EndpointId = Annotated[str, typer.Argument(help="The endpoint's id (ep_...).")]


def _session() -> Any:
    from worker.db import session_scope, sessions_for
    from worker.settings import get_settings

    return session_scope(sessions_for(get_settings().database_url))


def _sealer() -> Any:
    from worker.sealing import Sealer
    from worker.settings import get_settings

    key = get_settings().secret_key
    return Sealer(key.get_secret_value()) if key is not None else None


def _found(db: DbSession, endpoint_id: str) -> Endpoint:
    from worker.events import endpoints

    endpoint = endpoints.find(db, endpoint_id)
    if endpoint is None:
        typer.echo(f"no endpoint with id {plain(endpoint_id)}", err=True)
        raise typer.Exit(1)
    return endpoint


def _changes(body: dict[str, Any], *, creating: bool) -> Any:
    from worker.events import endpoints
    from worker.settings import get_settings

    try:
        return endpoints.parse(body, creating=creating, allow_private=get_settings().endpoints_allow_private)
    except endpoints.EndpointError as exc:
        typer.echo(f"--{(exc.field or 'url').replace('_', '-')}: {exc.message}", err=True)
        raise typer.Exit(2) from None


def _body(url: str | None, events: str | None, app_id: int | None, description: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if url is not None:
        body["url"] = url
    if events is not None:
        body["events"] = [e.strip() for e in events.split(",") if e.strip()] or None
    if app_id is not None:
        body["app_id"] = app_id
    if description is not None:
        body["description"] = description
    return body


def _print(shown: dict[str, Any]) -> None:
    typer.echo(json.dumps(shown, indent=2, ensure_ascii=False))


Events = Annotated[
    str | None, typer.Option(help="Comma-separated types or prefixes: session.,turn.completed")
]
AppId = Annotated[int | None, typer.Option(help="Only this ZEGO AppId's events.")]
Description = Annotated[str | None, typer.Option(help="A note for people.")]


@endpoints_app.command("create")
def create(url: str, events: Events = None, app_id: AppId = None, description: Description = None) -> None:
    """Register an endpoint; its signing secret is printed this once."""
    from worker.db import utcnow
    from worker.events import endpoints

    wanted = _changes(_body(url, events, app_id, description), creating=True)
    with _session() as db:
        endpoint, secret = endpoints.create(db, wanted, sealer=_sealer(), now=utcnow())
        shown = endpoints.describe(endpoint, secret)
    _print(shown)


@endpoints_app.command("list")
def list_(as_json: AsJson = False) -> None:
    """Every endpoint, enabled or not."""
    from worker.events import endpoints

    with _session() as db:
        shown = [endpoints.describe(e) for e in endpoints.listed(db)]
    if as_json:
        _print({"endpoints": shown})
        return
    table = Table("id", "url", "events", "app", "enabled")
    for e in shown:
        enabled = "yes" if e["enabled"] else f"no ({e['disabled_reason']})"
        table.add_row(
            e["id"],
            markup(e["url"]),
            markup(",".join(e["events"] or ["*"])),
            str(e["app_id"] or "*"),
            markup(enabled),
        )
    Console(width=160, soft_wrap=False).print(table)


@endpoints_app.command("show")
def show(endpoint_id: EndpointId) -> None:
    from worker.events import endpoints

    with _session() as db:
        _print(endpoints.describe(_found(db, endpoint_id)))


@endpoints_app.command("update")
def update(
    endpoint_id: EndpointId,
    url: Annotated[str | None, typer.Option(help="A new URL.")] = None,
    events: Events = None,
    app_id: AppId = None,
    description: Description = None,
    enable: Annotated[bool | None, typer.Option("--enable/--disable", help="Send to it, or stop.")] = None,
) -> None:
    """Change an endpoint; --enable sends again to one disabled by a 410."""
    from worker.db import utcnow
    from worker.events import endpoints

    body = _body(url, events, app_id, description)
    if enable is not None:
        body["enabled"] = enable
    changes = _changes(body, creating=False)
    with _session() as db:
        endpoint = _found(db, endpoint_id)
        endpoints.update(endpoint, changes, now=utcnow())
        _print(endpoints.describe(endpoint))


@endpoints_app.command("delete")
def delete(endpoint_id: EndpointId) -> None:
    """Remove an endpoint and its pending deliveries."""
    with _session() as db:
        db.delete(_found(db, endpoint_id))
    typer.echo(f"deleted {endpoint_id}")


@endpoints_app.command("rotate-secret")
def rotate_secret(endpoint_id: EndpointId) -> None:
    """A new secret, printed once; the old one keeps signing for 24 hours."""
    from worker.db import utcnow
    from worker.events import endpoints

    with _session() as db:
        endpoint = _found(db, endpoint_id)
        secret = endpoints.rotate(endpoint, sealer=_sealer(), now=utcnow())
        _print(endpoints.describe(endpoint, secret))


@endpoints_app.command("test")
def test(endpoint_id: EndpointId) -> None:
    """Send an endpoint.test event; see how it went with ``deliveries``."""
    from worker.db import utcnow
    from worker.events import history
    from worker.tasks import enqueue_delivery

    with _session() as db:
        delivery_id = history.send_test(db, _found(db, endpoint_id), now=utcnow())
    enqueue_delivery(endpoint_id)
    typer.echo(f"queued delivery {delivery_id}")


@endpoints_app.command("deliveries")
def deliveries(
    endpoint_id: EndpointId,
    state: Annotated[str | None, typer.Option(help="pending, succeeded or failed.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first (1-500).")] = 50,
    delivery: Annotated[int | None, typer.Option(help="One delivery, with every attempt.")] = None,
    as_json: AsJson = False,
) -> None:
    """What was sent to an endpoint, and how each attempt went."""
    from worker.events import history

    if state not in (None, "pending", "succeeded", "failed") or not 1 <= limit <= 500:
        typer.echo("--state must be pending, succeeded or failed; --limit 1 to 500", err=True)
        raise typer.Exit(2)
    with _session() as db:
        endpoint = _found(db, endpoint_id)
        if delivery is not None:
            found = history.detail(db, endpoint.id, delivery)
            if found is None:
                typer.echo(f"no delivery {delivery} for {endpoint_id}", err=True)
                raise typer.Exit(1)
            _print(found)
            return
        shown = history.listed(db, endpoint.id, state=state, limit=limit, before=None)
    if as_json:
        _print({"deliveries": shown})
        return
    table = Table("id", "type", "session", "state", "attempts", "last")
    for d in shown:
        last = d["last_status"] or d["last_error"] or "-"
        table.add_row(
            str(d["id"]), d["type"], d["session_id"] or "-", d["state"], str(d["attempts"]), markup(last)
        )
    Console(width=160, soft_wrap=False).print(table)


@endpoints_app.command("replay")
def replay(
    endpoint_id: EndpointId,
    since: Annotated[str, typer.Option(help="ISO 8601: events from this time.")],
    until: Annotated[str | None, typer.Option(help="ISO 8601: events before this time.")] = None,
    types: Events = None,
) -> None:
    """Send a window of past events again (same webhook-ids: a receiver that has them skips them)."""
    from worker.analysis.catalog import FilterError, parse_time
    from worker.db import utcnow
    from worker.events import endpoints, history
    from worker.tasks import enqueue_delivery

    try:
        start = parse_time("since", since)
        end: dt.datetime | None = parse_time("until", until) if until else None
        wanted = endpoints.patterns(_body(None, types, None, None).get("events"))
    except (FilterError, endpoints.EndpointError) as exc:
        typer.echo(f"--{(exc.field or 'types').replace('_', '-')}: {exc.message}", err=True)
        raise typer.Exit(2) from None
    with _session() as db:
        count = history.replay(
            db, _found(db, endpoint_id), since=start, until=end, types=wanted, now=utcnow()
        )
    if count:
        enqueue_delivery(endpoint_id)
    typer.echo(f"replaying {count} events")

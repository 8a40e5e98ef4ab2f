"""``roomwarden analyze``: run the post-call analysis again over the sessions a filter picks.

With ``--config-version`` the results are stored under that name, beside those of the other
versions, so a prompt change can be compared on the same calls (docs/analysis.md).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from roomwarden.analyst import AsJson, with_filters

if TYPE_CHECKING:
    from worker.analysis.catalog import SessionFilter


@with_filters
def analyze(
    *,
    where: SessionFilter,
    config_version: Annotated[
        str | None,
        typer.Option(
            "--config-version", help="Store the results under this version name (default: the config's own)."
        ),
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many sessions, newest first.")] = 1000,
    as_json: AsJson = False,
) -> None:
    """Analyse ended sessions again with the analysis LLM (ROOMWARDEN_ANALYSIS_URL)."""
    from sqlalchemy import select

    from worker.analysis.catalog import filtered
    from worker.db import session_scope
    from worker.jobs.context import JobContext
    from worker.models import Session, SessionState
    from worker.postcall import sweep
    from worker.settings import get_settings

    if config_version is not None and not 1 <= len(config_version) <= 64:
        typer.echo("--config-version: between 1 and 64 characters", err=True)
        raise typer.Exit(2)
    job = JobContext.from_settings(get_settings())
    try:
        with session_scope(job.sessions) as db:
            ids = list(
                db.scalars(
                    select(Session.id)
                    .where(Session.id.in_(filtered(where)), Session.state == SessionState.ENDED)
                    .order_by(Session.ended_at.desc())
                    .limit(limit)
                )
            )
        counts = sweep.rerun(job, ids, version=config_version)
    finally:
        job.close()
    if as_json:
        typer.echo(json.dumps({"sessions": len(ids), **counts}))
        return
    typer.echo(
        f"{len(ids)} sessions: {counts['done']} analysed, {counts['failed']} failed, "
        f"{counts['off']} with analysis off, {counts['not_reached']} not reached (model unreachable)"
    )
    if counts["not_reached"]:
        raise typer.Exit(1)

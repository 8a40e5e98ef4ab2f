"""DELETE /v1/users/{user_id} (admin): erase what a user said, thin over worker/privacy/erasure.py.

Run inline, batch by batch, and answered when done: 200 and the erasure's record (counts per
kind; ``erased_anything`` false when a second erasure found nothing left). 404 when no session
has that user id: nothing is recorded then. ``?vacuum=true`` also runs VACUUM on the touched
tables on Postgres (SQLite's files are always cleaned: docs/erasure.md).
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from webhooks.auth import authorized
from webhooks.queries import choice, invalid_query, json
from webhooks.receiver import error
from worker.analysis.catalog import FilterError
from worker.privacy import erasure

REQUESTED_BY = "api:admin"


@authorized
async def erase_user(request: Request) -> Response:
    """Erase every word of the user's sessions; counts and timings stay, the erasure is recorded."""
    user_id = request.path_params["user_id"]
    try:
        vacuum = choice(request, "vacuum", ("true", "false")) == "true"
    except FilterError as exc:
        return invalid_query(exc)
    factory = request.app.state.sessions

    def run() -> Response:
        done = erasure.erase(factory, user_id, requested_by=REQUESTED_BY, vacuum=vacuum)
        if done is None:
            return error(404, "not_found", "no session has that user id: there is nothing to erase")
        return json({**done.record, "user_id": user_id, "erased_anything": done.erased_anything})

    return await run_in_threadpool(run)

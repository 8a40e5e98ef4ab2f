"""Celery tasks: ids in, one domain call with the process's job context, follow-ups published.

Every body is a few lines. What a task does lives in the stage it belongs to (``worker.inbox``,
``worker.sessions``, ``worker.policies``); what it needs comes from ``worker.jobs.context``;
messages it sends go out through ``worker.jobs.publish`` after the work they point at is
committed. Retries are declared in the decorators: a database that is restarting or failing
over is waited for with backoff, never lost. Task names (``worker.tasks.<name>``) are the wire
contract with queued messages: keep them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import DBAPIError, OperationalError

from worker.celery_app import app
from worker.events import delivery, dispatch
from worker.inbox import drain as draining
from worker.inbox import retention, wakeups
from worker.inbox.store import StreamKey
from worker.jobs import context
from worker.jobs.publish import publish
from worker.policies import running, scans, scheduled
from worker.postcall import sweep as postcall
from worker.sessions import coze_rooms, ending, starting

StreamList = list[list[int | str]]

# A database that is restarting or failing over: try again, backing off, rather than lose the task.
DATABASE_RETRIES: dict[str, Any] = {
    "autoretry_for": (OperationalError, DBAPIError),
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "retry_jitter": True,
}


# --- Ingest: apply stored callbacks (worker/inbox/). ---


@app.task(acks_late=True, max_retries=20, **DATABASE_RETRIES)
def drain(streams: StreamList) -> dict[str, int]:
    """Apply the pending callbacks of each given (AppId, AgentInstanceId) stream."""
    job = context.current()
    keys = [(int(app_id), str(instance_id)) for app_id, instance_id in streams]
    return draining.drain_until_done(
        job.sessions,
        keys,
        settings=job.settings,
        retry_later=_retry_later,
        on_actions=enqueue_actions,
        marks=wakeups.for_settings(job.settings),
        on_slot_freed=lambda: publish(start_freed_slots),
    ).totals()


def _retry_later(streams: list[StreamKey], delay: float) -> None:
    if delay:  # callbacks that failed: unmarked, or new callbacks would wait for their backoff
        enqueue_drain(streams, countdown=delay)
        return
    marks = wakeups.for_settings(context.current().settings)  # a drain hands its marked streams back
    marks.requeued(streams)
    if not enqueue_drain(streams):
        marks.release(streams)  # the broker is away: the sweeper sends them once it is back


def enqueue_drain(streams: list[tuple[int, str]], *, countdown: float | None = None) -> bool:
    """Ask a worker to drain these streams; the rows are stored already, the sweeper finds them.

    Sends whatever it is given: the callers that must not send a second message for a stream
    (the receiver, the sweeper) ask ``worker.inbox.wakeups`` first."""
    wanted = [list(stream) for stream in streams]
    return publish(drain, wanted, countdown=countdown, argsrepr=f"<{len(streams)} streams>")


@app.task(acks_late=True)
def sweep_inbox() -> int:
    """Re-enqueue streams whose callbacks are still pending after a while."""
    return draining.sweep(context.current(), enqueue_drain)


@app.task(acks_late=True, **DATABASE_RETRIES)
def purge_retention() -> dict[str, int]:
    """Empty raw payloads and delete user audio past their retention, a batch per transaction."""
    return retention.purge_all(context.current())


@app.task(acks_late=True)
def purge_user_audio() -> dict[str, int]:
    """The old name of ``purge_retention``, kept for messages queued before an upgrade."""
    return retention.purge_all(context.current())


# --- Sessions started and ended through the API (worker/sessions/). ---


# max_retries=None: vendor errors are bounded by start_max_attempts, counted on the session.
@app.task(bind=True, acks_late=True, max_retries=None, **DATABASE_RETRIES)
def start_session(self: Any, session_id: str) -> str:
    """Ask the vendor for the agent of a session started through the API."""
    outcome = starting.start(context.current(), session_id)
    enqueue_actions(outcome.actions)
    if outcome.end_now:
        enqueue_end(session_id, graceful=False)
    if outcome.retry_in is not None:
        raise self.retry(countdown=outcome.retry_in, exc=outcome.error)
    return outcome.result


def enqueue_start(session_id: str) -> bool:
    """Ask a worker to start the session; False if the broker is away (resume_starts catches it)."""
    return publish(start_session, session_id)


@app.task(acks_late=True, max_retries=10, **DATABASE_RETRIES)
def end_session(session_id: str, graceful: bool = False) -> int:
    """DeleteAgentInstance for each live instance; the deletion callbacks then end the session."""
    return ending.end(context.current(), session_id, graceful=graceful)


def enqueue_end(session_id: str, *, graceful: bool) -> bool:
    return publish(end_session, session_id, graceful=graceful)


@app.task(acks_late=True)
def resume_starts() -> int:
    """Re-enqueue API sessions whose start message was lost or whose worker died mid-start."""
    return starting.resume(context.current(), enqueue_start)


@app.task(acks_late=True)
def watch_coze_rooms() -> int:
    """Read new Coze room messages into transcripts; end sessions whose room has closed."""
    return coze_rooms.watch(context.current())


# --- Events out (worker/events/): outbox to deliveries, each endpoint on its own. ---


@app.task(acks_late=True, **DATABASE_RETRIES)
def dispatch_deliveries() -> int:
    """Fan new outbox events out into deliveries; wake every endpoint that has some due."""
    job = context.current()
    dispatch.fan_out(job)
    wanted = dispatch.endpoints_with_work(job)
    for endpoint_id in wanted:
        enqueue_delivery(endpoint_id)
    return len(wanted)


# On the outbound queue (celery_app.ROUTES), served by its own workers: a slow endpoint never
# holds up a drain. Idempotent: a run killed mid-request leaves its deliveries pending.
@app.task(acks_late=True, **DATABASE_RETRIES)
def deliver_endpoint(endpoint_id: str) -> int:
    """Send one endpoint's due deliveries, in order per session, for a bounded time."""
    return delivery.deliver(context.current(), endpoint_id).sent


def enqueue_delivery(endpoint_id: str) -> bool:
    """Wake an endpoint's sender; a lost message costs one beat interval (dispatch_deliveries)."""
    return publish(deliver_endpoint, endpoint_id)


# --- Policies (worker/policies/): decided in drains and scans, executed here, once each. ---


def enqueue_actions(actions: list[tuple[int, float]]) -> None:
    """Ask a worker to run each (action id, delay); a lost message waits for sweep_actions."""
    for action_id, delay in actions:
        if not publish(run_action, action_id, countdown=delay):
            return  # the broker is away: the rest would fail the same way


@app.task(acks_late=True, max_retries=None, **DATABASE_RETRIES)
def run_action(action_id: int) -> str:
    """Claim a policy action, carry it out at the vendor, record what came of it."""
    ran = running.run(context.current(), action_id)
    enqueue_actions(ran.follow_up)
    return ran.state


@app.task(acks_late=True)
def sweep_actions() -> int:
    """Actions whose message was lost, whose backoff has passed, or whose worker died mid-way."""
    return running.sweep(context.current(), enqueue_actions)


@app.task(acks_late=True, **DATABASE_RETRIES)
def recycle_idle() -> int:
    """Active sessions whose user has been silent past the policy's threshold get recycled."""
    return scheduled.scan(context.current(), "recycle-idle", scans.recycle_idle, enqueue_actions)


@app.task(acks_late=True, **DATABASE_RETRIES)
def enforce_max_length() -> int:
    """Sessions older than their policy's maximum length get recycled."""
    return scheduled.scan(context.current(), "enforce-max-length", scans.enforce_max_length, enqueue_actions)


@app.task(acks_late=True, **DATABASE_RETRIES)
def reconcile() -> int:
    """Ask ZEGO about agents gone quiet (their deletion callback may be lost); end stale Coze rooms."""
    return scheduled.reconcile(context.current(), enqueue_actions)


@app.task(acks_late=True, **DATABASE_RETRIES)
def start_queued() -> int:
    """Sessions queued for a vendor slot: start those that fit, fail those that waited too long."""
    ids = scheduled.start_queued(context.current())
    for session_id in ids:
        enqueue_start(session_id)  # a lost message: resume_starts finds the session
    return len(ids)


@app.task(acks_late=True, **DATABASE_RETRIES)
def start_freed_slots() -> int:
    """A drain applied a deletion while sessions wait in line: start those that now fit."""
    ids = scheduled.start_freed(context.current())
    for session_id in ids:
        enqueue_start(session_id)
    return len(ids)


# --- Post-call analysis through the user's own LLM (worker/postcall/). ---


@app.task(acks_late=True, **DATABASE_RETRIES)
def analyze_ended() -> int:
    """Analyse ended sessions not analysed yet (the model unreachable: the next run tries again)."""
    return postcall.sweep(context.current())

"""Which sessions each beat scan must look at, as SQL, so that a beat reads candidates, not every session.

With 10,000 live sessions the scans used to load every active session (and its instance) each
beat and let the pure per-session checks (``scans.idle_decision``, ``length_decision``,
``next_ask``...) throw nearly all of them away. These predicates move the thresholds into the
``WHERE`` clause. They are *prefilters*: the pure checks still run on what they find (and again
under the row lock), because ``roomwarden policy explain`` shows their reasons. So every
predicate here must keep every session the pure check would act on; it may let through a few it
would not (a one-second slack on each threshold absorbs float rounding; speech visibility
through the spec only asks whether the setting is there; Python judges its value).

Thresholds differ per app and template (``PolicyBook``): ``by_policy`` spells out, for each
distinct threshold, which (app, template) combinations have it, so the predicate is exact per
policy rather than the loosest across all. A file without overrides gives one plain predicate.
Only columns and bound parameters are used: the same SQL runs on Postgres and SQLite.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Hashable
from typing import TypeVar

from sqlalchemy import ColumnElement, and_, false, or_, true

from worker.models import AgentInstance, Provider, Session
from worker.policies.config import Policy, PolicyBook, Reconcile

# Thresholds are compared in Python as float seconds; a second of slack in SQL keeps every
# session whose float comparison could fall on the other side of the bound parameter.
SLACK = dt.timedelta(seconds=1)

K = TypeVar("K", bound=Hashable)


def by_policy(
    book: PolicyBook,
    threshold: Callable[[Policy], K],
    where: Callable[[K], ColumnElement[bool]],
    *,
    app_id: int | None = None,
) -> ColumnElement[bool]:
    """``where(threshold(policy))`` for each session's own policy, as one predicate.

    Combinations sharing a threshold share a branch. ``app_id`` fixes the app (Coze sessions all
    resolve their policy under ``COZE_APP_ID``) instead of reading ``sessions.app_id``.
    """
    apps, templates = book.app_ids, book.template_names
    app_keys: list[int | None] = [None, *apps]
    if app_id is not None:
        app_keys = [app_id if app_id in apps else None]
    groups: dict[K, list[ColumnElement[bool]]] = {}
    for app in app_keys:
        for template in [None, *templates]:
            key = threshold(book.for_session(app, template))
            same_app = true() if app_id is not None else _app_is(app, apps)
            groups.setdefault(key, []).append(and_(same_app, _template_is(template, templates)))
    if len(groups) == 1:
        return where(next(iter(groups)))
    return or_(*(and_(where(key), or_(*matches)) for key, matches in groups.items()))


def _app_is(app: int | None, apps: list[int]) -> ColumnElement[bool]:
    """Sessions whose policy resolves under ``app`` (None: apps the file does not name)."""
    if app is not None:
        return Session.app_id == app
    return Session.app_id.not_in(apps) if apps else true()


def _template_is(template: str | None, templates: list[str]) -> ColumnElement[bool]:
    if template is not None:
        return Session.template == template
    if not templates:
        return true()
    return or_(Session.template.is_(None), Session.template.not_in(templates))


# Where a stored spec turns on the callbacks that carry user speech (``scans.speech_visible``);
# any value lets a session through, Python judges its truth.
_SPEECH_ON = (("params", "CallbackConfig", "ASRResult"), ("params", "CallbackConfig", "UserSpeakAction"))


def idle(book: PolicyBook, now: dt.datetime) -> ColumnElement[bool]:
    """Could ``scans.idle_decision`` recycle it: quiet (``quiet_since``) past ``idle.after_seconds``.

    ``quiet_since`` is the later of the last user speech and the instance's creation (or the
    session's start): both must be past the cutoff, and at least one must be known. Speech is
    visible when some was heard, or when the stored spec asked for it (checked in Python). A live
    digital human has no user: its mark is the last ``say`` (``last_activity_at``), always visible.
    A user out of the room (``user_absent_since``) is quiet whether speech is visible or not.
    """
    live = Session.provider == Provider.ZEGO_LIVE_DIGITAL_HUMAN.value

    def quiet_past(after: float) -> ColumnElement[bool]:
        if after <= 0:
            return false()
        cutoff = now - dt.timedelta(seconds=after) + SLACK
        speech, created, started = Session.last_user_speech_at, AgentInstance.created_at, Session.started_at
        said = Session.last_activity_at
        since_creation = or_(
            created <= cutoff, and_(created.is_(None), or_(started.is_(None), started <= cutoff))
        )
        voice = and_(
            or_(Session.provider.is_(None), ~live),
            or_(speech.is_not(None), *(Session.spec[path].as_string().is_not(None) for path in _SPEECH_ON)),
            or_(speech.is_(None), speech <= cutoff),
            since_creation,
            or_(speech.is_not(None), created.is_not(None), started.is_not(None)),
        )
        driven = and_(
            live,
            or_(said.is_(None), said <= cutoff),
            since_creation,
            or_(said.is_not(None), created.is_not(None), started.is_not(None)),
        )
        # Out of the room (worker/sessions/rooms.py), speech callbacks or not: scans.absent_since.
        absent = and_(
            or_(Session.provider.is_(None), ~live),
            Session.user_present.is_(False),
            Session.user_absent_since <= cutoff,
            since_creation,
        )
        return or_(voice, driven, absent)

    return by_policy(book, lambda p: p.idle.after_seconds, quiet_past)


def too_long(book: PolicyBook, now: dt.datetime) -> ColumnElement[bool]:
    """Could ``scans.length_decision`` recycle it: started more than ``max_length.seconds`` ago."""

    def older_than(limit: float) -> ColumnElement[bool]:
        if limit <= 0:
            return false()
        return Session.started_at <= now - dt.timedelta(seconds=limit) + SLACK

    return by_policy(book, lambda p: p.max_length.seconds, older_than)


def coze_overdue(book: PolicyBook, now: dt.datetime, coze_app_id: int) -> ColumnElement[bool]:
    """Could ``scans.coze_overdue`` end it: a Coze room older than ``coze.max_room_seconds``."""
    return by_policy(
        book,
        lambda p: p.coze.max_room_seconds,
        lambda limit: Session.started_at <= now - dt.timedelta(seconds=limit) + SLACK,
        app_id=coze_app_id,
    )


def reconcile_due(
    book: PolicyBook, now: dt.datetime, backoff: Callable[[Reconcile, int], dt.timedelta]
) -> ColumnElement[bool]:
    """Could ``scans.suspects`` ask about it: attempts left, ``next_ask`` passed, quiet past its threshold.

    ``next_ask`` waits ``backoff(rules, attempts)`` after the last ask, a wait that doubles with
    the attempts up to a cap: one branch per attempt count until the cap is reached, then one for
    all the rest, so the SQL stays short whatever ``max_attempts`` is. The unconfirmed case is
    loose (a recreation after ``provisioned_at`` moves its clock later: Python checks that).
    """

    def due(rules: Reconcile) -> ColumnElement[bool]:
        attempts, asked = Session.reconcile_attempts, Session.reconciled_at
        waits: list[ColumnElement[bool]] = [asked.is_(None)]
        cap = dt.timedelta(seconds=rules.max_backoff_seconds)
        for k in range(rules.max_attempts):
            wait = backoff(rules, k)
            if wait < cap and k + 1 < rules.max_attempts:
                waits.append(and_(attempts == k, asked <= now - wait + SLACK))
                continue
            # The wait has reached its cap: every later attempt count waits the same.
            waits.append(and_(attempts >= k, asked <= now - wait + SLACK))
            break
        created, last = AgentInstance.created_at, AgentInstance.last_event_at
        confirmed = and_(created.is_not(None), last.is_not(None))
        silent = and_(confirmed, last <= now - dt.timedelta(seconds=rules.silent_seconds) + SLACK)
        unconfirmed_cutoff = now - dt.timedelta(seconds=rules.unconfirmed_seconds) + SLACK
        unconfirmed = and_(
            or_(created.is_(None), last.is_(None)),
            or_(Session.provisioned_at.is_(None), Session.provisioned_at <= unconfirmed_cutoff),
        )
        return and_(attempts < rules.max_attempts, or_(*waits), or_(silent, unconfirmed))

    return by_policy(book, lambda p: p.reconcile, due)

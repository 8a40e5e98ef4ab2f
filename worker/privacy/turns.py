"""The redacted copy of each turn, kept beside its text where turns are written.

The drain calls ``keep_redacted`` for the turns a batch touched, once their text is joined and
before the flush, so the copy goes out in the same UPDATE as the text. Readers then choose a
column by scope (``shown_text``), and the BI views read the copy (migration 0014): nothing is
redacted on the read path, so exports and search cost what they did.

In ``store`` mode the text came redacted from the receiver; turns written from another source
(Coze's message list, worker/sessions/coze_rooms.py) are redacted here, in place.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import ColumnElement, and_, func, or_

from worker.models import Session, Turn
from worker.policies.config import book_for
from worker.privacy.modes import mode_for, rules_for, worker_settings
from worker.privacy.redaction import redact, redacted_or_none
from worker.settings import Settings


def keep_redacted(session: Session, turns: Iterable[Turn], *, settings: Settings | None = None) -> None:
    """Set the redacted copies of ``turns`` (of ``session``) for its mode; nothing when it is off.
    ``store`` also rewrites the text itself, for turns that did not come through the receiver."""
    settings = worker_settings(settings)
    book = book_for(settings.policies_file)
    mode = mode_for(book, settings.pii_redaction, session.app_id, session.template)
    if mode == "off":
        return
    rules = rules_for(book, session.app_id, session.template)
    for turn in turns:
        if mode == "store":
            if turn.text:
                turn.text = redact(turn.text, rules)
            if turn.played_text:
                turn.played_text = redact(turn.played_text, rules)
        text = redacted_or_none(turn.text, rules)
        played = redacted_or_none(turn.played_text, rules)
        # Assigned only when different: an unchanged turn adds nothing to the batch's UPDATE.
        if turn.text_redacted != text:
            turn.text_redacted = text
        if turn.played_text_redacted != played:
            turn.played_text_redacted = played


def redacted_holds(terms: Sequence[str]) -> ColumnElement[bool]:
    """For search by a reader without the admin token: the turn has no redacted copy, or every
    term is in that copy too (case-insensitively, as search's own substring match)."""
    return or_(
        Turn.text_redacted.is_(None),
        and_(*(Turn.text_redacted.ilike(f"%{_escape_like(t)}%", escape="\\") for t in terms)),
    )


def _escape_like(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def shown_text(turn: Turn, *, raw: bool) -> str:
    """A turn's text as this reader may see it: ``raw`` for the admin token only."""
    return turn.text if raw else (turn.text_redacted or turn.text)


def shown_played_text(turn: Turn, *, raw: bool) -> str | None:
    return turn.played_text if raw else (turn.played_text_redacted or turn.played_text)


def text_column(*, raw: bool) -> ColumnElement[str]:
    """``shown_text`` in SQL, for queries that select the text (exports, search results)."""
    if raw:
        return Turn.text.expression
    return func.coalesce(Turn.text_redacted, Turn.text)


def played_text_column(*, raw: bool) -> ColumnElement[str | None]:
    if raw:
        return Turn.played_text.expression
    return func.coalesce(Turn.played_text_redacted, Turn.played_text)

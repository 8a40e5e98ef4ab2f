"""Full-text search over what was said: the matching turns, their sessions, and the turns around them.

Two engines, one behaviour a reader can rely on: every whitespace-separated term of the query
must appear in the turn's text, case-insensitively.

- Postgres: words through ``to_tsvector('simple', text) @@ websearch_to_tsquery('simple', q)``
  (ranked by ``ts_rank``; quotes, ``or`` and ``-word`` work as on a web search engine). A
  settled turn's vector is stored (``turns.text_tsv``, a generated column, migration 0012) and
  indexed, so ranking a match reads it rather than parsing the text again. Chinese and Japanese
  have no spaces between words, so a query with CJK characters, or one the word search finds
  nothing for (part of a word, punctuation), is a substring search: ``text ILIKE '%term%'`` per
  term, backed by a pg_trgm GIN index; a two-character CJK term, shorter than a trigram, by the
  index of each turn's CJK bigrams (``turn_cjk_bigrams``). A one-character term has no index:
  it is a scan, bounded by the read's statement budget. The indexes hold settled turns only
  (``WHERE settled``, migration 0011: a live agent turn is rewritten once per sentence); each
  query reads them for settled turns and adds the few unsettled ones by a scan of
  ``ix_turns_unsettled`` (``_settled_or_not``), so a turn is found the moment it is stored.
- SQLite: the FTS5 table ``turns_fts`` (trigram tokenizer, so substrings of any language), each
  term quoted as a literal string and ranked by bm25. Trigrams need three characters: a query
  with a shorter term is a ``LIKE`` substring search instead.

User input never reaches a query as syntax: LIKE wildcards are escaped, FTS5 terms quoted, and
``websearch_to_tsquery`` is built not to raise on any input.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    Subquery,
    and_,
    column,
    func,
    literal_column,
    select,
    table,
    true,
    union_all,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session as DbSession

from worker.analysis import catalog, summary
from worker.models import AgentInstance, Turn
from worker.privacy.turns import redacted_holds, shown_played_text, shown_text

MAX_LIMIT = 100
MAX_CONTEXT = 10
# Bounds on the query itself, so that no query costs more than a person could mean by it: a
# 1,000-character term once held SQLite's write lock for minutes over one long turn.
MAX_QUERY_CHARS = 256
MAX_TERMS = 8
MAX_TERM_CHARS = 64
# The substring search without an index (SQLite, terms under three characters) reads at most
# this much of each turn; Postgres's trigram index and the read's statement budget bound its own.
MAX_SCANNED_CHARS = 20_000

# Han, kana, Hangul, CJK punctuation and full-width forms: scripts written without spaces.
_CJK = re.compile("[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")
_FTS = table("turns_fts", column("rowid"), column("rank"))
# Postgres: settled turns' stored word vector (a generated column of migration 0012, not modelled).
_STORED_VECTOR: ColumnElement[Any] = literal_column("turns.text_tsv")
# _CJK as a Postgres regular expression, written exactly as migration 0012's partial bigram index
# says it (a constant in the query, not a parameter: the planner must see that it implies it).
_CJK_PREDICATE: ColumnElement[str] = literal_column(
    r"'[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]'"
)


@dataclass(frozen=True, slots=True)
class Hit:
    session: dict[str, Any]  # summary.summaries' summary
    turn: dict[str, Any]
    before: list[dict[str, Any]]
    after: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {"session": self.session, "turn": self.turn, "before": self.before, "after": self.after}


def search(
    db: DbSession, q: str, f: catalog.SessionFilter, *, limit: int = 20, context: int = 2, raw: bool = True
) -> list[Hit]:
    """The best ``limit`` turns matching ``q`` in the sessions ``f`` finds, each with ``context``
    turns either side (same session, conversation order). FilterError on a query out of bounds.

    ``raw``: the admin token (and the CLI) search and read the text as spoken. Anyone else reads
    the PII-redacted copy, and a turn that has one must hold every term in it too
    (``privacy.turns.redacted_holds``): a query that only matched inside a redacted e-mail
    address or card number finds nothing, so search cannot confirm a value it does not show."""
    terms = terms_of(q)
    q = " ".join(terms)
    limit = max(1, min(limit, MAX_LIMIT))
    context = max(0, min(context, MAX_CONTEXT))
    # Every turn belongs to a session: without a filter, no semi-join with every session.
    scope: ColumnElement[bool] = Turn.session_id.in_(catalog.filtered(f)) if f.conditions() else true()
    if not raw:
        scope = and_(scope, redacted_holds(terms))
    ids = _matching(db, q.strip(), terms, scope, limit)
    return _hits(db, ids, context, raw) if ids else []


def terms_of(q: str) -> list[str]:
    """The whitespace-separated terms of ``q``; FilterError (naming ``q``) when there are none, too
    many or too long ones. NUL separates terms like a space: Postgres text cannot hold one, and
    nobody searches for one (so a query of NULs alone is empty)."""
    q = q.replace("\x00", " ")
    if len(q) > MAX_QUERY_CHARS:
        raise catalog.FilterError("q", f"q must be at most {MAX_QUERY_CHARS} characters")
    terms = q.split()
    if not terms:
        raise catalog.FilterError("q", "q must not be empty")
    if len(terms) > MAX_TERMS:
        raise catalog.FilterError("q", f"q must have at most {MAX_TERMS} terms")
    if any(len(term) > MAX_TERM_CHARS for term in terms):
        raise catalog.FilterError("q", f"each term of q must be at most {MAX_TERM_CHARS} characters")
    return terms


def _matching(db: DbSession, q: str, terms: list[str], scope: ColumnElement[bool], limit: int) -> list[int]:
    dialect = db.get_bind().dialect.name
    found: list[int] = []
    if dialect == "postgresql" and not _CJK.search(q):
        config: ColumnElement[Any] = literal_column(
            "'simple'::regconfig"
        )  # a constant: the expression index matches it
        query = func.websearch_to_tsquery(config, q)

        def ranked_branch(settled: ColumnElement[bool], stored: bool) -> Select[Any]:
            # Settled turns have their vector stored (``text_tsv``, NULL for the others): ranking
            # a match reads it instead of parsing the text again. The few live turns are parsed.
            vector = _STORED_VECTOR if stored else func.to_tsvector(config, Turn.text)
            return select(Turn.id, func.ts_rank(vector, query).label("rank")).where(
                settled, vector.op("@@")(query), scope
            )

        ranked = _settled_or_not(ranked_branch)
        best = select(ranked.c.id).order_by(ranked.c.rank.desc(), ranked.c.id.desc()).limit(limit)
        found = list(db.scalars(best))
    elif dialect == "sqlite" and all(len(t) >= 3 for t in terms):
        match = " ".join('"' + t.replace('"', '""') + '"' for t in terms)
        found = list(
            db.scalars(
                select(Turn.id)
                .join(_FTS, _FTS.c.rowid == Turn.id)
                .where(literal_column("turns_fts").op("MATCH")(match), scope)
                .order_by(_FTS.c.rank, Turn.id.desc())
                .limit(limit)
            )
        )
    if found:
        return found
    return list(db.scalars(_substring(terms, scope, dialect).limit(limit)))


def _substring(terms: Sequence[str], scope: ColumnElement[bool], dialect: str) -> Select[Any]:
    """Every term somewhere in the text, case-insensitively; newest turns first."""
    text = Turn.text if dialect == "postgresql" else func.substr(Turn.text, 1, MAX_SCANNED_CHARS)
    like = and_(*(text.ilike(f"%{escape_like(t)}%", escape="\\") for t in terms))
    if dialect != "postgresql":
        return select(Turn.id).where(like, scope).order_by(Turn.id.desc())
    pairs = [t for t in terms if _is_cjk_pair(t)]

    def branch(settled: ColumnElement[bool], indexed: bool) -> Select[Any]:
        where = [settled, like, scope]
        if pairs and indexed:
            # Shorter than a trigram: the bigram index (migration 0012) finds the settled turns
            # holding each pair, the ILIKE above decides. Its predicate, said as it says it.
            bigrams = postgresql.array([func.lower(t) for t in pairs])
            where += [Turn.text.op("~")(_CJK_PREDICATE), func.turn_cjk_bigrams(Turn.text).op("@>")(bigrams)]
        return select(Turn.id).where(*where)

    found = _settled_or_not(branch)
    return select(found.c.id).order_by(found.c.id.desc())


def _is_cjk_pair(term: str) -> bool:
    """A two-character term with a CJK character whose other character lower-cases to one
    character (CJK or ASCII): ``lower(term)`` is then one of the bigrams the index holds."""
    return len(term) == 2 and bool(_CJK.search(term)) and all(_CJK.match(c) or c.isascii() for c in term)


def _settled_or_not(branch: Callable[[ColumnElement[bool], bool], Select[Any]]) -> Subquery:
    """``branch`` over settled turns (the partial GIN indexes, the stored vector: its second
    argument True) and over unsettled ones (a scan of ``ix_turns_unsettled``), as one subquery.
    Written out as two branches because the planner folds ``(settled AND x) OR (NOT settled AND
    x)`` into ``x`` and then uses neither index."""
    settled = Turn.settled.expression  # as the index predicates say it: `settled`, `NOT settled`
    return union_all(branch(settled, True), branch(~settled, False)).subquery()


def escape_like(term: str) -> str:
    """``term`` matched literally by LIKE with ESCAPE '\\'."""
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _conversation_order() -> list[Any]:
    # As worker/sessions/transcripts.py orders a transcript: instance by instance, Round by Round, user first.
    return [AgentInstance.first_seen_at, AgentInstance.agent_instance_id, Turn.round, Turn.speaker.desc()]


def _hits(db: DbSession, ids: list[int], context: int, raw: bool = True) -> list[Hit]:
    """Neighbours by position in the conversation: one window query for every hit session."""
    session_of = dict(db.execute(select(Turn.id, Turn.session_id).where(Turn.id.in_(ids))).all())
    position = func.row_number().over(partition_by=Turn.session_id, order_by=_conversation_order())
    ordered: dict[str, list[int]] = {}
    where: dict[int, int] = {}
    for turn_id, session_id, pos in db.execute(
        select(Turn.id, Turn.session_id, position)
        .join(AgentInstance, AgentInstance.id == Turn.instance_id)
        .where(Turn.session_id.in_(set(session_of.values())))
        .order_by(Turn.session_id, position)
    ):
        ordered.setdefault(session_id, []).append(turn_id)
        where[turn_id] = int(pos) - 1
    around: dict[int, tuple[list[int], list[int]]] = {}
    for turn_id in ids:
        row, at = ordered[session_of[turn_id]], where[turn_id]
        around[turn_id] = (row[max(0, at - context) : at], row[at + 1 : at + 1 + context])
    wanted = set(ids).union(*(b + a for b, a in around.values()))
    turns = {
        turn.id: _turn_dict(turn, instance, raw)
        for turn, instance in db.execute(
            select(Turn, AgentInstance.agent_instance_id)
            .join(AgentInstance, AgentInstance.id == Turn.instance_id)
            .where(Turn.id.in_(wanted))
        )
    }
    summaries = {s["id"]: s for s in summary.summaries(db, list(dict.fromkeys(session_of.values())))}
    return [
        Hit(
            session=summaries[session_of[turn_id]],
            turn=turns[turn_id],
            before=[turns[i] for i in around[turn_id][0]],
            after=[turns[i] for i in around[turn_id][1]],
        )
        for turn_id in ids
    ]


def _turn_dict(turn: Turn, agent_instance_id: str, raw: bool = True) -> dict[str, Any]:
    """A transcript turn (worker/sessions/transcripts.py's keys) with its row id and session."""
    return {
        "id": turn.id,
        "session_id": turn.session_id,
        "agent_instance_id": agent_instance_id,
        "round": turn.round,
        "speaker": turn.speaker,
        "text": shown_text(turn, raw=raw),
        "spoken_at": turn.spoken_at.isoformat() if turn.spoken_at else None,
        "interrupted": turn.interrupted,
        "interrupt_reason": turn.interrupt_reason,
        "played_text": shown_played_text(turn, raw=raw),
        "user_id": turn.user_id,
        "meta_info": turn.meta_info,
    }

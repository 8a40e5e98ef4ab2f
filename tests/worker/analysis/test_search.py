"""Full-text search: an analyst finds what was said, in English or Chinese, with the turns around it."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import delete, text, true
from sqlalchemy.orm import Session as DbSession

from tests.seeded import SEEDS, Seed, seed
from worker.analysis import catalog, search
from worker.models import Session
from worker.sessions.transcripts import join_sentences
from worker.settings import Settings

EVERYTHING = catalog.SessionFilter()
Key = tuple[str, int, str]  # session id, Round, speaker


def conversation(s: Seed) -> list[tuple[Key, str]]:
    """The seeded session's turns in conversation order, with their texts."""
    turns: list[tuple[Key, str]] = []
    for i, r in enumerate(s.rounds):
        turns.append(((s.session_id, s.round_number(i), "user"), r.user))
        turns.append(((s.session_id, s.round_number(i), "agent"), join_sentences(r.agent)))
    return turns


def containing(*terms: str, seeds: list[Seed] = SEEDS) -> set[Key]:
    return {
        key
        for s in seeds
        for key, said in conversation(s)
        if all(t.casefold() in said.casefold() for t in terms)
    }


def keys(hits: list[search.Hit]) -> set[Key]:
    return {(h.turn["session_id"], h.turn["round"], h.turn["speaker"]) for h in hits}


@pytest.mark.parametrize("words", [("umbrella",), ("Seven", "thirty"), ("birthday",), ("snow",)])
def test_english_words_find_exactly_the_turns_that_say_them(
    db: DbSession, settings: Settings, words: tuple[str, ...]
) -> None:
    """Every turn saying every word, whatever the case, and nothing else."""
    seed(db, settings)
    expected = containing(*words)
    # The words are whole words wherever they occur, so word search and substring search agree.
    assert expected == {
        key
        for s in SEEDS
        for key, said in conversation(s)
        if all(re.search(rf"\b{w}\b", said, re.I) for w in words)
    }
    assert expected
    assert keys(search.search(db, " ".join(words), EVERYTHING, limit=100)) == expected


@pytest.mark.parametrize("q", ["退款", "叫醒服务", "上海转运中心", "续费"])
def test_chinese_substrings_of_two_and_more_characters_are_found(
    db: DbSession, settings: Settings, q: str
) -> None:
    """Chinese has no spaces: a two-character word and a longer phrase are found inside sentences."""
    seed(db, settings)
    expected = containing(q)
    assert expected
    assert keys(search.search(db, q, EVERYTHING, limit=100)) == expected


def test_a_part_of_an_english_word_is_found_too(db: DbSession, settings: Settings) -> None:
    """Typing the start of a word finds it: the word index finds nothing, the substring search does."""
    seed(db, settings)
    assert keys(search.search(db, "umbrel", EVERYTHING, limit=100)) == containing("umbrella")


def test_search_combined_with_a_filter_stays_inside_the_filtered_sessions(
    db: DbSession, settings: Settings
) -> None:
    """好的 is said in several sessions; with provider=zego_digital_human only that one's turns come back."""
    seed(db, settings)
    f = catalog.SessionFilter(provider="zego_digital_human")
    humans = [s for s in SEEDS if s.provider == "zego_digital_human"]
    expected = containing("好的", seeds=humans)
    assert expected and expected != containing("好的")
    hits = search.search(db, "好的", f, limit=100)
    assert keys(hits) == expected
    assert {h.session["provider"] for h in hits} == {"zego_digital_human"}


def test_each_hit_carries_its_neighbours_in_conversation_order(db: DbSession, settings: Settings) -> None:
    """Two turns before and after each hit, from the same session, in the order they were said."""
    seed(db, settings)
    hits = search.search(db, "umbrella", EVERYTHING, context=2, limit=100)
    assert hits
    by_session = {s.session_id: conversation(s) for s in SEEDS}
    for hit in hits:
        turns = by_session[hit.turn["session_id"]]
        order = [key for key, _ in turns]
        at = order.index((hit.turn["session_id"], hit.turn["round"], hit.turn["speaker"]))
        shown = [(t["session_id"], t["round"], t["speaker"]) for t in [*hit.before, hit.turn, *hit.after]]
        assert shown == order[max(0, at - 2) : at + 3]
        assert [t["text"] for t in [*hit.before, hit.turn, *hit.after]] == [
            said for _, said in turns[max(0, at - 2) : at + 3]
        ]
        assert hit.session["id"] == hit.turn["session_id"]
        assert hit.session["turns"] == len(turns)
    zero = search.search(db, "umbrella", EVERYTHING, context=0, limit=100)
    assert all(h.before == [] and h.after == [] for h in zero)


def test_limit_keeps_the_best_hits_only(db: DbSession, settings: Settings) -> None:
    """limit=1 gives one hit out of the several that match."""
    seed(db, settings)
    assert len(containing("the")) > 1
    assert len(search.search(db, "the", EVERYTHING, limit=1)) == 1


@pytest.mark.parametrize(
    "q",
    [
        "%",
        "_",
        "100%_off",
        "\\",
        '"',
        "'; DROP TABLE turns; --",
        'a" OR "b',
        "NEAR(x y)",
        "*",
        "-",
        "退*",
        ":",
    ],
)
def test_query_syntax_and_wildcards_are_taken_literally(db: DbSession, settings: Settings, q: str) -> None:
    """LIKE wildcards and FTS syntax neither fail nor match everything: they are just characters."""
    seed(db, settings)
    assert keys(search.search(db, q, EVERYTHING, limit=100)) == containing(*q.split())


def test_a_nul_character_is_a_space(db: DbSession, settings: Settings) -> None:
    """A NUL pasted into the box (Postgres text cannot hold one) separates words instead of failing."""
    seed(db, settings)
    assert keys(search.search(db, "umbrella\x00", EVERYTHING, limit=100)) == containing("umbrella")


def test_an_empty_query_is_refused(db: DbSession) -> None:
    """Nothing to look for is a mistake the caller hears about, not every turn."""
    with pytest.raises(catalog.FilterError) as raised:
        search.search(db, "   ", EVERYTHING)
    assert raised.value.field == "q"


def test_the_sqlite_index_follows_updates_and_deletions(db: DbSession, settings: Settings) -> None:
    """Changed and deleted turns leave the FTS5 index in step with the table (SQLite's integrity check)."""
    if db.get_bind().dialect.name != "sqlite":
        pytest.skip("the FTS5 table is SQLite's")
    seed(db, settings)
    gone = SEEDS[1]
    db.execute(delete(Session).where(Session.id == gone.session_id))
    db.execute(
        text("UPDATE turns SET text = 'rewritten by an operator' WHERE id = (SELECT min(id) FROM turns)")
    )
    db.execute(text("INSERT INTO turns_fts(turns_fts, rank) VALUES ('integrity-check', 1)"))
    assert keys(search.search(db, "umbrella", EVERYTHING)) == set()
    assert len(search.search(db, "rewritten by", EVERYTHING)) == 1


def test_ranking_reads_the_stored_vector_and_orders_as_the_text_would(
    db: DbSession, settings: Settings
) -> None:
    """Postgres ranks settled turns by their stored word vector: the same order as ranking each
    matching text parsed again (what search did before the vector was stored)."""
    if db.get_bind().dialect.name != "postgresql":
        pytest.skip("the stored vector is Postgres's")
    seed(db, settings)
    reparsed = db.scalars(
        text(
            "SELECT id FROM turns, websearch_to_tsquery('simple', 'the') AS q"
            " WHERE to_tsvector('simple', text) @@ q"
            " ORDER BY ts_rank(to_tsvector('simple', text), q) DESC, id DESC LIMIT 100"
        )
    ).all()
    assert len(reparsed) > 3
    assert [h.turn["id"] for h in search.search(db, "the", EVERYTHING, limit=100, context=0)] == reparsed


@pytest.mark.parametrize("q", ["退款", "续费"])
def test_a_two_character_chinese_term_can_be_looked_up_in_the_bigram_index(
    db: DbSession, settings: Settings, q: str
) -> None:
    """Shorter than a trigram, a two-character term has its own index on Postgres: the query says
    the index's predicate as the index does, so the planner can use it (here, made to)."""
    if db.get_bind().dialect.name != "postgresql":
        pytest.skip("the bigram index is Postgres's")
    seed(db, settings)
    db.execute(text("SET LOCAL enable_seqscan = off"))
    db.execute(text("SET LOCAL enable_indexscan = off"))
    statement = search._substring([q], true(), "postgresql").limit(20)
    compiled = statement.compile(db.get_bind())
    plan = "\n".join(db.connection().exec_driver_sql(f"EXPLAIN {compiled}", compiled.params).scalars())
    assert "ix_turns_text_bigrams" in plan
    assert keys(search.search(db, q, EVERYTHING, limit=100)) == containing(q)

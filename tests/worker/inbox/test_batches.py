"""How a drain message's streams are split into transactions."""

from __future__ import annotations

from worker.inbox.drain import batches


def test_streams_are_grouped_into_transactions_of_about_the_budget() -> None:
    """Small streams share a transaction; a large one gets its own, so a second worker can take the next."""
    counts = {(1, "a"): 3, (1, "b"): 4, (1, "c"): 500, (1, "d"): 2, (1, "e"): 1}
    assert batches(counts, 10) == [[(1, "a"), (1, "b")], [(1, "c")], [(1, "d"), (1, "e")]]
    assert batches({(1, "a"): 900}, 500) == [[(1, "a")]]
    assert batches({}, 500) == [[]]

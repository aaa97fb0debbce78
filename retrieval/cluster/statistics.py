"""Collection-wide BM25 statistics held at the router, exact under the shards' generations.

FTS5's bm25() takes N, the mean length and each term's document frequency from its
table; over shards, scores compare only if every shard scores with the sums over all
shards. Elasticsearch gathers them per query (dfs_query_then_fetch: one more round
trip); Vespa ships precomputed document frequencies to its nodes. Here the router keeps
each shard's statistics for every term, tagged with the shard generation they hold at,
and sends a query's sums with those generations. A shard whose generation moved on
refuses them and sends its new statistics instead (query_phase.py), so the cache is
never used out of date, and costs a round only after a write.

Memory: one (term, count) entry per distinct term per shard.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from retrieval.collection.bm25 import LexicalStatistics, Tokenizer
from retrieval.collection.lexical import query_words

# A shard not yet seen: no generation matches it, so its first answer brings its counts.
UNKNOWN = -1


@dataclass(frozen=True)
class QueryStatistics:
    """Per query, its terms' collection-wide statistics (None: a word FTS5 splits, which
    each shard scores with its own), and the shard generations they were summed at."""

    per_query: tuple[LexicalStatistics | None, ...]
    generations: tuple[int, ...]


class StatisticsCache:
    """Each shard's BM25 statistics (every term) at its last seen generation."""

    def __init__(self, shards: int) -> None:
        self._lock = threading.Lock()
        self._held: list[tuple[int, LexicalStatistics]] = [
            (UNKNOWN, LexicalStatistics(0, 0)) for _ in range(shards)
        ]
        self._tokenizer = Tokenizer()

    def terms(self, query: str) -> tuple[str, ...] | None:
        """The query's terms as FTS5 makes them (as `MemoryBm25.terms`), or None when
        some word is several tokens."""
        with self._lock:
            made = self._tokenizer.words_tokens(query_words(query))
        if any(len(tokens) != 1 for tokens in made):
            return None
        return tuple(tokens[0] for tokens in made)

    def for_queries(self, queries: tuple[str, ...]) -> QueryStatistics:
        """The queries' summed statistics, and the generations they hold at."""
        terms = [self.terms(query) for query in queries]
        with self._lock:
            held = list(self._held)
        per_query = tuple(None if found is None else summed(held, found) for found in terms)
        return QueryStatistics(per_query, tuple(generation for generation, _ in held))

    def update(self, shard: int, generation: int, statistics: LexicalStatistics) -> None:
        with self._lock:
            if generation >= self._held[shard][0]:  # never back to an older answer
                self._held[shard] = (generation, statistics)


def summed(
    held: list[tuple[int, LexicalStatistics]], terms: tuple[str, ...]
) -> LexicalStatistics:
    """The shards' statistics for `terms`, added up: one collection's."""
    unique = dict.fromkeys(terms)
    return LexicalStatistics(
        sum(s.documents for _, s in held), sum(s.tokens for _, s in held),
        {term: sum(s.document_frequency.get(term, 0) for _, s in held) for term in unique},
    )

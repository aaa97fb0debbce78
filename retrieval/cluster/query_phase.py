"""One search, one call per shard: what the router asks a shard, and what the shard answers.

Elasticsearch and Vespa answer a query in a query phase (every shard returns its top
candidates) and a fetch phase (the documents of the final hits). Here the query phase
carries everything the router needs to rank as one collection would, so a search is
one round trip to each shard in the common case:

- the router sends a `ShardQuery`: the queries, their vectors, how deep to rank, the
  filters (as `Filters`: each shard applies them to its own passages; no id lists
  travel), and the collection-wide BM25 statistics for the queries' terms, with the
  shard generation they were summed at;
- the shard answers (`answer_query`) in ONE consistent read (`Collection.reading`):
  its dense and lexical top `depth` per query, and for every candidate the facts that
  ranking reads (article id, date, duplicate-group key), the rows of those ranked
  within `rows_depth` (a hit is built from them: the fetch phase, folded in), and the
  duplicates of those rows' articles when the search collapses.

If the statistics were summed at another generation than the shard's read (a write
landed since the router last saw the shard), BM25 scores would not be the one
collection's: the shard then answers `stale`, with its full statistics instead of a
lexical ranking, and the router asks again (`router.StatisticsCache`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from retrieval.collection.bm25 import LexicalStatistics
from retrieval.collection.collection import Collection, Reader
from retrieval.collection.duplicates import Fingerprint
from retrieval.records import Filters

# The fields of `Store.hit_rows` that a Hit is built from.
HIT_FIELDS = ("article_id", "text", "start", "end", "title", "date", "source", "url")
# A ranking as arrays, best first: (passage ids, int64; scores, float64).
Ranking = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class ShardQuery:
    """What a shard needs to answer a batch of queries in one call.

    Attributes:
        queries: the query texts (lexical and hybrid search).
        vectors: their unit vectors, (len(queries), dim); None for lexical search.
        dense, lexical: which halves to rank.
        depth: candidates per half and query.
        rows_depth: candidates ranked above this in either half come back with the
            rows their hits are built from.
        filters: the search's filters; each shard applies them to its own passages.
        collapse: rows' articles come back with their duplicates matching `filters`,
            and the articles of candidates within `facts_depth` with their duplicate
            fingerprints (groups_across.py).
        facts_depth: candidates ranked above this in either half come back with their
            facts (article, date, group): the pool the Retriever caps, collapses and
            re-ranks first; 0 means `depth`.
        statistics: per query, the collection-wide BM25 statistics of its terms (None:
            score with this shard's own, as FTS5 does for multi-token words).
        statistics_generation: the shard generation `statistics` were summed at; the
            shard refuses them at any other (answers `stale`). None: use them anyway.
    """

    queries: tuple[str, ...]
    vectors: np.ndarray | None
    dense: bool
    lexical: bool
    depth: int
    rows_depth: int
    filters: Filters = field(default_factory=Filters)
    collapse: bool = False
    facts_depth: int = 0
    statistics: tuple[LexicalStatistics | None, ...] | None = None
    statistics_generation: int | None = None


@dataclass
class ShardAnswer:
    """A shard's query phase (see `ShardQuery`), all from one read at `generation`.

    Attributes:
        dense, lexical: per query, the shard's top candidates, best first (empty when
            that half was not asked, or when `stale`).
        facts: per candidate within facts_depth, (article id, date or None,
            duplicate-group key).
        rows: per candidate within rows_depth, the fields a Hit is built from.
        duplicates: per article of `rows` (collapsed searches), its group's others.
        fingerprints: (collapsed searches) the duplicate fingerprints of the facts'
            articles, for the router to find groups across shards.
        stale: the statistics were summed at another generation: no lexical ranking.
        statistics: with `stale`, this shard's statistics for every term it holds.
    """

    shard: int
    generation: int
    size: int
    dense: list[Ranking] = field(default_factory=list)
    lexical: list[Ranking] = field(default_factory=list)
    facts: dict[int, tuple[str, str | None, str]] = field(default_factory=dict)
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)
    duplicates: dict[str, list[str]] = field(default_factory=dict)
    fingerprints: dict[str, Fingerprint] = field(default_factory=dict)
    stale: bool = False
    statistics: LexicalStatistics | None = None


EMPTY: Ranking = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64))


def answer_query(collection: Collection, shard: int, query: ShardQuery) -> ShardAnswer:
    """Shard `shard`'s answer to `query`, from one consistent read of its collection.

    The BM25 postings catch up inside the same read (their store snapshot nests in the
    reader's), so the lexical half, the dense half and the rows share one generation.
    """
    with collection.reading() as reader:
        answer = ShardAnswer(shard, reader.generation, reader.size())
        if answer.size == 0:
            answer.dense = [EMPTY] * len(query.queries) if query.dense else []
            answer.lexical = [EMPTY] * len(query.queries) if query.lexical else []
            return answer
        filters = query.filters
        allowed = None if filters.is_empty() else reader.passage_ids_matching(filters)
        if query.dense:
            assert query.vectors is not None, "dense ranking needs the query vectors"
            answer.dense = [dense_ranking(reader, vector, query.depth, allowed)
                            for vector in query.vectors]
        if query.lexical:
            if not statistics_hold(query, reader.generation):
                answer.stale = True
                answer.statistics = collection.lexical.corpus_statistics()
            else:
                answer.lexical = [
                    lexical_ranking(collection, text, query.depth, filters, allowed, stats)
                    for text, stats in zip(query.queries, statistics_of(query), strict=True)
                ]
        add_candidate_fields(answer, reader, query)
    return answer


def statistics_hold(query: ShardQuery, generation: int) -> bool:
    """The query's statistics were summed at this very generation (or are to be used
    whatever it is)."""
    return query.statistics_generation is None or query.statistics_generation == generation


def statistics_of(query: ShardQuery) -> tuple[LexicalStatistics | None, ...]:
    return query.statistics if query.statistics is not None else (None,) * len(query.queries)


def dense_ranking(
    reader: Reader, vector: np.ndarray, depth: int, allowed: np.ndarray | None
) -> Ranking:
    if allowed is not None and len(allowed) == 0:
        return EMPTY
    scores, ids = reader.dense(vector[None, :], depth, allowed)
    found = ids[0] >= 0  # FAISS pads with -1 when fewer than depth exist
    return ids[0][found].astype(np.int64), scores[0][found].astype(np.float64)


def lexical_ranking(
    collection: Collection, text: str, depth: int, filters: Filters,
    allowed: np.ndarray | None, statistics: LexicalStatistics | None,
) -> Ranking:
    if allowed is not None and len(allowed) == 0:
        return EMPTY
    rows = collection.lexical.search(text, depth, filters=filters, allowed=allowed,
                                     statistics=statistics)
    return (np.array([passage_id for passage_id, _ in rows], dtype=np.int64),
            np.array([score for _, score in rows], dtype=np.float64))


def add_candidate_fields(answer: ShardAnswer, reader: Reader, query: ShardQuery) -> None:
    """Facts for the candidates within facts_depth; rows (and duplicates) for those
    within rows_depth."""
    rankings = [*answer.dense, *answer.lexical]
    facts_depth = query.facts_depth or query.depth
    candidates = sorted({int(i) for ids, _ in rankings for i in ids[:facts_depth]})
    if not candidates:
        return
    owners = reader.article_of(candidates)
    dates = reader.dates_of(candidates)
    groups = reader.group_keys(candidates)
    answer.facts = {
        pid: (owners[pid], dates.get(pid), f"s{answer.shard}:{groups.get(pid, pid)}")
        for pid in candidates if pid in owners
    }
    near_top = sorted({int(i) for ids, _ in rankings for i in ids[: query.rows_depth]})
    rows = reader.hit_rows(near_top)
    answer.rows = {pid: {name: row[name] for name in HIT_FIELDS} for pid, row in rows.items()}
    if query.collapse:
        articles = list(dict.fromkeys(row["article_id"] for row in answer.rows.values()))
        answer.duplicates = reader.duplicates_of(articles, query.filters)
        answer.fingerprints = reader.store.fingerprints(sorted(set(owners.values())))

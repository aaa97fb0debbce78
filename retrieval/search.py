"""Finding the passages closest to a query: dense, lexical (BM25) and hybrid search.

`Retriever.search(q, k)` is `search_batch([q], k)[0]`: one code path. Filters are applied
inside each search (as a FAISS id selector, or in the SQL of the lexical search), so k
matching hits come back whenever k exist, never fewer because of post-filtering.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from retrieval.collection import Collection
from retrieval.errors import EmptyIndexError, InputError
from retrieval.records import Filters, Hit

Mode = Literal["dense", "lexical", "hybrid"]
MODES: tuple[str, ...] = ("dense", "lexical", "hybrid")
# Reciprocal rank fusion constant (Cormack et al. 2009): damps the head of each list.
RRF_K = 60
# Candidates each half of a hybrid search contributes to the fusion.
HYBRID_CANDIDATES = 100
MAX_K = 10_000
MAX_QUERY_CHARS = 10_000


class Searcher(Protocol):
    """Anything that searches: the in-process Retriever, or the HTTP client."""

    def search_batch(
        self,
        queries: Sequence[str],
        k: int = 10,
        *,
        mode: Mode = "dense",
        filters: Filters | None = None,
        max_per_article: int | None = None,
    ) -> list[list[Hit]]: ...


@dataclass(frozen=True, slots=True)
class Candidate:
    passage_id: int
    score: float


class Retriever:
    """Searches one collection.

    Args:
        collection: an open Collection; the Retriever refreshes it before each search,
            so writes by other processes become visible.
    """

    def __init__(self, collection: Collection) -> None:
        self.collection = collection

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        mode: Mode = "dense",
        filters: Filters | None = None,
        max_per_article: int | None = None,
        offset: int = 0,
    ) -> list[Hit]:
        """The k passages closest to the query, best first.

        Args:
            query: free text.
            k: hits wanted (after `offset`); fewer come back only when fewer match.
            mode: "dense" (cosine of embeddings), "lexical" (BM25) or "hybrid" (fusion).
            filters: restrict to article ids, a date range or sources.
            max_per_article: at most this many passages of one article.
            offset: skip this many best hits first (paging).

        Raises:
            InputError: empty query, k or offset out of range, unknown mode.
            EmptyIndexError: the collection holds no passages.
        """
        return self.search_batch(
            [query], k, mode=mode, filters=filters, max_per_article=max_per_article, offset=offset
        )[0]

    def search_batch(
        self,
        queries: Sequence[str],
        k: int = 10,
        *,
        mode: Mode = "dense",
        filters: Filters | None = None,
        max_per_article: int | None = None,
        offset: int = 0,
    ) -> list[list[Hit]]:
        """`search` for several queries at once (their embeddings are computed together)."""
        check_arguments(queries, k, mode, max_per_article, offset)
        vectors = (
            self.collection.embedder.embed_queries(list(queries)) if mode != "lexical" else None
        )
        return self.search_embedded(
            queries, vectors, k, mode=mode, filters=filters,
            max_per_article=max_per_article, offset=offset,
        )

    def search_embedded(
        self,
        queries: Sequence[str],
        vectors: np.ndarray | None,
        k: int = 10,
        *,
        mode: Mode = "dense",
        filters: Filters | None = None,
        max_per_article: int | None = None,
        offset: int = 0,
    ) -> list[list[Hit]]:
        """`search_batch` with the query vectors already computed.

        For callers that embed many queries together and search them with different
        options (the service's micro-batcher).

        Args:
            vectors: (len(queries), dim) from `embedder.embed_queries`; None for lexical.
        """
        check_arguments(queries, k, mode, max_per_article, offset)
        if mode != "lexical" and (vectors is None or len(vectors) != len(queries)):
            raise InputError(f"{mode} search needs one query vector per query")
        filters = filters or Filters()
        wanted = k + offset
        with self.collection.lock:
            self.collection.refresh()
            if len(self.collection.index) == 0:
                raise EmptyIndexError("the collection holds no passages: index some articles first")
            allowed = None if filters.is_empty() else self.collection.store.passage_ids_matching(filters)
            results = []
            for i, query in enumerate(queries):
                vector = None if vectors is None else vectors[i : i + 1]
                candidates = self._candidates(query, vector, mode, wanted, filters, allowed, max_per_article)
                results.append(self._hits(candidates[offset:wanted]))
        return results

    # -- candidates ----------------------------------------------------------------------

    def _candidates(
        self,
        query: str,
        vector: np.ndarray | None,
        mode: Mode,
        wanted: int,
        filters: Filters,
        allowed: np.ndarray | None,
        max_per_article: int | None,
    ) -> list[Candidate]:
        """Enough candidates, best first, to fill `wanted` hits under the per-article cap.

        With a cap, some candidates are dropped, so the search asks for more and more
        (4x each round) until it has enough or has seen every candidate there is.
        """
        fetch = wanted if max_per_article is None else wanted * 4
        while True:
            raw = self._ranked(query, vector, mode, fetch, filters, allowed)
            kept = cap_per_article(raw, max_per_article, self.collection) if max_per_article else raw
            if len(kept) >= wanted or len(raw) < fetch:
                return kept
            fetch *= 4

    def _ranked(
        self,
        query: str,
        vector: np.ndarray | None,
        mode: Mode,
        k: int,
        filters: Filters,
        allowed: np.ndarray | None,
    ) -> list[Candidate]:
        if mode == "dense":
            assert vector is not None
            return self._dense(vector, k, allowed)
        if mode == "lexical":
            return self._lexical(query, k, filters)
        assert vector is not None
        depth = max(k, HYBRID_CANDIDATES)
        return reciprocal_rank_fusion(
            [self._dense(vector, depth, allowed), self._lexical(query, depth, filters)]
        )[:k]

    def _dense(self, vector: np.ndarray, k: int, allowed: np.ndarray | None) -> list[Candidate]:
        if allowed is not None and len(allowed) == 0:
            return []
        scores, ids = self.collection.index.search(vector, k, allowed=allowed)
        return [Candidate(int(i), float(s)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0]

    def _lexical(self, query: str, k: int, filters: Filters) -> list[Candidate]:
        match = fts_query(query)
        if not match:
            return []
        rows = self.collection.store.lexical(match, k, filters)
        return [Candidate(passage_id, score) for passage_id, score in rows]

    def _hits(self, candidates: Sequence[Candidate]) -> list[Hit]:
        rows = self.collection.store.hit_rows([c.passage_id for c in candidates])
        hits = []
        for candidate in candidates:
            row = rows.get(candidate.passage_id)
            if row is None:  # cannot happen under the lock; never return a dangling hit
                continue
            hits.append(
                Hit(
                    passage_id=candidate.passage_id, article_id=row["article_id"],
                    title=row["title"], date=row["date"], source=row["source"], url=row["url"],
                    text=row["text"], score=candidate.score, rank=len(hits) + 1,
                    start=row["start"], end=row["end"],
                )
            )
        return hits


def reciprocal_rank_fusion(rankings: Sequence[Sequence[Candidate]]) -> list[Candidate]:
    """Fuses ranked lists: each passage scores the sum of 1 / (RRF_K + rank) over lists."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, candidate in enumerate(ranking, start=1):
            scores[candidate.passage_id] = scores.get(candidate.passage_id, 0.0) + 1.0 / (RRF_K + rank)
    ordered = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    return [Candidate(passage_id, score) for passage_id, score in ordered]


def cap_per_article(
    candidates: Sequence[Candidate], cap: int, collection: Collection
) -> list[Candidate]:
    """Keeps at most `cap` candidates of each article, in rank order."""
    owners = collection.store.article_of([c.passage_id for c in candidates])
    seen: dict[str, int] = {}
    kept = []
    for candidate in candidates:
        article = owners.get(candidate.passage_id, "")
        if seen.get(article, 0) < cap:
            seen[article] = seen.get(article, 0) + 1
            kept.append(candidate)
    return kept


_WORD = re.compile(r"\w+", re.UNICODE)


def fts_query(query: str) -> str:
    """An FTS5 MATCH expression: any of the query's words, each quoted.

    Quoting keeps user text from being read as FTS5 syntax (AND, NEAR, column:, quotes).
    """
    words = dict.fromkeys(word.lower() for word in _WORD.findall(query))
    return " OR ".join(f'"{word}"' for word in words)


def check_arguments(
    queries: Sequence[str], k: int, mode: str, max_per_article: int | None, offset: int
) -> None:
    if isinstance(queries, str):
        raise InputError("search_batch takes a list of queries, not one string: use search()")
    for query in queries:
        if not isinstance(query, str) or not query.strip():
            raise InputError("query is empty: give a few words to search for")
        if len(query) > MAX_QUERY_CHARS:
            raise InputError(f"query is {len(query)} characters long: the limit is {MAX_QUERY_CHARS}")
    if not 1 <= k <= MAX_K:
        raise InputError(f"k must be between 1 and {MAX_K}, got {k}")
    if not 0 <= offset <= MAX_K:
        raise InputError(f"offset must be between 0 and {MAX_K}, got {offset}")
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    if max_per_article is not None and max_per_article < 1:
        raise InputError(f"max_per_article must be at least 1, got {max_per_article}")

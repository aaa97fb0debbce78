"""Finding the passages closest to a query: dense, lexical (BM25) and hybrid search.

`Retriever.search(q, k)` is `search_batch([q], k)[0]`: one code path. Filters are applied
inside each search (as a FAISS id selector, or in the SQL of the lexical search), so k
matching hits come back whenever k exist, never fewer because of post-filtering.

The pieces it puts together: options.py (what a search asks for), fusion.py (hybrid
fusion), pool.py (deepening for caps, collapse and re-ranking), hits.py (rows to hits).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol, cast

import numpy as np

from retrieval.collection.lexical import LexicalIndex
from retrieval.collection.reading import Searchable, SearchReader
from retrieval.errors import EmptyIndexError, InputError, NotFoundError
from retrieval.records import Filters, Hit, RelatedArticle
from retrieval.search.fusion import (
    DEFAULT_FUSION,
    EMPTY_RANKING,
    Candidate,
    Fusion,
    Ranking,
    candidates_of,
    fuse_beyond,
    fuse_pool,
)
from retrieval.search.highlight import best_sentences
from retrieval.search.hits import make_hits
from retrieval.search.options import (
    DEFAULTS,
    HIGHLIGHT_MAX_HITS,
    MAX_K,
    Mode,
    SearchOptions,
    Sort,
    check_queries,
)
from retrieval.search.pool import gather
from retrieval.search.related import related_articles


class PreparesSearch(Protocol):
    """A reader that gathers a whole search up front: a sharded collection's asks each
    shard once for everything the search will read (retrieval/cluster/query_phase.py),
    instead of once per read. One collection's reader reads as it goes and has no such
    step."""

    def prepare(
        self, queries: Sequence[str], vectors: np.ndarray | None, options: SearchOptions
    ) -> None: ...


class Searcher(Protocol):
    """Anything that searches: the in-process Retriever, or the HTTP client."""

    def search_batch(
        self,
        queries: Sequence[str],
        k: int = DEFAULTS.k,
        *,
        mode: Mode = DEFAULTS.mode,
        filters: Filters | None = None,
        max_per_article: int | None = None,
        collapse: bool = DEFAULTS.collapse,
    ) -> list[list[Hit]]: ...


class Retriever:
    """Searches one collection.

    Args:
        collection: an open Collection (or a ShardedCollection: anything `Searchable`);
            each search reads it as of its last committed generation, so writes by any
            process are visible to the next search.
        fusion: how hybrid search merges dense and lexical results.
        lexical: the BM25 index; by default the collection's (FTS5's bm25() scores,
            from postings in memory: retrieval/collection/bm25.py; over shards, with summed
            statistics).
    """

    def __init__(
        self,
        collection: Searchable,
        *,
        fusion: Fusion = DEFAULT_FUSION,
        lexical: LexicalIndex | None = None,
    ) -> None:
        self.collection = collection
        self.fusion = fusion
        self.lexical = lexical if lexical is not None else collection.lexical

    def search(
        self,
        query: str,
        k: int = DEFAULTS.k,
        *,
        mode: Mode = DEFAULTS.mode,
        filters: Filters | None = DEFAULTS.filters,
        max_per_article: int | None = DEFAULTS.max_per_article,
        offset: int = DEFAULTS.offset,
        highlight: bool = DEFAULTS.highlight,
        min_score: float | None = DEFAULTS.min_score,
        recency_half_life_days: float | None = DEFAULTS.recency_half_life_days,
        now: str | None = DEFAULTS.now,
        sort: Sort = DEFAULTS.sort,
        collapse: bool = DEFAULTS.collapse,
    ) -> list[Hit]:
        """The k passages closest to the query, best first (or newest first).

        Args:
            query: free text, of any length: the model reads its first word pieces (256
                for the default model, about 1,000 characters of news text) and lexical
                search its first 256 distinct words; the rest is not read.
            k, mode, filters, max_per_article, offset, highlight, min_score,
                recency_half_life_days, now, sort, collapse: see `SearchOptions`.

        Raises:
            InputError: empty query, k or offset out of range, unknown mode or sort,
                a non-finite min_score, a half-life not > 0, sort="date" without min_score.
            EmptyIndexError: the collection holds no passages.
        """
        return self.search_batch(
            [query], k, mode=mode, filters=filters, max_per_article=max_per_article,
            offset=offset, highlight=highlight, min_score=min_score,
            recency_half_life_days=recency_half_life_days, now=now, sort=sort,
            collapse=collapse,
        )[0]

    def search_batch(
        self,
        queries: Sequence[str],
        k: int = DEFAULTS.k,
        *,
        mode: Mode = DEFAULTS.mode,
        filters: Filters | None = DEFAULTS.filters,
        max_per_article: int | None = DEFAULTS.max_per_article,
        offset: int = DEFAULTS.offset,
        highlight: bool = DEFAULTS.highlight,
        min_score: float | None = DEFAULTS.min_score,
        recency_half_life_days: float | None = DEFAULTS.recency_half_life_days,
        now: str | None = DEFAULTS.now,
        sort: Sort = DEFAULTS.sort,
        collapse: bool = DEFAULTS.collapse,
    ) -> list[list[Hit]]:
        """`search` for several queries at once (their embeddings are computed together)."""
        options = SearchOptions(
            k=k, mode=mode, filters=filters, max_per_article=max_per_article, offset=offset,
            highlight=highlight, min_score=min_score,
            recency_half_life_days=recency_half_life_days, now=now, sort=sort,
            collapse=collapse,
        )
        check_queries(queries)
        options.check()
        vectors = self.embed_queries(queries) if options.needs_vectors else None
        results = self.search_embedded(queries, vectors, options)
        if not highlight:
            return results
        assert vectors is not None  # needs_vectors holds for highlighting
        return [
            self.highlight(query, hits, vector)
            for query, hits, vector in zip(queries, results, vectors, strict=True)
        ]

    def embed_queries(self, queries: Sequence[str]) -> np.ndarray:
        """The queries' unit vectors, (len(queries), dim), from the collection's model."""
        return self.collection.embedder.embed_queries(list(queries))

    def search_embedded(
        self, queries: Sequence[str], vectors: np.ndarray | None, options: SearchOptions
    ) -> list[list[Hit]]:
        """`search_batch` with the query vectors already computed; never highlights.

        For callers that embed many queries together and search them with different
        options (the service's micro-batcher), and mark sentences separately
        (`highlight`), off their search thread.

        Args:
            vectors: (len(queries), dim) from `embed_queries`; may be None for lexical.
        """
        check_queries(queries)
        options.check()
        mode = options.mode
        if mode != "lexical" and (vectors is None or len(vectors) != len(queries)):
            raise InputError(f"{mode} search needs one query vector per query")
        filters = options.filters or Filters()
        with self.collection.reading() as reader:
            # A plain attribute look-up: isinstance against a runtime Protocol checks every
            # member and cost about 1.5% of a search on this hot path.
            if hasattr(reader, "prepare"):
                cast(PreparesSearch, reader).prepare(queries, vectors, options)
            if reader.size() == 0:
                raise EmptyIndexError("the collection holds no passages: index some articles first")
            allowed = None if filters.is_empty() else reader.passage_ids_matching(filters)
            results = []
            for i, query in enumerate(queries):
                vector = None if vectors is None or mode == "lexical" else vectors[i : i + 1]
                results.append(self._search_one(reader, query, vector, options, filters, allowed))
        return results

    def _search_one(
        self,
        reader: SearchReader,
        query: str,
        vector: np.ndarray | None,
        options: SearchOptions,
        filters: Filters,
        allowed: np.ndarray | None,
    ) -> list[Hit]:
        """One query's page of hits, read from one snapshot."""
        ranked = functools.partial(self._ranked, reader, query, vector, options.mode,
                                   filters=filters, allowed=allowed)
        wanted = options.k + options.offset
        candidates = gather(reader, ranked, options, wanted)
        copies_within = filters if options.collapse else None
        return make_hits(reader, candidates[options.offset : wanted], copies_within)

    def highlight(
        self, query: str, hits: Sequence[Hit], query_vector: np.ndarray | None = None
    ) -> list[Hit]:
        """The hits with the first HIGHLIGHT_MAX_HITS ones' best sentence marked.

        Args:
            query_vector: the query's unit vector when already computed (else embedded).
        """
        marked = list(hits[:HIGHLIGHT_MAX_HITS])
        spans = best_sentences(
            query, [hit.text for hit in marked], self.collection.embedder,
            query_vector=query_vector,
        )
        return [
            *(replace(hit, highlight=span) for hit, span in zip(marked, spans, strict=True)),
            *hits[HIGHLIGHT_MAX_HITS:],
        ]

    def related(
        self, article_id: str, k: int = 10, *, filters: Filters | None = None
    ) -> list[RelatedArticle]:
        """The k articles closest in meaning to a stored one, closest first.

        From the article's stored passage vectors (no model call): their mean,
        renormalised, is searched like a query vector, and each other article scores by
        its closest passage. The article itself is never among them; each article
        appears once.

        Args:
            filters: restrict the related articles (their ids, dates, sources).

        Raises:
            NotFoundError: no article has that id.
            InputError: k out of range.
        """
        if not 1 <= k <= MAX_K:
            raise InputError(f"k must be between 1 and {MAX_K}, got {k}")
        filters = filters or Filters()
        with self.collection.reading() as reader:
            if not reader.has_article(article_id):
                raise NotFoundError(f"no article with id {article_id!r}")
            allowed = None if filters.is_empty() else reader.passage_ids_matching(filters)
            return related_articles(reader, article_id, k, allowed)

    # -- candidates ----------------------------------------------------------------------

    def _ranked(
        self,
        reader: SearchReader,
        query: str,
        vector: np.ndarray | None,
        mode: Mode,
        k: int,
        filters: Filters,
        allowed: np.ndarray | None,
    ) -> list[Candidate]:
        if mode == "dense":
            assert vector is not None
            return self._dense(reader, vector, k, allowed)
        if mode == "lexical":
            return self._lexical(query, k, filters, allowed)
        assert vector is not None
        return self._hybrid(reader, query, vector, k, filters, allowed)

    def _hybrid(
        self,
        reader: SearchReader,
        query: str,
        vector: np.ndarray,
        k: int,
        filters: Filters,
        allowed: np.ndarray | None,
    ) -> list[Candidate]:
        """The first k passages of the hybrid ranking.

        The ranking depends on the query, the collection and the options, never on k or
        offset, so that pages tile it and a deeper search (for a cap, collapsing,
        freshness) extends it instead of changing it: the best `fusion.depth` passages
        of each half are fused, normalised over that pool alone, and every other passage
        follows in dense order, scored below the pool (`fuse_beyond`).
        """
        depth = self.fusion.depth
        # The halves stay arrays until fused: Candidates are made only for what is returned.
        dense = dense_ranking(reader, vector, depth, allowed)
        lexical = lexical_ranking(self.lexical, query, depth, filters, allowed)
        pool = fuse_pool(dense, lexical, self.fusion)
        if len(pool) >= k or len(dense[0]) < depth:
            return pool[:k]  # a short dense half holds every passage: none follows
        # The dense top k holds at most len(pool) pooled passages: enough follow.
        deeper = dense_ranking(reader, vector, k, allowed)
        return [*pool, *fuse_beyond(dense, lexical, self.fusion, deeper)][:k]

    def _dense(
        self, reader: SearchReader, vector: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> list[Candidate]:
        return candidates_of(dense_ranking(reader, vector, k, allowed))

    def _lexical(
        self, query: str, k: int, filters: Filters, allowed: np.ndarray | None
    ) -> list[Candidate]:
        rows = lexical_rows(self.lexical, query, k, filters, allowed)
        return [Candidate(passage_id, score) for passage_id, score in rows]


def dense_ranking(
    reader: SearchReader, vector: np.ndarray, k: int, allowed: np.ndarray | None
) -> Ranking:
    """The k passages closest to the query vector, as arrays, best first."""
    if allowed is not None and len(allowed) == 0:
        return EMPTY_RANKING
    scores, ids = reader.dense(vector, k, allowed)
    found = ids[0] >= 0  # FAISS pads with -1 when fewer than k exist
    return ids[0][found].astype(np.int64), scores[0][found].astype(np.float64)


def lexical_ranking(
    lexical: LexicalIndex, query: str, k: int, filters: Filters, allowed: np.ndarray | None
) -> Ranking:
    """The k best BM25 passages, as arrays, best first."""
    rows = lexical_rows(lexical, query, k, filters, allowed)
    return (np.array([passage_id for passage_id, _ in rows], dtype=np.int64),
            np.array([score for _, score in rows], dtype=np.float64))


def lexical_rows(
    lexical: LexicalIndex, query: str, k: int, filters: Filters, allowed: np.ndarray | None
) -> list[tuple[int, float]]:
    if allowed is not None and len(allowed) == 0:
        return []
    return lexical.search(query, k, filters=filters, allowed=allowed)

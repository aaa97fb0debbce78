"""Finding the passages closest to a query: dense, lexical (BM25) and hybrid search.

`Retriever.search(q, k)` is `search_batch([q], k)[0]`: one code path. Filters are applied
inside each search (as a FAISS id selector, or in the SQL of the lexical search), so k
matching hits come back whenever k exist, never fewer because of post-filtering.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal, Protocol

import numpy as np

from retrieval.collection import Collection, Reader
from retrieval.errors import EmptyIndexError, InputError
from retrieval.highlight import best_sentences
from retrieval.lexical import Fts5Index, LexicalIndex
from retrieval.lexical import fts_query as fts_query  # re-exported: it lived here first
from retrieval.records import Filters, Hit

Mode = Literal["dense", "lexical", "hybrid"]
MODES: tuple[str, ...] = ("dense", "lexical", "hybrid")
# Reciprocal rank fusion constant (Cormack et al. 2009): damps the head of each list.
RRF_K = 60
FUSION_METHODS = ("rrf", "minmax", "zscore")
# Candidates each half of a hybrid search contributes to the fusion.
HYBRID_CANDIDATES = 100
MAX_K = 10_000
# A query longer than this is refused: the model reads 256 word pieces (~1,000 characters
# of news text), so the rest would be silently ignored. The service's schema uses it too.
MAX_QUERY_CHARS = 2000
# Highlighting embeds every sentence of every hit it marks: only the first hits of each
# query are marked, so one request cannot ask for thousands of sentence embeddings.
HIGHLIGHT_MAX_HITS = 10


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
class SearchOptions:
    """Everything a search asks for besides its query text.

    Attributes:
        k: hits wanted (after `offset`); fewer come back only when fewer match.
        mode: "dense" (cosine of embeddings), "lexical" (BM25) or "hybrid" (fusion).
        filters: restrict to article ids, a date range or sources.
        max_per_article: at most this many passages of one article.
        offset: skip this many best hits first (paging).
        highlight: mark each of the first HIGHLIGHT_MAX_HITS hits' best sentence
            (`Hit.highlight`); costs one model call over their sentences.
    """

    k: int = 10
    mode: Mode = "dense"
    filters: Filters | None = None
    max_per_article: int | None = None
    offset: int = 0
    highlight: bool = False

    @property
    def needs_vectors(self) -> bool:
        """Dense and hybrid search need the query vector, and so does highlighting."""
        return self.mode != "lexical" or self.highlight


@dataclass(frozen=True, slots=True)
class Candidate:
    passage_id: int
    score: float


@dataclass(frozen=True, slots=True)
class Fusion:
    """How hybrid search merges the dense and the lexical ranking.

    Attributes:
        method: "rrf" (reciprocal rank fusion: ranks only), "minmax" or "zscore" (each
            list's scores normalised, then a weighted sum).
        alpha: weight of the dense score in a normalised fusion (the lexical one gets
            1 - alpha); ignored by RRF. A passage missing from one list gets that list's
            lowest normalised score.
    """

    method: str = "zscore"
    alpha: float = 0.6

    def __post_init__(self) -> None:
        if self.method not in FUSION_METHODS:
            choices = ", ".join(FUSION_METHODS)
            raise InputError(f"unknown fusion {self.method!r}: use one of {choices}")
        if not 0.0 <= self.alpha <= 1.0:
            raise InputError(f"fusion alpha must be in [0, 1], got {self.alpha}")

    @classmethod
    def parse(cls, spec: str) -> Fusion:
        """ "rrf", "minmax:0.3" or "zscore:0.5" (method, then the dense weight)."""
        method, _, alpha = spec.partition(":")
        try:
            return cls(method, float(alpha)) if alpha else cls(method)
        except ValueError:
            raise InputError(
                f"bad fusion {spec!r}: expected rrf, minmax:ALPHA or zscore:ALPHA"
            ) from None

    def __str__(self) -> str:
        return "rrf" if self.method == "rrf" else f"{self.method}:{self.alpha:g}"


# Chosen on SciFact's train split (qrels/train.tsv) only; see the README's evaluation section.
DEFAULT_FUSION = Fusion("zscore", 0.6)


class Retriever:
    """Searches one collection.

    Args:
        collection: an open Collection; each search reads it as of its last committed
            generation, so writes by any process are visible to the next search.
        fusion: how hybrid search merges dense and lexical results.
        lexical: the BM25 index; by default SQLite FTS5 over the collection's store.
    """

    def __init__(
        self,
        collection: Collection,
        *,
        fusion: Fusion = DEFAULT_FUSION,
        lexical: LexicalIndex | None = None,
    ) -> None:
        self.collection = collection
        self.fusion = fusion
        self.lexical = lexical if lexical is not None else Fts5Index(collection.store)

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        mode: Mode = "dense",
        filters: Filters | None = None,
        max_per_article: int | None = None,
        offset: int = 0,
        highlight: bool = False,
    ) -> list[Hit]:
        """The k passages closest to the query, best first.

        Args:
            query: free text.
            k, mode, filters, max_per_article, offset, highlight: see `SearchOptions`.

        Raises:
            InputError: empty query, k or offset out of range, unknown mode.
            EmptyIndexError: the collection holds no passages.
        """
        return self.search_batch(
            [query], k, mode=mode, filters=filters, max_per_article=max_per_article,
            offset=offset, highlight=highlight,
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
        highlight: bool = False,
    ) -> list[list[Hit]]:
        """`search` for several queries at once (their embeddings are computed together)."""
        options = SearchOptions(
            k=k, mode=mode, filters=filters, max_per_article=max_per_article, offset=offset,
            highlight=highlight,
        )
        check_arguments(queries, options)
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
        check_arguments(queries, options)
        mode = options.mode
        if mode != "lexical" and (vectors is None or len(vectors) != len(queries)):
            raise InputError(f"{mode} search needs one query vector per query")
        filters = options.filters or Filters()
        offset, wanted = options.offset, options.k + options.offset
        with self.collection.reading() as reader:
            if reader.size() == 0:
                raise EmptyIndexError("the collection holds no passages: index some articles first")
            allowed = None if filters.is_empty() else reader.passage_ids_matching(filters)
            results = []
            for i, query in enumerate(queries):
                vector = None if vectors is None or mode == "lexical" else vectors[i : i + 1]
                candidates = self._candidates(
                    reader, query, vector, mode, wanted, filters, allowed, options.max_per_article
                )
                results.append(self._hits(reader, candidates[offset:wanted]))
        return results

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

    # -- candidates ----------------------------------------------------------------------

    def _candidates(
        self,
        reader: Reader,
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
            raw = self._ranked(reader, query, vector, mode, fetch, filters, allowed)
            kept = cap_per_article(raw, max_per_article, reader) if max_per_article else raw
            if len(kept) >= wanted or len(raw) < fetch:
                return kept
            fetch *= 4

    def _ranked(
        self,
        reader: Reader,
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
        depth = max(k, HYBRID_CANDIDATES)
        dense = self._dense(reader, vector, depth, allowed)
        lexical = self._lexical(query, depth, filters, allowed)
        return fuse(dense, lexical, self.fusion)[:k]

    def _dense(
        self, reader: Reader, vector: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> list[Candidate]:
        if allowed is not None and len(allowed) == 0:
            return []
        scores, ids = reader.dense(vector, k, allowed)
        return [
            Candidate(int(i), float(s)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0
        ]

    def _lexical(
        self, query: str, k: int, filters: Filters, allowed: np.ndarray | None
    ) -> list[Candidate]:
        if allowed is not None and len(allowed) == 0:
            return []
        rows = self.lexical.search(query, k, filters=filters, allowed=allowed)
        return [Candidate(passage_id, score) for passage_id, score in rows]

    def _hits(self, reader: Reader, candidates: Sequence[Candidate]) -> list[Hit]:
        rows = reader.hit_rows([c.passage_id for c in candidates])
        hits: list[Hit] = []
        for candidate in candidates:
            row = rows.get(candidate.passage_id)
            if row is None:  # cannot happen in one snapshot; never return a dangling hit
                continue
            hits.append(
                Hit(
                    passage_id=candidate.passage_id,
                    article_id=row["article_id"],
                    title=row["title"],
                    date=row["date"],
                    source=row["source"],
                    url=row["url"],
                    text=row["text"],
                    score=candidate.score,
                    rank=len(hits) + 1,
                    start=row["start"],
                    end=row["end"],
                )
            )
        return hits


def fuse(
    dense: Sequence[Candidate], lexical: Sequence[Candidate], fusion: Fusion
) -> list[Candidate]:
    """One ranking from the dense and the lexical one, best first (ties by passage id)."""
    if fusion.method == "rrf":
        return reciprocal_rank_fusion([dense, lexical])
    return normalized_score_fusion(dense, lexical, alpha=fusion.alpha, method=fusion.method)


def normalized_score_fusion(
    dense: Sequence[Candidate], lexical: Sequence[Candidate], *, alpha: float, method: str
) -> list[Candidate]:
    """alpha * dense + (1 - alpha) * lexical, each list's scores normalised first.

    "minmax" maps a list onto [0, 1]; "zscore" subtracts its mean and divides by its
    standard deviation. A passage found by one list only gets the other's lowest
    normalised score (as if ranked just below its last candidate).
    """
    parts = [(alpha, _normalized(dense, method)), (1.0 - alpha, _normalized(lexical, method))]
    floors = [min(normalized.values(), default=0.0) for _, normalized in parts]
    ids = dict.fromkeys(c.passage_id for c in (*dense, *lexical))
    scores = {
        passage_id: sum(
            weight * normalized.get(passage_id, floor)
            for (weight, normalized), floor in zip(parts, floors, strict=True)
        )
        for passage_id in ids
    }
    ordered = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    return [Candidate(passage_id, score) for passage_id, score in ordered]


def _normalized(candidates: Sequence[Candidate], method: str) -> dict[int, float]:
    if not candidates:
        return {}
    scores = np.array([c.score for c in candidates], dtype=np.float64)
    if method == "minmax":
        spread = scores.max() - scores.min()
        values = (scores - scores.min()) / spread if spread > 0 else np.ones_like(scores)
    else:
        std = scores.std()
        values = (scores - scores.mean()) / std if std > 0 else np.zeros_like(scores)
    return {c.passage_id: float(v) for c, v in zip(candidates, values, strict=True)}


def reciprocal_rank_fusion(rankings: Sequence[Sequence[Candidate]]) -> list[Candidate]:
    """Fuses ranked lists: each passage scores the sum of 1 / (RRF_K + rank) over lists."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, candidate in enumerate(ranking, start=1):
            scores[candidate.passage_id] = scores.get(candidate.passage_id, 0.0) + 1.0 / (
                RRF_K + rank
            )
    ordered = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    return [Candidate(passage_id, score) for passage_id, score in ordered]


def cap_per_article(candidates: Sequence[Candidate], cap: int, reader: Reader) -> list[Candidate]:
    """Keeps at most `cap` candidates of each article, in rank order."""
    owners = reader.article_of([c.passage_id for c in candidates])
    seen: dict[str, int] = {}
    kept = []
    for candidate in candidates:
        article = owners.get(candidate.passage_id, "")
        if seen.get(article, 0) < cap:
            seen[article] = seen.get(article, 0) + 1
            kept.append(candidate)
    return kept


def check_arguments(queries: Sequence[str], options: SearchOptions) -> None:
    """Refuses what no search can answer, with a message that says what to fix."""
    k, mode, offset = options.k, options.mode, options.offset
    max_per_article = options.max_per_article
    if isinstance(queries, str):
        raise InputError("search_batch takes a list of queries, not one string: use search()")
    for query in queries:
        if not isinstance(query, str) or not query.strip():
            raise InputError("query is empty: give a few words to search for")
        if len(query) > MAX_QUERY_CHARS:
            raise InputError(
                f"query is {len(query)} characters long: the limit is {MAX_QUERY_CHARS}"
            )
    if not 1 <= k <= MAX_K:
        raise InputError(f"k must be between 1 and {MAX_K}, got {k}")
    if not 0 <= offset <= MAX_K:
        raise InputError(f"offset must be between 0 and {MAX_K}, got {offset}")
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    if max_per_article is not None and max_per_article < 1:
        raise InputError(f"max_per_article must be at least 1, got {max_per_article}")

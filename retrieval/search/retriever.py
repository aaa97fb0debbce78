"""Finding the passages closest to a query: dense, lexical (BM25) and hybrid search.

`Retriever.search(q, k)` is `search_batch([q], k)[0]`: one code path. Filters are applied
inside each search (as a FAISS id selector, or in the SQL of the lexical search), so k
matching hits come back whenever k exist, never fewer because of post-filtering.

Re-ranking (freshness, `sort="date"`) works on a candidate pool deeper than k: it starts
at max(4 (k + offset), RERANK_POOL) candidates and grows 4x until no candidate below it
could enter the answer (decay never raises a score, so one ranked below the pool ends
at most at the pool's lowest score), or it holds RERANK_MAX_POOL candidates.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal, Protocol

import numpy as np

from retrieval.collection.lexical import LexicalIndex
from retrieval.collection.lexical import fts_query as fts_query  # re-exported: it lived here first
from retrieval.collection.reading import Searchable, SearchReader
from retrieval.errors import EmptyIndexError, InputError, NotFoundError
from retrieval.records import Filters, Hit, RelatedArticle
from retrieval.search.highlight import best_sentences
from retrieval.search.ranking import SORTS, check_recency, decayed, recency_factor, today_utc
from retrieval.search.related import related_articles

Mode = Literal["dense", "lexical", "hybrid"]
MODES: tuple[str, ...] = ("dense", "lexical", "hybrid")
# Hybrid beats the better of dense and lexical on SciFact and Cranfield and is within the
# noise of dense on MED (docs/evaluation.md), at the cost of one FTS5 query and a fusion per search.
DEFAULT_MODE: Mode = "hybrid"
Sort = Literal["score", "date"]
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
# Candidates a re-ranked search starts from, at least; and the most it gathers.
RERANK_POOL = 100
RERANK_MAX_POOL = 10_000
# Collapsing drops every candidate of a group but its best, so a group of thousands of
# copies (boilerplate, a wire story filed all day) would make each search read deeper
# and deeper: 4x per round, up to the whole collection. It stops at this many
# candidates; past them, fewer than k groups may come back.
COLLAPSE_MAX_POOL = 10_000


class Searcher(Protocol):
    """Anything that searches: the in-process Retriever, or the HTTP client."""

    def search_batch(
        self,
        queries: Sequence[str],
        k: int = 10,
        *,
        mode: Mode = DEFAULT_MODE,
        filters: Filters | None = None,
        max_per_article: int | None = None,
        collapse: bool = False,
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
        min_score: drop hits scoring below it (the score returned: after fusion and
            after freshness), so that k counts at most and "nothing" is an answer.
        recency_half_life_days: blend freshness into the score (see ranking.py): an
            article this many days older than `now` keeps 0.75 of its score, a very old
            or undated one 0.5. None: off.
        now: the reference date YYYY-MM-DD for freshness; None: today (UTC).
        sort: "score" (best first) or "date" (newest first among the hits scoring at
            least `min_score`, which it needs; undated ones last; ties by score).
        collapse: one hit per duplicate group (an article and its exact and near
            copies, found at ingest: retrieval/collection/duplicates.py), its best-scoring passage;
            the hit
            carries the group's other articles (`Hit.duplicate_ids`, those matching
            `filters`). k then counts groups, and so at most one passage per article.
    """

    k: int = 10
    mode: Mode = DEFAULT_MODE
    filters: Filters | None = None
    max_per_article: int | None = None
    offset: int = 0
    highlight: bool = False
    min_score: float | None = None
    recency_half_life_days: float | None = None
    now: str | None = None
    sort: Sort = "score"
    collapse: bool = False

    @property
    def needs_vectors(self) -> bool:
        """Dense and hybrid search need the query vector, and so does highlighting."""
        return self.mode != "lexical" or self.highlight

    @property
    def reranks(self) -> bool:
        """Freshness and date order reorder candidates: they need a deeper pool."""
        return self.recency_half_life_days is not None or self.sort == "date"

    def reference_date(self) -> datetime.date:
        return datetime.date.fromisoformat(self.now) if self.now else today_utc()


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


# Chosen on SciFact's train split (qrels/train.tsv) only; see docs/evaluation.md, "Fusion".
DEFAULT_FUSION = Fusion("zscore", 0.6)


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
        k: int = 10,
        *,
        mode: Mode = DEFAULT_MODE,
        filters: Filters | None = None,
        max_per_article: int | None = None,
        offset: int = 0,
        highlight: bool = False,
        min_score: float | None = None,
        recency_half_life_days: float | None = None,
        now: str | None = None,
        sort: Sort = "score",
        collapse: bool = False,
    ) -> list[Hit]:
        """The k passages closest to the query, best first (or newest first).

        Args:
            query: free text.
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
        k: int = 10,
        *,
        mode: Mode = DEFAULT_MODE,
        filters: Filters | None = None,
        max_per_article: int | None = None,
        offset: int = 0,
        highlight: bool = False,
        min_score: float | None = None,
        recency_half_life_days: float | None = None,
        now: str | None = None,
        sort: Sort = "score",
        collapse: bool = False,
    ) -> list[list[Hit]]:
        """`search` for several queries at once (their embeddings are computed together)."""
        options = SearchOptions(
            k=k, mode=mode, filters=filters, max_per_article=max_per_article, offset=offset,
            highlight=highlight, min_score=min_score,
            recency_half_life_days=recency_half_life_days, now=now, sort=sort,
            collapse=collapse,
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
                    reader, query, vector, options, wanted, filters, allowed
                )
                copies_within = filters if options.collapse else None
                results.append(self._hits(reader, candidates[offset:wanted], copies_within))
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

    def _candidates(
        self,
        reader: SearchReader,
        query: str,
        vector: np.ndarray | None,
        options: SearchOptions,
        wanted: int,
        filters: Filters,
        allowed: np.ndarray | None,
    ) -> list[Candidate]:
        """Enough candidates, in their final order, to fill `wanted` hits.

        A per-article cap and collapsing drop candidates, and freshness or date order
        reorders them, so those searches ask for more and more (4x each round) until
        `complete` says no candidate further down could change the answer, or every
        candidate is seen.
        """
        cap = options.max_per_article
        fetch, ceiling = wanted, None
        if options.reranks:
            ceiling = max(RERANK_MAX_POOL, wanted)
            fetch = min(max(wanted * 4, RERANK_POOL), ceiling)
        elif cap or options.collapse:
            fetch = wanted * 4
            if options.collapse:
                ceiling = max(COLLAPSE_MAX_POOL, wanted)
                fetch = min(fetch, ceiling)
        while True:
            raw = self._ranked(reader, query, vector, options.mode, fetch, filters, allowed)
            kept = self._decayed(reader, raw, options)
            if options.min_score is not None:
                kept = [c for c in kept if c.score >= options.min_score]
            if cap:
                kept = cap_per_article(kept, cap, reader)
            if options.collapse:
                kept = one_per_group(kept, reader)
            if len(raw) < fetch or fetch == ceiling or complete(kept, raw, wanted, options):
                break
            fetch = fetch * 4 if ceiling is None else min(fetch * 4, ceiling)
        return newest_first(kept, reader) if options.sort == "date" else kept

    def _decayed(
        self, reader: SearchReader, candidates: list[Candidate], options: SearchOptions
    ) -> list[Candidate]:
        """The candidates with freshness blended into their scores, best first."""
        half_life = options.recency_half_life_days
        if half_life is None or not candidates:
            return candidates
        now = options.reference_date()
        dates = reader.dates_of([c.passage_id for c in candidates])
        aged = [
            Candidate(
                c.passage_id,
                decayed(c.score, recency_factor(dates.get(c.passage_id), now, half_life)),
            )
            for c in candidates
        ]
        return sorted(aged, key=lambda c: (-c.score, c.passage_id))

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
        # The two halves stay arrays until fused: a hybrid search makes Candidates only
        # for the k it returns, not for the 2 x HYBRID_CANDIDATES it fuses.
        depth = max(k, HYBRID_CANDIDATES)
        dense = self._dense_ranking(reader, vector, depth, allowed)
        lexical = self._lexical_ranking(query, depth, filters, allowed)
        if self.fusion.method == "rrf":
            return reciprocal_rank_fusion([candidates_of(dense), candidates_of(lexical)])[:k]
        return fuse_rankings(dense, lexical, alpha=self.fusion.alpha,
                             method=self.fusion.method, limit=k)

    def _dense(
        self, reader: SearchReader, vector: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> list[Candidate]:
        return candidates_of(self._dense_ranking(reader, vector, k, allowed))

    def _dense_ranking(
        self, reader: SearchReader, vector: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> Ranking:
        if allowed is not None and len(allowed) == 0:
            return EMPTY_RANKING
        scores, ids = reader.dense(vector, k, allowed)
        found = ids[0] >= 0  # FAISS pads with -1 when fewer than k exist
        return ids[0][found].astype(np.int64), scores[0][found].astype(np.float64)

    def _lexical(
        self, query: str, k: int, filters: Filters, allowed: np.ndarray | None
    ) -> list[Candidate]:
        rows = self._lexical_rows(query, k, filters, allowed)
        return [Candidate(passage_id, score) for passage_id, score in rows]

    def _lexical_ranking(
        self, query: str, k: int, filters: Filters, allowed: np.ndarray | None
    ) -> Ranking:
        rows = self._lexical_rows(query, k, filters, allowed)
        return (np.array([passage_id for passage_id, _ in rows], dtype=np.int64),
                np.array([score for _, score in rows], dtype=np.float64))

    def _lexical_rows(
        self, query: str, k: int, filters: Filters, allowed: np.ndarray | None
    ) -> list[tuple[int, float]]:
        if allowed is not None and len(allowed) == 0:
            return []
        return self.lexical.search(query, k, filters=filters, allowed=allowed)

    def _hits(
        self, reader: SearchReader, candidates: Sequence[Candidate],
        copies_within: Filters | None = None,
    ) -> list[Hit]:
        """The candidates as hits; given `copies_within` (a collapsed search's filters),
        each carries the other articles of its group that match them."""
        rows = reader.hit_rows([c.passage_id for c in candidates])
        copies: dict[str, list[str]] = {}
        if copies_within is not None:
            owners = dict.fromkeys(row["article_id"] for row in rows.values())
            copies = reader.duplicates_of(list(owners), copies_within)
        hits: list[Hit] = []
        for candidate in candidates:
            row = rows.get(candidate.passage_id)
            if row is None:  # cannot happen in one snapshot; never return a dangling hit
                continue
            others = copies.get(row["article_id"], ())
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
                    duplicates=len(others),
                    duplicate_ids=tuple(others),
                )
            )
        return hits


# A ranking as arrays, best first: (passage ids, int64; scores, float64).
Ranking = tuple[np.ndarray, np.ndarray]
EMPTY_RANKING: Ranking = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64))


def ranking_of(candidates: Sequence[Candidate]) -> Ranking:
    return (np.array([c.passage_id for c in candidates], dtype=np.int64),
            np.array([c.score for c in candidates], dtype=np.float64))


def candidates_of(ranking: Ranking) -> list[Candidate]:
    ids, scores = ranking
    return [Candidate(i, s) for i, s in zip(ids.tolist(), scores.tolist(), strict=True)]


def fuse(
    dense: Sequence[Candidate], lexical: Sequence[Candidate], fusion: Fusion,
    *, limit: int | None = None,
) -> list[Candidate]:
    """One ranking from the dense and the lexical one, best first (ties by passage id);
    its first `limit` candidates when given."""
    if fusion.method == "rrf":
        return reciprocal_rank_fusion([dense, lexical])[:limit]
    return normalized_score_fusion(
        dense, lexical, alpha=fusion.alpha, method=fusion.method, limit=limit
    )


def normalized_score_fusion(
    dense: Sequence[Candidate], lexical: Sequence[Candidate], *, alpha: float, method: str,
    limit: int | None = None,
) -> list[Candidate]:
    """alpha * dense + (1 - alpha) * lexical, each list's scores normalised first.

    "minmax" maps a list onto [0, 1]; "zscore" subtracts its mean and divides by its
    standard deviation. A passage found by one list only gets the other's lowest
    normalised score (as if ranked just below its last candidate).
    """
    return fuse_rankings(ranking_of(dense), ranking_of(lexical), alpha=alpha, method=method,
                         limit=limit)


def fuse_rankings(
    dense: Ranking, lexical: Ranking, *, alpha: float, method: str, limit: int | None = None
) -> list[Candidate]:
    """`normalized_score_fusion` on arrays: it runs on every hybrid search, over up to
    2 x HYBRID_CANDIDATES passages, so in numpy."""
    ids = np.union1d(dense[0], lexical[0])
    scores = np.zeros(len(ids), dtype=np.float64)
    for weight, (part_ids, part_scores) in ((alpha, dense), (1.0 - alpha, lexical)):
        if not len(part_ids):
            continue  # its lowest normalised score would be 0.0: nothing to add
        values = _normalized(part_scores, method)
        spread = np.full(len(ids), values.min())
        spread[np.searchsorted(ids, part_ids)] = values
        scores += weight * spread
    order = np.lexsort((ids, -scores))[:limit]  # best first, ties by passage id
    return candidates_of((ids[order], scores[order]))


def _normalized(scores: np.ndarray, method: str) -> np.ndarray:
    if method == "minmax":
        spread = scores.max() - scores.min()
        return (scores - scores.min()) / spread if spread > 0 else np.ones_like(scores)
    std = scores.std()
    return (scores - scores.mean()) / std if std > 0 else np.zeros_like(scores)


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


def cap_per_article(
    candidates: Sequence[Candidate], cap: int, reader: SearchReader
) -> list[Candidate]:
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


def one_per_group(candidates: Sequence[Candidate], reader: SearchReader) -> list[Candidate]:
    """Keeps the first (best-ranked) candidate of each duplicate group, in rank order.

    Before date order on purpose: a group is represented by its best match, and then
    placed by that article's date.
    """
    groups = reader.group_keys([c.passage_id for c in candidates])
    seen: set[str] = set()
    kept = []
    for candidate in candidates:
        group = groups.get(candidate.passage_id, f"p{candidate.passage_id}")
        if group not in seen:
            seen.add(group)
            kept.append(candidate)
    return kept


def complete(
    kept: Sequence[Candidate], raw: Sequence[Candidate], wanted: int, options: SearchOptions
) -> bool:
    """True when no candidate ranked below `raw` could change the answer.

    Such a candidate scores at most raw[-1].score before decay, so at most that after
    (decay never raises a score): it cannot pass a min_score above that, nor displace
    the wanted-th kept candidate when that one scores at least as much.
    """
    bound = raw[-1].score
    if options.min_score is not None and bound < options.min_score:
        return True
    if options.sort == "date":  # every hit above min_score must be in the pool
        return False
    return len(kept) >= wanted and kept[wanted - 1].score >= bound


def newest_first(candidates: Sequence[Candidate], reader: SearchReader) -> list[Candidate]:
    """Newest article first, undated ones last; ties keep their (score) order."""
    dates = reader.dates_of([c.passage_id for c in candidates])
    # sorted() is stable, with reverse=True too: equal dates keep the score order.
    return sorted(candidates, key=lambda c: dates.get(c.passage_id) or "", reverse=True)


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
    check_ranking(options)


def check_ranking(options: SearchOptions) -> None:
    """Refuses re-ranking options that cannot be honoured."""
    min_score = options.min_score
    if min_score is not None and not (
        isinstance(min_score, int | float) and math.isfinite(min_score)
    ):
        raise InputError(f"min_score must be a finite number, got {min_score!r}")
    problem = check_recency(options.recency_half_life_days, options.now)
    if problem:
        raise InputError(problem)
    if options.sort not in SORTS:
        raise InputError(f"unknown sort {options.sort!r}: use one of {', '.join(SORTS)}")
    if options.sort == "date" and min_score is None:
        raise InputError(
            "sort='date' needs min_score: it orders by date the hits scoring at least "
            "min_score, and without one every passage would qualify"
        )

"""Hybrid fusion: one ranking from the dense and the lexical one.

Normalised score fusion (z-score by default, or min-max: each list's scores normalised,
then a weighted sum) or reciprocal rank fusion. It runs on every hybrid search over up to
2 x `Fusion.depth` passages, so the halves stay numpy arrays (`Ranking`) until fused,
and only the candidates returned become `Candidate` objects.

The fused pool is always the best `depth` passages of each half, whatever k and offset
a search asks for: the normalisation (mean, spread, lowest score) is taken over the pool,
so a pool that grew with k would change every fused score, and pages would no longer
tile one ranking. Every passage outside the pool follows it, in dense order, with a
score below every pooled one (`fuse_beyond`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from retrieval.errors import InputError

# Reciprocal rank fusion constant (Cormack et al. 2009): damps the head of each list.
RRF_K = 60
FUSION_METHODS = ("rrf", "minmax", "zscore")
# Candidates each half of a hybrid search contributes to the fusion, by default. Chosen
# on SciFact's train split (nDCG@10 0.7348 at 100, 0.7384 at 400, 0.7396 at 1,000);
# 400 costs about 4 ms more a search than 100 on SciFact, 1,000 about 9 ms
# (docs/quality.md).
HYBRID_CANDIDATES = 400
MAX_DEPTH = 10_000


def ranking_depth(mode: str, k: int) -> int:
    """Candidates each half of a search ranks for a pool of k: a hybrid search with the
    default fusion reads HYBRID_CANDIDATES of each half (its fused pool) and, past it,
    the dense top k (`Retriever._hybrid`)."""
    return max(k, HYBRID_CANDIDATES) if mode == "hybrid" else k


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
        depth: passages each half contributes to the fused pool; fixed, so that the
            ranking does not depend on how deep a search reads (see the module's note).
    """

    method: str = "zscore"
    alpha: float = 0.6
    depth: int = HYBRID_CANDIDATES

    def __post_init__(self) -> None:
        if self.method not in FUSION_METHODS:
            choices = ", ".join(FUSION_METHODS)
            raise InputError(f"unknown fusion {self.method!r}: use one of {choices}")
        if not 0.0 <= self.alpha <= 1.0:
            raise InputError(f"fusion alpha must be in [0, 1], got {self.alpha}")
        if not 1 <= self.depth <= MAX_DEPTH:
            raise InputError(f"fusion depth must be between 1 and {MAX_DEPTH}, got {self.depth}")

    @classmethod
    def parse(cls, spec: str) -> Fusion:
        """ "rrf", "minmax:0.3" or "zscore:0.5" (method, then the dense weight), each
        optionally followed by "@DEPTH" (passages per half), e.g. "zscore:0.6@400"."""
        head, at, depth = spec.partition("@")
        method, _, alpha = head.partition(":")
        try:
            pool = int(depth) if at else HYBRID_CANDIDATES
            return cls(method, float(alpha), pool) if alpha else cls(method, depth=pool)
        except ValueError:
            raise InputError(
                f"bad fusion {spec!r}: expected rrf, minmax:ALPHA or zscore:ALPHA, "
                "optionally followed by @DEPTH"
            ) from None

    def __str__(self) -> str:
        name = "rrf" if self.method == "rrf" else f"{self.method}:{self.alpha:g}"
        return name if self.depth == HYBRID_CANDIDATES else f"{name}@{self.depth}"


# Chosen on SciFact's train split (qrels/train.tsv) only; see docs/evaluation.md.
DEFAULT_FUSION = Fusion("zscore", 0.6)


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


def fuse_pool(dense: Ranking, lexical: Ranking, fusion: Fusion) -> list[Candidate]:
    """The two halves' pools fused, best first (ties by passage id)."""
    if fusion.method == "rrf":
        return reciprocal_rank_fusion([candidates_of(dense), candidates_of(lexical)])
    return fuse_rankings(dense, lexical, alpha=fusion.alpha, method=fusion.method)


def fuse_beyond(
    dense: Ranking, lexical: Ranking, fusion: Fusion, deeper: Ranking
) -> list[Candidate]:
    """The passages of `deeper` that neither pool holds, scored below every pooled one.

    Each scores as a passage missing from the lexical pool, with its own dense score
    normalised as the dense pool's were (RRF: 1 / (RRF_K + its dense rank)): lower than
    any fused score, and lower the lower its cosine, so the ranking goes on in dense
    order with scores that keep falling.

    Args:
        dense, lexical: the pools `fuse_pool` fused.
        deeper: the dense ranking from its first passage on, read past the pool.
    """
    ids, scores = deeper
    beyond = ~np.isin(ids, dense[0]) & ~np.isin(ids, lexical[0])
    if fusion.method == "rrf":
        fused = 1.0 / (RRF_K + np.arange(1, len(ids) + 1, dtype=np.float64))
    else:
        fused = fusion.alpha * _normalized_like(scores, dense[1], fusion.method)
        if len(lexical[1]):
            fused += (1.0 - fusion.alpha) * _normalized(lexical[1], fusion.method).min()
    return candidates_of((ids[beyond], fused[beyond]))


def _normalized_like(values: np.ndarray, pool: np.ndarray, method: str) -> np.ndarray:
    """`values` normalised with the pool's statistics, as `_normalized(pool)` is (a pool
    without spread normalises to a constant; values below it go on falling from there)."""
    if method == "minmax":
        low, spread = float(pool.min()), float(pool.max() - pool.min())
        offset, scale = (0.0, spread) if spread > 0 else (1.0, 1.0)
    else:
        low, spread = float(pool.mean()), float(pool.std())
        offset, scale = 0.0, spread if spread > 0 else 1.0
    normalised: np.ndarray = offset + (values - low) / scale
    return normalised


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



"""Ranking variants re-played in numpy on the score matrices of `ranking_dump.py`.

    python scripts/ranking_study.py DUMP.npz QRELS.tsv [VARIANT ...]

Each variant ranks every passage for every query, keeps an article's best passage
(as `retrieval eval` does, max_per_article=1), and scores nDCG@10 against the qrels
(linear gains, as ranx and trec_eval). It prints the mean and the per-query values are
kept for paired tests. The variants are named in VARIANTS below.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Ranker = Callable[[int], tuple[np.ndarray, np.ndarray]]  # query row -> (columns, scores)


@dataclass
class Data:
    passage_ids: np.ndarray
    articles: np.ndarray
    query_ids: list[str]
    dense: np.ndarray
    lexical: np.ndarray
    query_vectors: np.ndarray
    passage_vectors: np.ndarray
    lengths: np.ndarray


def load(path: str) -> Data:
    z = np.load(path)
    return Data(z["passage_ids"], z["articles"], [str(q) for q in z["query_ids"]],
                z["dense"].astype(np.float64), z["lexical"].astype(np.float64),
                z["query_vectors"], z["passage_vectors"], z["lengths"])


def read_qrels(path: str) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    with open(path, newline="") as handle:
        for row in csv.reader(handle, delimiter="\t"):
            if row[0] == "query-id":
                continue
            out.setdefault(row[0], {})[row[1]] = int(float(row[2]))
    return out


def top(scores: np.ndarray, n: int, positive: bool = False) -> np.ndarray:
    """Columns of the n best scores, best first (ties by column = passage id order)."""
    cols = np.flatnonzero(scores > 0) if positive else np.arange(len(scores))
    order = np.lexsort((cols, -scores[cols]))
    return cols[order[:n]]


def normalise(values: np.ndarray, method: str) -> np.ndarray:
    if method == "minmax":
        spread = values.max() - values.min()
        return (values - values.min()) / spread if spread > 0 else np.ones_like(values)
    if method == "dbsf":  # distribution-based: mean +- 3 std onto [0, 1]
        std = values.std()
        low, high = values.mean() - 3 * std, values.mean() + 3 * std
        return (values - low) / (high - low) if std > 0 else np.ones_like(values)
    std = values.std()
    return (values - values.mean()) / std if std > 0 else np.zeros_like(values)


def fused(dense: np.ndarray, lexical: np.ndarray, *, depth: int, alpha: float,
          method: str = "zscore", fill: str = "floor") -> tuple[np.ndarray, np.ndarray]:
    """The engine's normalised fusion over the top `depth` of each list; then the rest by
    cosine (the fixed-pool definition). fill: "floor" (a passage missing from a list gets
    its lowest normalised score, as today) or "true" (its own score, normalised with the
    pool's statistics; BM25 0 when it does not match)."""
    d_top, l_top = top(dense, depth), top(lexical, depth, positive=True)
    pool = np.union1d(d_top, l_top)
    total = np.zeros(len(pool))
    for weight, scores, part in ((alpha, dense, d_top), (1 - alpha, lexical, l_top)):
        if not len(part):
            continue
        if method == "rrf":
            rank = np.full(len(pool), np.inf)
            rank[np.searchsorted(pool, part)] = np.arange(1, len(part) + 1)
            total += 1.0 / (60 + rank)
            continue
        values = scores[part]
        normal = normalise(values, method)
        if fill == "true":
            if method == "zscore":
                std = values.std() or 1.0
                spread = (scores[pool] - values.mean()) / std
            else:
                lo, hi = values.min(), values.max()
                spread = (scores[pool] - lo) / ((hi - lo) or 1.0)
        else:
            spread = np.full(len(pool), normal.min())
            spread[np.searchsorted(pool, part)] = normal
        total += weight * spread
    order = np.lexsort((pool, -total))
    return pool[order], total[order]


def documents(data: Data, columns: np.ndarray, scores: np.ndarray, k: int,
              aggregate: str = "max") -> dict[str, float]:
    """Article -> score: its best passage (max_per_article=1), or an aggregate."""
    best: dict[str, float] = {}
    if aggregate == "max":
        for c, s in zip(columns.tolist(), scores.tolist(), strict=True):
            a = data.articles[c]
            if a not in best:
                best[a] = s
                if len(best) == k:
                    break
        return best
    per: dict[str, list[float]] = {}
    for c, s in zip(columns.tolist(), scores.tolist(), strict=True):
        per.setdefault(data.articles[c], []).append(s)
    kind, _, m = aggregate.partition(":")
    for a, values in per.items():
        if kind == "top":
            best[a] = values[0] + float(m or 0.1) * sum(values[1:3])
    return dict(sorted(best.items(), key=lambda x: -x[1])[:k])


def ndcg10(ranked: dict[str, float], judged: dict[str, int]) -> float:
    docs = sorted(ranked.items(), key=lambda x: (-x[1], x[0]))[:10]
    dcg = sum(judged.get(d, 0) / math.log2(i + 2) for i, (d, _) in enumerate(docs))
    ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:10]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def evaluate(data: Data, qrels: dict[str, dict[str, int]], ranker: Ranker, k: int = 10,
             aggregate: str = "max") -> dict[str, float]:
    out = {}
    for row, qid in enumerate(data.query_ids):
        if qid not in qrels:
            continue
        cols, scores = ranker(row)
        out[qid] = ndcg10(documents(data, cols, scores, k, aggregate), qrels[qid])
    return out


def paired_p(new: dict[str, float], old: dict[str, float]) -> float:
    from scipy.stats import ttest_rel

    q = sorted(old)
    a, b = [old[x] for x in q], [new[x] for x in q]
    if all(x == y for x, y in zip(a, b, strict=True)):
        return 1.0
    p = float(ttest_rel(b, a, alternative="less").pvalue)
    return 1.0 if math.isnan(p) else p

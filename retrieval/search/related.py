"""Articles close to a given one, from its passages' stored vectors (no model call).

The article's passages are summed up by their centroid: the mean of their unit vectors,
renormalised. It is searched like a query vector over every passage, and each other
article scores by its closest passage (cosine, in [-1, 1]). The article's own exact
and near copies (its duplicate group) are left out, and each other group appears once.
docs/search.md ("Related articles") says why the centroid and not the best pair of
passages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from retrieval.records import RelatedArticle

if TYPE_CHECKING:
    from retrieval.collection.reading import SearchReader

# Passages fetched per related article wanted, in the first round (more if too few).
PASSAGES_PER_ARTICLE = 4


def centroid(vectors: np.ndarray) -> np.ndarray:
    """(1, dim): the mean of unit vectors (n, dim), renormalised (their first if it is 0)."""
    mean = vectors.mean(axis=0, dtype=np.float64)
    norm = float(np.linalg.norm(mean))
    if norm < 1e-12:  # passages pointing in opposite directions: keep one of them
        mean, norm = vectors[0].astype(np.float64), float(np.linalg.norm(vectors[0]))
    unit: np.ndarray = (mean / norm).astype(np.float32).reshape(1, -1)
    return unit


def related_articles(
    reader: SearchReader, article_id: str, k: int, allowed: np.ndarray | None
) -> list[RelatedArticle]:
    """The k articles closest to `article_id` (itself excluded), closest first.

    The passage search goes 4x deeper each round until k other articles remain after
    `collapse_near_duplicates`, or every allowed passage has been seen.
    """
    vectors = reader.article_vectors(article_id)
    if len(vectors) == 0 or (allowed is not None and len(allowed) == 0):
        return []
    query = centroid(vectors)
    fetch = (k + 1) * PASSAGES_PER_ARTICLE + len(vectors)
    while True:
        scores, ids = reader.dense(query, fetch, allowed)
        found = [(int(i), float(s)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0]
        ranked = best_per_article(found, reader, exclude=article_id)
        kept = collapse_near_duplicates(article_id, ranked, reader)
        if len(kept) >= k or len(found) < fetch:
            break
        fetch *= 4
    return related_records(kept[:k], reader)


def best_per_article(
    found: Sequence[tuple[int, float]], reader: SearchReader, *, exclude: str
) -> list[tuple[str, float]]:
    """(article id, its best passage's score), best first; `exclude` left out."""
    owners = reader.article_of([passage_id for passage_id, _ in found])
    best: dict[str, float] = {}
    for passage_id, score in found:  # best first, so an article's first score is its best
        article = owners.get(passage_id)
        if article is not None and article != exclude and article not in best:
            best[article] = score
    return sorted(best.items(), key=lambda item: (-item[1], item[0]))


def collapse_near_duplicates(
    article_id: str, ranked: list[tuple[str, float]], reader: SearchReader
) -> list[tuple[str, float]]:
    """`ranked` without the copies of `article_id` (its duplicate group: a copy is not a
    related story) and with one article per other group, the best-ranked one."""
    groups = reader.article_group_keys([article_id, *(article for article, _ in ranked)])
    seen = {groups.get(article_id, "")}
    kept = []
    for article, score in ranked:
        group = groups.get(article, f"a{article}")
        if group not in seen:
            seen.add(group)
            kept.append((article, score))
    return kept


def related_records(
    ranked: Sequence[tuple[str, float]], reader: SearchReader
) -> list[RelatedArticle]:
    rows = reader.article_rows([article for article, _ in ranked])
    return [
        RelatedArticle(
            article_id=article, title=rows[article]["title"], date=rows[article]["date"],
            source=rows[article]["source"], url=rows[article]["url"], score=score,
        )
        for article, score in ranked
        if article in rows
    ]

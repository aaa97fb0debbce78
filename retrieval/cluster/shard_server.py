"""One shard's side of a sharded collection: its collection, answering in plain values.

A `ShardServer` wraps an ordinary `Collection` (the shard is one) and offers what the
router (retrieval/cluster/router.py) asks of each shard: the reads of one search, BM25, the article
and
passage look-ups, and writes. Every answer is a plain value (numbers, strings, dicts,
numpy arrays, records), never a SQLite row or a lock, so the same object serves in
process (`router.LocalShard`) and as a Ray Serve deployment (service/ray_serve.py),
where answers cross process boundaries.

Each method is one consistent read of the shard (`Collection.reading`); the router's
several calls for one search each see the shard's latest committed generation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from retrieval.collection import duplicates
from retrieval.collection.bm25 import LexicalStatistics
from retrieval.collection.collection import Collection
from retrieval.collection.ingest import IngestReport, indexable
from retrieval.collection.store import DEFAULT_WRITE_TIMEOUT_S, NewPassage
from retrieval.errors import NotFoundError
from retrieval.records import Article, Filters, Passage

# The fields of `Store.hit_rows` that a Hit is built from.
HIT_FIELDS = ("article_id", "text", "start", "end", "title", "date", "source", "url")


class ShardServer:
    """Shard `index` of a sharded collection, over its own collection directory.

    Args:
        collection: the shard's collection, open (the server closes it in `close`).
        index: the shard's number; it prefixes its duplicate-group keys, so that groups
            of different shards never merge at the router.
    """

    def __init__(self, collection: Collection, index: int) -> None:
        self.collection = collection
        self.index = index

    def close(self) -> None:
        self.collection.close()

    # -- the reads of one search ----------------------------------------------------------

    def dense(
        self, vectors: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        with self.collection.reading() as reader:
            return reader.dense(vectors, k, allowed)

    def size(self) -> int:
        with self.collection.reading() as reader:
            return reader.size()

    def passage_ids_matching(self, filters: Filters) -> np.ndarray:
        with self.collection.reading() as reader:
            return reader.passage_ids_matching(filters)

    def hit_rows(self, passage_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        with self.collection.reading() as reader:
            rows = reader.hit_rows(passage_ids)
        return {pid: {name: row[name] for name in HIT_FIELDS} for pid, row in rows.items()}

    def article_of(self, passage_ids: Sequence[int]) -> dict[int, str]:
        with self.collection.reading() as reader:
            return reader.article_of(passage_ids)

    def dates_of(self, passage_ids: Sequence[int]) -> dict[int, str | None]:
        with self.collection.reading() as reader:
            return reader.dates_of(passage_ids)

    def article_vectors(self, article_id: str) -> np.ndarray:
        with self.collection.reading() as reader:
            return reader.article_vectors(article_id)

    def article_rows(self, article_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        with self.collection.reading() as reader:
            rows = reader.article_rows(article_ids)
        return {key: dict(row) for key, row in rows.items()}

    def group_keys(self, passage_ids: Sequence[int]) -> dict[int, str]:
        with self.collection.reading() as reader:
            keys = reader.group_keys(passage_ids)
        return {pid: f"s{self.index}:{key}" for pid, key in keys.items()}

    def article_group_keys(self, article_ids: Sequence[str]) -> dict[str, str]:
        with self.collection.reading() as reader:
            keys = reader.article_group_keys(article_ids)
        return {article: f"s{self.index}:{key}" for article, key in keys.items()}

    def duplicates_of(
        self, article_ids: Sequence[str], filters: Filters | None
    ) -> dict[str, list[str]]:
        with self.collection.reading() as reader:
            return reader.duplicates_of(article_ids, filters)

    def has_article(self, article_id: str) -> bool:
        with self.collection.reading() as reader:
            return reader.has_article(article_id)

    def lexical_statistics(self, query: str) -> LexicalStatistics | None:
        """This shard's counts for the query's terms (None: FTS5 alone can score it)."""
        return self.collection.lexical_statistics(query)

    def lexical(
        self, query: str, k: int, filters: Filters, allowed: np.ndarray | None,
        statistics: LexicalStatistics | None = None,
    ) -> list[tuple[int, float]]:
        """BM25 over this shard's passages, best first; scored with `statistics` (the
        collection-wide sum) when given, else with this shard's own."""
        return self.collection.lexical.search(
            query, k, filters=filters, allowed=allowed, statistics=statistics
        )

    # -- look-ups -------------------------------------------------------------------------

    def article(self, article_id: str) -> Article:
        return self.collection.article(article_id)

    def passage(self, passage_id: int) -> Passage | None:
        """The passage, or None when this shard does not hold it (others may)."""
        try:
            return self.collection.passage(passage_id)
        except NotFoundError:
            return None

    def article_with_passages(self, article_id: str) -> tuple[Article, list[Passage]]:
        with self.collection.snapshot():
            return self.collection.article(article_id), self.collection.passages_of(article_id)

    def content_hashes(self, article_ids: Sequence[str]) -> dict[str, str]:
        return self.collection.store.content_hashes(list(article_ids))

    def stats(self) -> dict[str, Any]:
        return self.collection.stats()

    def generation(self) -> int:
        return self.collection.refresh()

    # -- writes ---------------------------------------------------------------------------

    def add_articles(
        self, articles: Sequence[Article], lock_timeout: float = DEFAULT_WRITE_TIMEOUT_S
    ) -> IngestReport:
        """Chunks, embeds and stores articles (this shard's model embeds them)."""
        return self.collection.add_articles(articles, lock_timeout=lock_timeout)

    def delete_article(
        self, article_id: str, lock_timeout: float = DEFAULT_WRITE_TIMEOUT_S
    ) -> int:
        return self.collection.delete_article(article_id, lock_timeout=lock_timeout)

    def write_embedded(
        self, items: Sequence[tuple[Article, list[NewPassage]]],
        lock_timeout: float = DEFAULT_WRITE_TIMEOUT_S,
    ) -> IngestReport:
        """Stores articles already chunked and embedded elsewhere, in ONE transaction.

        For Ray Data indexing (ray_index.py): the batch is this shard's share of one
        embedding batch. All or nothing, so a worker killed at any point leaves the
        shard at a committed generation; an article already stored unchanged is
        skipped, so a batch written twice (a retried task, a re-run) adds nothing.
        """
        report = IngestReport()
        items = [(indexable(article), rows) for article, rows in items]
        fingerprints = [duplicates.fingerprint(article.text) for article, _ in items]
        store = self.collection.store
        with store.transaction(lock_timeout) as generation:
            known = store.content_hashes([article.id for article, _ in items])
            for (article, rows), fingerprint in zip(items, fingerprints, strict=True):
                if known.get(article.id) == article.content_hash():
                    report.unchanged += 1
                    continue
                gone, new = store.put_article(article, rows, generation, fingerprint)
                report.count_stored(len(gone), len(new), replaced=article.id in known)
        return report

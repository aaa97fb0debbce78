"""One shard's side of a sharded collection: its collection, answering in plain values.

A `ShardServer` wraps an ordinary `Collection` (the shard is one) and offers what the
router (retrieval/cluster/router.py) asks of each shard: the reads of one search, BM25, the article
and
passage look-ups, and writes. Every answer is a plain value (numbers, strings, dicts,
numpy arrays, records), never a SQLite row or a lock, so the same object serves in
process (`clients.LocalShard`) and as a Ray Serve deployment (service/ray_serve.py),
where answers cross process boundaries.

A search is one call, `query` (query_phase.py): one consistent read of the shard
(`Collection.reading`) answers it whole, its BM25 half included. The other reads
(`dense`, `hit_rows`, ...) serve what a search's query phase did not bring back
(a deeper pool, a related-articles search); each is one consistent read too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from retrieval.cluster.query_phase import HIT_FIELDS, ShardAnswer, ShardQuery, answer_query
from retrieval.collection.collection import Collection
from retrieval.collection.ingest import IngestReport, indexable, store_embedded
from retrieval.collection.reading import SEARCH_READS
from retrieval.collection.store import DEFAULT_WRITE_TIMEOUT_S, NewPassage
from retrieval.errors import NotFoundError
from retrieval.records import Article, Passage


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

    def query(self, query: ShardQuery) -> ShardAnswer:
        """A search's query phase on this shard, in one read (query_phase.py)."""
        return answer_query(self.collection, self.index, query)

    def read(self, method: str, *args: Any) -> Any:
        """One read of the read protocol (`SearchReader`), by name, from one consistent
        read of this shard: the fetch phase, and what a query phase did not cover.

        Rows come back as plain dicts (they cross processes), and duplicate-group keys
        prefixed with this shard's number, so that groups of two shards never merge
        by accident of their local ids.
        """
        if method not in SEARCH_READS:
            raise ValueError(f"{method!r} is not a read of the SearchReader protocol")
        with self.collection.reading() as reader:
            answer = getattr(reader, method)(*args)
        if method == "hit_rows":
            return {pid: {name: row[name] for name in HIT_FIELDS} for pid, row in answer.items()}
        if method == "article_rows":
            return {key: dict(row) for key, row in answer.items()}
        if method in ("group_keys", "article_group_keys"):
            return {key: f"s{self.index}:{group}" for key, group in answer.items()}
        return answer

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
        items = [(indexable(article), rows) for article, rows in items]
        return store_embedded(self.collection.store, items, lock_timeout)

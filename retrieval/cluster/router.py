"""A sharded collection read and written as one: the router over N shards.

`ShardedCollection` stands in for a `Collection` wherever search reads one (it is
`reading.Searchable`) and wherever the service uses one (writes, look-ups, stats).

A search is one round: its reader's `prepare` sends one call to every shard (the query
phase, query_phase.py) carrying the query vectors and text, how deep to rank, the
filters and the collection-wide BM25 statistics (statistics.py); each shard answers
its dense and BM25 top candidates with everything ranking reads of them (article ids,
dates, group keys, the rows of those near the top, duplicates). The Retriever's own
code then ranks, caps per article, collapses, pages and fuses over the merged
candidates, exactly as over one collection, reading from those answers:

- dense: the shards' top k merged by (score, then lower id) like `live_index.merge_top_k`
  merges an index's parts. Cosines compare across shards as they are, so the merged
  top k is the top k of one collection holding every passage.
- lexical: the shards' BM25 top k, scored with collection-wide statistics, merged.
- hybrid: the Retriever fuses the merged dense and merged lexical candidates, never
  per shard.
- collapse: groups are joined across shards (groups_across.py).

A read the query phase did not cover costs one more round, counted like every other
(`traffic`): a pool grown deeper than the first (many copies collapsed, a strict
min_score), a hit ranked below the rows sent, BM25 statistics refreshed after a write.
Per-article reads go to the article's shard only; a read by passage id goes to the
shard whose id range holds it (every shard for ids a split kept).

A shard is reached through a `ShardClient`: `LocalShard` calls a `ShardServer` in
process (tests, one machine); service/ray_serve.py's client calls a Ray Serve
deployment. Calls are submitted to every shard first and collected after, so remote
shards work in parallel. A shard that cannot answer raises `ShardUnavailableError`.

Consistency: each shard answers a search's query phase from one read of its committed
state, so within a shard the dense half, the BM25 half and the rows agree. Across
shards, each is read at its latest generation when the call reaches it: a write that
lands during a search may be seen by one shard's answer and not by another's, never
half-seen within one. BM25 statistics summed at another generation than a shard's read
are refused by the shard and the round repeats; only the third try, under a stream of
writes, takes them as they are (STATISTICS_TRIES), so writes cannot starve a search.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from retrieval.cluster.clients import LocalShard, ShardClient
from retrieval.cluster.layout import ID_RANGE, ShardLayout, open_shard, read_layout
from retrieval.cluster.query_phase import ShardAnswer, ShardQuery
from retrieval.cluster.shard_server import ShardServer
from retrieval.cluster.sharded_reader import ShardedLexical, ShardedReader
from retrieval.cluster.statistics import StatisticsCache
from retrieval.cluster.traffic import TrafficCounter
from retrieval.collection import ingest
from retrieval.collection.ingest import IngestReport
from retrieval.collection.lexical import LexicalIndex
from retrieval.collection.manifest import check_embedder
from retrieval.collection.store import DEFAULT_WRITE_TIMEOUT_S, NewPassage
from retrieval.errors import NotFoundError
from retrieval.ingestion.chunking import ChunkerSettings
from retrieval.models.backends import default_embedder
from retrieval.models.embedding import Embedder
from retrieval.records import Article, Passage

# Query phases one search may make when shards' BM25 statistics moved under it (a write
# landed between the router's look and the shard's read): the last uses them as they are.
STATISTICS_TRIES = 3


class ShardedCollection:
    """N shards answering as one collection (see the module docstring).

    Args:
        layout: the shards' manifest (read_layout); only its names and settings are
            used here, so a router on a machine without the shards' disks can hold it.
        shards: one client per shard, in shard order.
        embedder: the model for queries and for writes; None loads the manifest's.
    """

    def __init__(
        self, layout: ShardLayout, shards: Sequence[ShardClient],
        embedder: Embedder | None = None,
    ) -> None:
        if len(shards) != layout.n:
            raise ValueError(f"{layout.n} shards in the layout, {len(shards)} clients given")
        self.layout = layout
        self.shards = list(shards)
        self.manifest = layout.collection
        self.chunker = ChunkerSettings(**self.manifest["chunker"])
        self._embedder = embedder
        self.index = ShardedSize(self)
        self._lexical = ShardedLexical(self)
        self.traffic = TrafficCounter()
        self.statistics = StatisticsCache(layout.n)
        self._current = threading.local()  # the reader of the search on this thread

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = default_embedder(self.manifest["embedder"])
            check_embedder(self.layout.path, self.manifest, self._embedder)
        return self._embedder

    def close(self) -> None:
        for shard in self.shards:
            shard.close()

    def __enter__(self) -> ShardedCollection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calling shards -------------------------------------------------------------------

    def fan_out(self, method: str, *args: Any) -> list[Any]:
        """Every shard's answer to the same call, in shard order (asked in parallel)."""
        return self.round([(index, method, args) for index in range(len(self.shards))])

    def read_all(self, method: str, *args: Any) -> list[Any]:
        """Every shard's answer to one read of the read protocol (`ShardServer.read`)."""
        return self.fan_out("read", method, *args)

    def read_by_article(self, method: str, article_ids: Sequence[str], *args: Any) -> list[Any]:
        """A read each shard holding some of the articles answers for its own ones."""
        mine: dict[int, list[str]] = {}
        for article_id in article_ids:
            mine.setdefault(self.layout.shard_of(article_id), []).append(article_id)
        return self.round([(i, "read", (method, ids, *args)) for i, ids in sorted(mine.items())])

    def read_shard_of(self, article_id: str, method: str, *args: Any) -> Any:
        """A read answered by the shard holding the article (one round of one call)."""
        index = self.layout.shard_of(article_id)
        return self.round([(index, "read", (method, article_id, *args))])[0]

    def by_article(self, method: str, article_ids: Sequence[str], *args: Any) -> list[Any]:
        """Each shard holding some of the articles answers for its own ones."""
        mine: dict[int, list[str]] = {}
        for article_id in article_ids:
            mine.setdefault(self.layout.shard_of(article_id), []).append(article_id)
        return self.round([(i, method, (ids, *args)) for i, ids in sorted(mine.items())])

    def call_shard_of(self, article_id: str, method: str, *args: Any) -> Any:
        """The answer of the shard holding the article (one round of one call)."""
        return self.round([(self.layout.shard_of(article_id), method, (article_id, *args))])[0]

    def round(self, calls: Sequence[tuple[int, str, tuple[Any, ...]]]) -> list[Any]:
        """One round: every (shard index, method, args) call sent, then every answer
        collected, in order; counted in `traffic`."""
        if not calls:
            return []
        self.traffic.count(rounds=1, calls=len(calls))
        pending = [self.shards[index].call(method, *args) for index, method, args in calls]
        return [answer.result() for answer in pending]

    # -- what search reads ----------------------------------------------------------------

    @contextmanager
    def reading(self) -> Iterator[ShardedReader]:
        """A reader for one search. It is this thread's current reader meanwhile, so
        that BM25 (`ShardedLexical`, which the Retriever holds apart from the reader)
        answers from the same query phase."""
        self.traffic.count(searches=1)
        reader, outer = ShardedReader(self), self.current_reader()
        self._current.reader = reader
        try:
            yield reader
        finally:
            self._current.reader = outer

    def current_reader(self) -> ShardedReader | None:
        reader: ShardedReader | None = getattr(self._current, "reader", None)
        return reader

    def query_phase(self, query: ShardQuery) -> list[ShardAnswer]:
        """Every shard's answer to `query`, in shard order: one round, unless a shard's
        generation moved since the router last saw it (then BM25's statistics are
        refreshed from its answer and the round repeats; the last try uses them as they
        are, so a stream of writes cannot keep a search waiting)."""
        if not query.lexical:
            return self.round([(i, "query", (query,)) for i in range(len(self.shards))])
        for attempt in range(STATISTICS_TRIES):
            known = self.statistics.for_queries(query.queries)
            exact = attempt < STATISTICS_TRIES - 1
            asked = [
                replace(query, statistics=known.per_query,
                        statistics_generation=known.generations[i] if exact else None)
                for i in range(len(self.shards))
            ]
            answers: list[ShardAnswer] = self.round(
                [(i, "query", (shard_query,)) for i, shard_query in enumerate(asked)]
            )
            stale = [answer for answer in answers if answer.stale]
            for answer in stale:
                assert answer.statistics is not None
                self.statistics.update(answer.shard, answer.generation, answer.statistics)
            if not stale:
                return answers
        raise AssertionError("the last try takes the statistics as they are")

    @property
    def lexical(self) -> LexicalIndex:
        return self._lexical

    # -- look-ups -------------------------------------------------------------------------

    @contextmanager
    def snapshot(self) -> Iterator[int]:
        """No snapshot spans shards: each read below sees its shard's latest generation.

        An article and its passages live in one shard and are read by one call there
        (`article_with_passages`), so they always agree."""
        yield -1

    def article(self, article_id: str) -> Article:
        article: Article = self.call_shard_of(article_id, "article")
        return article

    def passages_of(self, article_id: str) -> list[Passage]:
        return self.article_with_passages(article_id)[1]

    def article_with_passages(self, article_id: str) -> tuple[Article, list[Passage]]:
        found: tuple[Article, list[Passage]] = self.call_shard_of(
            article_id, "article_with_passages"
        )
        return found

    def shards_holding(self, passage_id: int) -> list[int]:
        """The shards that may hold a passage: the one whose id range holds it, or every
        shard for an id a split kept from the collection it came from (layout.py)."""
        named = passage_id // ID_RANGE - 1
        return [named] if 0 <= named < len(self.shards) else list(range(len(self.shards)))

    def passage(self, passage_id: int) -> Passage:
        calls = [(i, "passage", (passage_id,)) for i in self.shards_holding(passage_id)]
        for found in self.round(calls):
            if found is not None:
                return found  # type: ignore[no-any-return]
        raise NotFoundError(f"no passage with id {passage_id}")

    def refresh(self) -> int:
        """Every shard brought up to date; returns the sum of their generations (which
        grows with every write to any shard)."""
        return sum(self.fan_out("generation"))

    def stats(self) -> dict[str, Any]:
        """The shards' numbers summed; `shards` lists each one's."""
        each = self.fan_out("stats")
        summed = {key: sum(s[key] for s in each) for key in (
            "articles", "passages", "vectors_in_index", "generation", "checkpoint_generation",
            "delta", "tombstones",
        )}
        specs = sorted({s["index"] for s in each})
        return {
            **summed, "index": ",".join(specs),
            "in_agreement": all(s["in_agreement"] for s in each), "shards": each,
        }

    # -- writes ---------------------------------------------------------------------------

    def add_articles(
        self, articles: Iterable[Article], *, lock_timeout: float = DEFAULT_WRITE_TIMEOUT_S,
        batch_size: int = ingest.INGEST_BATCH, progress: Callable[[int], None] | None = None,
    ) -> IngestReport:
        """`Collection.add_articles` over the shards: the same checks and report.

        Each batch is chunked and embedded here (the router holds the model; shards
        never load it), then each shard stores its share in one transaction. A batch is
        thus whole in each shard, and an interrupted ingest leaves every shard at a
        committed generation; indexing again skips what is stored unchanged.
        """
        return ingest.ingest_batches(
            ingest.prepared(articles), lambda batch: self._add_batch(batch, lock_timeout),
            batch_size=batch_size, progress=progress,
        )

    def _add_batch(self, batch: Sequence[Article], lock_timeout: float) -> IngestReport:
        known: dict[str, str] = {}
        for hashes in self.by_article("content_hashes", [a.id for a in batch]):
            known.update(hashes)
        changed = [a for a in batch if known.get(a.id) != a.content_hash()]
        report = IngestReport(unchanged=len(batch) - len(changed))
        if not changed:
            return report
        rows = ingest.embed_articles(changed, self.embedder, self.chunker)
        mine: dict[int, list[tuple[Article, list[NewPassage]]]] = {}
        for item in zip(changed, rows, strict=True):
            mine.setdefault(self.layout.shard_of(item[0].id), []).append(item)
        for written in self.round([(i, "write_embedded", (items, lock_timeout))
                                   for i, items in sorted(mine.items())]):
            report.add(written)
        return report

    def delete_article(
        self, article_id: str, *, lock_timeout: float = DEFAULT_WRITE_TIMEOUT_S
    ) -> int:
        removed: int = self.call_shard_of(article_id, "delete_article", lock_timeout)
        return removed


class ShardedSize:
    """`len(collection.index)` for a sharded collection: the shards' passages, summed."""

    def __init__(self, collection: ShardedCollection) -> None:
        self.collection = collection

    def __len__(self) -> int:
        return sum(self.collection.read_all("size"))


def open_local(path: str | Path, *, background: bool = True) -> ShardedCollection:
    """The sharded collection at `path`, every shard opened in this process."""
    layout = read_layout(path)
    shards: list[ShardClient] = []
    try:
        for index in range(layout.n):
            shards.append(LocalShard(ShardServer(open_shard(layout, index,
                                                            background=background), index)))
    except BaseException:
        for shard in shards:
            shard.close()
        raise
    return ShardedCollection(layout, shards)

"""A sharded collection read and written as one: the router over N shards.

`ShardedCollection` stands in for a `Collection` wherever search reads one (it is
`reading.Searchable`) and wherever the service uses one (writes, look-ups, stats). Its
reader sends each read to every shard and merges, so the Retriever's own code ranks,
caps per article, pages and fuses over the merged candidates, exactly as over one
collection:

- dense: each shard's top k by cosine, merged by (score, then lower id) like
  `live_index.merge_top_k` merges an index's parts. Cosines compare across shards as
  they are, so the merged top k is the top k of one collection holding every passage.
- lexical: each shard's BM25 top k, merged by score (see `ShardedLexical` for the
  statistics that make the scores comparable).
- hybrid: the Retriever fuses the merged dense and merged lexical candidates, never
  per shard.
- per-article reads (an article's vectors, rows, duplicates) go to its shard only;
  reads by passage id go to every shard (a passage id does not name its shard).

A shard is reached through a `ShardClient`: `LocalShard` calls a `ShardServer` in
process (tests, one machine); service/ray_serve.py's client calls a Ray Serve
deployment. Calls are submitted to every shard first and collected after, so remote
shards work in parallel. A shard that cannot answer raises `ShardUnavailableError`.

Consistency: each call reads one shard at its latest committed generation; the several
calls of one search are not one snapshot across shards. A write that lands between them
can at worst drop a hit whose passage it removed (the Retriever never returns a hit
whose row is gone).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from retrieval.cluster.layout import ShardLayout, open_shard, read_layout
from retrieval.cluster.shard_server import ShardServer
from retrieval.collection import ingest
from retrieval.collection.bm25 import LexicalStatistics
from retrieval.collection.ingest import IngestReport, batched, indexable, refuse_duplicate_ids
from retrieval.collection.lexical import LexicalIndex
from retrieval.collection.live_index import merge_top_k
from retrieval.collection.manifest import check_embedder
from retrieval.collection.store import DEFAULT_WRITE_TIMEOUT_S, NewPassage
from retrieval.errors import NotFoundError
from retrieval.ingestion.chunking import ChunkerSettings
from retrieval.models.backends import default_embedder
from retrieval.models.embedding import Embedder
from retrieval.records import Article, Filters, Passage


class Pending(Protocol):
    """A shard's answer on its way."""

    def result(self) -> Any:
        """The answer; raises the shard's error, or ShardUnavailableError."""
        ...


class ShardClient(Protocol):
    """How the router reaches one shard: `call` a `ShardServer` method by name."""

    def call(self, method: str, *args: Any) -> Pending: ...

    def close(self) -> None: ...


class Done:
    """An answer computed already (a local shard answers at once)."""

    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value, self.error = value, error

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


class LocalShard:
    """A shard in this process: its ShardServer called directly."""

    def __init__(self, server: ShardServer) -> None:
        self.server = server

    def call(self, method: str, *args: Any) -> Pending:
        try:
            return Done(getattr(self.server, method)(*args))
        except Exception as error:  # raised when collected, like a remote shard's
            return Done(error=error)

    def close(self) -> None:
        self.server.close()


@dataclass(frozen=True)
class Traffic:
    """What the router sent to shards, counted (not assumed).

    Attributes:
        searches: reads of the collection as search (`reading()`: one per search batch).
        rounds: groups of shard calls sent together and awaited together; a search's
            latency is at least its rounds times one round trip.
        calls: shard calls (a round to every shard of N is N calls).
    """

    searches: int = 0
    rounds: int = 0
    calls: int = 0

    def __sub__(self, before: Traffic) -> Traffic:
        return Traffic(self.searches - before.searches, self.rounds - before.rounds,
                       self.calls - before.calls)


class TrafficCounter:
    """`Traffic` counted from any thread (concurrent searches share the router)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = Traffic()

    def count(self, *, searches: int = 0, rounds: int = 0, calls: int = 0) -> None:
        with self._lock:
            now = self._counts
            self._counts = Traffic(now.searches + searches, now.rounds + rounds,
                                   now.calls + calls)

    def now(self) -> Traffic:
        with self._lock:
            return self._counts


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
        self.traffic.count(searches=1)
        yield ShardedReader(self)

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

    def passage(self, passage_id: int) -> Passage:
        for found in self.fan_out("passage", passage_id):
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
        articles = [indexable(article) for article in refuse_duplicate_ids(articles)]
        report, started = IngestReport(), time.perf_counter()
        for batch in batched(articles, batch_size):
            add_reports(report, self._add_batch(batch, lock_timeout))
            if progress:
                progress(len(batch))
        report.seconds = time.perf_counter() - started
        return report

    def _add_batch(self, batch: Sequence[Article], lock_timeout: float) -> list[IngestReport]:
        known: dict[str, str] = {}
        for hashes in self.by_article("content_hashes", [a.id for a in batch]):
            known.update(hashes)
        changed = [a for a in batch if known.get(a.id) != a.content_hash()]
        unchanged = IngestReport(unchanged=len(batch) - len(changed))
        if not changed:
            return [unchanged]
        rows = embed_articles(changed, self.embedder, self.chunker)
        mine: dict[int, list[tuple[Article, list[NewPassage]]]] = {}
        for item in zip(changed, rows, strict=True):
            mine.setdefault(self.layout.shard_of(item[0].id), []).append(item)
        written = self.round([(i, "write_embedded", (items, lock_timeout))
                              for i, items in sorted(mine.items())])
        return [unchanged, *written]

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
        return sum(self.collection.fan_out("size"))


class ShardedReader:
    """`reading.SearchReader` over every shard: each read asked of all, answers merged."""

    def __init__(self, collection: ShardedCollection) -> None:
        self.collection = collection
        self.fan_out = collection.fan_out

    def dense(
        self, vectors: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        parts = self.fan_out("dense", vectors, k, allowed)
        return merge_top_k(parts, len(vectors), k)

    def size(self) -> int:
        return sum(self.fan_out("size"))

    def passage_ids_matching(self, filters: Filters) -> np.ndarray:
        return np.sort(np.concatenate(self.fan_out("passage_ids_matching", filters)))

    def hit_rows(self, passage_ids: Sequence[int]) -> dict[int, Any]:
        return merged(self.fan_out("hit_rows", list(passage_ids)))

    def article_of(self, passage_ids: Sequence[int]) -> dict[int, str]:
        return merged(self.fan_out("article_of", list(passage_ids)))

    def dates_of(self, passage_ids: Sequence[int]) -> dict[int, str | None]:
        return merged(self.fan_out("dates_of", list(passage_ids)))

    def group_keys(self, passage_ids: Sequence[int]) -> dict[int, str]:
        return merged(self.fan_out("group_keys", list(passage_ids)))

    def article_vectors(self, article_id: str) -> np.ndarray:
        vectors: np.ndarray = self.collection.call_shard_of(article_id, "article_vectors")
        return vectors

    def article_rows(self, article_ids: Sequence[str]) -> dict[str, Any]:
        return merged(self.collection.by_article("article_rows", article_ids))

    def article_group_keys(self, article_ids: Sequence[str]) -> dict[str, str]:
        return merged(self.collection.by_article("article_group_keys", article_ids))

    def duplicates_of(
        self, article_ids: Sequence[str], filters: Filters | None = None
    ) -> dict[str, list[str]]:
        return merged(self.collection.by_article("duplicates_of", article_ids, filters))

    def has_article(self, article_id: str) -> bool:
        found: bool = self.collection.call_shard_of(article_id, "has_article")
        return found


class ShardedLexical:
    """BM25 over every shard, scored as one collection would (dfs_query_then_fetch).

    FTS5's bm25() takes N, the mean length and each term's document frequency from its
    own table; over shards those would be each shard's, and scores would not compare.
    So the router asks every shard for its counts of the query's terms (one round
    trip), sums them, and has every shard score with the sum (a second): each score is
    then the one collection's, and the merged top k is its top k.

    A query with a word that FTS5 splits into several tokens ("foo_bar", "e-mail" is
    not one) is scored by FTS5 itself, with each shard's own statistics: such scores
    are close to, not equal to, one collection's.
    """

    def __init__(self, collection: ShardedCollection) -> None:
        self.collection = collection

    def search(
        self, query: str, k: int, *, filters: Filters, allowed: np.ndarray | None
    ) -> list[tuple[int, float]]:
        statistics = self.statistics(query)
        parts = self.collection.fan_out("lexical", query, k, filters, allowed, statistics)
        rows = [row for part in parts for row in part]
        return sorted(rows, key=lambda row: (-row[1], row[0]))[:k]

    def statistics(self, query: str) -> LexicalStatistics | None:
        """The shards' counts for the query's terms, summed; None if a shard cannot."""
        each = self.collection.fan_out("lexical_statistics", query)
        if any(part is None for part in each):
            return None
        total: LexicalStatistics = each[0]
        for part in each[1:]:
            total = total + part
        return total


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


def embed_articles(
    articles: Sequence[Article], embedder: Embedder, chunker: ChunkerSettings
) -> list[list[NewPassage]]:
    """Each article's passages with their vectors, from one model call for them all."""
    pieces = [ingest.passages_for(article, embedder, chunker) for article in articles]
    vectors = embedder.embed_documents([text for part in pieces for _, text in part])
    rows, offset = [], 0
    for part in pieces:
        rows.append([ingest.with_vector(p, vectors[offset + i]) for i, (p, _) in enumerate(part)])
        offset += len(part)
    return rows


def add_reports(total: IngestReport, parts: Iterable[IngestReport]) -> None:
    for part in parts:
        for name in ("added", "updated", "unchanged", "passages_added", "passages_removed"):
            setattr(total, name, getattr(total, name) + getattr(part, name))


def merged(parts: Iterable[dict[Any, Any]]) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for part in parts:
        out.update(part)
    return out

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
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from retrieval.cluster.groups_across import linked_groups
from retrieval.cluster.layout import ID_RANGE, ShardLayout, open_shard, read_layout
from retrieval.cluster.query_phase import EMPTY, Ranking, ShardAnswer, ShardQuery
from retrieval.cluster.shard_server import ShardServer
from retrieval.cluster.statistics import StatisticsCache
from retrieval.collection import ingest
from retrieval.collection.duplicates import Fingerprint
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
from retrieval.search.fusion import ranking_depth
from retrieval.search.options import SearchOptions
from retrieval.search.pool import first_pool

# Query phases one search may make when shards' BM25 statistics moved under it (a write
# landed between the router's look and the shard's read): the last uses them as they are.
STATISTICS_TRIES = 3


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


@dataclass(frozen=True)
class Plan:
    """How deep a search's query phase reads, from its options (as the Retriever would).

    Attributes:
        depth: candidates per half and query: the Retriever's first pool.
        rows_depth: candidates ranked above this in either half come back with rows.
        facts_depth: candidates ranked above this in either half come back with their
            facts (and fingerprints, collapsing): the Retriever's first pool. One ranked
            lower in both halves of its shard rarely enters it; if it does, its facts
            cost one more round.
    """

    mode: str
    depth: int
    rows_depth: int
    filters: Filters
    collapse: bool
    facts_depth: int = 0

    @classmethod
    def of(cls, options: SearchOptions) -> Plan:
        wanted = options.k + options.offset
        fetch, _ = first_pool(options, wanted)
        depth = ranking_depth(options.mode, fetch)
        # Plain dense or lexical: the answer is the merged top `wanted`, so each shard's
        # top `wanted` holds it. Fusion, caps and collapsing reach a little deeper: rows
        # for twice as many cover the common case; a hit without a row is fetched then.
        plain = options.mode != "hybrid" and fetch == wanted
        rows_depth = wanted if plain else min(depth, 2 * wanted)
        return cls(options.mode, depth, rows_depth, options.filters or Filters(),
                   options.collapse, fetch)

    def shard_query(
        self, queries: Sequence[str], vectors: np.ndarray | None, depth: int | None = None,
    ) -> ShardQuery:
        return ShardQuery(
            tuple(queries), vectors if self.mode != "lexical" else None,
            dense=self.mode != "lexical", lexical=self.mode != "dense",
            depth=depth or self.depth, rows_depth=self.rows_depth, filters=self.filters,
            collapse=self.collapse, facts_depth=max(self.facts_depth, depth or 0),
        )


@dataclass
class Gathered:
    """A search's query phase over every shard, merged: what its reads are answered from.

    Attributes:
        dense, lexical: per query, the merged top `depth` of the shards' rankings.
        depth: per query, how deep those rankings go.
        holder: the shard each candidate came from.
        fingerprints: (collapsed searches) each candidate article's shard and duplicate
            fingerprint.
    """

    size: int
    dense: list[Ranking]
    lexical: list[Ranking]
    depth: list[int]
    facts: dict[int, tuple[str, str | None, str]] = field(default_factory=dict)
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)
    duplicates: dict[str, list[str]] = field(default_factory=dict)
    holder: dict[int, int] = field(default_factory=dict)
    fingerprints: dict[str, tuple[int, Fingerprint]] = field(default_factory=dict)
    group_of: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, answers: Sequence[ShardAnswer], n_queries: int, depth: int) -> Gathered:
        gathered = cls(sum(a.size for a in answers), [], [], [depth] * n_queries)
        gathered.dense = [merge_rankings([a.dense[q] for a in answers if a.dense], depth)
                          for q in range(n_queries)]
        gathered.lexical = [merge_rankings([a.lexical[q] for a in answers if a.lexical], depth)
                            for q in range(n_queries)]
        gathered.add_fields(answers)
        return gathered

    def add_fields(self, answers: Sequence[ShardAnswer]) -> None:
        for answer in answers:
            self.facts.update(answer.facts)
            self.rows.update(answer.rows)
            self.duplicates.update(answer.duplicates)
            self.holder.update(dict.fromkeys(answer.facts, answer.shard))
            self.fingerprints.update(
                {article: (answer.shard, found) for article, found in answer.fingerprints.items()}
            )

    def linked_keys(self, passage_ids: Sequence[int]) -> dict[str, str]:
        """The group key of each of these candidates' articles once groups of alike
        articles in different shards are joined (groups_across.py); remembered, so that
        `copies_elsewhere` lists the copies the collapse saw."""
        articles = {self.facts[pid][0]: self.facts[pid][2]
                    for pid in passage_ids if pid in self.facts}
        members = [(article, self.fingerprints[article][0], key, self.fingerprints[article][1])
                   for article, key in articles.items() if article in self.fingerprints]
        linked = linked_groups(members)
        self.group_of = {article: linked.get(key, key) for article, key in articles.items()}
        return linked

    def copies_elsewhere(self, article: str) -> list[str]:
        """The articles of other shards that the last collapse joined to this one's group,
        with the others of their own shard's groups when known."""
        shard, group = self.holder_of_article(article), self.group_of.get(article)
        copies = []
        for other, other_group in self.group_of.items():
            if other_group == group and self.holder_of_article(other) != shard:
                copies += [other, *self.duplicates.get(other, [])]
        return [copy for copy in dict.fromkeys(copies) if copy != article]

    def holder_of_article(self, article: str) -> int | None:
        found = self.fingerprints.get(article)
        return None if found is None else found[0]

    def candidate_ids(self) -> np.ndarray:
        parts = [ids for ids, _ in (*self.dense, *self.lexical)]
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)


def merge_rankings(parts: Sequence[Ranking], depth: int) -> Ranking:
    """The `depth` best of several rankings, ties by the lower passage id (as
    `live_index.merge_top_k` and a single BM25 index order them)."""
    if not parts:
        return EMPTY
    ids = np.concatenate([ids for ids, _ in parts])
    scores = np.concatenate([scores for _, scores in parts])
    order = np.lexsort((ids, -scores))[:depth]
    return ids[order], scores[order]


class ShardedReader:
    """`reading.SearchReader` over every shard.

    After `prepare` (a search's query phase: one call per shard), a search's reads are
    answered from what the shards sent back; what it did not bring (a deeper pool, a
    row ranked lower than expected) costs one more round. Without `prepare` (related
    articles) each read is asked of every shard and the answers merged.
    """

    def __init__(self, collection: ShardedCollection) -> None:
        self.collection = collection
        self.fan_out = collection.fan_out
        self.gathered: Gathered | None = None
        self.plan: Plan | None = None
        self._queries: dict[str, int] = {}
        self._vectors: dict[bytes, int] = {}
        self._texts: list[str] = []
        self._vector_rows: np.ndarray | None = None

    # -- the query phase ------------------------------------------------------------------

    def prepare(
        self, queries: Sequence[str], vectors: np.ndarray | None, options: SearchOptions
    ) -> None:
        """Runs the search's query phase on every shard: one round in the common case."""
        self.plan = Plan.of(options)
        query = self.plan.shard_query(queries, vectors)
        self.gathered = Gathered.of(self.collection.query_phase(query), len(queries),
                                    self.plan.depth)
        self._texts, self._vector_rows = list(queries), query.vectors
        self._queries = {text: i for i, text in enumerate(queries)}
        if query.vectors is not None:
            self._vectors = {row.tobytes(): i for i, row in enumerate(query.vectors)}

    def _deepen(self, index: int, depth: int) -> Gathered:
        """Query `index`'s rankings `depth` deep (the Retriever's pool grew): one round."""
        assert self.gathered is not None and self.plan is not None
        vectors = None if self._vector_rows is None else self._vector_rows[index : index + 1]
        query = self.plan.shard_query([self._texts[index]], vectors, depth)
        answers = self.collection.query_phase(query)
        deeper = Gathered.of(answers, 1, depth)
        self.gathered.dense[index] = deeper.dense[0]
        self.gathered.lexical[index] = deeper.lexical[0]
        self.gathered.depth[index] = depth
        self.gathered.add_fields(answers)
        return self.gathered

    def prepared_ranking(self, half: str, key: int | None, k: int) -> Ranking | None:
        """The merged `half` ranking of prepared query `key`, k deep; None if not prepared."""
        if self.gathered is None or key is None:
            return None
        gathered = self.gathered
        if k > gathered.depth[key]:
            gathered = self._deepen(key, k)
        ids, scores = (gathered.dense if half == "dense" else gathered.lexical)[key]
        return ids[:k], scores[:k]

    def plan_has(self, half: str) -> bool:
        """The prepared query phase ranked this half ("dense" or "lexical")."""
        return self.plan is not None and self.plan.mode in (half, "hybrid")

    def same_filters(self, filters: Filters | None) -> bool:
        return self.plan is not None and (filters or Filters()) == self.plan.filters

    def query_index(self, query: str) -> int | None:
        return self._queries.get(query)

    # -- SearchReader ---------------------------------------------------------------------

    def dense(
        self, vectors: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        key = self._vectors.get(vectors[0].tobytes()) if len(vectors) == 1 else None
        found = self.prepared_ranking("dense", key, k) if self.plan_has("dense") else None
        if found is not None:
            ids, scores = found
            return scores[None, :], ids[None, :]
        parts = self.fan_out("dense", vectors, k, allowed)
        return merge_top_k(parts, len(vectors), k)

    def size(self) -> int:
        if self.gathered is not None:
            return self.gathered.size
        return sum(self.fan_out("size"))

    def passage_ids_matching(self, filters: Filters) -> np.ndarray:
        """After `prepare` with these filters: the candidates the shards found (each
        applied the filters itself), which are empty exactly when nothing matched that
        this search could return. Otherwise every matching id, from every shard."""
        if self.gathered is not None and self.same_filters(filters):
            return self.gathered.candidate_ids()
        return np.sort(np.concatenate(self.fan_out("passage_ids_matching", filters)))

    def hit_rows(self, passage_ids: Sequence[int]) -> dict[int, Any]:
        known = self.gathered.rows if self.gathered else {}
        return self._fetched(passage_ids, known, "hit_rows")

    def article_of(self, passage_ids: Sequence[int]) -> dict[int, str]:
        facts = self.gathered.facts if self.gathered else {}
        known = {pid: fact[0] for pid, fact in facts.items()}
        return self._fetched(passage_ids, known, "article_of")

    def dates_of(self, passage_ids: Sequence[int]) -> dict[int, str | None]:
        facts = self.gathered.facts if self.gathered else {}
        known = {pid: fact[1] for pid, fact in facts.items()}
        return self._fetched(passage_ids, known, "dates_of")

    def group_keys(self, passage_ids: Sequence[int]) -> dict[int, str]:
        """Each candidate's duplicate group, joined across shards (groups_across.py)."""
        facts = self.gathered.facts if self.gathered else {}
        known = {pid: fact[2] for pid, fact in facts.items()}
        keys = self._fetched(passage_ids, known, "group_keys")
        if self.gathered is None or not self.gathered.fingerprints:
            return keys
        linked = self.gathered.linked_keys(passage_ids)
        return {pid: linked.get(key, key) for pid, key in keys.items()}

    def _fetched(
        self, passage_ids: Sequence[int], known: dict[int, Any], method: str
    ) -> dict[int, Any]:
        """`known` for the given passages, the rest asked of their shards (the fetch
        phase, one round; of every shard for a passage whose shard is unknown)."""
        missing = [pid for pid in passage_ids if pid not in known]
        found = {pid: known[pid] for pid in passage_ids if pid in known}
        if missing:
            holder = self.gathered.holder if self.gathered else {}
            asked: dict[int, list[int]] = {}
            for pid in missing:
                shards = [holder[pid]] if pid in holder else self.collection.shards_holding(pid)
                for index in shards:
                    asked.setdefault(index, []).append(pid)
            answers = merged(self.collection.round(
                [(i, method, (ids,)) for i, ids in sorted(asked.items())]
            ))
            found.update(answers)
            if method == "hit_rows" and self.gathered is not None:
                self.gathered.rows.update(answers)
        return found

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
        gathered = self.gathered
        if (gathered is not None and self.plan is not None and self.plan.collapse
                and self.same_filters(filters)
                and all(article in gathered.duplicates for article in article_ids)):
            return {
                article: [*gathered.duplicates[article],
                          *(copy for copy in gathered.copies_elsewhere(article)
                            if copy not in gathered.duplicates[article])]
                for article in article_ids
            }
        return merged(self.collection.by_article("duplicates_of", article_ids, filters))

    def has_article(self, article_id: str) -> bool:
        found: bool = self.collection.call_shard_of(article_id, "has_article")
        return found


class ShardedLexical:
    """BM25 over every shard, scored as one collection would.

    FTS5's bm25() takes N, the mean length and each term's document frequency from its
    own table; over shards those would be each shard's, and scores would not compare.
    So every shard scores with the collection-wide sums (statistics.py keeps them at
    the router): each score is then the one collection's, and the merged top k is its
    top k. Within a search this answers from the search's query phase (the reader that
    `ShardedCollection.reading` made current on this thread); alone, it runs a lexical
    query phase of its own.

    A query with a word that FTS5 splits into several tokens ("foo_bar", "e-mail" is
    not one) is scored by FTS5 itself, with each shard's own statistics: such scores
    are close to, not equal to, one collection's.
    """

    def __init__(self, collection: ShardedCollection) -> None:
        self.collection = collection

    def search(
        self, query: str, k: int, *, filters: Filters, allowed: np.ndarray | None
    ) -> list[tuple[int, float]]:
        reader = self.collection.current_reader()
        if reader is not None and reader.plan_has("lexical") and reader.same_filters(filters):
            found = reader.prepared_ranking("lexical", reader.query_index(query), k)
            if found is not None:
                return list(zip(found[0].tolist(), found[1].tolist(), strict=True))
        plan = Plan("lexical", k, 0, filters, collapse=False)
        answers = self.collection.query_phase(plan.shard_query([query], None))
        ids, scores = Gathered.of(answers, 1, k).lexical[0]
        return list(zip(ids.tolist(), scores.tolist(), strict=True))


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

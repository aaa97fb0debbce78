"""What one search over shards reads: the query phase's merged answers (router.py says how).

`ShardedReader` implements the read protocol (`collection.reading.SearchReader`) from
one query phase per shard, and `ShardedLexical` gives the Retriever the BM25 half of
those same answers. A read the query phase did not cover costs one more round, counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from retrieval.cluster.groups_across import linked_groups
from retrieval.cluster.query_phase import EMPTY, Ranking, ShardAnswer, ShardQuery
from retrieval.collection.duplicates import Fingerprint
from retrieval.collection.live_index import merge_top_k
from retrieval.records import Filters
from retrieval.search.fusion import ranking_depth
from retrieval.search.options import SearchOptions
from retrieval.search.pool import first_pool

if TYPE_CHECKING:  # the router makes readers; a reader only reads through it
    from retrieval.cluster.router import ShardedCollection



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
        self.read_all = collection.read_all
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
        parts = self.read_all("dense", vectors, k, allowed)
        return merge_top_k(parts, len(vectors), k)

    def size(self) -> int:
        if self.gathered is not None:
            return self.gathered.size
        return sum(self.read_all("size"))

    def passage_ids_matching(self, filters: Filters) -> np.ndarray:
        """After `prepare` with these filters: the candidates the shards found (each
        applied the filters itself), which are empty exactly when nothing matched that
        this search could return. Otherwise every matching id, from every shard."""
        if self.gathered is not None and self.same_filters(filters):
            return self.gathered.candidate_ids()
        return np.sort(np.concatenate(self.read_all("passage_ids_matching", filters)))

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
                [(i, "read", (method, ids)) for i, ids in sorted(asked.items())]
            ))
            found.update(answers)
            if method == "hit_rows" and self.gathered is not None:
                self.gathered.rows.update(answers)
        return found

    def article_vectors(self, article_id: str) -> np.ndarray:
        vectors: np.ndarray = self.collection.read_shard_of(article_id, "article_vectors")
        return vectors

    def article_rows(self, article_ids: Sequence[str]) -> dict[str, Any]:
        return merged(self.collection.read_by_article("article_rows", article_ids))

    def article_group_keys(self, article_ids: Sequence[str]) -> dict[str, str]:
        return merged(self.collection.read_by_article("article_group_keys", article_ids))

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
        return merged(self.collection.read_by_article("duplicates_of", article_ids, filters))

    def has_article(self, article_id: str) -> bool:
        found: bool = self.collection.read_shard_of(article_id, "has_article")
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

def merged(parts: Iterable[dict[Any, Any]]) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for part in parts:
        out.update(part)
    return out

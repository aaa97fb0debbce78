"""BM25 in memory, scoring exactly as SQLite FTS5's bm25() does, kept in step with the store.

Why: FTS5 scores every row that shares a word with the query, through its auxiliary
function API, one row at a time. News headlines share a word ("in", "the", "of") with
half the passages, so one BBC headline over 7,827 passages cost 4 ms of CPU in bm25()
alone: as much as embedding the query. Here the same scores come from numpy over
postings held in memory: one vectorised pass per query term.

Same scores, same tokens:
- Tokens come from FTS5 itself: the passages' title and text and each query word go
  through a private in-memory FTS5 table with the store's tokenizer (porter unicode61),
  read back through fts5vocab. No second tokenizer to drift from the store's.
- The formula is FTS5's (ext/fts5/fts5_aux.c), k1 = 1.2, b = 0.75, every column weight 1:
  score = sum over the query's phrases of idf * f * (k1 + 1) / (f + k1 * (1 - b + b * D / avgdl)),
  idf = log((N - n + 0.5) / (n + 0.5)), floored at 1e-6, with N the rows, n the rows
  holding the phrase, f its count in the row (title and text), D the row's tokens and
  avgdl the mean. Each quoted query word is one phrase; a word that FTS5 splits into
  several tokens ("foo_bar") is a multi-token phrase, which postings cannot score:
  those queries are sent to FTS5 (the `fallback`).
- Statistics are over every live passage whatever the filters, as in FTS5.

Kept in step like the FAISS index (live_index.py): the store is the log. A search
catches up to its snapshot's generation (passages added and removed since), so a
search never sees half a write, a deleted passage or a passage twice. Passage ids only
grow (AUTOINCREMENT), so rows are appended in id order and a deleted row is only
marked dead; when dead rows outnumber live ones the postings are compacted.

For a sharded collection, `statistics` gives the counts a shard holds for some terms;
summed over shards (`+`) and passed back to `search`, every shard scores with the
collection-wide statistics, as one collection would (Elasticsearch's dfs_query_then_fetch).
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from retrieval.collection.follower import LogFollower
from retrieval.collection.lexical import Fts5Index, query_words
from retrieval.records import Filters

if TYPE_CHECKING:
    from retrieval.collection.store import Store

K1 = 1.2  # FTS5's constants (fts5_aux.c), so that the scores are FTS5's own
B = 0.75
IDF_FLOOR = 1e-6
TOKENIZER = "porter unicode61"  # the store's (store.py SCHEMA); a test keeps them equal
# Passages tokenized per round trip through the private FTS5 table.
TOKENIZE_BATCH = 5_000
# Dead rows (deleted passages) are dropped once they outnumber the live ones and this.
COMPACT_AFTER_DEAD = 10_000
# Query words whose tokens are remembered (cleared whole when full: simple, and cheap to refill).
WORD_CACHE = 100_000


@dataclass(frozen=True)
class LexicalStatistics:
    """What BM25 needs to know of a corpus for some query terms.

    Args:
        documents: live passages.
        tokens: their total length, in tokens (title and text).
        document_frequency: for each term, the passages holding it.
    """

    documents: int
    tokens: int
    document_frequency: Mapping[str, int] = field(default_factory=dict)

    def __add__(self, other: LexicalStatistics) -> LexicalStatistics:
        frequency = dict(self.document_frequency)
        for term, count in other.document_frequency.items():
            frequency[term] = frequency.get(term, 0) + count
        return LexicalStatistics(
            self.documents + other.documents, self.tokens + other.tokens, frequency
        )


class Tokenizer:
    """FTS5's tokens for texts and words, from a private in-memory FTS5 table.

    Not thread-safe: its owner calls it under a lock.
    """

    def __init__(self) -> None:
        self._db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        self._db.execute(
            f"CREATE VIRTUAL TABLE t USING fts5(title, text, content='', tokenize='{TOKENIZER}')"
        )
        self._db.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")
        self._cache: dict[str, tuple[str, ...]] = {}

    def term_counts(self, rows: Sequence[tuple[int, str, str]]) -> list[tuple[str, int, int]]:
        """(term, passage id, count in title and text) for (passage id, title, text) rows,
        grouped by term."""
        self._db.executemany("INSERT INTO t (rowid, title, text) VALUES (?, ?, ?)", rows)
        try:
            return self._db.execute(
                "SELECT term, doc, count(*) FROM v GROUP BY term, doc"
            ).fetchall()
        finally:
            self._db.execute("INSERT INTO t (t) VALUES ('delete-all')")

    def words_tokens(self, words: Sequence[str]) -> list[tuple[str, ...]]:
        """The tokens FTS5 makes of each query word, in order (cached per word)."""
        missing = [word for word in dict.fromkeys(words) if word not in self._cache]
        if missing:
            self._tokenize_words(missing)
        return [self._cache[word] for word in words]

    def _tokenize_words(self, words: Sequence[str]) -> None:
        if len(self._cache) > WORD_CACHE:
            self._cache.clear()
        rows = [(i, "", word) for i, word in enumerate(words)]
        self._db.executemany("INSERT INTO t (rowid, title, text) VALUES (?, ?, ?)", rows)
        try:
            found = self._db.execute("SELECT doc, term FROM v ORDER BY doc, offset").fetchall()
        finally:
            self._db.execute("INSERT INTO t (t) VALUES ('delete-all')")
        tokens: list[list[str]] = [[] for _ in words]
        for doc, term in found:
            tokens[doc].append(term)
        self._cache.update(zip(words, map(tuple, tokens), strict=True))


def term_columns(
    found: Sequence[tuple[str, int, int]],
) -> tuple[list[str], NDArray[np.int64], NDArray[np.int32]]:
    """(term, passage id, count) rows as columns: terms, passage ids, counts."""
    terms = [row[0] for row in found]
    passage_ids = np.fromiter((row[1] for row in found), np.int64, len(found))
    counts = np.fromiter((row[2] for row in found), np.int32, len(found))
    return terms, passage_ids, counts


class _Postings:
    """One term's postings: rows and counts in row order, in arrays that grow by doubling."""

    __slots__ = ("rows", "counts", "size")

    def __init__(self, rows: NDArray[np.int32], counts: NDArray[np.int32]) -> None:
        self.rows, self.counts, self.size = rows, counts, len(rows)

    def extend(self, rows: NDArray[np.int32], counts: NDArray[np.int32]) -> None:
        needed = self.size + len(rows)
        if needed > len(self.rows):
            capacity = max(needed, 2 * len(self.rows))
            self.rows = np.resize(self.rows, capacity)
            self.counts = np.resize(self.counts, capacity)
        self.rows[self.size : needed] = rows
        self.counts[self.size : needed] = counts
        self.size = needed

    def view(self) -> tuple[NDArray[np.int32], NDArray[np.int32]]:
        return self.rows[: self.size], self.counts[: self.size]


class _Growing:
    """A 1-d array that grows by doubling (rows' passage ids, lengths, liveness)."""

    def __init__(self, dtype: type) -> None:
        self.data: NDArray[Any] = np.zeros(1024, dtype=dtype)
        self.size = 0

    def extend(self, values: NDArray[Any]) -> None:
        needed = self.size + len(values)
        if needed > len(self.data):
            self.data = np.resize(self.data, max(needed, 2 * len(self.data)))
        self.data[self.size : needed] = values
        self.size = needed

    def view(self) -> NDArray[Any]:
        return self.data[: self.size]


class MemoryBm25(LogFollower):
    """FTS5's bm25() over a store's passages, from postings in memory.

    Implements `retrieval.collection.lexical.LexicalIndex`. Built on its first search (7,827 BBC
    passages: 1.7 s with VNNI, 3.1 s on an AVX2-only EPYC), then caught up from the
    store's log.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.fallback = Fts5Index(store)
        self.generation = -1  # not built yet
        self._lock = threading.Lock()
        self._tokenizer = Tokenizer()
        self._reset()

    def _reset(self) -> None:
        self._terms: dict[str, _Postings] = {}
        self._passage_ids = _Growing(np.int64)  # per row, increasing
        self._lengths = _Growing(np.int64)  # per row: tokens in title and text
        self._alive = _Growing(np.bool_)
        self._live_rows = 0
        self._live_tokens = 0

    # -- the LexicalIndex protocol --------------------------------------------------------

    def search(
        self,
        query: str,
        k: int,
        *,
        filters: Filters,
        allowed: NDArray[np.int64] | None,
        statistics: LexicalStatistics | None = None,
    ) -> list[tuple[int, float]]:
        """The k passages that score best, best first: FTS5's bm25(), negated.

        Args:
            statistics: the corpus to take N, avgdl and document frequencies from
                (a sharded collection's sum); by default this store's own.
        """
        terms = self.terms(query)
        if terms is None:
            if statistics is not None:
                raise ValueError(
                    f"query {query!r} has a word FTS5 splits into several tokens; "
                    "collection-wide statistics cannot score it"
                )
            return self.fallback.search(query, k, filters=filters, allowed=allowed)
        if not terms:
            return []
        with self.store.snapshot() as generation, self._lock:
            self._catch_up(generation)
            return self._top(terms, k, allowed, statistics)

    def terms(self, query: str) -> tuple[str, ...] | None:
        """The query's phrases as FTS5 tokens, one per phrase (repeats kept, as FTS5 counts
        them), or None when some word is a multi-token phrase."""
        with self._lock:
            made = self._tokenizer.words_tokens(query_words(query))
        if any(len(tokens) != 1 for tokens in made):
            return None
        return tuple(tokens[0] for tokens in made)

    def statistics(self, terms: Iterable[str]) -> LexicalStatistics:
        """This store's document count, token count and the terms' document frequencies."""
        with self.store.snapshot() as generation, self._lock:
            self._catch_up(generation)
            alive = self._alive.view()
            frequency = {
                term: int(np.count_nonzero(alive[self._rows_of(term)[0]]))
                for term in dict.fromkeys(terms)
            }
            return LexicalStatistics(self._live_rows, self._live_tokens, frequency)

    def corpus_statistics(self) -> LexicalStatistics:
        """`statistics` for every term this store holds: what a router over shards keeps,
        so that it can sum any query's statistics without asking the shards per query."""
        with self.store.snapshot() as generation, self._lock:
            self._catch_up(generation)
            alive = self._alive.view()
            frequency = {
                term: int(np.count_nonzero(alive[postings.view()[0]]))
                for term, postings in self._terms.items()
            }
            return LexicalStatistics(
                self._live_rows, self._live_tokens,
                {term: count for term, count in frequency.items() if count},
            )

    def refresh(self) -> int:
        """Catches up to the store's last committed generation (building the postings on
        the first call); returns it."""
        with self.store.snapshot() as generation, self._lock:
            self._catch_up(generation)
            return generation

    def __len__(self) -> int:
        """Live passages, as of the store's last committed generation."""
        with self.store.snapshot() as generation, self._lock:
            self._catch_up(generation)
            return self._live_rows

    # -- scoring --------------------------------------------------------------------------

    def _rows_of(self, term: str) -> tuple[NDArray[np.int32], NDArray[np.int32]]:
        postings = self._terms.get(term)
        if postings is None:
            empty = np.zeros(0, np.int32)
            return empty, empty
        return postings.view()

    def _top(
        self,
        terms: Sequence[str],
        k: int,
        allowed: NDArray[np.int64] | None,
        statistics: LexicalStatistics | None,
    ) -> list[tuple[int, float]]:
        alive = self._alive.view()
        lengths = self._lengths.view()
        documents = statistics.documents if statistics else self._live_rows
        tokens = statistics.tokens if statistics else self._live_tokens
        if documents == 0 or tokens == 0:
            return []
        average_length = tokens / documents
        rows_per_term, weights_per_term = [], []
        for term in terms:  # in query order: FTS5 adds the phrases' terms in that order
            rows, counts = self._rows_of(term)
            live = alive[rows]
            rows, counts = rows[live], counts[live].astype(np.float64)
            holding = (
                statistics.document_frequency.get(term, 0) if statistics else len(rows)
            )
            idf = math.log((documents - holding + 0.5) / (holding + 0.5))
            idf = idf if idf > 0 else IDF_FLOOR
            norm = K1 * (1 - B + B * lengths[rows] / average_length)
            rows_per_term.append(rows)
            weights_per_term.append(idf * (counts * (K1 + 1)) / (counts + norm))
        rows = np.concatenate(rows_per_term)
        if not len(rows):
            return []
        # bincount adds each row's weights in input order, i.e. term by term, as FTS5 does;
        # every weight is positive (idf >= 1e-6), so the rows scored are the rows matched.
        scores = np.bincount(rows, np.concatenate(weights_per_term), minlength=len(alive))
        matched = np.flatnonzero(scores)
        passage_ids = self._passage_ids.view()[matched]
        if allowed is not None:
            keep = np.isin(passage_ids, allowed)
            matched, passage_ids = matched[keep], passage_ids[keep]
        matched_scores = scores[matched]
        if len(matched) > k:
            # ties at the cut are settled by passage id below, so keep every tied row
            cut = np.partition(matched_scores, len(matched) - k)[len(matched) - k]
            top = matched_scores >= cut
            matched_scores, passage_ids = matched_scores[top], passage_ids[top]
        order = np.lexsort((passage_ids, -matched_scores))[:k]
        return [(int(passage_ids[i]), float(matched_scores[i])) for i in order]

    # -- keeping up with the store --------------------------------------------------------

    def _catch_up(self, generation: int) -> None:
        """Applies the store's changes up to `generation` (inside its snapshot, locked),
        as everything derived from the store follows its log (follower.py)."""
        self.follow(self.store, generation)
        if self._passage_ids.size - self._live_rows > max(self._live_rows, COMPACT_AFTER_DEAD):
            self._compact()

    def build(self, store: Store) -> None:
        """Every stored passage, from the store's own FTS5 index: no text is tokenized
        again (half the time of tokenizing it here)."""
        self._append_rows(store.passage_ids())
        for found in store.lexical_term_counts():
            self._add_counts(*term_columns(found))

    def read_added(self, store: Store, since: int, until: int) -> list[tuple[int, str, str]]:
        return list(store.passage_rows(since=since, until=until))

    def add(self, rows: Iterable[tuple[int, str, str]]) -> None:
        batch: list[tuple[int, str, str]] = []
        for row in [*rows, None]:
            if row is not None:
                batch.append(row)
            if batch and (row is None or len(batch) == TOKENIZE_BATCH):
                self._append_rows(np.array([passage[0] for passage in batch], dtype=np.int64))
                self._add_counts(*term_columns(self._tokenizer.term_counts(batch)))
                batch = []

    def _append_rows(self, ids: NDArray[np.int64]) -> None:
        """New rows, without terms yet, for passages above every one held."""
        if not len(ids):
            return
        held = self._passage_ids.view()
        if len(held) and ids[0] <= held[-1]:
            raise RuntimeError(
                f"passage {ids[0]} is not above the last one held ({held[-1]}): "
                "the store and the lexical index are out of step"
            )
        self._passage_ids.extend(ids)
        self._lengths.extend(np.zeros(len(ids), dtype=np.int64))
        self._alive.extend(np.ones(len(ids), dtype=np.bool_))
        self._live_rows += len(ids)

    def _add_counts(
        self, terms: list[str], passage_ids: NDArray[np.int64], counts: NDArray[np.int32]
    ) -> None:
        """Postings of rows already appended: (term, passage, count), grouped by term."""
        rows = np.searchsorted(self._passage_ids.view(), passage_ids).astype(np.int32)
        # a row's length is the sum of its terms' counts: FTS5's D, title and text
        lengths = self._lengths.view()
        lengths += np.bincount(rows, counts, minlength=len(lengths)).astype(np.int64)
        self._live_tokens += int(counts.sum())
        starts = [0, *(i for i in range(1, len(terms)) if terms[i] != terms[i - 1])]
        for start, end in zip(starts, [*starts[1:], len(terms)], strict=True):
            postings = self._terms.get(terms[start])
            if postings is None:
                self._terms[terms[start]] = _Postings(rows[start:end], counts[start:end])
            else:
                postings.extend(rows[start:end], counts[start:end])

    def remove(self, passage_ids: NDArray[np.int64]) -> None:
        if not len(passage_ids):
            return
        held = self._passage_ids.view()
        # a passage added and removed since the last catch-up was never held: skip it
        rows = np.searchsorted(held, passage_ids)
        inside = rows < len(held)
        rows, passage_ids = rows[inside], passage_ids[inside]
        rows = rows[held[rows] == passage_ids]
        rows = rows[self._alive.view()[rows]]
        self._alive.view()[rows] = False
        self._live_rows -= len(rows)
        self._live_tokens -= int(self._lengths.view()[rows].sum())

    def _compact(self) -> None:
        """Drops dead rows: renumbers the live ones and rebuilds every term's postings."""
        alive = self._alive.view().copy()
        new_row = np.cumsum(alive) - 1
        terms = self._terms
        passage_ids = self._passage_ids.view()[alive]
        lengths = self._lengths.view()[alive]
        self._reset()
        for term, postings in terms.items():
            rows, counts = postings.view()
            live = alive[rows]
            if live.any():
                self._terms[term] = _Postings(
                    new_row[rows[live]].astype(np.int32), counts[live].copy()
                )
        self._passage_ids.extend(passage_ids)
        self._lengths.extend(lengths)
        self._alive.extend(np.ones(len(passage_ids), dtype=np.bool_))
        self._live_rows = len(passage_ids)
        self._live_tokens = int(lengths.sum())

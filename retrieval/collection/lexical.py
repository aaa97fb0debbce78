"""BM25 over the passages: the lexical half of hybrid search.

Implementations of one small protocol, measured against each other with
`retrieval eval --lexical fts5|bm25s` (numbers in docs/evaluation.md):

- `Fts5Index`: SQLite FTS5's bm25() over each passage's article title and text (porter
  stemming, no stopword list, any query word matches). It lives in the store, kept in
  sync by triggers in the same transaction as every write, and applies filters in SQL.
  On SciFact test it scores nDCG@10 0.688 (paragraph passages) and 0.687 (whole
  documents), level with bm25s (0.684 / 0.686) and above Pyserini's 0.665-0.679.
- `bm25.MemoryBm25` (the engine's): the same scores as `Fts5Index`, from postings held
  in memory and caught up from the store's log; a sixth of FTS5's CPU per headline
  (6.6-6.7x, `retrieval bench lexical`).
- `Bm25sIndex`: bm25s, Lucene's BM25 (k1=1.5, b=0.75) over the same fields, lower-cased,
  English stopwords removed and Snowball-stemmed (PyStemmer): bm25s's BEIR recipe. It is
  derived data, like the FAISS index: built in memory from the store's passages and
  rebuilt on the first search after the store's generation moved on (an add or delete
  by any process), which costs a full re-tokenisation per write; filters arrive as the
  allowed passage ids and are applied inside the scoring (a weight mask), so k matches
  come back whenever k exist. Needs the `eval` extra (bm25s, PyStemmer).

Both return (passage id, score) pairs, best first, higher-is-better, only passages that
share a term with the query.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from retrieval.collection.store import Store
from retrieval.records import Filters

_WORD = re.compile(r"\w+", re.UNICODE)
# A query's distinct words past this many are not searched: each costs a pass over its
# postings (or an FTS5 phrase), and a query may be a pasted page. The model reads a
# query's first 256 word pieces, so lexical search reads about as far.
MAX_QUERY_WORDS = 256


class LexicalIndex(Protocol):
    def search(
        self, query: str, k: int, *, filters: Filters, allowed: NDArray[np.int64] | None
    ) -> list[tuple[int, float]]:
        """The k passages that best match the query's words, best first.

        Args:
            filters: the search's filters (for an index that applies them itself).
            allowed: the passage ids the filters allow, or None when unfiltered.
        """
        ...


class Bm25sIndex:
    """bm25s over a store's passages, rebuilt when the store's generation changes.

    Not thread-safe on its own: the Retriever calls it under the collection's lock.
    """

    def __init__(self, store: Store, *, k1: float = 1.5, b: float = 0.75) -> None:
        self.store = store
        self.k1, self.b = k1, b
        self._generation = -1
        self._ids: NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self._bm25: Any = None
        self._stemmer: Any = None

    def search(
        self, query: str, k: int, *, filters: Filters, allowed: NDArray[np.int64] | None
    ) -> list[tuple[int, float]]:
        self._sync()
        tokens = self._tokenize([query])
        if self._bm25 is None or not tokens[0]:
            return []
        mask = None
        if allowed is not None:
            mask = np.isin(self._ids, allowed).astype(np.float32)
        k = min(k, len(self._ids))
        rows, scores = self._bm25.retrieve(
            tokens, k=k, show_progress=False, weight_mask=mask, n_threads=1
        )
        # bm25s pads the top k with non-matching passages (score 0): drop them.
        return [
            (int(self._ids[row]), float(score))
            for row, score in zip(rows[0], scores[0], strict=True)
            if score > 0
        ]

    def _sync(self) -> None:
        if self.store.generation() == self._generation:
            return
        generation, ids, texts = self.store.passage_texts()
        import bm25s

        self._ids = ids
        self._bm25 = None
        if texts:
            bm25 = bm25s.BM25(k1=self.k1, b=self.b, method="lucene")
            bm25.index(self._tokenize(texts, ids=True), show_progress=False)
            self._bm25 = bm25
        self._generation = generation

    def _tokenize(self, texts: list[str], *, ids: bool = False) -> Any:
        import bm25s

        if self._stemmer is None:
            import Stemmer

            self._stemmer = Stemmer.Stemmer("english")
        return bm25s.tokenize(
            texts, stopwords="en", stemmer=self._stemmer, return_ids=ids, show_progress=False
        )


class Fts5Index:
    """SQLite FTS5 bm25() over the store's passages_fts table (any query word matches)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def search(
        self, query: str, k: int, *, filters: Filters, allowed: NDArray[np.int64] | None
    ) -> list[tuple[int, float]]:
        match = fts_query(query)
        return self.store.lexical(match, k, filters) if match else []


def fts_query(query: str) -> str:
    """An FTS5 MATCH expression: any of the query's words, each quoted.

    Quoting keeps user text from being read as FTS5 syntax (AND, NEAR, column:, quotes).
    """
    return " OR ".join(f'"{word}"' for word in query_words(query))


def query_words(query: str) -> list[str]:
    """The query's words, lower-cased, each once, in order: the phrases of its MATCH.

    Its first MAX_QUERY_WORDS distinct words only; the rest of a longer query is ignored.
    """
    words: dict[str, None] = {}
    for match in _WORD.finditer(query):
        words[match.group().lower()] = None
        if len(words) == MAX_QUERY_WORDS:
            break
    return list(words)

"""What a search reads: the two small protocols the Retriever is typed against.

One collection (`Collection`, whose `reading()` yields a `collection.Reader`) implements
them, and so does a sharded collection (`ShardedCollection` in retrieval/cluster/router.py),
whose reader asks every shard and merges. Search code written against these protocols
therefore answers the same over one collection or many shards.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

import numpy as np

from retrieval.collection.lexical import LexicalIndex
from retrieval.models.embedding import Embedder
from retrieval.records import Filters


class SearchReader(Protocol):
    """Reads for one search, as of one committed state (see `Collection.reading`)."""

    def dense(
        self, vectors: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (len(vectors), k), best first; id -1 pads."""
        ...

    def size(self) -> int: ...

    def passage_ids_matching(self, filters: Filters) -> np.ndarray: ...

    def hit_rows(self, passage_ids: Sequence[int]) -> dict[int, Any]:
        """Fields for building hits (article_id, text, start, end, title, date, source,
        url), each row indexable by name, keyed by passage id."""
        ...

    def article_of(self, passage_ids: Sequence[int]) -> dict[int, str]: ...

    def dates_of(self, passage_ids: Sequence[int]) -> dict[int, str | None]: ...

    def article_vectors(self, article_id: str) -> np.ndarray: ...

    def article_rows(self, article_ids: Sequence[str]) -> dict[str, Any]: ...

    def group_keys(self, passage_ids: Sequence[int]) -> dict[int, str]: ...

    def article_group_keys(self, article_ids: Sequence[str]) -> dict[str, str]: ...

    def duplicates_of(
        self, article_ids: Sequence[str], filters: Filters | None = None
    ) -> dict[str, list[str]]: ...

    def has_article(self, article_id: str) -> bool: ...


# The reads of the protocol, by name: a shard server answers exactly these
# (`ShardServer.read`), so the one protocol is the whole read surface of a shard too.
SEARCH_READS = frozenset(
    name for name, value in vars(SearchReader).items()
    if callable(value) and not name.startswith("_")
)


class Searchable(Protocol):
    """What the Retriever searches: a model for queries, consistent reads, and BM25."""

    @property
    def embedder(self) -> Embedder: ...

    def reading(self) -> AbstractContextManager[SearchReader]: ...

    @property
    def lexical(self) -> LexicalIndex:
        """The BM25 index the Retriever uses unless it is given another."""
        ...

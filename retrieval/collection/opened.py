"""An opened collection: its store, and the indexes searched in memory, loaded on first use.

`OpenedCollection` holds what every part of a collection needs (the manifest's settings,
the store, the live index and the BM25 index) and makes one consistent read
(`reading()`). When and how the index is checkpointed is checkpointing.py's job; the
writes and the public reads are collection.py's, whose docstring holds the concurrency
rules.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np

from retrieval.collection import checkpoint
from retrieval.collection.bm25 import LexicalStatistics, MemoryBm25
from retrieval.collection.index import FaissIndex
from retrieval.collection.index_policy import IndexPolicy
from retrieval.collection.live_index import LiveIndex
from retrieval.collection.manifest import check_embedder
from retrieval.collection.store import STORE, Store
from retrieval.ingestion.chunking import ChunkerSettings
from retrieval.models.backends import default_embedder
from retrieval.models.embedding import Embedder
from retrieval.records import Filters

# The index an open starts from when no checkpoint fits: empty, the whole log replayed.
EMPTY_INDEX_SPEC = "Flat"


@dataclass(frozen=True, slots=True)
class Reader:
    """What a search may read, all as of one store generation (see `Collection.reading`)."""

    generation: int
    store: Store
    index: LiveIndex

    def dense(
        self, vectors: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of the k nearest passages per query vector; id -1 pads."""
        return self.index.search(vectors, k, allowed=allowed)

    def size(self) -> int:
        return len(self.index)

    def passage_ids_matching(self, filters: Filters) -> np.ndarray:
        return self.store.passage_ids_matching(filters)

    def hit_rows(self, passage_ids: Sequence[int]) -> dict[int, Any]:
        return self.store.hit_rows(passage_ids)

    def article_of(self, passage_ids: Sequence[int]) -> dict[int, str]:
        return self.store.article_of(passage_ids)

    def dates_of(self, passage_ids: Sequence[int]) -> dict[int, str | None]:
        return self.store.dates_of(passage_ids)

    def article_vectors(self, article_id: str) -> np.ndarray:
        """(n, dim) stored unit vectors of the article's passages; (0, dim) if it has none."""
        return self.store.article_vectors(article_id, self.index.base.dim)

    def article_rows(self, article_ids: Sequence[str]) -> dict[str, Any]:
        return self.store.article_rows(article_ids)

    def group_keys(self, passage_ids: Sequence[int]) -> dict[int, str]:
        """Each passage's duplicate group key (groups.py), keyed by passage id."""
        return self.store.group_keys(passage_ids)

    def article_group_keys(self, article_ids: Sequence[str]) -> dict[str, str]:
        return self.store.article_group_keys(article_ids)

    def duplicates_of(
        self, article_ids: Sequence[str], filters: Filters | None = None
    ) -> dict[str, list[str]]:
        """The other articles of each article's duplicate group, matching `filters`."""
        return self.store.duplicates_of(article_ids, filters)

    def has_article(self, article_id: str) -> bool:
        return self.store.article(article_id) is not None


class OpenedCollection:
    """A collection's settings, store and in-memory indexes (see `Collection`).

    Args:
        background: see `Collection`.
    """

    def __init__(
        self, path: Path, manifest: dict[str, Any], embedder: Embedder | None, *,
        background: bool,
    ) -> None:
        self.path = path
        self.manifest = manifest
        self._embedder = embedder
        self.dim = int(manifest["embedder"]["dim"])
        self.chunker = ChunkerSettings(**manifest["chunker"])
        self.policy = IndexPolicy.from_manifest(manifest["index"])
        self.store = Store(path / STORE)
        self.background = background
        self._index: LiveIndex | None = None
        self._index_lock = threading.Lock()  # loading the index once
        self._lexical: MemoryBm25 | None = None

    @property
    def embedder(self) -> Embedder:
        """The collection's model, loaded on first use: deleting, inspecting or copying a
        collection never needs it."""
        if self._embedder is None:
            self._embedder = default_embedder(self.manifest["embedder"])
            check_embedder(self.path, self.manifest, self._embedder)
        return self._embedder

    def close(self) -> None:
        """Closes the store."""
        self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading --------------------------------------------------------------------------

    @contextmanager
    def reading(self) -> Iterator[Reader]:
        """One consistent read: a store snapshot, and the index caught up to it.

        Everything the yielded Reader returns reflects its generation and nothing else.
        The index's lock is held throughout, so keep the block short (one search).
        """
        index = self.index
        with index.lock, self.store.snapshot() as generation:  # lock first: see live_index
            index.catch_up(self.store, generation)
            yield Reader(generation, self.store, index)
        self._after_read()

    @property
    def index(self) -> LiveIndex:
        """The in-memory index (loaded on first use from the newest checkpoint)."""
        if self._index is None:
            with self._index_lock:
                if self._index is None:
                    self._index = self._load_index()
        return self._index

    @property
    def index_loaded(self) -> bool:
        """Whether this process has loaded the index: a one-shot writer should not,
        unless it builds a checkpoint."""
        return self._index is not None

    @property
    def lexical(self) -> MemoryBm25:
        """The BM25 index searches use (FTS5's scores from postings in memory, bm25.py),
        built from the store on the first lexical or hybrid search."""
        if self._lexical is None:
            with self._index_lock:
                if self._lexical is None:
                    self._lexical = MemoryBm25(self.store)
        return self._lexical

    def lexical_statistics(self, query: str) -> LexicalStatistics | None:
        """What this collection holds for the query's terms (for collection-wide BM25 over
        shards: sum them and pass the sum to `lexical.search`); None for a query whose
        words FTS5 splits into multi-token phrases (FTS5 alone scores those)."""
        terms = self.lexical.terms(query)
        return None if terms is None else self.lexical.statistics(terms)

    def refresh(self) -> int:
        """Brings the index up to the store's last committed generation; returns it."""
        with self.reading() as reader:
            return reader.generation

    @property
    def generation(self) -> int:
        """The store's last committed generation."""
        return self.store.generation()

    def _load_index(self) -> LiveIndex:
        with self.store.snapshot() as generation:
            found = checkpoint.load_newest(self.path, generation, self.store.history())
        if found is None:  # a new collection, or its checkpoint was lost: replay the log
            return LiveIndex(FaissIndex(self.dim, EMPTY_INDEX_SPEC), 0)
        return LiveIndex(found.index, found.generation)

    def _after_read(self) -> None:
        """Upkeep after a read: none here (checkpointing.py adds the background kind)."""

"""The one way anything is kept in step with the store's change log.

The store is the log (store_log.py): each committed write is a generation, and what it
added and removed can be read back between any two generations. Whatever is derived
from the store and kept in memory (the live FAISS index, live_index.py; the BM25
postings, bm25.py) holds its state as of one generation and follows the log the same
way: removals first, then additions, then the new generation, all read inside the
caller's `store.snapshot()`, and every change read before any is applied, so the state
always reflects one whole committed generation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from retrieval.collection.store import Store


class LogFollower(ABC):
    """State derived from the store, as of `generation` (-1: not built yet)."""

    generation: int

    def follow(self, store: Store, generation: int) -> None:
        """Applies the store's changes in (self.generation, generation].

        Call it inside `store.snapshot()` whose generation is `generation`, holding the
        follower's lock. Following to an older or equal generation does nothing.
        """
        if generation <= self.generation:
            return
        if self.generation < 0:
            self.build(store)
        else:
            removed = store.removed_between(self.generation, generation)
            added = self.read_added(store, self.generation, generation)
            self.remove(removed)
            self.add(added)
        self.generation = generation

    @abstractmethod
    def build(self, store: Store) -> None:
        """Builds the state from nothing, as of the snapshot's generation."""

    @abstractmethod
    def read_added(self, store: Store, since: int, until: int) -> Any:
        """What the passages added in generations (since, until] bring: read, not applied."""

    @abstractmethod
    def remove(self, passage_ids: NDArray[np.int64]) -> None:
        """Forgets passages deleted since the state's generation."""

    @abstractmethod
    def add(self, added: Any) -> None:
        """Takes in what `read_added` read."""

"""The index a collection searches while articles keep arriving: checkpoint + delta + tombstones.

Shaped like Lucene's near-real-time readers and Qdrant's segments:

- the **checkpoint** (`base`): a FAISS index of every passage stored up to generation B,
  loaded from `index-B.faiss`. Never changed in place: a newer checkpoint is built aside
  (checkpoint.py) and swapped in whole.
- the **delta**: an exact index of the passages added after B, read from the store.
- the **tombstones**: ids of checkpoint passages deleted after B, excluded from every
  search of the checkpoint.

The store is the log, followed as everything derived from it is (follower.py):
`catch_up(G)` reads the changes in generations (generation, G] from one read snapshot
of the store (vectors added, ids removed) and applies them, so the index always
reflects one whole committed generation: never half a write, never a passage twice
(added ids lie above the index's generation, which it already holds in
full), never a deleted one. A write therefore costs the store what it changes, and the
index only its own rows; no file is written per write.

Every method takes `lock`; a search holds it from catch-up to the end of its dense
search, so the index it searches is exactly the generation of its store snapshot.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from retrieval.collection.follower import LogFollower
from retrieval.collection.index import FaissIndex

if TYPE_CHECKING:
    from retrieval.collection.store import Store

Ids = NDArray[np.int64]


class IndexOutOfStepError(RuntimeError):
    """The index and the store disagree: a bug, never a state to serve from."""


class LiveIndex(LogFollower):
    """A checkpoint, the passages added since, and the ids deleted since.

    Args:
        base: the checkpoint's index (not modified here).
        base_generation: the store generation it reflects (0: the empty index).
    """

    def __init__(self, base: FaissIndex, base_generation: int) -> None:
        self.lock = threading.RLock()
        self.base = base
        self.base_generation = base_generation
        self.generation = base_generation
        self.delta = FaissIndex(base.dim, "Flat")
        self._tombstones: Ids = np.zeros(0, np.int64)  # sorted, unique
        self._base_ids = np.sort(base.ids())

    # -- keeping up with the store --------------------------------------------------------

    def catch_up(self, store: Store, generation: int) -> None:
        """Applies the store's changes in (self.generation, generation] (follower.py).

        Call it inside `store.snapshot()` whose generation is `generation`. Catching up
        to an older or equal generation does nothing.

        Raises:
            IndexOutOfStepError: the store names a passage the index already holds.
        """
        with self.lock:
            self.follow(store, generation)

    def build(self, store: Store) -> None:
        raise IndexOutOfStepError("a live index starts from a checkpoint, never from nothing")

    def read_added(
        self, store: Store, since: int, until: int
    ) -> list[tuple[Ids, NDArray[np.float32]]]:
        return list(store.vectors(self.base.dim, since=since, until=until))

    def add(self, added: list[tuple[Ids, NDArray[np.float32]]]) -> None:
        for ids, vectors in added:
            self._add(ids, vectors)

    def remove(self, ids: Ids) -> None:
        if not len(ids):
            return
        self.delta.remove(ids)
        in_base = ids[np.isin(ids, self._base_ids)]
        if len(in_base):
            self._tombstones = np.union1d(self._tombstones, in_base)

    def _add(self, ids: Ids, vectors: NDArray[np.float32]) -> None:
        held = np.isin(ids, self._base_ids) | np.isin(ids, self.delta.ids())
        if held.any():
            raise IndexOutOfStepError(
                f"passages {ids[held][:5].tolist()} are already in the index at generation "
                f"{self.generation}: the store and the index are out of step"
            )
        self.delta.add(ids, vectors)

    def swap(self, base: FaissIndex, base_generation: int, store: Store) -> None:
        """Replaces the checkpoint by a newer one and re-derives delta and tombstones.

        Runs under `lock` inside a store snapshot, so no search sees a mix of the two.
        A checkpoint older than the current one is ignored.
        """
        with self.lock, store.snapshot() as generation:
            # Taken under the lock, the snapshot is at least as new as this index.
            if base_generation <= self.base_generation or base_generation > generation:
                return
            self.base, self.base_generation = base, base_generation
            self.generation = base_generation
            self.delta = FaissIndex(base.dim, "Flat")
            self._tombstones = np.zeros(0, np.int64)
            self._base_ids = np.sort(base.ids())
            self.catch_up(store, generation)

    def checkpoint(self) -> tuple[FaissIndex, int]:
        """The checkpoint and its generation, read together under `lock`.

        Read apart, a `swap` between the two reads pairs an old checkpoint with a newer
        generation: a checkpoint merged from that pair lacks what changed in between.
        """
        with self.lock:
            return self.base, self.base_generation

    # -- searching ------------------------------------------------------------------------

    def search(
        self, queries: NDArray[np.float32], k: int, *, allowed: Ids | None = None
    ) -> tuple[NDArray[np.float32], Ids]:
        """The k best (scores, ids) per query over checkpoint and delta, best first.

        Rows hold id -1 (score -inf) where fewer than k passages qualify.
        """
        with self.lock:
            excluded = None if allowed is not None else self._tombstones
            parts = [
                self.base.search(queries, k, allowed=allowed, excluded=excluded),
                self.delta.search(queries, k, allowed=allowed),
            ]
        return merge_top_k(parts, len(queries), k)

    # -- what it holds --------------------------------------------------------------------

    def __len__(self) -> int:
        with self.lock:
            return len(self.base) - len(self._tombstones) + len(self.delta)

    def ids(self) -> Ids:
        """Every live passage id, sorted."""
        with self.lock:
            base = self._base_ids[~np.isin(self._base_ids, self._tombstones)]
            return np.sort(np.concatenate([base, self.delta.ids()]))

    def counts(self) -> dict[str, int]:
        """Sizes of the parts, for stats and the checkpoint policy."""
        with self.lock:
            return {
                "checkpoint": len(self.base),
                "delta": len(self.delta),
                "tombstones": len(self._tombstones),
            }


def merge_top_k(
    parts: list[tuple[NDArray[np.float32], Ids]], n_queries: int, k: int
) -> tuple[NDArray[np.float32], Ids]:
    """The k best of several (scores, ids) answers per query; ties by the lower id."""
    scores = np.full((n_queries, k), -np.inf, dtype=np.float32)
    ids = np.full((n_queries, k), -1, dtype=np.int64)
    for row in range(n_queries):
        row_scores = np.concatenate([s[row] for s, _ in parts]) if parts else np.zeros(0)
        row_ids = np.concatenate([i[row] for _, i in parts]) if parts else np.zeros(0, np.int64)
        keep = row_ids >= 0
        row_scores, row_ids = row_scores[keep], row_ids[keep]
        order = np.lexsort((row_ids, -row_scores))[:k]
        scores[row, : len(order)] = row_scores[order]
        ids[row, : len(order)] = row_ids[order]
    return scores, ids

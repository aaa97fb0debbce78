"""Nearest-neighbour search over passage vectors: the VectorIndex seam and its backends.

`FaissIndex` is the one used in collections; `NumpyIndex` is the exact oracle the tests
hold it against. Ids are int64 passage ids, so deletes and updates touch only their rows.
Both clamp k to the index size: FAISS would pad the answer with id -1 and score -inf.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray

from retrieval.errors import InputError

if TYPE_CHECKING:
    import faiss

Ids = NDArray[np.int64]
Vectors = NDArray[np.float32]


class VectorIndex(Protocol):
    """A set of (id, unit vector) pairs searched by inner product (= cosine)."""

    @property
    def dim(self) -> int: ...

    def __len__(self) -> int: ...

    def add(self, ids: Ids, vectors: Vectors) -> None: ...

    def remove(self, ids: Ids) -> None: ...

    def search(
        self, queries: Vectors, k: int, *, allowed: Ids | None = None
    ) -> tuple[NDArray[np.float32], Ids]:
        """Returns (scores, ids), each (n_queries, min(k, len)), best first.

        With `allowed`, only those ids are candidates; rows hold id -1 where fewer
        than k candidates exist.
        """
        ...

    def ids(self) -> Ids: ...

    def save(self, path: Path) -> None: ...


def check_vectors(vectors: Vectors, dim: int) -> Vectors:
    """Validates a (n, dim) float32 batch; FAISS's own check is a bare assertion."""
    array = np.asarray(vectors)
    if array.ndim != 2 or array.shape[1] != dim:
        raise InputError(f"expected vectors of shape (n, {dim}), got {array.shape}")
    return np.ascontiguousarray(array, dtype=np.float32)


def check_ids(ids: Ids, n: int) -> Ids:
    array = np.ascontiguousarray(ids, dtype=np.int64)
    if array.ndim != 1 or len(array) != n:
        raise InputError(f"expected {n} ids in a flat array, got shape {array.shape}")
    return array


class NumpyIndex:
    """Exact search with numpy: slow, obviously right, the oracle for tests."""

    def __init__(self, dim: int) -> None:
        self._dim = dim
        self._ids = np.zeros(0, dtype=np.int64)
        self._vectors = np.zeros((0, dim), dtype=np.float32)

    @property
    def dim(self) -> int:
        return self._dim

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, ids: Ids, vectors: Vectors) -> None:
        vectors = check_vectors(vectors, self._dim)
        self._ids = np.concatenate([self._ids, check_ids(ids, len(vectors))])
        self._vectors = np.concatenate([self._vectors, vectors])

    def remove(self, ids: Ids) -> None:
        keep = ~np.isin(self._ids, ids)
        self._ids, self._vectors = self._ids[keep], self._vectors[keep]

    def search(
        self, queries: Vectors, k: int, *, allowed: Ids | None = None
    ) -> tuple[NDArray[np.float32], Ids]:
        queries = check_vectors(queries, self._dim)
        k = min(k, len(self))
        scores = queries @ self._vectors.T
        if allowed is not None:
            scores[:, ~np.isin(self._ids, allowed)] = -np.inf
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        top = np.take_along_axis(scores, order, axis=1).astype(np.float32)
        ids = np.where(np.isfinite(top), self._ids[order], -1)
        return top, ids

    def ids(self) -> Ids:
        return self._ids.copy()

    def save(self, path: Path) -> None:
        raise NotImplementedError("NumpyIndex lives in memory only")


class FaissIndex:
    """A FAISS index with passage ids (IndexIDMap2) over inner product.

    Args:
        dim: vector dimension.
        spec: a FAISS index_factory string for the inner index: "Flat" (exact, the
            default), or an approximate one such as "HNSW32" or "HNSW32,SQ8".
    """

    def __init__(self, dim: int, spec: str = "Flat", *, _index: Any = None) -> None:
        import faiss

        self._dim = dim
        self.spec = spec
        if _index is None:
            inner = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
            _index = faiss.IndexIDMap2(inner)
        self._index: faiss.IndexIDMap2 = _index

    @classmethod
    def load(cls, path: Path, spec: str) -> FaissIndex:
        import faiss

        index = faiss.read_index(str(path))
        return cls(index.d, spec, _index=index)

    @property
    def dim(self) -> int:
        return self._dim

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, ids: Ids, vectors: Vectors) -> None:
        vectors = check_vectors(vectors, self._dim)
        if len(vectors) == 0:
            return
        if not self._index.is_trained:
            self._index.train(vectors)
        self._index.add_with_ids(vectors, check_ids(ids, len(vectors)))

    def remove(self, ids: Ids) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids):
            self._index.remove_ids(ids)

    def search(
        self, queries: Vectors, k: int, *, allowed: Ids | None = None
    ) -> tuple[NDArray[np.float32], Ids]:
        import faiss

        queries = check_vectors(queries, self._dim)
        k = min(k, len(self))
        if k <= 0 or len(queries) == 0:
            empty = np.zeros((len(queries), 0))
            return empty.astype(np.float32), empty.astype(np.int64)
        params = None
        if allowed is not None:
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(np.asarray(allowed, np.int64)))
        scores, ids = self._index.search(queries, k, params=params)
        return scores.astype(np.float32), ids.astype(np.int64)

    def ids(self) -> Ids:
        """Every id in the index, in insertion order."""
        import faiss

        return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def save(self, path: Path) -> None:
        """Writes the index to a temporary file, syncs it, then renames it into place."""
        import faiss

        tmp = path.with_name(path.name + ".tmp")
        faiss.write_index(self._index, str(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)

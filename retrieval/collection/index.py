"""Nearest-neighbour search over passage vectors: the VectorIndex seam and its backends.

`FaissIndex` is the one used in collections; `NumpyIndex` is the exact oracle the tests
hold it against. Ids are int64 passage ids, so deletes and updates touch only their rows.
Both clamp k to the index size: FAISS would pad the answer with id -1 and score -inf.

`FaissIndex` is exact ("Flat") or approximate: an inverted file over 8-bit scalar
quantised codes ("IVF4096,SQ8", the one collections choose when large) or an HNSW graph
("HNSW32", "HNSW32,SQ8"). IVF removes vectors itself. HNSW cannot, so a removed passage
becomes a tombstone there: its slot's id is set to -1 and every search excludes negative
ids; `tombstone_fraction` tells the owner when to rebuild. Searches that an approximate
index cannot answer well fall back to an exact scan of the same stored codes: a
restrictive filter (few allowed ids), or a row that came back short of k hits.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray

from retrieval.errors import InputError

# Approximate index for large collections: IVF with ~4*sqrt(n) lists over 8-bit codes,
# ~390 bytes/vector. At 1M realistic vectors with headline queries it reached recall@10
# 0.97 at ~1.4 ms (nprobe 16) where HNSW32,SQ8 reached 0.89 at efSearch 512
# (`retrieval bench index` measures it).
APPROXIMATE_SPEC = "IVF,SQ8"  # the number of lists is chosen by size: approximate_spec(n)
NPROBE = 16
EF_SEARCH = 128
# Graph quality at build time: FAISS's default 40 left recall@10 at ~0.90 (efSearch 128)
# on 100k realistic vectors; 80 reached ~0.95 for twice the build time.
EF_CONSTRUCTION = 80
# Allowed sets up to this size are searched exactly (decode their codes, one matmul):
# cheaper than a graph walk that must skip most nodes, and never short of k hits.
EXACT_FILTER_LIMIT = 20_000
# faiss.cvar.distance_compute_blas_threshold is left at FAISS 1.15's default (128,000),
# measured on these 2 cores over 20,000 vectors, one thread: a single query took 1.75 ms
# on FAISS's own kernel and 7.1 ms through BLAS with any low threshold (2, 16, 64); 16
# queries took 9.4 ms through BLAS and 24 ms without, 64 queries 15 vs 117 ms. The
# default already sends single queries to the kernel and batches of 16+ to BLAS there:
# lowering it (as once advised) made every single-query exact search 4x slower.
_NOT_REMOVED = (0, 2**62)  # the id range of live rows: tombstones are negative
# Few-query searches run on one OpenMP thread: on 2 busy cores a second thread's wake-up
# cost ~8 ms per query where the search itself takes ~1 ms.
_FEW_QUERIES = 8


def ivf_lists(n_vectors: int) -> int:
    """Inverted lists for n vectors: a power of two near 4*sqrt(n), 39+ vectors per list."""
    target = 4 * max(n_vectors, 1) ** 0.5
    lists = 2 ** max(0, round(np.log2(target)))
    while lists > 1 and lists * 39 > n_vectors:
        lists //= 2
    return int(lists)


def approximate_spec(n_vectors: int) -> str:
    return f"IVF{ivf_lists(n_vectors)},SQ8"


def training_size(spec: str) -> int:
    """Vectors to train a spec on: 50 per IVF list, 100k for scalar quantisers, else 0."""
    if spec.startswith("IVF"):
        return 50 * int(spec[3:].split(",")[0])
    return 100_000 if "SQ" in spec else 0


@contextmanager
def single_threaded(active: bool) -> Iterator[None]:
    import faiss

    if not active:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)

if TYPE_CHECKING:
    pass

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
    """A FAISS index with passage ids over inner product: exact or approximate.

    About 270 lines, one job: it is the only owner of a FAISS index, and its size is the
    three ways a filtered search must run to stay exact (a few allowed ids scored
    directly, a tombstoned scan, FAISS's own selector), which share its private state.

    Args:
        dim: vector dimension.
        spec: a FAISS index_factory string for the inner index: "Flat" (exact, the
            default), or an HNSW one such as "HNSW32" or "HNSW32,SQ8" (approximate).
        ef_search: HNSW candidate list size per query (recall against speed).
    """

    def __init__(
        self, dim: int, spec: str = "Flat", *, ef_search: int = EF_SEARCH, nprobe: int = NPROBE,
        _index: Any = None,
    ) -> None:
        import faiss

        self._dim = dim
        self.ef_search = ef_search
        self.nprobe = nprobe
        if _index is None:
            inner = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
            if isinstance(inner, faiss.IndexHNSW):
                inner.hnsw.efConstruction = EF_CONSTRUCTION
            # IVF keeps passage ids itself and removes by id. IndexIDMap2 keeps a reverse
            # map for remove_ids over Flat; HNSW cannot remove, so it uses tombstones and
            # needs no reverse map.
            if isinstance(inner, faiss.IndexIVF):
                _index = inner
            else:
                _index = (faiss.IndexIDMap2 if spec == "Flat" else faiss.IndexIDMap)(inner)
        # Keep the object we were given: a downcast copy of an IndexIDMap would not hold
        # the Python reference that keeps its inner index alive.
        self._index = _index
        self.ivf = isinstance(_index, faiss.IndexIVF)
        self._inner = self._index if self.ivf else faiss.downcast_index(self._index.index)
        self.spec = describe(self._inner, spec)
        self.approximate = self.spec != "Flat"
        if self.ivf:
            self._ids = ivf_ids(self._index)
        else:
            self._ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        self._dead = int(np.count_nonzero(self._ids < 0))
        self._sorted: tuple[Ids, Ids] | None = None  # (order, ids[order]) for lookups

    @classmethod
    def load(cls, path: Path, spec: str = "Flat", *, ef_search: int = EF_SEARCH) -> FaissIndex:
        """Reads an index file; its own structure decides the spec, `spec` is a fallback."""
        import faiss

        index = faiss.read_index(str(path))
        return cls(index.d, spec, ef_search=ef_search, _index=index)

    @property
    def dim(self) -> int:
        return self._dim

    def __len__(self) -> int:
        return int(self._index.ntotal) - self._dead

    @property
    def tombstone_fraction(self) -> float:
        """Share of the index's slots held by removed vectors (always 0 for Flat)."""
        return self._dead / max(1, int(self._index.ntotal))

    def add(self, ids: Ids, vectors: Vectors) -> None:
        vectors = check_vectors(vectors, self._dim)
        if len(vectors) == 0:
            return
        ids = check_ids(ids, len(vectors))
        if np.any(ids < 0):
            raise InputError("ids must be non-negative")
        self.train(vectors)
        self._index.add_with_ids(vectors, ids)
        self._ids = np.concatenate([self._ids, ids])
        self._sorted = None

    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained)

    def train(self, vectors: Vectors) -> None:
        """Learns quantiser ranges or IVF lists from a sample, once; later calls do nothing.

        Raises:
            InputError: fewer vectors than the IVF index has lists.
        """
        if self._index.is_trained:
            return
        vectors = check_vectors(vectors, self._dim)
        if self.ivf and len(vectors) < self._index.nlist:
            raise InputError(
                f"{self.spec} needs at least {self._index.nlist} vectors to train, "
                f"got {len(vectors)}: use fewer lists for a collection this small"
            )
        self._index.train(vectors)

    def remove(self, ids: Ids) -> None:
        import faiss

        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if not len(ids):
            return
        if self.ivf:
            self._index.remove_ids(faiss.IDSelectorBatch(ids))
            self._ids = self._ids[~np.isin(self._ids, ids)]
        elif not self.approximate:
            self._index.remove_ids(ids)
            self._ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        else:
            gone = np.isin(self._ids, ids) & (self._ids >= 0)
            if not gone.any():
                return
            self._ids[gone] = -1
            self._dead += int(np.count_nonzero(gone))
            faiss.copy_array_to_vector(self._ids, self._index.id_map)
        self._sorted = None

    def search(
        self, queries: Vectors, k: int, *, allowed: Ids | None = None,
        excluded: Ids | None = None,
    ) -> tuple[NDArray[np.float32], Ids]:
        """Returns (scores, ids), each (n_queries, min(k, len)), best first.

        With `allowed`, only those ids are candidates; with `excluded` (sorted, unique:
        passages deleted since this index was built), those ids never are. Rows hold
        id -1 (score -inf) where fewer than k candidates exist.
        """
        queries = check_vectors(queries, self._dim)
        if allowed is not None:
            allowed = np.unique(np.asarray(allowed, dtype=np.int64))
            excluded = None  # the caller's allowed ids are all live
        if excluded is not None and not len(excluded):
            excluded = None
        live = len(self) - (len(excluded) if excluded is not None else 0)
        k = min(k, live)
        if k <= 0 or len(queries) == 0:
            empty = np.zeros((len(queries), max(k, 0)))
            return empty.astype(np.float32), np.full(empty.shape, -1, dtype=np.int64)
        with single_threaded(len(queries) < _FEW_QUERIES):
            if not self.approximate:
                return self._search_faiss(queries, k, allowed, excluded)
            if allowed is not None and len(allowed) <= EXACT_FILTER_LIMIT:
                return self._search_exact_small(queries, k, allowed)
            scores, ids = self._search_faiss(queries, k, allowed, excluded)
            expected = k if allowed is None else min(k, len(self._positions(allowed)))
            short = np.flatnonzero((ids >= 0).sum(axis=1) < expected)
            if len(short):  # the probed lists or the graph walk ran short: scan exactly
                scores[short], ids[short] = self._search_exact_scan(
                    queries[short], k, allowed, excluded
                )
            return scores, ids

    def _search_faiss(
        self, queries: Vectors, k: int, allowed: Ids | None, excluded: Ids | None = None,
        *, exhaustive: bool = False,
    ) -> tuple[NDArray[np.float32], Ids]:
        import faiss

        params: Any
        if self.ivf:
            params = faiss.SearchParametersIVF()
            params.nprobe = self._index.nlist if exhaustive else self.nprobe
        elif self.approximate:
            params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
            params.efSearch = max(self.ef_search, k)
        else:
            params = faiss.SearchParameters()
        keep = selectors(allowed, excluded, tombstones=self._dead > 0)
        params.sel = keep[-1] if keep else None
        scores, ids = self._index.search(queries, k, params=params)
        del keep  # FAISS held raw pointers to these until the search returned
        return _clean(scores, ids)

    def _positions(self, allowed: Ids) -> Ids:
        """Slots of the live rows whose ids are in `allowed` (sorted, unique)."""
        if self._sorted is None:
            order = np.argsort(self._ids, kind="stable")
            self._sorted = (order, self._ids[order])
        order, sorted_ids = self._sorted
        at = np.clip(np.searchsorted(sorted_ids, allowed), 0, max(len(sorted_ids) - 1, 0))
        found = (sorted_ids[at] == allowed) if len(sorted_ids) else np.zeros(len(allowed), bool)
        return np.sort(order[at[found]])

    def _search_exact_small(
        self, queries: Vectors, k: int, allowed: Ids
    ) -> tuple[NDArray[np.float32], Ids]:
        if self.ivf:  # every list, only the allowed codes: exact over the stored codes
            return self._search_faiss(queries, k, allowed, exhaustive=True)
        positions = self._positions(allowed)
        k_found = min(k, len(positions))
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        if k_found == 0:
            return scores, ids
        vectors = self._inner.reconstruct_batch(positions)
        all_scores = queries @ vectors.T
        top = np.argsort(-all_scores, axis=1, kind="stable")[:, :k_found]
        scores[:, :k_found] = np.take_along_axis(all_scores, top, axis=1)
        ids[:, :k_found] = self._ids[positions[top]]
        return scores, ids

    def _search_exact_scan(
        self, queries: Vectors, k: int, allowed: Ids | None, excluded: Ids | None = None
    ) -> tuple[NDArray[np.float32], Ids]:
        """Exact scan of the stored codes, live (and allowed) rows only."""
        import faiss

        if self.ivf:
            return self._search_faiss(queries, k, allowed, excluded, exhaustive=True)
        storage = faiss.downcast_index(self._inner.storage)  # type: ignore[union-attr]
        params = faiss.SearchParameters()
        if allowed is not None:
            live = self._positions(allowed)
        else:
            alive = self._ids >= 0
            if excluded is not None:
                alive &= ~np.isin(self._ids, excluded)
            live = np.flatnonzero(alive)
        params.sel = faiss.IDSelectorBatch(live)
        scores, slots = storage.search(queries, k, params=params)
        ids = np.where(slots >= 0, self._ids[np.maximum(slots, 0)], -1)
        return _clean(scores, ids)

    def ids(self) -> Ids:
        """Every live id in the index (in insertion order; IVF: in list order)."""
        return self._ids[self._ids >= 0].copy()

    def vectors(self, ids: Ids) -> Vectors:
        """The stored vectors (decoded, for quantised indexes) of live ids, in `ids` order.

        Raises:
            InputError: an id is not in the index, or the index is IVF (no id lookup).
        """
        if self.ivf:
            raise InputError("an IVF index cannot look vectors up by id: read them from the store")
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        positions = self._positions(np.unique(ids))
        found = dict(zip(self._ids[positions].tolist(), positions.tolist(), strict=True))
        missing = [int(i) for i in ids if int(i) not in found]
        if missing:
            raise InputError(f"ids not in the index: {missing[:5]}")
        return self._inner.reconstruct_batch(np.array([found[int(i)] for i in ids], np.int64))

    def save(self, path: Path) -> None:
        """Writes the index to a temporary file, syncs it, then renames it into place."""
        import faiss

        tmp = path.with_name(path.name + ".tmp")
        faiss.write_index(self._index, str(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    def copy(self) -> FaissIndex:
        """An independent copy (to change aside while this one keeps serving)."""
        import faiss

        return FaissIndex(
            self._dim, self.spec, ef_search=self.ef_search, nprobe=self.nprobe,
            _index=faiss.clone_index(self._index),
        )

    def nbytes(self) -> int:
        """Bytes the index takes when serialised (what it holds in memory, roughly)."""
        import faiss

        return int(len(faiss.serialize_index(self._index)))


def selectors(allowed: Ids | None, excluded: Ids | None, *, tombstones: bool) -> list[Any]:
    """FAISS id selectors for a search, the one to use last; [] when every id qualifies.

    The list also keeps the inner selectors alive: a combined selector holds only raw
    pointers to them, which Python would otherwise free before the search runs.
    """
    import faiss

    if allowed is not None:
        return [faiss.IDSelectorBatch(allowed)]
    chain: list[Any] = []
    if excluded is not None:
        inner = faiss.IDSelectorBatch(excluded)
        chain += [inner, faiss.IDSelectorNot(inner)]
    if tombstones:  # HNSW's removed slots hold id -1
        chain.append(faiss.IDSelectorRange(*_NOT_REMOVED))
        if excluded is not None:
            chain.append(faiss.IDSelectorAnd(chain[1], chain[2]))
    return chain


def describe(inner: Any, fallback: str) -> str:
    """The factory string of a built inner index, read from its structure."""
    import faiss

    if isinstance(inner, faiss.IndexFlat):
        return "Flat"
    if isinstance(inner, faiss.IndexIVFScalarQuantizer):
        bits = ",SQ8" if inner.sq.qtype == faiss.ScalarQuantizer.QT_8bit else ",SQ"
        return f"IVF{inner.nlist}{bits}"
    if isinstance(inner, faiss.IndexIVFFlat):
        return f"IVF{inner.nlist},Flat"
    if isinstance(inner, faiss.IndexHNSW):
        storage = faiss.downcast_index(inner.storage)
        spec = f"HNSW{inner.hnsw.nb_neighbors(1)}"  # type: ignore[attr-defined]
        if isinstance(storage, faiss.IndexScalarQuantizer):
            spec += ",SQ8" if storage.sq.qtype == faiss.ScalarQuantizer.QT_8bit else ",SQ"
        return spec
    return fallback


def ivf_ids(index: Any) -> Ids:
    """Every id held in an IVF index's inverted lists."""
    import faiss

    lists = index.invlists
    parts = [
        faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
        for i in range(index.nlist) if lists.list_size(i)
    ]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def _clean(scores: NDArray[Any], ids: NDArray[Any]) -> tuple[NDArray[np.float32], Ids]:
    """FAISS marks empty slots with id -1 and a huge negative score: make that -inf."""
    ids = ids.astype(np.int64)
    scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
    return scores, ids

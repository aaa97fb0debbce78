"""Checkpoints: the collection's FAISS index saved as of one store generation.

A checkpoint is the file `index-<generation>-<history>.faiss` (derived data: the store
can always rebuild it). It is built from one read snapshot of the store, never from an
index that writes are changing, so it holds exactly the passages committed at its
generation of the store's history (`Store.history`). A generation alone does not say
which passages: a store replaced in place by another (a snapshot's copy put back, a
store made anew) counts its own generations, so a checkpoint is loaded only by a store
of its own history; any other, and one named without a history (saved before
histories existed), is passed over and the index replayed from the store instead. It
is written to a temporary file, synced and renamed into place, so a process killed at
any moment leaves either the old checkpoint or the new one, never half of one; older
checkpoints are removed after the rename.

Building one is beside the searches: it takes no lock that searches or writes need.
One process builds at a time (`checkpoint.lock`, tried without waiting: a process that
finds it taken leaves the work to the one holding it).

Two ways to build, chosen by the policy (index_policy.py):
- merge: a copy of the current checkpoint, minus the passages deleted since, plus the
  ones added since: the trained IVF lists are kept;
- rebuild: a new index of the wanted spec, trained on a seeded sample of the stored
  vectors (the same store gives the same index), filled with every stored vector.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrieval.collection.index import FaissIndex, training_size
from retrieval.collection.index_policy import IndexPolicy
from retrieval.collection.store import Store

logger = logging.getLogger(__name__)

LOCK = "checkpoint.lock"
PREFIX, SUFFIX = "index-", ".faiss"


class CheckpointAborted(Exception):
    """The collection was closed while a checkpoint was being built."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A built checkpoint: the index, the generation (of the store's history) it
    reflects, and how it was made."""

    index: FaissIndex
    generation: int
    history: str
    how: str  # "merged", "rebuilt as <spec>"


def file_for(path: Path, generation: int, history: str) -> Path:
    return path / f"{PREFIX}{generation:012d}-{history}{SUFFIX}"


def saved_checkpoints(path: Path, history: str | None = None) -> list[tuple[int, Path]]:
    """Checkpoint files in a collection directory, newest generation first: those of
    `history`, or of every history when None (those without one count as history "")."""
    found = []
    for file in path.glob(f"{PREFIX}*{SUFFIX}"):
        generation, _, named = file.name[len(PREFIX) : -len(SUFFIX)].partition("-")
        if not generation.isdigit() or (history is not None and named != history):
            continue
        found.append((int(generation), file))
    return sorted(found, reverse=True)


def load_newest(
    path: Path, up_to: int, history: str, *, newer_than: int = -1
) -> Checkpoint | None:
    """The newest readable checkpoint of `history` of a generation in (newer_than, up_to],
    or None.

    A file of another history is never loaded. One of a later generation than the
    store's is skipped (a store of this history restored from an older copy); an
    unreadable one is skipped too, and the next one tried.
    """
    for generation, file in saved_checkpoints(path, history):
        if generation > up_to:
            continue
        if generation <= newer_than:
            return None
        try:
            return Checkpoint(FaissIndex.load(file), generation, history, "loaded")
        except (RuntimeError, OSError) as error:  # removed meanwhile, or unreadable
            logger.warning("ignoring checkpoint %s: %s", file, error)
    return None


def build(
    store: Store,
    dim: int,
    policy: IndexPolicy,
    current: Checkpoint | None,
    *,
    should_stop: Callable[[], bool] = lambda: False,
) -> Checkpoint:
    """A checkpoint of the store as of now, merged into `current` or rebuilt.

    Runs in one read snapshot on the calling thread's connection. `current` must be of
    the store's history.

    Raises:
        CheckpointAborted: `should_stop` said so between two steps.
    """
    with store.snapshot() as generation:
        history = store.history()
        n_passages = store.counts()["passages"]
        current_spec = current.index.spec if current else None
        wanted = policy.wanted_spec(n_passages, current_spec)
        if current is not None and wanted == current_spec and mergeable(current.index):
            index = current.index.copy()
            index.remove(store.removed_between(current.generation, generation))
            since, how = current.generation, "merged"
        else:
            index = trained_index(store, dim, wanted, n_passages)
            since, how = 0, f"rebuilt as {wanted}"
        for ids, vectors in store.vectors(dim, since=since, until=generation):
            if should_stop():
                raise CheckpointAborted()
            index.add(ids, vectors)
    return Checkpoint(index, generation, history, how)


def mergeable(index: FaissIndex) -> bool:
    """Flat and IVF indexes take deletions in place; an HNSW graph is rebuilt instead."""
    return not index.approximate or index.ivf


def trained_index(store: Store, dim: int, spec: str, n_passages: int) -> FaissIndex:
    """An empty index of `spec`, trained on a seeded sample of the stored vectors."""
    index = FaissIndex(dim, spec)
    wanted = training_size(spec)
    if wanted and n_passages:
        rng = np.random.default_rng(0)
        share = wanted / n_passages
        sample = [vectors[rng.random(len(vectors)) < share] for _, vectors in store.vectors(dim)]
        index.train(np.concatenate(sample))
    return index


def save(path: Path, checkpoint: Checkpoint) -> Path:
    """Writes a checkpoint atomically, then removes the others and stale temporary files.

    The others are older ones, or of another history: none fits the store any more.
    Call it holding the checkpoint lock: any temporary file left is a killed build's.
    """
    target = file_for(path, checkpoint.generation, checkpoint.history)
    for stale in path.glob(f"{PREFIX}*{SUFFIX}.tmp"):
        stale.unlink(missing_ok=True)
    checkpoint.index.save(target)  # temporary file, fsync, rename
    sync_directory(path)  # the rename itself survives a power loss
    for _, file in saved_checkpoints(path):
        if file != target:
            # A reader still loading it keeps its open file; a later one moves on.
            file.unlink(missing_ok=True)
    return target


def sync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)

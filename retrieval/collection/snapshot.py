"""Online snapshots: a consistent copy of a collection taken while it serves and is written.

The store is copied with SQLite's online backup API, from one read snapshot: the copy
holds exactly one committed generation G, and writers in other processes carry on
meanwhile (WAL readers never block them). The checkpoint copied beside it is the newest
one of a generation at most G (opened before it is copied, so a newer checkpoint
replacing it meanwhile does no harm), or none: a collection opened from the copy then
replays the store's log, as after any crash, and answers as the original did at G.

The copy starts a history of its own (`Store.history`) from G, and its checkpoint is
saved under it: written to, the copy counts generations that are not the original's,
so that its store put back in the original's directory never loads the original's
later checkpoints, nor the original the copy's.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from retrieval.collection.checkpoint import file_for, saved_checkpoints
from retrieval.collection.manifest import MANIFEST, read_manifest
from retrieval.collection.store import STORE, Store
from retrieval.errors import CollectionFormatError, InputError


@dataclass(frozen=True, slots=True)
class SnapshotReport:
    """What a snapshot holds: the store's generation, and its checkpoint's (None: none)."""

    path: Path
    generation: int
    checkpoint_generation: int | None


def snapshot(collection: Path, out: Path) -> SnapshotReport:
    """Copies the collection at `collection` into the new directory `out`.

    Raises:
        CollectionFormatError: no collection at `collection`.
        InputError: `out` exists and is not empty.
    """
    collection, out = collection.expanduser().resolve(), out.expanduser().resolve()
    if read_manifest(collection) is None:
        raise CollectionFormatError(f"no collection at {collection}")
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} is not empty: snapshot into a new directory")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(collection / MANIFEST, out / MANIFEST)  # written once, never changed
    store = Store(collection / STORE)
    try:
        history = store.history()
        generation = store.backup(out / STORE)
    finally:
        store.close()
    copy = Store(out / STORE)
    try:
        new_history = copy.start_new_history()
    finally:
        copy.close()
    copied = copy_checkpoint(collection, history, out, new_history, generation)
    return SnapshotReport(out, generation, copied)


def copy_checkpoint(
    collection: Path, history: str, out: Path, new_history: str, up_to: int
) -> int | None:
    """Copies the newest checkpoint of `history` of a generation at most `up_to`, naming
    it with `new_history`; its generation, or None."""
    for generation, file in saved_checkpoints(collection, history):
        if generation > up_to:
            continue
        try:
            source = open(file, "rb")  # noqa: SIM115  (held open: a rename may replace it)
        except FileNotFoundError:
            continue  # replaced by a newer checkpoint meanwhile: an older one may remain
        with source, open(file_for(out, generation, new_history), "wb") as target:
            shutil.copyfileobj(source, target)
        return generation
    return None

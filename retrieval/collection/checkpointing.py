"""When and how an opened collection checkpoints its index, in the foreground or behind reads.

A one-shot writer asks `checkpoint_if_due` (counts first: it never loads the index for
nothing); a long-lived process (`background=True`) checks after each read, in one
thread at a time, for a newer checkpoint saved by another process (once a second) or a
due one, and loads or builds it in a background thread. checkpoint.py builds and saves
the files; collection.py's docstring holds the concurrency rules.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from retrieval.collection import checkpoint
from retrieval.collection.opened import EMPTY_INDEX_SPEC, OpenedCollection
from retrieval.models.embedding import Embedder

logger = logging.getLogger(__name__)

# How often a reading process looks for a checkpoint written by another process.
CHECKPOINT_POLL_S = 1.0
# How long a process waits before trying again after a background checkpoint failed or
# found another process building one.
CHECKPOINT_RETRY_S = 10.0


class CheckpointingCollection(OpenedCollection):
    """An opened collection that keeps its index checkpointed (see `Collection`)."""

    def __init__(
        self, path: Path, manifest: dict[str, Any], embedder: Embedder | None, *,
        background: bool,
    ) -> None:
        super().__init__(path, manifest, embedder, background=background)
        self._checkpointer: threading.Thread | None = None
        # Held from the check for a running checkpoint thread to the start of the next
        # one, so that two reads finishing together start one thread, not two.
        self._upkeep_lock = threading.Lock()
        self._closing = threading.Event()
        self._last_poll = 0.0
        self._next_attempt = 0.0

    def close(self) -> None:
        """Stops a background checkpoint (its work is simply dropped) and closes the store."""
        self._closing.set()
        if self._checkpointer is not None:
            self._checkpointer.join()
        super().close()

    # -- checkpoints ----------------------------------------------------------------------

    def checkpoint_due(self) -> str | None:
        """Why the index should be checkpointed now (for the log), or None."""
        index = self.index
        with index.lock:
            sizes = index.counts()
            return self.policy.checkpoint_due(
                base_spec=index.base.spec, base_size=sizes["checkpoint"], added=sizes["delta"],
                removed=sizes["tombstones"], n_passages=len(index),
            )

    def checkpoint_may_be_due(self) -> bool:
        """A cheap first look for one-shot processes (`retrieval index`): counts only.

        Loading the index to ask `checkpoint_due` reads the whole checkpoint file, or
        replays every stored vector when there is none: a one-shot writer must not pay
        that to learn that nothing is due. This reads the checkpoint's generation from its
        file name and counts what the store changed since (index range scans of what
        changed). False means no checkpoint is due; True means ask `checkpoint_due`.
        """
        with self.store.snapshot():
            saved = checkpoint.saved_checkpoints(self.path, self.store.history())
            n_passages = self.store.counts()["passages"]
            if not saved:
                # What checkpoint_due weighs here exactly: an open starts from an empty
                # index and replays every stored passage into its delta.
                return self.policy.checkpoint_due(
                    base_spec=EMPTY_INDEX_SPEC, base_size=0, added=n_passages, removed=0,
                    n_passages=n_passages,
                ) is not None
            since = saved[0][0]
            added = self.store.count_added_since(since)
            removed = self.store.count_removed_since(since)
        base_size = n_passages - added + removed
        as_built = self.policy.wanted_spec(base_size, None)
        return (
            added >= self.policy.delta_max
            or removed >= self.policy.tombstones_max * max(base_size, 1)
            or self.policy.wanted_spec(n_passages, as_built) != as_built
        )

    def checkpoint_if_due(self, announce: Callable[[str], None] | None = None) -> str | None:
        """For one-shot writers (`retrieval index`, opened with background=False): a
        checkpoint when one is due, so that the next open need not replay what this
        process wrote. A writer that will not checkpoint never loads the index.

        Args:
            announce: called with the reason before a due checkpoint is built (it may
                take a while on a large collection).

        Returns:
            How the checkpoint was built, or None: none was due, or another process is
            building one.
        """
        if not self.checkpoint_may_be_due():  # counts only: no index loaded
            return None
        # This process only wrote to the store: catch its index up before asking.
        self.refresh()
        reason = self.checkpoint_due()
        if reason is None:
            return None
        if announce is not None:
            announce(reason)
        return self.checkpoint()

    def checkpoint(self, *, force: bool = False) -> str | None:
        """Builds, saves and swaps in a new checkpoint when one is due (or `force`).

        Returns how it was built, or None when none was due or another process is
        building one. Searches go on meanwhile; nothing here blocks a write.
        """
        self.refresh()
        reason = self.checkpoint_due() or ("asked for" if force else None)
        if reason is None:
            return None
        try:
            with FileLock(str(self.path / checkpoint.LOCK)).acquire(timeout=0):
                return self._build_checkpoint(reason)
        except Timeout:
            logger.info("%s: another process is building a checkpoint", self.path)
            return None

    def _build_checkpoint(self, reason: str) -> str:
        index = self.index
        base, base_generation = index.checkpoint()  # one pair, whatever swaps meanwhile
        current = None  # nothing checkpointed yet: build anew
        if base_generation > 0:
            current = checkpoint.Checkpoint(
                base, base_generation, self.store.history(), "current"
            )
        started = time.perf_counter()
        built = checkpoint.build(
            self.store, self.dim, self.policy, current, should_stop=self._closing.is_set
        )
        checkpoint.save(self.path, built)
        index.swap(built.index, built.generation, self.store)
        logger.info(
            "%s: checkpoint at generation %d (%s; %s) in %.1f s", self.path, built.generation,
            built.how, reason, time.perf_counter() - started,
        )
        return built.how

    def _after_read(self) -> None:
        """Background upkeep after a read: a newer checkpoint from another process, or a due one."""
        if not self.background or self._closing.is_set():
            return
        if not self._upkeep_lock.acquire(blocking=False):
            return  # another read is doing the upkeep: this one need not wait for it
        try:
            self._start_upkeep()
        finally:
            self._upkeep_lock.release()

    def _start_upkeep(self) -> None:
        """Starts loading a newer checkpoint, or building a due one; holds `_upkeep_lock`."""
        if self._checkpointer is not None and self._checkpointer.is_alive():
            return
        now = time.monotonic()
        if now - self._last_poll >= CHECKPOINT_POLL_S:
            self._last_poll = now
            newest = checkpoint.saved_checkpoints(self.path, self.store.history())
            if newest and newest[0][0] > self.index.base_generation:
                self._start(self._load_newer_checkpoint)
                return
        if now >= self._next_attempt and self.checkpoint_due():
            self._start(self._checkpoint_quietly)

    def _start(self, work: Callable[[], object]) -> None:
        self._checkpointer = threading.Thread(target=work, name="checkpoint", daemon=True)
        self._checkpointer.start()

    def _load_newer_checkpoint(self) -> None:
        index = self.index
        try:
            with self.store.snapshot() as generation:
                history = self.store.history()
            found = checkpoint.load_newest(
                self.path, generation, history, newer_than=index.base_generation
            )
            if found is not None and not self._closing.is_set():
                index.swap(found.index, found.generation, self.store)
        except Exception:  # the current index keeps serving; the next poll retries
            logger.exception("%s: loading a newer checkpoint failed", self.path)

    def _checkpoint_quietly(self) -> None:
        built = None
        try:
            built = self.checkpoint()
        except checkpoint.CheckpointAborted:
            pass
        except Exception:  # the current index keeps serving; a later read retries
            logger.exception("%s: building a checkpoint failed", self.path)
        if built is None:  # failed, or another process builds it: do not retry at once
            self._next_attempt = time.monotonic() + CHECKPOINT_RETRY_S

"""A collection on disk: the store, the index derived from it, and the rules that keep them one.

Layout of a collection directory:

    manifest.json              format version, embedder, chunker, index policy (manifest.py)
    store.sqlite (+ -wal)      the single source of truth and the index's log (store.py)
    index-<generation>-<history>.faiss
                               the latest checkpoint of the index (checkpoint.py)
    checkpoint.lock            held by the one process building a checkpoint

The concurrency rules, all of them:

1. Writes are SQLite transactions (`Store.transaction`): one writer at a time across
   processes, each write all-or-nothing, each bumping the generation. Embedding runs
   before the transaction, so a write holds the database only for its own rows. No
   index file is written per write. An article's duplicate group is found and stored
   in its own write (groups.py): the next writer, in any process, matches against it.
2. Every read runs in one store snapshot (`reading()`), and the in-memory index is
   caught up to exactly that snapshot's generation from the store's log before it is
   searched, under the index's lock (live_index.py). So a search sees one whole
   committed generation, in the index and in the store alike, whichever process wrote.
   An article is found by the first search that starts after its write returned, in
   this process or any other.
3. Checkpoints are built from a store snapshot aside (in a background thread, or at the
   end of `retrieval index`), written atomically, and swapped into the index whole;
   other processes load the newer file within a second. A checkpoint is only a shortcut:
   a missing, stale or unreadable one is replaced by replaying the store's log, and so is
   one of another history of the store (a store replaced in place: checkpoint.py).

A process killed at any point therefore leaves a store at its last commit and at most
an older checkpoint, which the next open catches up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from retrieval.collection import checkpoint, duplicates
from retrieval.collection.bm25 import LexicalStatistics, MemoryBm25
from retrieval.collection.index import FaissIndex
from retrieval.collection.index_policy import IndexPolicy
from retrieval.collection.ingest import (
    INGEST_BATCH,
    IngestReport,
    batched,
    indexable,
    passages_for,
    refuse_duplicate_ids,
    with_vector,
)
from retrieval.collection.live_index import LiveIndex
from retrieval.collection.manifest import (
    check_embedder,
    check_settings,
    new_manifest,
    read_manifest,
    write_manifest,
)
from retrieval.collection.store import DEFAULT_WRITE_TIMEOUT_S, STORE, NewPassage, Store
from retrieval.errors import CollectionFormatError, NotFoundError
from retrieval.ingestion.chunking import ChunkerSettings
from retrieval.models.backends import default_embedder, make_embedder
from retrieval.models.embedding import DEFAULT_MODEL, Embedder
from retrieval.records import Article, Filters, Passage

logger = logging.getLogger(__name__)

# How often a reading process looks for a checkpoint written by another process.
CHECKPOINT_POLL_S = 1.0
# How long a process waits before trying again after a background checkpoint failed or
# found another process building one.
CHECKPOINT_RETRY_S = 10.0
# The index an open starts from when no checkpoint fits: empty, the whole log replayed.
EMPTY_INDEX_SPEC = "Flat"


@dataclass(frozen=True, slots=True)
class CollectionInfo:
    """The numbers `retrieval info` prints, checked row by row."""

    path: str
    articles: int
    passages: int
    vectors_in_store: int
    vectors_in_index: int
    max_passage_tokens: int
    generation: int
    index_generation: int
    checkpoint_generation: int
    index_spec: str
    bytes_on_disk: int
    ids_match: bool
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def in_agreement(self) -> bool:
        return self.ids_match and self.vectors_in_store == self.vectors_in_index == self.passages


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


class Collection:
    """Articles, passages and their vectors on disk, with the index searched in memory.

    Open one with `Collection.open`. It is safe to share between threads, and other
    processes may read and write the same directory meanwhile (see the module docstring).

    Args:
        background: build due checkpoints and load newer ones in background threads
            (for long-lived processes); otherwise only `checkpoint()` builds one.
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
        self._checkpointer: threading.Thread | None = None
        # Held from the check for a running checkpoint thread to the start of the next
        # one, so that two reads finishing together start one thread, not two.
        self._upkeep_lock = threading.Lock()
        self._closing = threading.Event()
        self._last_poll = 0.0
        self._next_attempt = 0.0

    # -- opening and closing --------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | Path,
        embedder: Embedder | None = None,
        *,
        chunker: ChunkerSettings | None = None,
        index_spec: str | None = None,
        policy: IndexPolicy | None = None,
        create: bool = True,
        background: bool = True,
    ) -> Collection:
        """Opens the collection at `path`, creating it when asked and missing.

        Args:
            embedder: the model to embed with. For an existing collection it must be the
                one it was built with (else ModelMismatchError); None loads that one.
            chunker, index_spec, policy: settings for a new collection (`index_spec` is
                shorthand for `IndexPolicy(index_spec)`); for an existing one they must
                match the manifest when given.
            create: create the directory and manifest when missing.
            background: see the class.

        Raises:
            CollectionFormatError: no collection there (and create is False), or an
                unreadable manifest.
            ModelMismatchError: the embedder or settings differ from the manifest's.
        """
        path = Path(path).expanduser().resolve()
        if policy is None and index_spec is not None:
            policy = IndexPolicy(index_spec)
        manifest = read_manifest(path)
        if manifest is None:
            if not create:
                raise CollectionFormatError(
                    f"no collection at {path}: index some articles into it first "
                    f"(retrieval index PATH --collection {path})"
                )
            embedder = embedder or make_embedder(None, DEFAULT_MODEL)
            manifest = new_manifest(embedder, chunker or ChunkerSettings(), policy or IndexPolicy())
            write_manifest(path, manifest)
        else:
            check_settings(path, manifest, chunker, policy)
            if embedder is not None:
                check_embedder(path, manifest, embedder)
        return cls(path, manifest, embedder, background=background)

    @property
    def embedder(self) -> Embedder:
        """The collection's model, loaded on first use: deleting, inspecting or copying a
        collection never needs it."""
        if self._embedder is None:
            self._embedder = default_embedder(self.manifest["embedder"])
            check_embedder(self.path, self.manifest, self._embedder)
        return self._embedder

    def close(self) -> None:
        """Stops a background checkpoint (its work is simply dropped) and closes the store."""
        self._closing.set()
        if self._checkpointer is not None:
            self._checkpointer.join()
        self.store.close()

    def __enter__(self) -> Collection:
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

    # -- writes ---------------------------------------------------------------------------

    def add_articles(
        self,
        articles: Iterable[Article],
        *,
        progress: Callable[[int], None] | None = None,
        lock_timeout: float = DEFAULT_WRITE_TIMEOUT_S,
        batch_size: int = INGEST_BATCH,
    ) -> IngestReport:
        """Adds new articles, replaces changed ones, and skips unchanged ones.

        An article with a title and no text is stored with its title as its text.

        Articles are committed in batches of `batch_size`, each batch one transaction:
        an interrupted ingest keeps the batches committed before it, whole. Each batch
        is embedded before its transaction starts, so other writers wait only for
        the rows to be written.

        Args:
            progress: called with the number of articles handled after each batch.
            lock_timeout: seconds a batch waits for another process's write to finish.

        Raises:
            CollectionLockedError: another process kept writing past lock_timeout.
            InputError: an article with neither text nor title, or an id given twice.
        """
        # Checked and made indexable up front, so a bad article refuses the whole call
        # before any batch is committed.
        articles = [indexable(article) for article in refuse_duplicate_ids(articles)]
        report, started = IngestReport(), time.perf_counter()
        for batch in batched(articles, batch_size):
            self._add_batch(batch, report, lock_timeout)
            if progress:
                progress(len(batch))
        report.seconds = time.perf_counter() - started
        return report

    def _add_batch(self, batch: Sequence[Article], report: IngestReport, timeout: float) -> None:
        known = self.store.content_hashes([article.id for article in batch])
        changed = [a for a in batch if known.get(a.id) != a.content_hash()]
        report.unchanged += len(batch) - len(changed)
        if not changed:
            return
        pieces = [passages_for(article, self.embedder, self.chunker) for article in changed]
        inputs = [text for article_pieces in pieces for _, text in article_pieces]
        # The slow parts, before the transaction, so other writers wait only for rows.
        vectors = self.embedder.embed_documents(inputs)
        fingerprints = [duplicates.fingerprint(article.text) for article in changed]
        rows, offset = [], 0
        for article_pieces in pieces:
            rows.append(
                [with_vector(p, vectors[offset + i]) for i, (p, _) in enumerate(article_pieces)]
            )
            offset += len(article_pieces)
        with self.store.transaction(timeout) as generation:
            for article, article_rows, fingerprint in zip(
                changed, rows, fingerprints, strict=True
            ):
                gone, new = self.store.put_article(article, article_rows, generation, fingerprint)
                report.count_stored(len(gone), len(new), replaced=article.id in known)

    def delete_article(
        self, article_id: str, *, lock_timeout: float = DEFAULT_WRITE_TIMEOUT_S
    ) -> int:
        """Deletes an article and its passages; returns the number of passages removed.

        Raises:
            NotFoundError: no article has that id.
            CollectionLockedError: another process kept writing past lock_timeout.
        """
        with self.store.transaction(lock_timeout) as generation:
            if self.store.article(article_id) is None:
                raise NotFoundError(f"no article with id {article_id!r}")
            return len(self.store.delete_article(article_id, generation))

    def passages_for(self, article: Article) -> list[tuple[NewPassage, str]]:
        """How an article would be chunked: each passage with its embedding input."""
        return passages_for(article, self.embedder, self.chunker)

    # -- reads ----------------------------------------------------------------------------

    @contextmanager
    def snapshot(self) -> Iterator[int]:
        """Reads of articles and passages inside it see one generation (which it yields)."""
        with self.store.snapshot() as generation:
            yield generation

    def article(self, article_id: str) -> Article:
        article = self.store.article(article_id)
        if article is None:
            raise NotFoundError(f"no article with id {article_id!r}")
        return article

    def passage(self, passage_id: int) -> Passage:
        passage = self.store.passage(passage_id)
        if passage is None:
            raise NotFoundError(f"no passage with id {passage_id}")
        return passage

    def passages_of(self, article_id: str) -> list[Passage]:
        return self.store.passages_of(article_id)

    def duplicates_of(
        self, article_ids: Sequence[str], filters: Filters | None = None
    ) -> dict[str, list[str]]:
        """The other articles (exact and near copies) of each article's duplicate group,
        matching `filters`, oldest first; [] for an article alone in its group."""
        with self.store.snapshot():
            return self.store.duplicates_of(article_ids, filters)

    def stats(self) -> dict[str, Any]:
        """Cheap numbers for monitoring, all as of one generation (no table scans)."""
        index = self.index
        with self.reading() as reader:
            generation = reader.generation
            counts = self.store.counts()
            sizes = index.counts()
            in_index = len(index)
            spec = index.base.spec
        return {
            "articles": counts["articles"], "passages": counts["passages"],
            "vectors_in_index": in_index, "generation": generation,
            "index": spec, "checkpoint_generation": index.base_generation,
            "delta": sizes["delta"], "tombstones": sizes["tombstones"],
            "in_agreement": in_index == counts["passages"],
        }

    def info(self) -> CollectionInfo:
        """Everything `retrieval info` prints; compares store and index id by id."""
        index = self.index
        with self.reading() as reader:
            generation = reader.generation
            counts = self.store.full_counts()
            ids_match = np.array_equal(index.ids(), self.store.passage_ids())
            in_index = len(index)
            base_generation, spec = index.base_generation, index.base.spec
        size = sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())
        return CollectionInfo(
            path=str(self.path),
            articles=counts["articles"],
            passages=counts["passages"],
            vectors_in_store=counts["vectors"],
            vectors_in_index=in_index,
            max_passage_tokens=counts["max_passage_tokens"],
            generation=generation,
            index_generation=index.generation,
            checkpoint_generation=base_generation,
            index_spec=spec,
            bytes_on_disk=size,
            ids_match=ids_match,
            manifest=self.manifest,
        )

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

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.collection.checkpointing import (
    CHECKPOINT_POLL_S,
    CHECKPOINT_RETRY_S,
    CheckpointingCollection,
)
from retrieval.collection.index_policy import IndexPolicy
from retrieval.collection.ingest import (
    INGEST_BATCH,
    IngestReport,
    embed_articles,
    ingest_batches,
    passages_for,
    prepared,
    store_embedded,
)
from retrieval.collection.manifest import (
    check_embedder,
    check_settings,
    new_manifest,
    read_manifest,
    write_manifest,
)
from retrieval.collection.opened import EMPTY_INDEX_SPEC, Reader
from retrieval.collection.store import DEFAULT_WRITE_TIMEOUT_S, STORE, NewPassage
from retrieval.errors import CollectionFormatError, NotFoundError
from retrieval.ingestion.chunking import ChunkerSettings
from retrieval.models.backends import make_embedder
from retrieval.models.embedding import DEFAULT_MODEL, Embedder
from retrieval.records import Article, Filters, Passage

__all__ = [
    "CHECKPOINT_POLL_S", "CHECKPOINT_RETRY_S", "EMPTY_INDEX_SPEC", "STORE", "Collection",
    "CollectionInfo", "Reader",
]


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


class Collection(CheckpointingCollection):
    """Articles, passages and their vectors on disk, with the index searched in memory.

    Open one with `Collection.open`. It is safe to share between threads, and other
    processes may read and write the same directory meanwhile (see the module docstring).

    Args:
        background: build due checkpoints and load newer ones in background threads
            (for long-lived processes); otherwise only `checkpoint()` builds one.

    Its parts, by job: settings, store and in-memory indexes (opened.py); checkpoints
    (checkpointing.py); opening, writes and reads, here.
    """

    # -- opening --------------------------------------------------------------------------

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
        # Checked up front, so a bad article refuses the whole call before any batch is
        # committed; then the one ingest path (ingest.py) that every writer shares.
        return ingest_batches(
            prepared(articles), lambda batch: self._add_batch(batch, lock_timeout),
            batch_size=batch_size, progress=progress,
        )

    def _add_batch(self, batch: Sequence[Article], lock_timeout: float) -> IngestReport:
        """Embeds the batch's new and changed articles (unchanged ones are skipped before
        the model runs), then stores them in one transaction."""
        known = self.store.content_hashes([article.id for article in batch])
        changed = [a for a in batch if known.get(a.id) != a.content_hash()]
        report = IngestReport(unchanged=len(batch) - len(changed))
        if changed:
            rows = embed_articles(changed, self.embedder, self.chunker)
            report.add(store_embedded(self.store, list(zip(changed, rows, strict=True)),
                                      lock_timeout))
        return report

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

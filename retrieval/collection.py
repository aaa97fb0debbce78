"""A collection on disk: the store, the derived FAISS index, and the settings that made them.

Layout of a collection directory:

    manifest.json            format version, embedder (model, fingerprint, dim), chunker, index spec
    store.sqlite (+ -wal)    the single source of truth: articles, passages, vectors, FTS5
    index-<generation>.faiss the FAISS index as of that store generation (derived data)
    write.lock               held by the one process writing

Every write is one SQLite transaction that bumps the store's generation. The index file
is named by the generation it reflects and is written to a temporary file and renamed,
so a crash at any point leaves a store that opens at its last commit and an index that
is either current or older. An older index catches up from the store (vectors added and
passage ids removed since its generation); a missing or unreadable one is rebuilt from
the stored vectors. Nothing is ever re-embedded to recover.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from retrieval.chunking import ChunkerSettings, chunk_text
from retrieval.embedding import DEFAULT_MODEL, Embedder
from retrieval.errors import (
    CollectionFormatError,
    CollectionLockedError,
    InputError,
    ModelMismatchError,
    NotFoundError,
)
from retrieval.index import APPROXIMATE_SPEC, FaissIndex, approximate_spec, training_size
from retrieval.records import Article, Passage
from retrieval.store import NewPassage, Store

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
STORE = "store.sqlite"
LOCK = "write.lock"
BACKENDS = ("torch", "openvino-int8", "openvino-fp32")
# The backend of new collections when none is chosen. openvino-int8 is 2.6x faster end to
# end and embeds a query in ~2-3 ms instead of 12-15, but it moved MED's hybrid nDCG@10
# by -0.007 (30 queries; README), past the 0.005 the evaluation allows, so the exact
# model stays the default and the fast one is a collection setting (--backend).
DEFAULT_BACKEND = "torch"
# Index policy of new collections ("auto"): exact search up to AUTO_ABOVE passages, then
# the approximate index. At 20,000 vectors an exact scan costs about as much as embedding
# the query with the int8 model (~3 ms on 2 cores) and grows linearly from there, while
# IVF,SQ8 stays near 1-1.5 ms at recall@10 ~0.97 (`retrieval bench index` measures it).
AUTO_ABOVE = 20_000
# An approximate index is rebuilt from the store once this share of its slots is removed
# passages (HNSW cannot delete; removed rows stay as tombstones until then).
COMPACT_ABOVE = 0.2
# A title longer than this is left out of the passages' embedding input: it would eat
# the passage's budget, and such "titles" are usually first sentences anyway.
MAX_TITLE_PREFIX_TOKENS = 48
# Articles chunked, embedded and committed together: one transaction each.
INGEST_BATCH = 64


@dataclass(slots=True)
class IngestReport:
    """What one ingest did, article by article."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    passages_added: int = 0
    passages_removed: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True)
class CollectionInfo:
    """The numbers `retrieval info` prints."""

    path: str
    articles: int
    passages: int
    vectors_in_store: int
    vectors_in_index: int
    max_passage_tokens: int
    generation: int
    index_generation: int
    bytes_on_disk: int
    ids_match: bool
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def in_agreement(self) -> bool:
        return self.ids_match and self.vectors_in_store == self.vectors_in_index == self.passages


def default_backend() -> str:
    """DEFAULT_BACKEND when its libraries are installed (retrieval[fast]), else "torch"."""
    from importlib.util import find_spec

    if DEFAULT_BACKEND.startswith("openvino") and not (find_spec("openvino") and find_spec("nncf")):
        logger.info("openvino/nncf not installed (retrieval[fast]): embedding with torch")
        return "torch"
    return DEFAULT_BACKEND


def make_embedder(backend: str | None = None, model: str | Path = DEFAULT_MODEL) -> Embedder:
    """The embedder for a backend name: "torch", "openvino-int8" or "openvino-fp32".

    None picks `default_backend()`.

    Raises:
        InputError: an unknown backend.
    """
    backend = backend or default_backend()
    if backend == "torch":
        from retrieval.embedding import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder(model)
    if backend in ("openvino-int8", "openvino-fp32"):
        from retrieval.embedding_openvino import OpenVinoEmbedder

        return OpenVinoEmbedder(model, precision=backend.removeprefix("openvino-"))
    raise InputError(f"unknown embedding backend {backend!r}: use one of {', '.join(BACKENDS)}")


def default_embedder(spec: dict[str, Any]) -> Embedder:
    """Builds the embedder a manifest names (its backend and model)."""
    backend = spec.get("backend", "torch")
    if backend not in BACKENDS:
        raise CollectionFormatError(f"unknown embedding backend {backend!r} in the manifest")
    return make_embedder(backend, spec["model"])


class Collection:
    """Articles, passages and their vectors on disk, with a FAISS index in memory.

    Open one with `Collection.open`. It is safe to share between threads: searches and
    writes are serialised around the store and index, while the slow embedding of new
    passages happens outside that lock. Other processes may write to the same directory
    (one at a time); `refresh()` brings this one's index up to their last commit.
    """

    def __init__(self, path: Path, manifest: dict[str, Any], embedder: Embedder) -> None:
        self.path = path
        self.manifest = manifest
        self.embedder = embedder
        self.chunker = ChunkerSettings(**manifest["chunker"])
        self.index_spec: str = manifest["index"]["spec"]
        self.store = Store(path / STORE)
        self._lock = threading.RLock()
        self._write_lock = FileLock(str(path / LOCK))
        self._index: FaissIndex | None = None
        self._index_generation = -1
        self._saved_generation = -1

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | Path,
        embedder: Embedder | None = None,
        *,
        chunker: ChunkerSettings | None = None,
        index_spec: str | None = None,
        create: bool = True,
    ) -> Collection:
        """Opens the collection at `path`, creating it when asked and missing.

        Args:
            embedder: the model to embed with. For an existing collection it must be the
                one it was built with (else ModelMismatchError); None loads that one.
            chunker, index_spec: settings for a new collection; for an existing one they
                must match the manifest when given.
            create: create the directory and manifest when missing.

        Raises:
            CollectionFormatError: no collection there (and create is False), or an
                unreadable manifest.
            ModelMismatchError: the embedder or settings differ from the manifest's.
        """
        path = Path(path).expanduser().resolve()
        manifest = read_manifest(path)
        if manifest is None:
            if not create:
                raise CollectionFormatError(
                    f"no collection at {path}: index some articles into it first "
                    f"(retrieval index PATH --collection {path})"
                )
            embedder = embedder or make_embedder(None, DEFAULT_MODEL)
            manifest = new_manifest(embedder, chunker or ChunkerSettings(), index_spec or "auto")
            write_manifest(path, manifest)
        else:
            check_settings(path, manifest, chunker, index_spec)
            embedder = embedder or default_embedder(manifest["embedder"])
            check_embedder(path, manifest, embedder)
        collection = cls(path, manifest, embedder)
        collection.refresh()
        return collection

    def close(self) -> None:
        """Saves the index if it moved on since it was last saved, and closes the store."""
        with self._lock:
            if self._index is not None and self._index_generation != self._saved_generation:
                try:
                    with self._write_lock.acquire(timeout=5):
                        self._save_index()
                except Timeout:
                    logger.info("index not saved: another process is writing")
            self.store.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the index -----------------------------------------------------------------------

    @property
    def index(self) -> FaissIndex:
        """The in-memory FAISS index, current as of the last `refresh()`."""
        if self._index is None:
            self.refresh()
        assert self._index is not None  # refresh() always sets it
        return self._index

    def refresh(self) -> int:
        """Brings the index up to the store's last committed generation; returns it."""
        with self._lock:
            generation = self.store.generation()
            if self._index is None:
                self._load_or_rebuild_index(generation)
            if self._index_generation != generation:
                self._catch_up(generation)
            return generation

    def _load_or_rebuild_index(self, generation: int) -> None:
        for saved_generation, file in saved_indexes(self.path):
            if saved_generation > generation:
                continue  # written by a transaction that never committed
            try:
                self._index = FaissIndex.load(file, self.index_spec)
            except RuntimeError as error:  # unreadable file: rebuild, never fail to open
                logger.warning("ignoring unreadable index %s: %s", file, error)
                continue
            self._index_generation = self._saved_generation = saved_generation
            return
        spec = self._wanted_spec(self.store.counts()["vectors"])
        if spec == "Flat":
            self._index = FaissIndex(self.embedder.dim, spec)
            self._index_generation = 0
        else:  # trained on a sample of the whole store, then filled: current as of now
            self._index = self._build_index(spec)
            self._index_generation = generation

    def _catch_up(self, generation: int) -> None:
        assert self._index is not None
        since = self._index_generation
        try:
            if since > 0:
                self._index.remove(self.store.removed_since(since))
            for ids, vectors in self.store.vectors(self.embedder.dim, since_generation=since):
                self._index.add(ids, vectors)
        except BaseException:
            # Half caught up is neither old nor new: drop it and derive it again next time.
            self._index, self._index_generation = None, -1
            raise
        self._index_generation = generation

    def _wanted_spec(self, n_vectors: int) -> str:
        """The index spec for a collection of this size, by the manifest's policy.

        "IVF,SQ8" in the policy means an IVF with lists for the size (`approximate_spec`);
        the current IVF index stays while its lists are within 2x of that, so a growing
        collection is re-clustered each time it quadruples, not at every ingest.
        """
        auto = self.manifest["index"].get("auto")
        if not auto:
            return self.index_spec
        # Hysteresis: only a collection shrunk to half the threshold goes back to exact.
        current = self._index
        above = auto["above"] if current is None or not current.approximate else auto["above"] // 2
        if n_vectors < above:
            return "Flat"
        if auto["spec"] != APPROXIMATE_SPEC:
            return str(auto["spec"])
        wanted = approximate_spec(n_vectors)
        if current is not None and current.ivf:
            lists, wanted_lists = ivf_lists_of(current.spec), ivf_lists_of(wanted)
            if wanted_lists // 2 <= lists <= wanted_lists * 2:
                return current.spec
        return wanted

    def _maintain_index(self) -> None:
        """Switches index type past the size threshold, or compacts tombstones (write lock held).

        Both rebuild the index from the stored vectors; nothing is re-embedded.
        """
        assert self._index is not None
        wanted = self._wanted_spec(len(self._index))
        if wanted == self._index.spec and self._index.tombstone_fraction <= COMPACT_ABOVE:
            return
        self._index = self._build_index(wanted)

    def _build_index(self, spec: str) -> FaissIndex:
        """A new index of this spec over every stored vector, trained on a sample of them."""
        logger.info("building the index of %s as %s from the store", self.path, spec)
        index = FaissIndex(self.embedder.dim, spec)
        wanted = training_size(spec)
        sample = self._sample_vectors(wanted) if wanted else None
        if sample is not None and len(sample):  # an empty store trains on its first add
            index.train(sample)
        for ids, vectors in self.store.vectors(self.embedder.dim):
            index.add(ids, vectors)
        return index

    def _sample_vectors(self, n: int) -> np.ndarray:
        """About n stored vectors drawn evenly (seeded: the same store gives the same index)."""
        total = max(1, self.store.counts()["vectors"])
        rng = np.random.default_rng(0)
        parts = [
            vectors[rng.random(len(vectors)) < n / total]
            for _, vectors in self.store.vectors(self.embedder.dim)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, self.embedder.dim), np.float32)

    def _save_index(self) -> None:
        """Writes the index as of its generation and drops older files (write lock held)."""
        assert self._index is not None
        policy, spec = self.manifest["index"], self._index.spec
        if policy.get("auto") and policy["spec"] != spec:
            # Under "auto" the manifest names the index in use, which may have just changed.
            self.manifest = {**self.manifest, "index": {**policy, "spec": spec}}
            write_manifest(self.path, self.manifest)
            self.index_spec = self._index.spec
        target = self.path / f"index-{self._index_generation:012d}.faiss"
        self._index.save(target)
        self._saved_generation = self._index_generation
        for generation, file in saved_indexes(self.path):
            if generation != self._saved_generation:
                file.unlink(missing_ok=True)
        for leftover in self.path.glob("*.tmp"):
            leftover.unlink(missing_ok=True)

    # -- writes --------------------------------------------------------------------------

    def add_articles(
        self,
        articles: Iterable[Article],
        *,
        progress: Callable[[int], None] | None = None,
        lock_timeout: float = 10.0,
        batch_size: int = INGEST_BATCH,
    ) -> IngestReport:
        """Adds new articles, replaces changed ones, and skips unchanged ones.

        Articles are committed in batches of `batch_size`, each batch one transaction:
        an interrupted ingest keeps the batches committed before it, whole.

        Args:
            progress: called with the number of articles handled after each batch.
            lock_timeout: seconds to wait for another process's write to finish.

        Raises:
            CollectionLockedError: another process kept the write lock past lock_timeout.
        """
        articles = refuse_duplicate_ids(articles)
        report, started = IngestReport(), time.perf_counter()
        with self._writing(lock_timeout):
            for batch in batched(articles, batch_size):
                self._add_batch(batch, report)
                if progress:
                    progress(len(batch))
            with self._lock:
                self._maintain_index()
            self._save_index()
        report.seconds = time.perf_counter() - started
        return report

    def delete_article(self, article_id: str, *, lock_timeout: float = 10.0) -> int:
        """Deletes an article and its passages from store and index; returns passages removed.

        Raises:
            NotFoundError: no article has that id.
        """
        with self._writing(lock_timeout), self._lock:
            if self.store.article(article_id) is None:
                raise NotFoundError(f"no article with id {article_id!r}")
            with self.store.transaction() as generation:
                removed = self.store.delete_article(article_id, generation)
            self._apply(generation, np.array(removed, np.int64), [], None)
            self._maintain_index()
            self._save_index()
            return len(removed)

    @contextmanager
    def _writing(self, timeout: float) -> Iterator[None]:
        """Holds the cross-process write lock, with the index brought up to date under it."""
        try:
            self._write_lock.acquire(timeout=timeout)
        except Timeout:
            raise CollectionLockedError(
                f"{self.path} is being written by another process; try again when it is done"
            ) from None
        try:
            self.refresh()
            yield
        finally:
            self._write_lock.release()

    def _add_batch(self, batch: Sequence[Article], report: IngestReport) -> None:
        with self._lock:
            known = self.store.content_hashes([article.id for article in batch])
        changed = [a for a in batch if known.get(a.id) != a.content_hash()]
        report.unchanged += len(batch) - len(changed)
        if not changed:
            return
        pieces = [self.passages_for(article) for article in changed]
        inputs = [text for article_pieces in pieces for _, text in article_pieces]
        vectors = self.embedder.embed_documents(inputs)  # slow: outside the lock
        with self._lock:
            removed, added = self._commit(changed, pieces, vectors)
        report.added += sum(1 for a in changed if a.id not in known)
        report.updated += sum(1 for a in changed if a.id in known)
        report.passages_added += added
        report.passages_removed += removed

    def _commit(
        self,
        articles: Sequence[Article],
        pieces: Sequence[list[tuple[NewPassage, str]]],
        vectors: np.ndarray,
    ) -> tuple[int, int]:
        removed: list[int] = []
        added: list[int] = []
        offset = 0
        with self.store.transaction() as generation:
            for article, article_pieces in zip(articles, pieces, strict=True):
                rows = []
                for passage, _ in article_pieces:
                    rows.append(_with_vector(passage, vectors[offset]))
                    offset += 1
                gone, new = self.store.put_article(article, rows, generation)
                removed += gone
                added += new
        self._apply(generation, np.array(removed, np.int64), added, vectors)
        return len(removed), len(added)

    def _apply(
        self, generation: int, removed: np.ndarray, added: list[int], vectors: np.ndarray | None
    ) -> None:
        """Mirrors a committed transaction in the in-memory index."""
        index = self.index
        try:
            index.remove(removed)
            if added and vectors is not None:
                index.add(np.array(added, np.int64), vectors)
        except Exception:
            # The store has committed; drop the index so the next refresh re-derives it.
            self._index, self._index_generation = None, -1
            raise
        self._index_generation = generation

    def passages_for(self, article: Article) -> list[tuple[NewPassage, str]]:
        """Chunks an article; returns each passage (vector still empty) with its embedding input."""
        if not article.text.strip():
            raise InputError(f"article {article.id!r} has no text")
        prefix = self.title_prefix(article)
        reserved = (
            self.embedder.count_tokens(prefix) - self.embedder.count_tokens("") if prefix else 0
        )
        spans = chunk_text(article.text, self.embedder, self.chunker, reserved_tokens=reserved)
        out = []
        for ordinal, span in enumerate(spans):
            text = article.text[span.start : span.end]
            embed_input = prefix + text
            passage = NewPassage(
                ordinal=ordinal,
                start=span.start,
                end=span.end,
                text=text,
                n_tokens=self.embedder.count_tokens(embed_input),
                vector=_NO_VECTOR,
            )
            out.append((passage, embed_input))
        return out

    def title_prefix(self, article: Article) -> str:
        """The title, put before each passage when embedding, unless the text starts with it.

        A passage deep in an article often never names its subject; the headline does.
        """
        title = article.title.strip()
        if not title or article.text.lstrip().startswith(title):
            return ""
        if (
            self.embedder.count_tokens(title) - self.embedder.count_tokens("")
            > MAX_TITLE_PREFIX_TOKENS
        ):
            return ""
        return title + "\n"

    # -- reads ---------------------------------------------------------------------------

    def article(self, article_id: str) -> Article:
        with self._lock:
            article = self.store.article(article_id)
        if article is None:
            raise NotFoundError(f"no article with id {article_id!r}")
        return article

    def passage(self, passage_id: int) -> Passage:
        with self._lock:
            passage = self.store.passage(passage_id)
        if passage is None:
            raise NotFoundError(f"no passage with id {passage_id}")
        return passage

    def passages_of(self, article_id: str) -> list[Passage]:
        with self._lock:
            return self.store.passages_of(article_id)

    def info(self) -> CollectionInfo:
        with self._lock:
            generation = self.refresh()
            counts = self.store.counts()
            in_index = len(self.index)
            ids_match = np.array_equal(np.sort(self.index.ids()), self.store.passage_ids())
        size = sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())
        return CollectionInfo(
            path=str(self.path),
            articles=counts["articles"],
            passages=counts["passages"],
            vectors_in_store=counts["vectors"],
            vectors_in_index=in_index,
            max_passage_tokens=counts["max_passage_tokens"],
            generation=generation,
            index_generation=self._index_generation,
            bytes_on_disk=size,
            ids_match=ids_match,
            manifest=self.manifest,
        )

    @property
    def lock(self) -> threading.RLock:
        """Held while reading store and index together, so no write lands in between."""
        return self._lock


_NO_VECTOR = np.zeros(0, dtype=np.float32)


def _with_vector(passage: NewPassage, vector: np.ndarray) -> NewPassage:
    return NewPassage(
        ordinal=passage.ordinal,
        start=passage.start,
        end=passage.end,
        text=passage.text,
        n_tokens=passage.n_tokens,
        vector=vector,
    )


def refuse_duplicate_ids(articles: Iterable[Article]) -> list[Article]:
    """The articles as a list, checked up front: one id twice in one ingest is ambiguous.

    Raises:
        InputError: naming the first repeated id.
    """
    articles, seen = list(articles), set()
    for article in articles:
        if article.id in seen:
            raise InputError(f"article id {article.id!r} appears twice: give each article one id")
        seen.add(article.id)
    return articles


def batched(items: Iterable[Article], size: int) -> Iterable[list[Article]]:
    batch: list[Article] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def saved_indexes(path: Path) -> list[tuple[int, Path]]:
    """Index files in a collection, newest generation first."""
    found = []
    for file in path.glob("index-*.faiss"):
        try:
            found.append((int(file.stem.removeprefix("index-")), file))
        except ValueError:
            continue
    return sorted(found, reverse=True)


# -- the manifest ----------------------------------------------------------------------


def new_manifest(
    embedder: Embedder, chunker: ChunkerSettings, index_spec: str = "auto"
) -> dict[str, Any]:
    """A new collection's manifest.

    Args:
        index_spec: a FAISS factory string, fixed for the collection's life; or "auto":
            exact ("Flat") up to AUTO_ABOVE passages, APPROXIMATE_SPEC above. The
            manifest's "spec" always names the index in use; "auto" holds the policy.
    """
    index: dict[str, Any] = {"spec": index_spec, "metric": "inner_product", "normalized": True}
    if index_spec == "auto":
        index.update(spec="Flat", auto={"above": AUTO_ABOVE, "spec": APPROXIMATE_SPEC})
    return {
        "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "embedder": embedder.spec(),
        "chunker": chunker.to_dict(),
        "index": index,
    }


def read_manifest(path: Path) -> dict[str, Any] | None:
    file = path / MANIFEST
    if not file.exists():
        return None
    try:
        manifest: dict[str, Any] = json.loads(file.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CollectionFormatError(f"{file} is unreadable ({error})") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CollectionFormatError(
            f"{file} has format version {manifest.get('format_version')!r}; "
            f"this engine reads version {FORMAT_VERSION}: re-index into a new collection"
        )
    return manifest


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Writes the manifest atomically (temporary file, fsync, rename)."""
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / (MANIFEST + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path / MANIFEST)


def check_embedder(path: Path, manifest: dict[str, Any], embedder: Embedder) -> None:
    """Refuses an embedder other than the collection's own: its vectors would not compare.

    Backend, source model fingerprint, dim and export recipe must match. An int8 export
    redone on another machine may differ in its last bits (the quantiser's statistics
    are float sums): that is logged, not refused; the exports are alike, not bit-equal.
    """
    built, given = manifest["embedder"], embedder.spec()
    keys = ("backend", "fingerprint", "dim", "recipe")
    if built.get("export_fingerprint") != given.get("export_fingerprint") and all(
        built.get(key) == given.get(key) for key in keys
    ):
        logger.warning(
            "%s was built with OpenVINO export %s; this machine's export of the same model and "
            "recipe is %s",
            path,
            built.get("export_fingerprint"),
            given.get("export_fingerprint"),
        )
    if any(built.get(key) != given.get(key) for key in keys):
        raise ModelMismatchError(
            f"{path} was built with model {built.get('model')!r} "
            f"(backend {built.get('backend')}, fingerprint {built.get('fingerprint')}, "
            f"dim {built.get('dim')}), not {given.get('model')!r} "
            f"(backend {given.get('backend')}, fingerprint {given.get('fingerprint')}, "
            f"dim {given.get('dim')}): open it with its own model, or index into a new collection"
        )


def check_settings(
    path: Path, manifest: dict[str, Any], chunker: ChunkerSettings | None, index_spec: str | None
) -> None:
    if chunker is not None and chunker.to_dict() != manifest["chunker"]:
        raise ModelMismatchError(
            f"{path} was chunked with {manifest['chunker']}, not {chunker.to_dict()}: "
            "use the same settings, or index into a new collection"
        )
    index = manifest["index"]
    if (
        index_spec is not None
        and index_spec != index["spec"]
        and not (index_spec == "auto" and index.get("auto"))
    ):
        raise ModelMismatchError(
            f"{path} uses index {manifest['index']['spec']!r}, not {index_spec!r}: "
            "use the same index, or index into a new collection"
        )


def ivf_lists_of(spec: str) -> int:
    """The number of lists in an "IVF<n>,..." spec; 0 for other specs."""
    head = spec.split(",")[0]
    return int(head[3:]) if head.startswith("IVF") and head[3:].isdigit() else 0

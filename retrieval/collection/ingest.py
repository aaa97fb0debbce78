"""The one ingest path: articles in, chunked and embedded passages stored, a report out.

Every writer goes through it: `Collection.add_articles` (one collection), the sharded
router's `add_articles` (it embeds, each shard stores its share) and Ray Data indexing
(workers embed, each shard's writer stores). The steps:

1. `prepared`: every article checked up front (no id twice, text or title), so a bad
   one refuses the whole call before any batch is committed;
2. `ingest_batches`: batches of INGEST_BATCH articles, each committed whole;
3. `embed_articles`: chunk and embed a batch in one model call, outside any transaction;
4. `store_embedded`: fingerprint, then write the batch in ONE transaction, skipping an
   article stored unchanged (so a batch written twice adds nothing).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from retrieval.collection import duplicates
from retrieval.collection.store import NewPassage, Store
from retrieval.errors import InputError
from retrieval.ingestion.chunking import ChunkerSettings, chunk_text
from retrieval.models.embedding import Embedder
from retrieval.records import Article

# A title longer than this is left out of the passages' embedding input: it would eat
# the passage's budget, and such "titles" are usually first sentences anyway.
MAX_TITLE_PREFIX_TOKENS = 48
# Articles chunked, embedded and committed together: one transaction each.
INGEST_BATCH = 64

_NO_VECTOR = np.zeros(0, dtype=np.float32)


@dataclass(slots=True)
class IngestReport:
    """What one ingest did, article by article."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    passages_added: int = 0
    passages_removed: int = 0
    seconds: float = 0.0

    def count_stored(self, removed: int, added: int, *, replaced: bool) -> None:
        """Counts one article stored by `Store.put_article`: new, or replacing its
        older version, with the passages that went and came."""
        self.passages_removed += removed
        self.passages_added += added
        if replaced:
            self.updated += 1
        else:
            self.added += 1

    def add(self, other: IngestReport) -> None:
        """Adds another report's counts (not its seconds) to this one."""
        for name in ("added", "updated", "unchanged", "passages_added", "passages_removed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


def passages_for(
    article: Article, embedder: Embedder, chunker: ChunkerSettings
) -> list[tuple[NewPassage, str]]:
    """Chunks an article; returns each passage (vector still empty) with its embedding input.

    A title-only article (empty text) is chunked as `indexable(article)`: its title.

    Raises:
        InputError: the article has neither text nor a title.
    """
    article = indexable(article)
    prefix = title_prefix(article, embedder)
    reserved = embedder.count_tokens(prefix) - embedder.count_tokens("") if prefix else 0
    spans = chunk_text(article.text, embedder, chunker, reserved_tokens=reserved)
    out = []
    for ordinal, span in enumerate(spans):
        text = article.text[span.start : span.end]
        embed_input = prefix + text
        passage = NewPassage(
            ordinal=ordinal,
            start=span.start,
            end=span.end,
            text=text,
            n_tokens=embedder.count_tokens(embed_input),
            vector=_NO_VECTOR,
        )
        out.append((passage, embed_input))
    return out


def indexable(article: Article) -> Article:
    """The article as stored: a title-only one (empty text) takes its title as its text.

    So a news flash or a headline-only item is indexed as the loaders load it. Any other
    article is returned unchanged, and so is its content hash.

    Raises:
        InputError: the article has neither text nor a title.
    """
    if article.text.strip():
        return article
    title = article.title.strip()
    if not title:
        raise InputError(f"article {article.id!r} has no text and no title")
    return replace(article, text=title)


def title_prefix(article: Article, embedder: Embedder) -> str:
    """The title, put before each passage when embedding, unless the text starts with it.

    A passage deep in an article often never names its subject; the headline does.
    """
    title = article.title.strip()
    if not title or article.text.lstrip().startswith(title):
        return ""
    if embedder.count_tokens(title) - embedder.count_tokens("") > MAX_TITLE_PREFIX_TOKENS:
        return ""
    return title + "\n"


def with_vector(passage: NewPassage, vector: np.ndarray) -> NewPassage:
    return replace(passage, vector=vector)


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


def batched(items: Iterable[Article], size: int) -> Iterator[list[Article]]:
    batch: list[Article] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def prepared(articles: Iterable[Article]) -> list[Article]:
    """The articles as stored, all checked before any is written.

    Raises:
        InputError: an article with neither text nor title, or an id given twice.
    """
    return [indexable(article) for article in refuse_duplicate_ids(articles)]


def ingest_batches(
    articles: Sequence[Article],
    add_batch: Callable[[list[Article]], IngestReport],
    *,
    batch_size: int = INGEST_BATCH,
    progress: Callable[[int], None] | None = None,
) -> IngestReport:
    """Runs `add_batch` over `prepared` articles batch by batch; their reports, summed."""
    report, started = IngestReport(), time.perf_counter()
    for batch in batched(articles, batch_size):
        report.add(add_batch(batch))
        if progress:
            progress(len(batch))
    report.seconds = time.perf_counter() - started
    return report


def embed_articles(
    articles: Sequence[Article], embedder: Embedder, chunker: ChunkerSettings
) -> list[list[NewPassage]]:
    """Each article's passages with their vectors, from one model call for them all."""
    pieces = [passages_for(article, embedder, chunker) for article in articles]
    vectors = embedder.embed_documents([text for part in pieces for _, text in part])
    rows, offset = [], 0
    for part in pieces:
        rows.append([with_vector(p, vectors[offset + i]) for i, (p, _) in enumerate(part)])
        offset += len(part)
    return rows


def store_embedded(
    store: Store, items: Sequence[tuple[Article, list[NewPassage]]], lock_timeout: float
) -> IngestReport:
    """Writes articles already chunked and embedded, in ONE transaction.

    All or nothing, so a writer killed at any point leaves the store at a committed
    generation. An article already stored unchanged is skipped. Fingerprints are made
    before the transaction, so other writers wait only for the rows.
    """
    report = IngestReport()
    fingerprints = [duplicates.fingerprint(article.text) for article, _ in items]
    with store.transaction(lock_timeout) as generation:
        known = store.content_hashes([article.id for article, _ in items])
        for (article, rows), fingerprint in zip(items, fingerprints, strict=True):
            if known.get(article.id) == article.content_hash():
                report.unchanged += 1
                continue
            gone, new = store.put_article(article, rows, generation, fingerprint)
            report.count_stored(len(gone), len(new), replaced=article.id in known)
    return report

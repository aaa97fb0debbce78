"""From articles to the rows a write stores: chunked passages with their embedding inputs.

Pure functions of an article, the embedder's tokenizer and the chunker settings; the
model itself runs in `Collection.add_articles`, outside any transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from retrieval.collection.store import NewPassage
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

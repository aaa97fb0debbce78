"""The values that flow through the engine: articles in, passages stored, hits out.

Plain frozen dataclasses of Python types, so that every layer (store, search, service,
evaluation) can share them without importing anything heavy.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from retrieval.errors import InputError


@dataclass(frozen=True, slots=True)
class Article:
    """One news article (or any document) as loaded from a source.

    Attributes:
        id: stable identifier (file stem, or `_id`/`id` of a JSONL record).
        title: headline; may be empty.
        text: the body; passages' character spans index into this string.
        date: ISO date `YYYY-MM-DD`, or None when unknown.
        source: publisher or feed name, or None.
        url: link to the original, or None.
        metadata: any other fields of the source record (JSON-serialisable).
    """

    id: str
    title: str
    text: str
    date: str | None = None
    source: str | None = None
    url: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def content_hash(self) -> str:
        """A digest of everything that is stored for the article.

        Re-ingesting an article whose hash is unchanged is a no-op; any other
        change replaces its passages.
        """
        payload = json.dumps(
            [self.title, self.text, self.date, self.source, self.url, self.metadata],
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Span:
    """A character span `[start, end)`: a passage in its article, a sentence in a passage."""

    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Passage:
    """A stored chunk of an article.

    Attributes:
        id: passage id, unique in its collection and never reused.
        article_id: the article it was cut from.
        ordinal: 0-based position among the article's passages.
        text: `article.text[start:end]`.
        start, end: character span in the article text.
        n_tokens: word pieces the model reads for it (special tokens included).
    """

    id: int
    article_id: str
    ordinal: int
    text: str
    start: int
    end: int
    n_tokens: int


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result: a passage with its article's fields and its score.

    `score` is higher-is-better: cosine similarity for dense search, BM25 for lexical
    search, the fused score for hybrid search. `rank` is 1-based. `highlight` is the
    span, within `text`, of the sentence closest in meaning to the query, when the
    search was asked to mark it (else None). In a collapsed search, `duplicate_ids` are
    the other articles of this hit's duplicate group (exact and near copies, oldest
    first) and `duplicates` their number; otherwise 0 and ().
    """

    passage_id: int
    article_id: str
    title: str
    date: str | None
    source: str | None
    url: str | None
    text: str
    score: float
    rank: int
    start: int
    end: int
    highlight: Span | None = None
    duplicates: int = 0
    duplicate_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RelatedArticle:
    """An article close in meaning to another one (`Retriever.related`).

    `score` is the cosine between the given article's centroid (the mean of its unit
    passage vectors, renormalised) and this article's closest passage: in [-1, 1],
    higher is closer.
    """

    article_id: str
    title: str
    date: str | None
    source: str | None
    url: str | None
    score: float


@dataclass(frozen=True, slots=True)
class Filters:
    """Restricts a search to some articles; every field left None matches all.

    Attributes:
        article_ids: only passages of these articles.
        date_from, date_to: inclusive ISO dates `YYYY-MM-DD`; undated articles never match.
        sources: only articles from these sources.
    """

    article_ids: tuple[str, ...] | None = None
    date_from: str | None = None
    date_to: str | None = None
    sources: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("date_from", "date_to"):
            value = getattr(self, name)
            if value is not None and not is_iso_date(value):
                raise InputError(f"{name} must be a date YYYY-MM-DD, got {value!r}")
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise InputError(f"date_from {self.date_from} is after date_to {self.date_to}")
        for name in ("article_ids", "sources"):
            value = getattr(self, name)
            if value is not None and not all(isinstance(v, str) for v in value):
                raise InputError(f"{name} must be a list of strings")

    def is_empty(self) -> bool:
        return (
            self.article_ids is None
            and self.date_from is None
            and self.date_to is None
            and self.sources is None
        )


def is_iso_date(value: str) -> bool:
    """True for a real calendar date written YYYY-MM-DD."""
    if not isinstance(value, str) or len(value) != 10:
        return False
    try:
        datetime.date.fromisoformat(value)
    except ValueError:
        return False
    return True


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def iso_date(value: str) -> str | None:
    """`YYYY-MM-DD` for a real date or an ISO datetime starting with one, else None.

    The written date part is kept: "2021-08-30T23:30:00+05:00" gives "2021-08-30", with
    no time zone conversion.
    """
    text = value.strip()
    # fromisoformat alone would also take "20210830" and week dates such as "2021-W35".
    if _ISO_DATE.match(text) is None:
        return None
    try:
        if len(text) == 10:
            return datetime.date.fromisoformat(text).isoformat()
        return datetime.datetime.fromisoformat(text).date().isoformat()
    except ValueError:
        return None

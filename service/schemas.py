"""The wire contract: pydantic models for every request and response body.

Limits live here as Field constraints, so they show in the OpenAPI schema and every
violation is a 422 naming the field. Request models forbid unknown fields: a typo such
as "date_form" fails loudly instead of silently matching everything.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from retrieval.records import is_iso_date
from retrieval.search.options import DEFAULTS, Mode, Sort, option_help
from service.settings import K_CEILING

MAX_BATCH_QUERIES = 64
MAX_OFFSET = 1000
MAX_ARTICLES = 1000
MAX_ID_CHARS = 1000
# The service's bound on a query, which bounds a request's tokenising and BM25 work. The
# model reads 256 word pieces (~1,000 characters of news text) of a query anyway; the
# library and the CLI take any length (retrieval/search/options.py check_queries).
MAX_QUERY_CHARS = 2000
QUERY_TOO_LONG = (
    f"a query here is at most {MAX_QUERY_CHARS} characters: shorten it (the model reads "
    "only its first 256 word pieces, about 1,000 characters), or search with the library "
    "or `retrieval search`, which take a query of any length"
)
MAX_TEXT_CHARS = 1_000_000
# Metadata is stored and echoed whole with its article: bounded so that one article
# cannot carry megabytes of it into every GET /articles/{id}.
MAX_METADATA_BYTES = 64 * 1024
DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}$"

Query = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_QUERY_CHARS)
]
IsoDate = Annotated[str, Field(pattern=DATE_PATTERN, examples=["2021-08-30"])]
# Bounds that no real score or half-life comes near; they keep the numbers finite.
MAX_SCORE = 1e9
MAX_HALF_LIFE_DAYS = 1e6


def check_json_values(value: Any, where: str = "") -> None:
    """Rejects what JSON parsing lets through but nothing downstream can store or echo.

    Python's json module accepts NaN/Infinity and lone UTF-16 surrogates ("\\ud800");
    SQLite, the tokenizer and the JSON response encoder all fail on them later.

    Raises:
        ValueError: naming where the bad value is (ascii-escaped, so it can be echoed).
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(
                f"{where or 'a string'} holds a lone surrogate: send valid Unicode text"
            ) from None
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where or 'a number'} is {value}: only finite numbers are accepted")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_json_values(key, f"a key in {where or 'an object'}")
            check_json_values(item, f"{where}.{ascii(key)[1:-1]}".lstrip("."))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_json_values(item, f"{where}[{i}]")


class RequestModel(BaseModel):
    """Base of request bodies: unknown fields and unstorable JSON values are refused."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _clean_json(cls, data: Any) -> Any:
        check_json_values(data)
        return data


# -- search --------------------------------------------------------------------------------


class FiltersIn(RequestModel):
    """Restricts a search; a field left null matches everything."""

    article_ids: list[str] | None = Field(None, max_length=10_000)
    sources: list[str] | None = Field(None, max_length=1000)
    date_from: IsoDate | None = None
    date_to: IsoDate | None = None


class SearchOptionsIn(RequestModel):
    """What a search asks for besides the query text: `SearchOptions`, as JSON.

    Names, defaults and help come from `retrieval.search.options.SearchOptions`
    (tests/test_search_options.py holds them to it); the bounds are this service's.
    """

    k: int = Field(DEFAULTS.k, ge=1, le=K_CEILING,
                   description=option_help("k") + "; at most the server's max_k")
    mode: Mode = Field(DEFAULTS.mode, description=option_help("mode"))
    filters: FiltersIn | None = Field(None, description=option_help("filters"))
    max_per_article: int | None = Field(DEFAULTS.max_per_article, ge=1, le=K_CEILING,
                                        description=option_help("max_per_article"))
    offset: int = Field(DEFAULTS.offset, ge=0, le=MAX_OFFSET, description=option_help("offset"))
    highlight: bool = Field(DEFAULTS.highlight, description=option_help("highlight"))
    min_score: float | None = Field(DEFAULTS.min_score, ge=-MAX_SCORE, le=MAX_SCORE,
                                    description=option_help("min_score"))
    recency_half_life_days: float | None = Field(
        DEFAULTS.recency_half_life_days, gt=0, le=MAX_HALF_LIFE_DAYS,
        description=option_help("recency_half_life_days"),
    )
    now: IsoDate | None = Field(DEFAULTS.now, description=option_help("now"))
    sort: Sort = Field(DEFAULTS.sort, description=option_help("sort"))
    collapse: bool = Field(DEFAULTS.collapse, description=option_help("collapse"))

    @model_validator(mode="after")
    def _ranking(self) -> SearchOptionsIn:
        if self.now is not None and not is_iso_date(self.now):
            raise ValueError(f"now {self.now!r} is not a calendar date YYYY-MM-DD")
        if self.sort == "date" and self.min_score is None:
            raise ValueError("sort 'date' needs min_score: the hits scoring at least it are "
                             "ordered by date")
        return self


class SearchRequest(SearchOptionsIn):
    query: Query = Field(examples=["COVID-19 cooperation"])


class BatchSearchRequest(SearchOptionsIn):
    queries: list[Query] = Field(min_length=1, max_length=MAX_BATCH_QUERIES)


class SpanOut(BaseModel):
    """A character span [start, end) within a passage's text."""

    start: int
    end: int


class HitOut(BaseModel):
    passage_id: int
    article_id: str
    title: str
    date: str | None
    source: str | None
    url: str | None
    text: str
    score: float
    rank: int
    start: int = Field(description="passage start in the article text")
    end: int = Field(description="passage end in the article text")
    highlight: SpanOut | None = Field(
        None, description="best-matching sentence within `text`; only when asked for"
    )
    duplicates: int = Field(
        0, description="how many other articles of this hit's duplicate group it stands "
        "for (collapsed searches; else 0)",
    )
    duplicate_ids: list[str] = Field(
        default_factory=list, description="those articles' ids, oldest first",
    )


class SearchResponse(BaseModel):
    query: str
    mode: Mode
    k: int
    offset: int
    took_ms: float
    hits: list[HitOut]


class BatchSearchResponse(BaseModel):
    results: list[SearchResponse]


# -- passages and articles -----------------------------------------------------------------


class RelatedOut(BaseModel):
    article_id: str
    title: str
    date: str | None
    source: str | None
    url: str | None
    score: float = Field(
        description="cosine of the article's centroid and this one's closest passage"
    )


class RelatedResponse(BaseModel):
    article_id: str
    k: int
    related: list[RelatedOut]



class PassageOut(BaseModel):
    passage_id: int
    article_id: str
    ordinal: int
    text: str
    start: int
    end: int
    n_tokens: int
    title: str
    date: str | None
    source: str | None
    url: str | None


class PassageRef(BaseModel):
    passage_id: int
    ordinal: int
    start: int
    end: int


class ArticleOut(BaseModel):
    id: str
    title: str
    text: str
    date: str | None
    source: str | None
    url: str | None
    metadata: dict[str, Any]
    passages: list[PassageRef]


class ArticleIn(RequestModel):
    id: str = Field(min_length=1, max_length=MAX_ID_CHARS, pattern=r"\S")
    title: str = Field("", max_length=10_000)
    text: str = Field(
        "", max_length=MAX_TEXT_CHARS,
        description="the body; may be empty for a headline-only item, which is then "
        "indexed with its title as its text",
    )
    date: IsoDate | None = None
    source: str | None = Field(None, max_length=1000)
    url: str | None = Field(None, max_length=10_000)
    metadata: dict[str, Any] = Field(
        default_factory=dict, description=f"at most {MAX_METADATA_BYTES} bytes as JSON"
    )

    @field_validator("metadata")
    @classmethod
    def _small_metadata(cls, value: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
        if size > MAX_METADATA_BYTES:
            raise ValueError(
                f"metadata is {size} bytes as JSON, more than the {MAX_METADATA_BYTES} "
                "allowed per article: keep large data elsewhere and store a reference to it"
            )
        return value

    @model_validator(mode="after")
    def _real_date(self) -> ArticleIn:
        if self.date is not None and not is_iso_date(self.date):
            raise ValueError(f"date {self.date!r} is not a calendar date YYYY-MM-DD")
        if not self.text.strip() and not self.title.strip():
            raise ValueError("an article needs a text, or at least a title: both are empty")
        return self


class ArticlesIn(RequestModel):
    articles: list[ArticleIn] = Field(min_length=1, max_length=MAX_ARTICLES)

    @model_validator(mode="after")
    def _unique_ids(self) -> ArticlesIn:
        seen: set[str] = set()
        for article in self.articles:
            if article.id in seen:
                raise ValueError(f"article id {article.id!r} appears twice: send each once")
            seen.add(article.id)
        return self


class IngestOut(BaseModel):
    added: int
    updated: int
    unchanged: int
    passages_added: int
    passages_removed: int


class DeletedOut(BaseModel):
    article_id: str
    passages_removed: int


# -- operations ----------------------------------------------------------------------------


class StatusOut(BaseModel):
    status: Literal["ok", "loading"]


class StatsOut(BaseModel):
    articles: int
    passages: int
    vectors_in_store: int
    vectors_in_index: int
    in_agreement: bool = Field(description="index and store hold as many passages")
    model: str
    index: str = Field(description="the checkpoint's FAISS index")
    generation: int = Field(description="the store generation these numbers reflect")
    checkpoint_generation: int = Field(description="the generation of the index's checkpoint")
    delta: int = Field(description="passages added since the checkpoint (exact side index)")
    tombstones: int = Field(description="checkpoint passages deleted since")
    max_k: int
    batching: bool


class ErrorOut(BaseModel):
    """Every error body: `detail` says what went wrong and what to fix."""

    detail: str


class FieldErrorOut(BaseModel):
    loc: list[str | int] = Field(description="where in the request: body, field, index")
    msg: str
    type: str


class ValidationErrorOut(BaseModel):
    """A 422: `detail` sums up every problem; `errors` lists them one by one."""

    detail: str
    errors: list[FieldErrorOut] = Field(default_factory=list)

"""What a search asks for besides its query text: the one definition of the search options.

`SearchOptions` is the source every other surface is held to: `Retriever.search` and
`search_batch` take its fields as keyword arguments, the HTTP schema
(service/schemas.py) takes them as JSON fields with the same names, defaults and help,
the Python client as keyword arguments, and `retrieval search` as flags.
tests/test_search_options.py holds each of them to it. The one deliberate difference:
`retrieval search` prints 5 hits unless told otherwise (a terminal's worth), where every
other surface returns 10.

Standard library only, so the HTTP client imports it without numpy, FAISS or torch.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

from retrieval.errors import InputError
from retrieval.records import Filters
from retrieval.search.ranking import SORTS, check_recency, today_utc

Mode = Literal["dense", "lexical", "hybrid"]
MODES: tuple[str, ...] = get_args(Mode)
# Hybrid beats the better of dense and lexical on every labelled set measured
# (docs/evaluation.md), at the cost of one BM25 query and a fusion per search.
DEFAULT_MODE: Mode = "hybrid"
Sort = Literal["score", "date"]
MAX_K = 10_000
# Highlighting embeds every sentence of every hit it marks: only the first hits of each
# query are marked, so one request cannot ask for thousands of sentence embeddings.
HIGHLIGHT_MAX_HITS = 10


def described(default: Any, help: str) -> Any:
    """A field with its help text, which the HTTP schema and the CLI show as they are."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True, slots=True)
class SearchOptions:
    """Everything a search asks for besides its query text (each field's help says what)."""

    k: int = described(10, "hits wanted (after offset); fewer come back only when fewer match")
    mode: Mode = described(
        DEFAULT_MODE, "dense (cosine of embeddings), lexical (BM25) or hybrid (their fusion: "
        "the default, the best on every labelled set)")
    filters: Filters | None = described(
        None, "restrict to article ids, a date range or sources")
    max_per_article: int | None = described(None, "at most this many passages of one article")
    offset: int = described(0, "skip this many best hits (paging)")
    highlight: bool = described(
        False, f"mark the best-matching sentence of each of the first {HIGHLIGHT_MAX_HITS} "
        "hits (one model call over their sentences)")
    min_score: float | None = described(
        None, "drop hits scoring below it (after fusion and freshness), so that k counts at "
        "most and nothing is an answer. Scores are not probabilities: see docs/search.md")
    recency_half_life_days: float | None = described(
        None, "blend freshness into the score: an article this many days older than `now` "
        "keeps 0.75 of its score, a very old or undated one 0.5")
    now: str | None = described(
        None, "the reference date YYYY-MM-DD for freshness; default today (UTC)")
    sort: Sort = described(
        "score", "score: best first; date: newest first among the hits scoring at least "
        "min_score (which it needs), undated ones last")
    collapse: bool = described(
        True, "one hit per group of duplicate articles (exact and near copies, found at "
        "ingest), its best passage, with the group's other articles in `duplicate_ids`; k "
        "then counts groups. False: every passage on its own")

    @property
    def needs_vectors(self) -> bool:
        """Dense and hybrid search need the query vector, and so does highlighting."""
        return self.mode != "lexical" or self.highlight

    @property
    def reranks(self) -> bool:
        """Freshness and date order reorder candidates: they need a deeper pool."""
        return self.recency_half_life_days is not None or self.sort == "date"

    def reference_date(self) -> datetime.date:
        return datetime.date.fromisoformat(self.now) if self.now else today_utc()

    def check(self) -> None:
        """Refuses what no search can answer, with a message that says what to fix."""
        if not 1 <= self.k <= MAX_K:
            raise InputError(f"k must be between 1 and {MAX_K}, got {self.k}")
        if not 0 <= self.offset <= MAX_K:
            raise InputError(f"offset must be between 0 and {MAX_K}, got {self.offset}")
        if self.mode not in MODES:
            raise InputError(f"unknown mode {self.mode!r}: use one of {', '.join(MODES)}")
        if self.max_per_article is not None and self.max_per_article < 1:
            raise InputError(f"max_per_article must be at least 1, got {self.max_per_article}")
        self.check_ranking()

    def check_ranking(self) -> None:
        """Refuses re-ranking options that cannot be honoured."""
        min_score = self.min_score
        if min_score is not None and not (
            isinstance(min_score, int | float) and math.isfinite(min_score)
        ):
            raise InputError(f"min_score must be a finite number, got {min_score!r}")
        problem = check_recency(self.recency_half_life_days, self.now)
        if problem:
            raise InputError(problem)
        if self.sort not in SORTS:
            raise InputError(f"unknown sort {self.sort!r}: use one of {', '.join(SORTS)}")
        if self.sort == "date" and min_score is None:
            raise InputError(
                "sort='date' needs min_score: it orders by date the hits scoring at least "
                "min_score, and without one every passage would qualify"
            )


DEFAULTS = SearchOptions()
OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in fields(SearchOptions))


def option_help(name: str) -> str:
    """The help text of one option, as the HTTP schema and the CLI show it."""
    return str(SearchOptions.__dataclass_fields__[name].metadata["help"])


def check_queries(queries: Sequence[str]) -> None:
    """Refuses a batch that is not a list of non-empty strings.

    A query of any length is taken (a labelled set's longest may be a paragraph): the
    model reads its first word pieces, as many as it was trained on (256 for the default
    model, about 1,000 characters of news text), and lexical search its first 256
    distinct words (`retrieval.collection.lexical.MAX_QUERY_WORDS`); the rest is not
    read. Only the HTTP service bounds a query's length (service/schemas.py).
    """
    if isinstance(queries, str):
        raise InputError("search_batch takes a list of queries, not one string: use search()")
    for query in queries:
        if not isinstance(query, str) or not query.strip():
            raise InputError("query is empty: give a few words to search for")

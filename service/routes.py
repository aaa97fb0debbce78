"""The HTTP endpoints. Each handler is a few lines: validate (pydantic), call the library,
shape the answer. Library errors are mapped to status codes once, in app.py.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from retrieval.errors import InputError
from retrieval.records import Article, Filters, Hit, Passage
from retrieval.search.options import HIGHLIGHT_MAX_HITS, SearchOptions
from service import schemas
from service.deps import Service, ServiceDep, exclusive_write, require_api_key, require_json
from service.settings import K_CEILING, Settings

STATIC = Path(__file__).resolve().parent / "static"
PLACEHOLDER = "<!doctype html><title>retrieval</title><p>No search page yet: see /docs."
MAX_PASSAGE_ID = 2**63 - 1  # SQLite integers are signed 64-bit

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": schemas.ErrorOut} for code in (400, 401, 404, 409, 413, 415, 503)
}
ERRORS[422] = {"model": schemas.ValidationErrorOut}

router = APIRouter(responses=ERRORS)
JsonBody = [Depends(require_json)]
Writes = [Depends(require_json), Depends(require_api_key)]


# -- search --------------------------------------------------------------------------------


@router.post(
    "/search", response_model=schemas.SearchResponse, dependencies=JsonBody, tags=["search"]
)
async def search(body: schemas.SearchRequest, service: ServiceDep) -> schemas.SearchResponse:
    """The k passages closest in meaning (or in words, or both) to the query."""
    started = time.perf_counter()
    options = search_options(body, service.settings, queries=1)
    [hits] = await service.batcher.search([body.query], options)
    return search_response(body.query, body, hits, started)


@router.post(
    "/search/batch", response_model=schemas.BatchSearchResponse, dependencies=JsonBody,
    tags=["search"],
)
async def search_batch(
    body: schemas.BatchSearchRequest, service: ServiceDep
) -> schemas.BatchSearchResponse:
    """Several queries under the same options, embedded together."""
    started = time.perf_counter()
    options = search_options(body, service.settings, queries=len(body.queries))
    results = await service.batcher.search(body.queries, options)
    return schemas.BatchSearchResponse(results=[
        search_response(q, body, r, started) for q, r in zip(body.queries, results, strict=True)
    ])


# -- passages and articles -----------------------------------------------------------------


@router.get("/passages/{passage_id}", response_model=schemas.PassageOut, tags=["collection"])
async def get_passage(
    passage_id: Annotated[int, PathParam(ge=0, le=MAX_PASSAGE_ID)], service: ServiceDep
) -> schemas.PassageOut:
    """One passage with its article's title, date, source and link."""
    passage, article = await service.run_blocking(passage_with_article, service, passage_id)
    return schemas.PassageOut(
        passage_id=passage.id, article_id=passage.article_id, ordinal=passage.ordinal,
        text=passage.text, start=passage.start, end=passage.end, n_tokens=passage.n_tokens,
        title=article.title, date=article.date, source=article.source, url=article.url,
    )


# Before GET /articles/{article_id:path}, which would take "x/related" as an id.
@router.get(
    "/articles/{article_id:path}/related", response_model=schemas.RelatedResponse,
    tags=["collection"],
)
async def related_articles(
    article_id: str, service: ServiceDep, k: Annotated[int, Query(ge=1, le=K_CEILING)] = 10
) -> schemas.RelatedResponse:
    """The k articles closest in meaning to this one (itself excluded), closest first."""
    if k > service.settings.max_k:
        raise InputError(f"k must be at most {service.settings.max_k} on this server, got {k}")
    related = await service.run_blocking(service.retriever.related, article_id, k)
    return schemas.RelatedResponse(article_id=article_id, k=k, related=[
        schemas.RelatedOut.model_validate(r, from_attributes=True) for r in related
    ])


@router.get("/articles/{article_id:path}", response_model=schemas.ArticleOut, tags=["collection"])
async def get_article(article_id: str, service: ServiceDep) -> schemas.ArticleOut:
    """A whole article and where its passages lie in its text."""
    article, passages = await service.run_blocking(article_with_passages, service, article_id)
    refs = [
        schemas.PassageRef(passage_id=p.id, ordinal=p.ordinal, start=p.start, end=p.end)
        for p in passages
    ]
    return schemas.ArticleOut(**article_fields(article), passages=refs)


@router.post(
    "/articles", response_model=schemas.IngestOut, dependencies=Writes, tags=["collection"]
)
async def add_articles(body: schemas.ArticlesIn, service: ServiceDep) -> schemas.IngestOut:
    """Adds new articles, replaces changed ones, skips unchanged ones (same path as the CLI).

    The ingest runs in a thread, so searches keep being answered; each article becomes
    visible whole, never half-chunked.
    """
    articles = [Article(**a.model_dump()) for a in body.articles]
    async with exclusive_write(service):
        report = await service.run_blocking(
            service.collection.add_articles, articles,
            lock_timeout=service.settings.lock_timeout_s,
        )
    return schemas.IngestOut.model_validate(report, from_attributes=True)


@router.delete(
    "/articles/{article_id:path}", response_model=schemas.DeletedOut,
    dependencies=[Depends(require_api_key)], tags=["collection"],
)
async def delete_article(article_id: str, service: ServiceDep) -> schemas.DeletedOut:
    """Deletes an article and its passages."""
    async with exclusive_write(service):
        removed = await service.run_blocking(
            service.collection.delete_article, article_id,
            lock_timeout=service.settings.lock_timeout_s,
        )
    return schemas.DeletedOut(article_id=article_id, passages_removed=removed)


# -- operations ----------------------------------------------------------------------------


@router.get("/healthz", response_model=schemas.StatusOut, tags=["operations"])
async def healthz() -> schemas.StatusOut:
    """The process is alive (even while the collection loads)."""
    return schemas.StatusOut(status="ok")


@router.get("/readyz", response_model=schemas.StatusOut, tags=["operations"])
async def readyz(service: ServiceDep) -> schemas.StatusOut:
    """The collection is loaded and searches are answered (503 before)."""
    return schemas.StatusOut(status="ok")


@router.get("/stats", response_model=schemas.StatsOut, tags=["operations"])
async def stats(service: ServiceDep) -> schemas.StatsOut:
    """What the collection holds, as of one generation; cheap at any size (no scans).

    `in_agreement` compares counts; `retrieval info` compares store and index id by id.
    """
    numbers = await service.run_blocking(service.collection.stats)
    return schemas.StatsOut(
        articles=numbers["articles"], passages=numbers["passages"],
        vectors_in_store=numbers["passages"], vectors_in_index=numbers["vectors_in_index"],
        in_agreement=numbers["in_agreement"],
        model=service.collection.manifest["embedder"]["model"],
        index=numbers["index"], generation=numbers["generation"],
        checkpoint_generation=numbers["checkpoint_generation"], delta=numbers["delta"],
        tombstones=numbers["tombstones"], max_k=service.settings.max_k,
        batching=service.settings.batching,
    )


@router.get("/metrics", tags=["operations"], response_class=Response)
def metrics(request: Request) -> Response:
    """Prometheus metrics: requests and latency by route and status, batch sizes, index size."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/", include_in_schema=False, response_model=None)
def page() -> Response:
    """The search page (service/static/index.html), or a placeholder until it exists."""
    index = STATIC / "index.html"
    return FileResponse(index) if index.is_file() else HTMLResponse(PLACEHOLDER)


# -- helpers -------------------------------------------------------------------------------


def passage_with_article(service: Service, passage_id: int) -> tuple[Passage, Article]:
    """A passage and its article, as of the same write (on a store thread)."""
    collection = service.collection
    with collection.snapshot():
        passage = collection.passage(passage_id)
        return passage, collection.article(passage.article_id)


def article_with_passages(service: Service, article_id: str) -> tuple[Article, list[Passage]]:
    """An article and its passages, as of the same write (on a store thread)."""
    collection = service.collection
    with collection.snapshot():
        return collection.article(article_id), collection.passages_of(article_id)


def search_options(
    body: schemas.SearchOptionsIn, settings: Settings, *, queries: int
) -> SearchOptions:
    """The library's options from a request body, within this server's limits.

    Those are max_k and, when highlighting, max_highlight_hits over all `queries`.
    """
    if body.k > settings.max_k:
        raise InputError(f"k must be at most {settings.max_k} on this server, got {body.k}")
    if body.highlight:
        check_highlight_budget(queries, body.k, settings.max_highlight_hits)
    return SearchOptions(
        k=body.k, mode=body.mode, filters=to_filters(body.filters),
        max_per_article=body.max_per_article, offset=body.offset, highlight=body.highlight,
        min_score=body.min_score, recency_half_life_days=body.recency_half_life_days,
        now=body.now, sort=body.sort, collapse=body.collapse,
    )


def check_highlight_budget(queries: int, k: int, budget: int) -> None:
    """Refuses a request whose highlighting would embed too many sentences.

    Highlighting embeds every sentence of each marked hit, and only the first
    HIGHLIGHT_MAX_HITS hits of each query are marked: that product is the request's cost.
    """
    marked = queries * min(k, HIGHLIGHT_MAX_HITS)
    if marked > budget:
        raise InputError(
            f"highlight would mark {marked} hits ({queries} queries x {min(k, HIGHLIGHT_MAX_HITS)}"
            f"), more than the {budget} one request may ask for on this server: send fewer "
            "queries per request, a smaller k, or highlight=false"
        )


def to_filters(filters: schemas.FiltersIn | None) -> Filters | None:
    """Library Filters (which check the dates are real and in order)."""
    if filters is None:
        return None
    return Filters(
        article_ids=tuple(filters.article_ids) if filters.article_ids is not None else None,
        sources=tuple(filters.sources) if filters.sources is not None else None,
        date_from=filters.date_from, date_to=filters.date_to,
    )


def search_response(
    query: str, body: schemas.SearchOptionsIn, hits: list[Hit], started: float
) -> schemas.SearchResponse:
    return schemas.SearchResponse(
        query=query, mode=body.mode, k=body.k, offset=body.offset,
        took_ms=(time.perf_counter() - started) * 1000, hits=[hit_out(hit) for hit in hits],
    )


def hit_out(hit: Hit) -> schemas.HitOut:
    span = hit.highlight
    return schemas.HitOut(
        **{name: getattr(hit, name) for name in HIT_FIELDS},
        highlight=schemas.SpanOut(start=span.start, end=span.end) if span else None,
        duplicate_ids=list(hit.duplicate_ids),
    )


HIT_FIELDS = (
    "passage_id", "article_id", "title", "date", "source", "url", "text", "score", "rank",
    "start", "end", "duplicates",
)


def article_fields(article: Article) -> dict[str, Any]:
    return {
        "id": article.id, "title": article.title, "text": article.text, "date": article.date,
        "source": article.source, "url": article.url, "metadata": article.metadata,
    }

"""`create_app(settings)`: the FastAPI application, its lifespan and its error mapping.

The lifespan opens the collection (never at import: building an app costs nothing until
it starts) and starts the micro-batcher. Library errors become status codes in one
table here; no route catches them itself.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from retrieval.collection.collection import Collection
from retrieval.errors import (
    CollectionError,
    CollectionLockedError,
    EmptyIndexError,
    InputError,
    NotFoundError,
    RetrievalError,
)
from retrieval.search.retriever import Retriever
from service.batching import Batcher, ServiceBusyError, ServiceStoppingError
from service.deps import RETRY_AFTER_S, AnyCollection, Service
from service.limits import BodyLimitMiddleware
from service.metrics import Metrics, MetricsMiddleware
from service.routes import STATIC, router
from service.schemas import QUERY_TOO_LONG
from service.settings import QUERY_WARM_UP_TOKENS, Settings

logger = logging.getLogger(__name__)

# Library errors by status code, most specific first (the first match in the MRO wins).
# EmptyIndexError never reaches here from a search (an empty collection answers with no
# hits, see batching.py); 503 is its meaning anywhere else: nothing to serve yet.
ERROR_STATUS: dict[type[Exception], int] = {
    InputError: 422,
    NotFoundError: 404,
    CollectionLockedError: 503,
    ServiceBusyError: 503,
    ServiceStoppingError: 503,
    EmptyIndexError: 503,
    CollectionError: 503,
    RetrievalError: 500,
}
RETRY_LATER = {503}
# A full search queue or a missed deadline clears within a second (the queue drains, the
# worker drops what timed out); a load or another process's write takes longer.
RETRY_AFTER_BUSY_S = "1"


# Opens what the service serves, ready to answer: (settings, warm-up tokens) -> collection.
OpenCollection = Callable[[Settings, int], AnyCollection]


def create_app(
    settings: Settings | None = None, *, open_collection: OpenCollection | None = None
) -> FastAPI:
    """Builds the application; the collection is opened when it starts (its lifespan).

    Args:
        settings: configuration; None reads it from the environment (RETRIEVAL_*).
        open_collection: opens the collection in the lifespan; by default the one
            collection at `settings.collection`. A sharded collection comes this way
            (service/ray_serve.py, or `sharded.open_local`): the same app, every
            endpoint, over N shards.
    """
    settings = settings or Settings()
    app = FastAPI(
        title="retrieval",
        summary="Semantic passage search over news articles.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.open_collection = open_collection or open_settings_collection
    app.state.metrics = Metrics()
    app.state.service = None
    app.include_router(router)
    # check_dir=False: the page's assets may not exist yet; /static/x is then a 404.
    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
    # Added first, so it runs inside the metrics middleware and its 413s are counted.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    add_error_handlers(app)
    return app


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Opens the collection and starts the batcher; closes both on shutdown."""
    settings: Settings = app.state.settings
    collection = await run_in_threadpool(app.state.open_collection, settings,
                                         warm_up_tokens(settings))
    retriever = Retriever(collection)
    batcher = Batcher(
        retriever,
        window_s=settings.batch_window_ms / 1000,
        max_batch=settings.max_batch if settings.batching else 1,
        max_queued=settings.max_queued,
        timeout_s=settings.search_timeout_s,
        on_batch=app.state.metrics.batch_size.observe,
        search_threads=settings.search_threads,
    )
    batcher.start()
    app.state.metrics.watch_index(lambda: len(collection.index))
    service = Service(settings, collection, retriever, batcher)
    app.state.service = service
    try:
        yield
    finally:
        app.state.service = None  # /readyz says 503 from here on
        await batcher.stop()
        await run_in_threadpool(service.store_threads.shutdown)  # a write in progress ends first
        await run_in_threadpool(collection.close)


def warm_up_tokens(settings: Settings) -> int:
    """The longest text (in word pieces) the model warms up for; 0 for none."""
    return {"none": 0, "queries": QUERY_WARM_UP_TOKENS, "all": 1 << 30}[settings.warm_up]


def open_settings_collection(settings: Settings, warm_up_tokens: int = 0) -> Collection:
    return open_collection(settings.collection, warm_up_tokens)


def open_collection(path: Path, warm_up_tokens: int = 0) -> Collection:
    """Opens the collection ready to answer: model loaded (and warmed up for texts of up
    to `warm_up_tokens` word pieces), index caught up to the store."""
    collection = Collection.open(path, create=False)
    try:
        embedder = collection.embedder  # loads the model now, not on the first search
        if warm_up_tokens:
            embedder.warm_up(warm_up_tokens)
        collection.refresh()
        collection.lexical.refresh()  # builds the BM25 postings now, not on the first search
    except BaseException:
        collection.close()
        raise
    return collection


# -- errors --------------------------------------------------------------------------------


def add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RetrievalError, retrieval_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected_error)


def status_for(error: Exception) -> int:
    for cls in type(error).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return 500


async def retrieval_error(request: Request, error: Exception) -> JSONResponse:
    """A library error as {"detail": message}, with the status its type maps to."""
    status = status_for(error)
    headers = {"Retry-After": retry_after(error)} if status in RETRY_LATER else None
    if status >= 500:
        logger.error("%s %s failed: %s", request.method, request.url.path, error)
    return JSONResponse({"detail": str(error)}, status_code=status, headers=headers)


def retry_after(error: Exception) -> str:
    return RETRY_AFTER_BUSY_S if isinstance(error, ServiceBusyError) else RETRY_AFTER_S


async def validation_error(request: Request, error: Exception) -> JSONResponse:
    """A 422 whose detail is one readable line per problem, never echoing the input.

    The input may be a megabyte long, or hold what cannot be encoded back.
    """
    assert isinstance(error, RequestValidationError)
    errors = [field_error(e) for e in error.errors()]
    detail = "; ".join(f"{where(e['loc'])}: {e['msg']}" for e in errors)
    return JSONResponse({"detail": detail, "errors": errors}, status_code=422)


async def unexpected_error(request: Request, error: Exception) -> JSONResponse:
    """A bug, not a bad request: logged with its traceback, answered without one."""
    logger.exception("%s %s failed", request.method, request.url.path, exc_info=error)
    return JSONResponse({"detail": f"internal error ({type(error).__name__})"}, status_code=500)


def field_error(error: Any) -> dict[str, Any]:
    loc = [p if isinstance(p, int) else str(p) for p in error.get("loc", ())]
    if error.get("type") == "json_invalid":
        reason = error.get("ctx", {}).get("error", "")
        where_ = f" at character {loc[1]}" if len(loc) > 1 else ""
        return {"loc": ["body"], "msg": f"the body is not valid JSON: {reason}{where_}",
                "type": "json_invalid"}
    msg = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if error.get("type") == "string_too_long" and {"query", "queries"} & set(loc):
        msg = QUERY_TOO_LONG  # what to do, not just the limit
    return {"loc": loc, "msg": msg, "type": str(error.get("type", "value_error"))}


def where(loc: list[Any]) -> str:
    """`body.filters.date_from` reads better as `filters.date_from`."""
    parts = [str(p) for p in loc]
    if len(parts) > 1 and parts[0] in ("body", "path", "query", "header"):
        parts = parts[1:]
    return ".".join(parts) or "body"

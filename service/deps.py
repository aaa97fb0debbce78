"""What route handlers depend on: the loaded service, and the guards on requests.

The dependencies are `async def` although none awaits: FastAPI runs a plain `def`
dependency in a worker thread, a hop per request that a search does not need.

Handlers never reach into `app.state` themselves; they declare `ServiceDep` and get the
collection, retriever and batcher that the lifespan loaded (or a 503 while loading).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.message import Message
from functools import partial
from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from retrieval.cluster.router import ShardedCollection
from retrieval.collection.collection import Collection
from retrieval.errors import CollectionLockedError
from retrieval.search.retriever import Retriever
from service.batching import Batcher
from service.settings import Settings

RETRY_AFTER_S = "5"
# Threads for the store's blocking work outside searches (writes, article and passage
# reads, related articles, stats). A bounded pool of its own, not the web server's
# (anyio's, up to 40 threads that come and go): each thread holds one SQLite connection
# with its page cache, so the service keeps a fixed few instead of one per thread that
# ever wrote (22 connections and 86 MB more after 2 minutes of `retrieval bench live`).
STORE_THREADS = 4

T = TypeVar("T")
# What the service serves: one collection, or the router over a sharded one.
AnyCollection = Collection | ShardedCollection


@dataclass(slots=True)
class Service:
    """Everything the lifespan loads, kept on `app.state.service`."""

    settings: Settings
    collection: AnyCollection
    retriever: Retriever
    batcher: Batcher
    # Writes from this process queue here (for at most lock_timeout_s, see
    # exclusive_write) rather than on the collection's file lock, which still guards
    # against other processes.
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    store_threads: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(
        max_workers=STORE_THREADS, thread_name_prefix="store"))

    async def run_blocking(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Runs blocking store work on the service's store threads, not the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.store_threads, partial(function, *args, **kwargs))


@asynccontextmanager
async def exclusive_write(service: Service) -> AsyncIterator[None]:
    """Holds the service's write lock, waiting at most `lock_timeout_s` for it.

    Raises:
        CollectionLockedError: another write of this process held it all that time
            (503 with Retry-After, as when another process writes).
    """
    timeout = service.settings.lock_timeout_s
    try:
        # asyncio.timeout, not wait_for: Lock.acquire undoes itself when cancelled.
        async with asyncio.timeout(timeout):
            await service.write_lock.acquire()
    except TimeoutError:
        raise CollectionLockedError(
            f"another write to this collection was still running after {timeout:g} s: "
            "try again in a moment"
        ) from None
    try:
        yield
    finally:
        service.write_lock.release()


async def get_service(request: Request) -> Service:
    """The loaded service; 503 (with Retry-After) while it is loading or shutting down."""
    service: Service | None = getattr(request.app.state, "service", None)
    if service is None:
        raise HTTPException(
            503, "the collection is not loaded yet: retry shortly",
            headers={"Retry-After": RETRY_AFTER_S},
        )
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


async def get_retriever(service: ServiceDep) -> Retriever:
    return service.retriever


RetrieverDep = Annotated[Retriever, Depends(get_retriever)]

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the API key")
_bearer = HTTPBearer(auto_error=False, description="the API key as a bearer token")


async def require_api_key(
    request: Request,
    api_key: Annotated[str | None, Security(_api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> None:
    """Refuses a write (401) unless it carries the configured API key, when one is set."""
    settings: Settings = request.app.state.settings
    expected = settings.api_key.get_secret_value() if settings.api_key else ""
    if not expected:
        return
    given = api_key or (bearer.credentials if bearer else "")
    # compare_digest: the time taken must not tell how much of a guess was right.
    if not secrets.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            401, "this endpoint needs the API key: send it as X-API-Key or Authorization: Bearer",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def require_json(request: Request) -> None:
    """Refuses a body declared as anything but JSON (415); an undeclared body is read as JSON."""
    declared = request.headers.get("content-type")
    if not declared:
        return
    message = Message()
    message["content-type"] = declared
    subtype = message.get_content_subtype()
    if message.get_content_maintype() != "application" or not (
        subtype == "json" or subtype.endswith("+json")
    ):
        raise HTTPException(
            415, "send the body as JSON with the header content-type: application/json"
        )

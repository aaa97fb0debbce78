"""Micro-batching: concurrent searches share one model call.

Each request puts a job (its queries, its options, a future) on an asyncio queue. One
worker task takes the first job, then gathers more for up to `window_s` or until
`max_batch` queries are waiting, and hands the whole batch to a single worker thread.
That thread embeds every query of the batch in ONE `embed_queries` call, then answers
each job with `Retriever.search_embedded` under that job's own options.

Why one thread: on two cores the model and FAISS compete for the same cores; a second
thread running the model only adds contention (see PERF-NOTES "The service"). Why a
window: a model call on 32 queries costs far less than 32 calls on one, and a few
milliseconds of waiting is small next to a single query's embedding time.

With `max_batch=1` every request gets its own model call: the same code path, for a
fair comparison (the load benchmark runs both).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from retrieval.errors import EmptyIndexError, RetrievalError
from retrieval.records import Hit
from retrieval.search import Retriever, SearchOptions

logger = logging.getLogger(__name__)


class ServiceStoppingError(RetrievalError):
    """The service shut down before this search was answered."""


@dataclass(slots=True)
class Job:
    queries: list[str]
    options: SearchOptions
    future: asyncio.Future[list[list[Hit]]] = field(repr=False)


Outcome = list[list[Hit]] | BaseException


class Batcher:
    """Answers searches through one worker thread, embedding concurrent queries together.

    Args:
        retriever: searches the collection; its embedder embeds the queries.
        window_s: how long to wait for more queries after the first (0: take only
            those already waiting).
        max_batch: the most queries per model call; 1 means one call per request.
        on_batch: called with each model call's number of queries (for metrics).
    """

    def __init__(
        self,
        retriever: Retriever,
        *,
        window_s: float = 0.002,
        max_batch: int = 32,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.retriever = retriever
        self.window_s = window_s
        self.max_batch = max_batch
        self.on_batch = on_batch
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="search")
        self._task: asyncio.Task[None] | None = None
        self._last_batch_jobs = 1

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Starts the worker task on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def stop(self) -> None:
        """Stops taking work, fails what is still queued, and lets the thread finish."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while not self._queue.empty():
            _settle(self._queue.get_nowait(), ServiceStoppingError("the service is shutting down"))
        self._executor.shutdown(wait=True)

    # -- the public call -----------------------------------------------------------------

    async def search(self, queries: Sequence[str], options: SearchOptions) -> list[list[Hit]]:
        """Searches each query under `options`; returns one result per query, in order.

        Raises:
            InputError: an argument the library refuses (k, offset, mode, query).
            ServiceStoppingError: the service stopped first.
        """
        future: asyncio.Future[list[list[Hit]]] = asyncio.get_running_loop().create_future()
        await self._queue.put(Job(list(queries), options, future))
        return await future

    # -- the worker ----------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._collect()
            try:
                outcomes = await loop.run_in_executor(self._executor, self._answer_all, jobs)
            except BaseException as error:  # cancelled mid-batch: nobody may hang
                for job in jobs:
                    _settle(job, ServiceStoppingError(f"search interrupted: {error!r}"))
                raise
            for job, outcome in zip(jobs, outcomes, strict=True):
                _settle(job, outcome)

    async def _collect(self) -> list[Job]:
        """The next batch: the first job, then more until max_batch queries or the window ends.

        The window is only waited when the last batch held several jobs: a lone client
        (the last batch was a single job) would pay it on every request for nothing, while
        under concurrent load jobs keep arriving within it.
        """
        loop = asyncio.get_running_loop()
        jobs = [await self._queue.get()]
        window = self.window_s if self._last_batch_jobs > 1 else 0.0
        size, deadline = len(jobs[0].queries), loop.time() + window
        while size < self.max_batch:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            jobs.append(job)
            size += len(job.queries)
        self._last_batch_jobs = len(jobs)
        return jobs

    # -- on the search thread ------------------------------------------------------------

    def _answer_all(self, jobs: list[Job]) -> list[Outcome]:
        """Embeds the batch's queries in one call, then answers job by job."""
        try:
            vectors = self._embed(jobs)
        except Exception:
            # One odd query must not fail its neighbours: embed job by job instead.
            logger.exception("batched embedding failed; embedding job by job")
            return [self._answer_alone(job) for job in jobs]
        return [self._answer(job, vectors.get(i)) for i, job in enumerate(jobs)]

    def _embed(self, jobs: Sequence[Job]) -> dict[int, np.ndarray]:
        """Query vectors per job index, for the jobs that need them, from one model call."""
        wanted = [i for i, job in enumerate(jobs) if job.options.needs_vectors]
        texts = [q for i in wanted for q in jobs[i].queries]
        if not texts:
            return {}
        if self.on_batch:
            self.on_batch(len(texts))
        vectors = self.retriever.embed_queries(texts)
        out, row = {}, 0
        for i in wanted:
            n = len(jobs[i].queries)
            out[i], row = vectors[row : row + n], row + n
        return out

    def _answer_alone(self, job: Job) -> Outcome:
        try:
            vectors = self._embed([job]).get(0)
        except Exception as error:
            return error
        return self._answer(job, vectors)

    def _answer(self, job: Job, vectors: np.ndarray | None) -> Outcome:
        options = job.options
        try:
            hits = self._search(job.queries, vectors, options)
            if not options.highlight:
                return hits
            assert vectors is not None  # needs_vectors holds for highlighting
            return [
                self.retriever.highlight(q, h, v)
                for q, h, v in zip(job.queries, hits, vectors, strict=True)
            ]
        except Exception as error:  # delivered to the request that caused it
            return error

    def _search(
        self, queries: list[str], vectors: np.ndarray | None, options: SearchOptions
    ) -> list[list[Hit]]:
        try:
            return self.retriever.search_embedded(queries, vectors, options)
        except EmptyIndexError:
            # An empty collection is a state, not a fault: it matches nothing, like a
            # filter that matches nothing (200, no hits), and recovers with the next POST.
            return [[] for _ in queries]


def _settle(job: Job, outcome: Outcome) -> None:
    """Hands a job its result or error, unless its request already gave up."""
    if job.future.done():
        return
    if isinstance(outcome, BaseException):
        job.future.set_exception(outcome)
    else:
        job.future.set_result(outcome)

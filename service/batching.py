"""Micro-batching: concurrent searches share one model call.

Each request puts a job (its queries, its options, a future) on an asyncio queue. One
worker task takes the first job, then gathers more for up to `window_s` or until
`max_batch` queries are waiting, and hands the whole batch to a single worker thread.
That thread embeds every query of the batch in ONE `embed_queries` call, then answers
each job with `Retriever.search_embedded` under that job's own options.

Why one thread: on two cores the model and FAISS compete for the same cores; a second
thread running the model only adds contention (measured: docs/performance.md, "Where
the time goes"). A sharded collection on Ray is different: a search there mostly waits
for its shards' answers. With `search_threads` > 1 the model thread only embeds, and each
job's search runs on a pool of that many threads while the next batch is collected and
embedded: the rounds of concurrent searches are then in flight together, instead of each
request's round trip queueing behind the others'. Why a
window: a model call on 32 queries costs far less than 32 calls on one, and a few
milliseconds of waiting is small next to a single query's embedding time.

With `max_batch=1` every request gets its own model call: the same code path, for a
fair comparison (the load benchmark runs both).

Bounds, so that no request can stall the others or hang: at most `max_queued` queries
wait (a search beyond that is refused at once, QueueFullError); every search has a
deadline (`timeout_s`, then SearchTimeoutError), and a job whose request has gone (timed
out, disconnected) is dropped before its queries are embedded. Highlighting, which embeds
every sentence of the hits it marks, runs on a thread of its own after the search, so a
highlight-heavy request never holds the search thread that plain searches wait on.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from retrieval.errors import EmptyIndexError, RetrievalError
from retrieval.records import Hit
from retrieval.search.options import SearchOptions
from retrieval.search.retriever import Retriever

logger = logging.getLogger(__name__)


class ServiceStoppingError(RetrievalError):
    """The service shut down before this search was answered."""


class ServiceBusyError(RetrievalError):
    """The service has more searches than it can answer now; retry in a second (503).

    Raised as QueueFullError or SearchTimeoutError.
    """


class QueueFullError(ServiceBusyError):
    """`max_queued` queries were already waiting: the search was refused, not queued."""


class SearchTimeoutError(ServiceBusyError):
    """The search was not answered within its deadline; it is not run if not started."""


@dataclass(slots=True)
class Job:
    queries: list[str]
    options: SearchOptions
    future: asyncio.Future[list[list[Hit]]] = field(repr=False)
    # time.monotonic() after which nobody waits for the answer; monotonic rather than
    # loop.time() because the worker threads compare it too.
    deadline: float = math.inf

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline


Outcome = list[list[Hit]] | BaseException
# A job's outcome, and its query vectors when it has any (highlighting reuses them).
Answer = tuple[Outcome, np.ndarray | None]


class Batcher:
    """Answers searches through one worker thread, embedding concurrent queries together.

    Args:
        retriever: searches the collection; its embedder embeds the queries.
        window_s: how long to wait for more queries after the first (0: take only
            those already waiting).
        max_batch: the most queries per model call; 1 means one call per request.
        max_queued: the most queries waiting; a search that would queue more is
            refused with QueueFullError (one is always accepted by an empty queue).
        timeout_s: each search's deadline, from the moment it is asked.
        on_batch: called with each model call's number of queries (for metrics).
        search_threads: searches run at once (see the module docstring); 1 answers
            them on the model's thread, one after another.
    """

    def __init__(
        self,
        retriever: Retriever,
        *,
        window_s: float = 0.002,
        max_batch: int = 32,
        max_queued: int = 256,
        timeout_s: float = 10.0,
        on_batch: Callable[[int], None] | None = None,
        search_threads: int = 1,
    ) -> None:
        self.retriever = retriever
        self.window_s = window_s
        self.max_batch = max_batch
        self.max_queued = max_queued
        self.timeout_s = timeout_s
        self.on_batch = on_batch
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._waiting = 0  # queries in self._queue
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="search")
        self._highlighter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="highlight")
        self._searchers = (
            ThreadPoolExecutor(max_workers=search_threads, thread_name_prefix="searches")
            if search_threads > 1 else None
        )
        # Highlights and pooled searches: tasks that outlive a batch, ended by stop().
        self._background: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._last_batch_jobs = 1

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Starts the worker task on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def stop(self) -> None:
        """Stops taking work, fails what is still queued, and lets the threads finish."""
        tasks = [*self._background, *([self._task] if self._task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        while not self._queue.empty():
            _settle(self._take(self._queue.get_nowait()),
                    ServiceStoppingError("the service is shutting down"))
        self._executor.shutdown(wait=True)
        self._highlighter.shutdown(wait=True)
        if self._searchers is not None:
            self._searchers.shutdown(wait=True)

    @property
    def waiting(self) -> int:
        """Queries queued and not yet taken into a batch."""
        return self._waiting

    # -- the public call -----------------------------------------------------------------

    async def search(self, queries: Sequence[str], options: SearchOptions) -> list[list[Hit]]:
        """Searches each query under `options`; returns one result per query, in order.

        Raises:
            InputError: an argument the library refuses (k, offset, mode, query).
            QueueFullError: too many queries are already waiting.
            SearchTimeoutError: not answered within `timeout_s`.
            ServiceStoppingError: the service stopped first.
        """
        future: asyncio.Future[list[list[Hit]]] = asyncio.get_running_loop().create_future()
        job = Job(list(queries), options, future, time.monotonic() + self.timeout_s)
        self._enqueue(job)
        try:
            done, _ = await asyncio.wait([future], timeout=self.timeout_s)
        finally:
            # A no-op once answered. Otherwise (timed out, or the client went away) the
            # worker sees a cancelled future and drops the job instead of running it.
            future.cancel()
        if not done:
            raise self._timed_out()
        return future.result()

    def _enqueue(self, job: Job) -> None:
        waiting, n = self._waiting, len(job.queries)
        if waiting and waiting + n > self.max_queued:
            raise QueueFullError(
                f"the service is overloaded: {waiting} queries are already waiting (at "
                f"most {self.max_queued}): retry in a second, or send fewer queries at once"
            )
        self._waiting += n
        self._queue.put_nowait(job)

    def _take(self, job: Job) -> Job:
        self._waiting -= len(job.queries)
        return job

    def _timed_out(self) -> SearchTimeoutError:
        return SearchTimeoutError(
            f"the service is overloaded: the search was not answered within "
            f"{self.timeout_s:g} s: retry in a second"
        )

    # -- the worker ----------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = self._live(await self._collect())
            if not jobs:
                continue
            if self._searchers is not None:
                await self._embed_then_search(jobs)
                continue
            try:
                answers = await loop.run_in_executor(self._executor, self._answer_all, jobs)
            except BaseException as error:  # cancelled mid-batch: nobody may hang
                for job in jobs:
                    _settle(job, ServiceStoppingError(f"search interrupted: {error!r}"))
                raise
            for job, (outcome, vectors) in zip(jobs, answers, strict=True):
                self._deliver(job, outcome, vectors)

    async def _embed_then_search(self, jobs: list[Job]) -> None:
        """Embeds the batch on the model's thread, then starts each job's search on the
        search pool without waiting for it: the next batch is collected meanwhile."""
        loop = asyncio.get_running_loop()
        try:
            vectors = await loop.run_in_executor(self._executor, self._embed_or_none, jobs)
        except BaseException as error:  # cancelled mid-batch: nobody may hang
            for job in jobs:
                _settle(job, ServiceStoppingError(f"search interrupted: {error!r}"))
            raise
        for i, job in enumerate(jobs):
            task = loop.create_task(self._search_on_pool(job, vectors, i))
            self._background.add(task)  # stop() cancels and awaits these too
            task.add_done_callback(self._background.discard)

    async def _search_on_pool(
        self, job: Job, vectors: dict[int, np.ndarray] | None, i: int
    ) -> None:
        assert self._searchers is not None
        loop = asyncio.get_running_loop()
        try:
            if vectors is None:  # the batch's model call failed: this job alone
                outcome, mine = await loop.run_in_executor(
                    self._searchers, self._answer_alone, job)
            else:
                outcome, mine = await loop.run_in_executor(
                    self._searchers, self._answer, job, vectors.get(i))
        except BaseException as error:  # cancelled by stop(): nobody may hang
            _settle(job, ServiceStoppingError(f"search interrupted: {error!r}"))
            raise
        self._deliver(job, outcome, mine)

    def _embed_or_none(self, jobs: Sequence[Job]) -> dict[int, np.ndarray] | None:
        """The batch's query vectors from one model call; None if it failed (each job
        is then embedded alone, so one odd query cannot fail its neighbours)."""
        try:
            return self._embed(jobs)
        except Exception:
            logger.exception("batched embedding failed; embedding job by job")
            return None

    async def _collect(self) -> list[Job]:
        """The next batch: the first job, then more until max_batch queries or the window ends.

        The window is only waited when the last batch held several jobs: a lone client
        (the last batch was a single job) would pay it on every request for nothing, while
        under concurrent load jobs keep arriving within it.
        """
        loop = asyncio.get_running_loop()
        jobs = [self._take(await self._queue.get())]
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
            jobs.append(self._take(job))
            size += len(job.queries)
        self._last_batch_jobs = len(jobs)
        return jobs

    def _live(self, jobs: list[Job]) -> list[Job]:
        """The jobs still worth embedding: their request still waits, within its deadline."""
        live = []
        for job in jobs:
            if job.expired():
                _settle(job, self._timed_out())
            elif not job.future.done():
                live.append(job)
        return live

    def _deliver(self, job: Job, outcome: Outcome, vectors: np.ndarray | None) -> None:
        """Answers the job now, or once its hits are highlighted on the highlight thread."""
        if isinstance(outcome, BaseException) or not job.options.highlight:
            _settle(job, outcome)
            return
        task = asyncio.get_running_loop().create_task(self._highlight(job, outcome, vectors))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _highlight(self, job: Job, hits: list[list[Hit]], vectors: np.ndarray | None) -> None:
        loop = asyncio.get_running_loop()
        try:
            outcome = await loop.run_in_executor(
                self._highlighter, self._highlight_all, job, hits, vectors
            )
        except BaseException as error:  # cancelled by stop(): nobody may hang
            _settle(job, ServiceStoppingError(f"highlighting interrupted: {error!r}"))
            raise
        _settle(job, outcome)

    # -- on the search thread ------------------------------------------------------------

    def _answer_all(self, jobs: list[Job]) -> list[Answer]:
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

    def _answer_alone(self, job: Job) -> Answer:
        try:
            vectors = self._embed([job]).get(0)
        except Exception as error:
            return error, None
        return self._answer(job, vectors)

    def _answer(self, job: Job, vectors: np.ndarray | None) -> Answer:
        try:
            return self._search(job.queries, vectors, job.options), vectors
        except Exception as error:  # delivered to the request that caused it
            return error, None

    def _search(
        self, queries: list[str], vectors: np.ndarray | None, options: SearchOptions
    ) -> list[list[Hit]]:
        try:
            return self.retriever.search_embedded(queries, vectors, options)
        except EmptyIndexError:
            # An empty collection is a state, not a fault: it matches nothing, like a
            # filter that matches nothing (200, no hits), and recovers with the next POST.
            return [[] for _ in queries]

    # -- on the highlight thread ---------------------------------------------------------

    def _highlight_all(
        self, job: Job, hits: list[list[Hit]], vectors: np.ndarray | None
    ) -> Outcome:
        """The job's hits with their best sentences marked, unless nobody waits any more."""
        if job.expired():
            return self._timed_out()
        assert vectors is not None  # needs_vectors holds for highlighting
        try:
            return [
                self.retriever.highlight(q, h, v)
                for q, h, v in zip(job.queries, hits, vectors, strict=True)
            ]
        except Exception as error:  # delivered to the request that caused it
            return error


def _settle(job: Job, outcome: Outcome) -> None:
    """Hands a job its result or error, unless its request already gave up."""
    if job.future.done():
        return
    if isinstance(outcome, BaseException):
        job.future.set_exception(outcome)
    else:
        job.future.set_result(outcome)

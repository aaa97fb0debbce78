"""The traffic of the live benchmark (service/bench/live.py): searchers, two writers, probes.

Everything runs on one asyncio loop in the benchmark's process and talks to 127.0.0.1
only. Each loop is bounded twice: by the end of the writing phase and by a count of
iterations, so a server that stops answering ends the run instead of hanging it.

- searchers: closed loop, one request in flight each, half to service A and half to B;
  BBC titles as queries (a quarter from the articles the writers touch, so a deleted
  article would be caught), k=10, mostly dense, some hybrid, some with a source filter;
- the HTTP writer: POSTs one article to A every `write_every` s, probes A and B until
  it is found (freshness), and DELETEs the ones it posted earlier, once probed;
- the CLI writer: `python -m retrieval index` of a small JSONL every `cli_every` s, and
  `python -m retrieval delete` of what the previous round indexed;
- a sampler of service A's resident memory, once a second.

Every answer is checked: its status counted, no passage twice in it, and no hit from an
article whose deletion had completed before the request was sent.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx2

from retrieval.bench.writes import renamed
from retrieval.records import Article

ROOT = Path(__file__).resolve().parents[2]  # holds retrieval/ and service/: children run it
REQUEST_TIMEOUT_S = 60.0
FRESH_TIMEOUT_S = 30.0  # a probe gives up here and counts this as its time
POLL_S = 0.02
CLI_TIMEOUT_S = 300.0
CLI_ARTICLES = 10
KEEP_POSTED = 3  # the HTTP writer's articles alive at once
SOURCES = ("business", "entertainment", "politics", "sport", "tech")
MAX_ERRORS_KEPT = 20


def child_env() -> dict[str, str]:
    """The environment of every child process: offline, quiet threads, this checkout's code."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1",
            "OMP_WAIT_POLICY": "PASSIVE", "TOKENIZERS_PARALLELISM": "false"}


@dataclass(slots=True)
class Soak:
    """The clock of the run's phases, and everything counted during it."""

    warm_end: float
    idle_end: float
    end: float
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    latencies: dict[str, list[float]] = field(
        default_factory=lambda: {"idle": [], "writing": []}
    )
    answers: int = 0
    duplicate_answers: int = 0
    deleted_hits: int = 0
    deleted: dict[str, float] = field(default_factory=dict)  # article id -> deletion done
    # Titles of the articles deleted last: searched for, a stale index would answer with them.
    deleted_titles: deque[str] = field(default_factory=lambda: deque(maxlen=32))
    fresh: dict[str, list[float]] = field(default_factory=lambda: {"A": [], "B": []})
    fresh_timeouts: int = 0
    rss_kb: list[tuple[float, int]] = field(default_factory=list)
    writes: Counter[str] = field(default_factory=Counter)
    cli_seconds: dict[str, list[float]] = field(
        default_factory=lambda: {"index": [], "delete": []}
    )

    @classmethod
    def starting_now(cls, warmup: float, idle: float, duration: float) -> Soak:
        warm_end = time.perf_counter() + warmup
        return cls(warm_end=warm_end, idle_end=warm_end + idle, end=warm_end + idle + duration)

    def phase(self, t: float) -> str:
        return "warmup" if t < self.warm_end else "idle" if t < self.idle_end else "writing"

    def error(self, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(message)

    def note_deleted(self, articles: list[Article]) -> None:
        done = time.perf_counter()
        for article in articles:
            self.deleted[article.id] = done
            self.deleted_titles.append(article.title)

    def check_answer(self, hits: list[dict[str, Any]], sent: float) -> None:
        self.answers += 1
        ids = [hit["passage_id"] for hit in hits]
        if len(set(ids)) != len(ids):
            self.duplicate_answers += 1
            self.error(f"a passage twice in one answer: {ids}")
        for hit in hits:
            done = self.deleted.get(hit["article_id"])
            if done is not None and done < sent:
                self.deleted_hits += 1
                self.error(f"hit from {hit['article_id']}, deleted {sent - done:.3f} s before")

    async def request(
        self, client: httpx2.AsyncClient, method: str, url: str, **kwargs: Any
    ) -> httpx2.Response | None:
        """One request, its status counted; None (an error noted) unless it answered 200."""
        try:
            response = await client.request(method, url, **kwargs)
        except httpx2.HTTPError as error:
            self.error(f"{method} {url}: {error!r}")
            await asyncio.sleep(0.1)  # a server gone must not turn the loop into a spin
            return None
        self.statuses[response.status_code] += 1
        if response.status_code != 200:
            self.error(f"{method} {url}: {response.status_code} {response.text[:200]}")
            return None
        return response


async def sleep_until(t: float) -> None:
    await asyncio.sleep(max(0.0, t - time.perf_counter()))


def search_body(
    rng: random.Random, queries: list[str], hot: list[str], deleted: deque[str], n: int
) -> dict[str, Any]:
    """A BBC title as the query: one in four of an article just deleted (when there is
    one), one in four of an article the writers add. Six in ten dense, two hybrid, two
    filtered by source (one dense, one hybrid)."""
    if n % 4 == 0 and deleted:
        query = rng.choice(deleted)
    else:
        query = rng.choice(hot if hot and n % 4 in (0, 1) else queries)
    body: dict[str, Any] = {"query": query, "k": 10, "mode": "dense"}
    if n % 10 in (1, 2, 4):
        body["mode"] = "hybrid"
    if n % 10 in (3, 4):
        body["filters"] = {"sources": [rng.choice(SOURCES)]}
    return body


async def searcher(
    soak: Soak, client: httpx2.AsyncClient, url: str, queries: list[str], hot: list[str],
    seed: int,
) -> None:
    rng = random.Random(seed)
    for n in range(int(1000 * (soak.end - time.perf_counter())) + 1):  # < 1000/s each
        sent = time.perf_counter()
        if sent >= soak.end:
            return
        response = await soak.request(client, "POST", f"{url}/search",
                                      json=search_body(rng, queries, hot, soak.deleted_titles, n))
        if response is None:
            continue
        took = time.perf_counter() - sent
        soak.check_answer(response.json()["hits"], sent)
        phase = soak.phase(sent)
        if phase in soak.latencies and soak.phase(sent + took) == phase:
            soak.latencies[phase].append(took)


async def sample_rss(soak: Soak, pid: int) -> None:
    """Service A's VmRSS once a second until the writing phase ends."""
    for _ in range(int(soak.end - time.perf_counter()) + 2):
        if time.perf_counter() >= soak.end:
            return
        if (kb := vm_rss_kb(pid)) is not None:
            soak.rss_kb.append((time.perf_counter(), kb))
        await asyncio.sleep(1.0)


def vm_rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def article_json(article: Article) -> dict[str, Any]:
    return {k: v for k, v in asdict(article).items() if v is not None and v != {}}


# -- the HTTP writer -----------------------------------------------------------------------


async def http_writer(
    soak: Soak, client: httpx2.AsyncClient, urls: tuple[str, str], pool: list[Article],
    *, every: float, run: str,
) -> None:
    """Posts to A, probes A and B, deletes older posts; at the end deletes the rest."""
    await sleep_until(soak.idle_end)
    posted: list[tuple[Article, asyncio.Task[None]]] = []
    try:
        for n in range(int((soak.end - soak.idle_end) / every) + 1):
            tick = soak.idle_end + n * every
            if tick >= soak.end:
                break
            await sleep_until(tick)
            article = renamed(pool[n % len(pool)], f"live-{run}-http-{n}")
            response = await soak.request(client, "POST", f"{urls[0]}/articles",
                                          json={"articles": [article_json(article)]})
            if response is None:
                continue
            soak.writes["http_posts"] += 1
            probe = asyncio.create_task(freshness(soak, client, urls, article, time.perf_counter()))
            posted.append((article, probe))
            while len(posted) > KEEP_POSTED and posted[0][1].done():
                await delete_posted(soak, client, urls[0], posted.pop(0)[0])
    finally:
        for _, probe in posted:
            await probe
        for article, _ in posted:
            await delete_posted(soak, client, urls[0], article)


async def warm_writes(
    soak: Soak, client: httpx2.AsyncClient, url: str, article: Article
) -> None:
    """One post and delete during the warm-up, so that the memory measured after it
    includes what the write path allocates once (model input shapes, code paths)."""
    response = await soak.request(client, "POST", f"{url}/articles",
                                  json={"articles": [article_json(article)]})
    if response is not None:
        await delete_posted(soak, client, url, article, count=False)


async def delete_posted(
    soak: Soak, client: httpx2.AsyncClient, url: str, article: Article, *, count: bool = True
) -> None:
    if await soak.request(client, "DELETE", f"{url}/articles/{article.id}") is not None:
        soak.note_deleted([article])
        if count:
            soak.writes["http_deletes"] += 1


async def freshness(
    soak: Soak, client: httpx2.AsyncClient, urls: tuple[str, str], article: Article,
    posted: float,
) -> None:
    """Seconds from the POST's answer until a search answer from A (and from B) holds it."""
    body = {"query": article.title or article.text[:200], "k": 10,
            "filters": {"article_ids": [article.id]}}

    async def visible(url: str) -> float:
        for _ in range(int(FRESH_TIMEOUT_S / POLL_S)):
            sent = time.perf_counter()
            response = await soak.request(client, "POST", f"{url}/search", json=body)
            if response is not None:
                hits = response.json()["hits"]
                soak.check_answer(hits, sent)
                if any(hit["article_id"] == article.id for hit in hits):
                    return time.perf_counter() - posted
            if time.perf_counter() - posted > FRESH_TIMEOUT_S:
                break
            await asyncio.sleep(POLL_S)
        soak.fresh_timeouts += 1
        soak.error(f"{article.id} not found at {url} within {FRESH_TIMEOUT_S:.0f} s")
        return FRESH_TIMEOUT_S

    in_a, in_b = await asyncio.gather(visible(urls[0]), visible(urls[1]))
    soak.fresh["A"].append(in_a)
    soak.fresh["B"].append(in_b)


# -- the CLI writer ------------------------------------------------------------------------


async def cli_writer(
    soak: Soak, collection: Path, pool: list[Article], *, every: float, run: str, tmp: Path
) -> None:
    """Each round indexes CLI_ARTICLES articles and deletes the previous round's."""
    await sleep_until(soak.idle_end)
    previous: list[Article] = []
    try:
        for r in range(int((soak.end - soak.idle_end) / every) + 1):
            tick = soak.idle_end + r * every
            if tick >= soak.end:
                break
            await sleep_until(tick)
            batch = [renamed(pool[(r * CLI_ARTICLES + i) % len(pool)], f"live-{run}-cli-{r}-{i}")
                     for i in range(CLI_ARTICLES)]
            file = tmp / f"cli-{r}.jsonl"
            file.write_text("".join(json.dumps(article_record(a)) + "\n" for a in batch), "utf-8")
            indexed = await run_cli(soak, "index", [str(file), "--collection", str(collection),
                                                    "--batch-size", str(CLI_ARTICLES), "--quiet"])
            if previous:
                await cli_delete(soak, collection, previous)
            previous = batch if indexed else []
    finally:
        if previous:
            await cli_delete(soak, collection, previous)


def article_record(article: Article) -> dict[str, Any]:
    """An article as a JSONL record that `retrieval index` reads (`_id`, not `id`)."""
    record = article_json(article)
    record["_id"] = record.pop("id")
    return record


async def cli_delete(soak: Soak, collection: Path, articles: list[Article]) -> None:
    ids = [article.id for article in articles]
    if await run_cli(soak, "delete", [*ids, "--collection", str(collection)]):
        soak.note_deleted(articles)


async def run_cli(soak: Soak, command: str, args: list[str]) -> bool:
    """`python -m retrieval COMMAND ARGS`; True when it exits 0 within CLI_TIMEOUT_S."""
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "retrieval", command, *args, env=child_env(), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT_S)
    except TimeoutError:
        soak.error(f"retrieval {command} still running after {CLI_TIMEOUT_S:.0f} s: killed")
        return False
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    soak.cli_seconds[command].append(time.perf_counter() - started)
    if process.returncode != 0:
        soak.error(f"retrieval {command} exited {process.returncode}: "
                   f"{err.decode(errors='replace').strip()[-300:]}")
        return False
    soak.writes[f"cli_{command}_runs"] += 1
    return True

"""A bounded load benchmark of POST /search, micro-batching on versus off.

    python -m service.bench.loadtest --collection /tmp/bbc

Starts the service as a separate process on 127.0.0.1 (batching on, then off), sends
the same queries from this process at each concurrency level, and prints a Markdown
table of QPS and p50/p99 latency for both, measured in the same run, with their ratio.
Any failed request makes the run fail: a benchmark with errors measures nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx2

from retrieval.evaluation.location import bbc_corpus

BBC = bbc_corpus()
FALLBACK_QUERIES = [
    "interest rates and inflation", "floods after heavy rain", "cup final replay",
    "phone call between presidents", "elections and the new government", "film awards",
]


@dataclass(slots=True)
class LoadResult:
    """Latencies (seconds) of one load level, and how it went."""

    concurrency: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def qps(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return 1000 * ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


# -- the server ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_server(
    collection: Path, *, batch_window_ms: float, max_batch: int, startup_s: float = 180
) -> Iterator[str]:
    """Runs `python -m service` on a free port; yields its base URL once it is ready."""
    port = free_port()
    command = [
        sys.executable, "-m", "service", "--collection", str(collection), "--host", "127.0.0.1",
        "--port", str(port), "--batch-window-ms", str(batch_window_ms),
        "--max-batch", str(max_batch), "--log-level", "warning",
    ]
    with server_process(command, port, startup_s=startup_s) as url:
        yield url


@contextmanager
def server_process(command: list[str], port: int, *, startup_s: float = 180) -> Iterator[str]:
    """Runs a server command listening on `port`; yields its URL once ready, then stops it."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    process = subprocess.Popen(command, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process, startup_s)
        yield url
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Asks a server process to stop; kills it if it is still running after 30 s."""
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_until_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}")
        try:
            if httpx2.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx2.TransportError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"the server was not ready after {timeout_s:.0f} s")


def batch_sizes(url: str) -> tuple[int, float, int]:
    """(model calls, queries embedded, calls with one query) from the server's /metrics."""
    text = httpx2.get(f"{url}/metrics", timeout=10).text

    def value(pattern: str) -> float:
        match = re.search(pattern, text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    calls = value(r"^retrieval_search_batch_size_count (\S+)$")
    queries = value(r"^retrieval_search_batch_size_sum (\S+)$")
    single = value(r'^retrieval_search_batch_size_bucket\{le="1\.0"\} (\S+)$')
    return int(calls), queries, int(single)


# -- the load ------------------------------------------------------------------------------


async def run_load(
    url: str, queries: Sequence[str], *, concurrency: int, requests: int, k: int = 10
) -> LoadResult:
    """Sends `requests` searches, `concurrency` at a time, each query in turn."""
    result = LoadResult(concurrency)
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    next_index = iter(range(requests))
    async with httpx2.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def worker() -> None:
            for i in next_index:
                started = time.perf_counter()
                try:
                    response = await client.post(
                        "/search", json={"query": queries[i % len(queries)], "k": k}
                    )
                    if response.status_code != 200:
                        result.errors.append(f"{response.status_code} {response.text[:200]}")
                        continue
                except httpx2.HTTPError as error:
                    result.errors.append(repr(error))
                    continue
                result.latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - started
    return result


def load_queries(path: Path) -> list[str]:
    """BBC headlines as queries when the corpus is there; a few fixed ones otherwise."""
    if not path.is_file():
        return FALLBACK_QUERIES
    with open(path, encoding="utf-8") as handle:
        titles = [json.loads(line).get("title", "").strip() for line in handle if line.strip()]
    return [t for t in titles if t] or FALLBACK_QUERIES


# -- the benchmark -------------------------------------------------------------------------


def measure(
    collection: Path, queries: Sequence[str], levels: Sequence[tuple[int, int]], *,
    batch_window_ms: float, max_batch: int,
) -> tuple[dict[int, LoadResult], tuple[int, float, int]]:
    """Every load level against one server; also its batch sizes."""
    results = {}
    with running_server(collection, batch_window_ms=batch_window_ms, max_batch=max_batch) as url:
        asyncio.run(run_load(url, queries, concurrency=4, requests=40))  # warm up
        for concurrency, requests in levels:
            results[concurrency] = asyncio.run(
                run_load(url, queries, concurrency=concurrency, requests=requests)
            )
            print(f"  batching {'on ' if max_batch > 1 else 'off'} c={concurrency}: "
                  f"{results[concurrency].qps:.1f} QPS", file=sys.stderr)
        sizes = batch_sizes(url)
    return results, sizes


def table(on: dict[int, LoadResult], off: dict[int, LoadResult]) -> str:
    lines = [
        "| concurrency | requests | batched: QPS | p50 / p99 ms | unbatched: QPS | p50 / p99 ms "
        "| QPS ratio | p50 ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in on:
        a, b = on[c], off[c]
        lines.append(
            f"| {c} | {len(a.latencies)} + {len(b.latencies)} | {a.qps:.1f} | "
            f"{a.percentile_ms(50):.0f} / {a.percentile_ms(99):.0f} | {b.qps:.1f} | "
            f"{b.percentile_ms(50):.0f} / {b.percentile_ms(99):.0f} | "
            f"{a.qps / b.qps:.2f}x | {b.percentile_ms(50) / a.percentile_ms(50):.2f}x |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.bench.loadtest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collection", type=Path, required=True, metavar="DIR")
    parser.add_argument("--concurrency", default="1,8,32", help="levels (default 1,8,32)")
    parser.add_argument("--requests", default="150,600,1000",
                        help="requests per level (default 150,600,1000)")
    parser.add_argument("--queries", type=Path, default=BBC, help="JSONL with titles as queries")
    parser.add_argument("--window-ms", type=float, default=2.0, help="batching window when on")
    parser.add_argument("--max-batch", type=int, default=32, help="batch size cap when on")
    args = parser.parse_args(argv)
    levels = list(zip(map(int, args.concurrency.split(",")), map(int, args.requests.split(",")),
                      strict=True))
    queries = load_queries(args.queries)
    on, sizes = measure(args.collection, queries, levels,
                        batch_window_ms=args.window_ms, max_batch=args.max_batch)
    off, _ = measure(args.collection, queries, levels, batch_window_ms=0, max_batch=1)
    print(table(on, off))
    calls, embedded, single = sizes
    print(f"\nbatched run: {calls} model calls for {embedded:.0f} queries "
          f"(mean batch {embedded / max(calls, 1):.1f}; {single} calls of one query); "
          f"{len(queries)} distinct queries, k=10, mode dense")
    errors = [e for run in (on, off) for r in run.values() for e in r.errors]
    for error in errors[:10]:
        print(f"error: {error}", file=sys.stderr)
    print(f"errors: {len(errors)}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

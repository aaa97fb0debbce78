"""The real server under concurrent load: uvicorn in a subprocess on 127.0.0.1, 200
searches 16 at a time from this process; zero errors, and queries were batched."""

from __future__ import annotations

import asyncio

from service_fixtures import build_collection

from service.bench.loadtest import FALLBACK_QUERIES, batch_sizes, run_load, running_server

REQUESTS, CONCURRENCY = 200, 16


def test_concurrent_searches_are_answered_and_batched(tmp_path, embedder, seed_articles):
    collection = build_collection(tmp_path / "c", embedder, seed_articles)
    queries = [f"{q} {i}" for i in range(20) for q in FALLBACK_QUERIES]
    with running_server(collection, batch_window_ms=5, max_batch=32) as url:
        result = asyncio.run(
            run_load(url, queries, concurrency=CONCURRENCY, requests=REQUESTS, k=5)
        )
        calls, embedded, single = batch_sizes(url)
    assert result.errors == []
    assert len(result.latencies) == REQUESTS and embedded == REQUESTS
    assert calls < REQUESTS and calls > single, "no model call embedded more than one query"

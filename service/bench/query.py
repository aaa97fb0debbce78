"""`retrieval bench query`: the service under load against a naive endpoint, same run.

Both servers run as separate processes on 127.0.0.1 and get the same BBC headlines from
this process (the service's own bounded load generator, service.bench.loadtest): first the
service (`python -m service`, micro-batched), then the naive endpoint, one after the
other so they never compete for the two cores. The naive endpoint is what a first
version would be: FastAPI, a plain `def` handler, one `SentenceTransformer.encode`
(torch fp32) per request and an exact FAISS search over the collection's stored vectors.
Its scores are not meaningful when the collection was built by another backend; only its
cost is measured. Any failed request fails the benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from retrieval.bench.common import BBC, print_result


def add_query_parser(benches: Any) -> None:
    parser = benches.add_parser("query", help="service under load vs a naive endpoint")
    parser.add_argument("--collection", type=Path, required=True, metavar="DIR",
                        help="a built collection (e.g. from bench ingest --keep DIR)")
    parser.add_argument("--concurrency", default="1,32", help="load levels (default 1,32)")
    parser.add_argument("--requests", default="200,1000",
                        help="requests per level for the service (default 200,1000)")
    parser.add_argument("--naive-requests", default="60,300",
                        help="requests per level for the naive endpoint (default 60,300)")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(run=run_query_bench)


def run_query_bench(args: argparse.Namespace) -> int:
    try:
        from service.bench import loadtest
    except ImportError as error:
        print(f"error: bench query needs the service: pip install 'retrieval[service]' ({error})",
              file=sys.stderr)
        return 2
    levels = [int(c) for c in args.concurrency.split(",")]
    service_n = [int(n) for n in args.requests.split(",")]
    naive_n = [int(n) for n in args.naive_requests.split(",")]
    queries = loadtest.load_queries(BBC)
    results: dict[str, dict[int, Any]] = {"service": {}, "naive": {}}
    servers = {
        "service": lambda: loadtest.running_server(args.collection, batch_window_ms=2.0,
                                                   max_batch=32),
        "naive": lambda: naive_server(args.collection, loadtest),
    }
    for name, counts in (("service", service_n), ("naive", naive_n)):
        with servers[name]() as url:
            asyncio.run(loadtest.run_load(url, queries, concurrency=4, requests=20))  # warm
            for level, n in zip(levels, counts, strict=True):
                results[name][level] = asyncio.run(
                    loadtest.run_load(url, queries, concurrency=level, requests=n)
                )
    errors = [e for runs in results.values() for r in runs.values() for e in r.errors]
    result = {
        "benchmark": "query", "collection": str(args.collection), "errors": len(errors),
        "levels": [
            {
                "concurrency": level, "server": name, "requests": len(r.latencies),
                "qps": round(r.qps, 1), "p50_ms": round(r.percentile_ms(50), 1),
                "p99_ms": round(r.percentile_ms(99), 1),
            }
            for level in levels for name, r in ((n, results[n][level]) for n in results)
        ],
    }
    print_result(result, args.json, query_table)
    for message in errors[:5]:
        print(f"error: {message}", file=sys.stderr)
    return 1 if errors else 0


def query_table(r: dict[str, Any]) -> str:
    lines = [
        f"query: POST /search (k=10, dense) on {r['collection']}, load from a second process",
        "",
        "| concurrency | server | requests | QPS | p50 ms | p99 ms | QPS ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    by_level: dict[int, dict[str, Any]] = {}
    for row in r["levels"]:
        by_level.setdefault(row["concurrency"], {})[row["server"]] = row
    for level, rows in by_level.items():
        for name in ("naive", "service"):
            row = rows[name]
            ratio = row["qps"] / rows["naive"]["qps"] if rows["naive"]["qps"] else float("nan")
            label = "naive: torch + exact, one call per request" if name == "naive" else (
                "service (micro-batched)")
            lines.append(f"| {level} | {label} | {row['requests']} | {row['qps']} "
                         f"| {row['p50_ms']} | {row['p99_ms']} | {ratio:.2f}x |")
    lines.append(f"\nerrors: {r['errors']}")
    return "\n".join(lines)


@contextmanager
def naive_server(collection: Path, loadtest: Any) -> Iterator[str]:
    """The naive endpoint in its own process, on a free port; yields its URL."""
    port = loadtest.free_port()
    code = (
        "import sys; from service.bench.query import serve_naive; "
        f"serve_naive({str(collection)!r}, {port})"
    )
    with loadtest.server_process([sys.executable, "-c", code], port) as url:
        yield url


def serve_naive(collection: str, port: int) -> None:
    """The naive endpoint: one model call and one exact search per request."""
    import faiss
    import numpy as np
    import uvicorn
    from fastapi import Body, FastAPI
    from sentence_transformers import SentenceTransformer

    from retrieval.collection.manifest import read_manifest
    from retrieval.collection.store import STORE, Store
    from retrieval.models.embedding import default_model_path

    path = Path(collection)
    manifest = read_manifest(path)
    dim = manifest["embedder"]["dim"] if manifest else 384
    store = Store(path / STORE, readonly=True)
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    for ids, vectors in store.vectors(dim):
        index.add_with_ids(vectors, ids)
    model = SentenceTransformer(str(default_model_path()), device="cpu", local_files_only=True)
    app = FastAPI()

    @app.get("/readyz")
    def ready() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/search")
    def search(body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        vector = model.encode([body["query"]], normalize_embeddings=True, convert_to_numpy=True)
        scores, ids = index.search(np.asarray(vector, np.float32), int(body.get("k", 10)))
        return {"hits": [{"passage_id": int(i), "score": float(s)}
                         for s, i in zip(scores[0], ids[0], strict=True) if i >= 0]}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")

"""`retrieval bench ray`: what distribution costs on this machine, against one process.

One run, on one machine, in this order (never two at once, so they never compete):

1. `retrieval index` on one machine: the BBC sample indexed in this process.
2. The single-process service on that collection, under load (service.bench.loadtest).
3. A simulated cluster (ray.cluster_utils.Cluster: a head and one worker node per
   shard, each worker holding its shard's resource), then Ray Data indexing of the same
   articles into empty shards (`index_on_ray`), end to end (actor start and model load
   included: they are part of every Ray Data run).
4. Those shards served on Ray Serve (service/ray_serve.py), under the same load; and the
   round trip of one call to a shard deployment, which explains the overhead: a search
   makes a fixed number of fan-outs (below), each a round trip to every shard.

On two cores Ray cannot show a speed-up: the shards, the ingress, the proxy and Ray's
own processes share the cores the single process had alone. What this measures is the
overhead of the distribution and its cause; docs/cluster.md turns it into a cost model.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from itertools import islice
from pathlib import Path
from typing import Any

from retrieval.bench.common import BBC, print_result

# Fan-outs (a call to every shard) per search, by what the search needs: size (the
# empty-collection check), dense top k, BM25 statistics, BM25 top k, hit rows.
FAN_OUTS = {"dense": 3, "lexical": 4, "hybrid": 5}


def add_ray_parser(benches: Any) -> None:
    parser = benches.add_parser("ray", help="Ray Serve and Ray Data against one process")
    parser.add_argument("--corpus", type=Path, default=BBC, help="articles (JSONL); default BBC")
    parser.add_argument("--articles", type=int, default=200, metavar="N",
                        help="first N articles (default 200)")
    parser.add_argument("--shards", type=int, default=2, metavar="N", help="default 2")
    parser.add_argument("--concurrency", default="1,8", help="load levels (default 1,8)")
    parser.add_argument("--requests", default="100,200", help="requests per level")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(run=run_ray_bench)


def run_ray_bench(args: argparse.Namespace) -> int:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from retrieval.ingestion.loaders import load_articles

    articles = list(islice(load_articles([args.corpus]).articles, args.articles))
    levels = [int(c) for c in args.concurrency.split(",")]
    counts = [int(n) for n in args.requests.split(",")]
    with tempfile.TemporaryDirectory(prefix="retrieval-bench-ray-") as tmp:
        result = measure(Path(tmp), articles, args.shards, levels, counts)
    result["corpus"] = str(args.corpus)
    print_result(result, args.json, ray_table)
    return 1 if result["errors"] else 0


def measure(
    tmp: Path, articles: list[Any], n_shards: int, levels: list[int], counts: list[int]
) -> dict[str, Any]:
    from retrieval.collection.collection import Collection
    from retrieval.models.cpu import cpu_info
    from service.bench import loadtest

    queries = loadtest.load_queries(BBC)
    single = tmp / "single"
    with Collection.open(single, background=False) as collection:
        collection.embedder.embed_documents(["warm up"])  # model load is not indexing
        started = time.perf_counter()
        report = collection.add_articles(articles)
        collection.checkpoint()
        single_s = time.perf_counter() - started
        manifest = collection.manifest
        info = collection.info()
    local = load(lambda: loadtest.running_server(single, batch_window_ms=2.0, max_batch=32),
                 queries, levels, counts)
    ray_part = measure_ray(tmp, articles, manifest, n_shards, queries, levels, counts)
    errors = [e for runs in (local, ray_part["load"]) for r in runs.values() for e in r.errors]
    return {
        "benchmark": "ray", "articles": len(articles), "passages": report.passages_added,
        "shards": n_shards, "errors": len(errors), "error_samples": errors[:5],
        "index_single_s": round(single_s, 2),
        "index_single_passages_per_s": round(report.passages_added / single_s, 1),
        "index_ray_s": ray_part["index_s"],
        "index_ray_passages_per_s": round(ray_part["passages"] / ray_part["index_s"], 1),
        "bytes_per_passage_on_disk": round(info.bytes_on_disk / max(info.passages, 1)),
        "shard_call_ms": ray_part["shard_call_ms"],
        "levels": [
            {"concurrency": level, "server": name, "qps": round(r.qps, 1),
             "p50_ms": round(r.percentile_ms(50), 1), "p99_ms": round(r.percentile_ms(99), 1),
             "requests": len(r.latencies)}
            for level in levels
            for name, r in (("one process", local[level]), ("ray serve", ray_part["load"][level]))
        ],
        "cpu": cpu_info(),
    }


def load(server: Any, queries: list[str], levels: list[int], counts: list[int]) -> dict[int, Any]:
    from service.bench import loadtest

    results = {}
    with server() as url:
        asyncio.run(loadtest.run_load(url, queries, concurrency=4, requests=20))  # warm
        for level, n in zip(levels, counts, strict=True):
            results[level] = asyncio.run(
                loadtest.run_load(url, queries, concurrency=level, requests=n)
            )
    return results


def measure_ray(
    tmp: Path, articles: list[Any], manifest: dict[str, Any], n_shards: int,
    queries: list[str], levels: list[int], counts: list[int],
) -> dict[str, Any]:
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from retrieval.cluster.layout import create_shards
    from retrieval.cluster.ray_index import index_on_ray
    from service import ray_serve
    from service.bench import loadtest
    from service.settings import Settings

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": False, "object_store_memory": 200 * 2**20})
    for index in range(n_shards):
        cluster.add_node(num_cpus=1, resources={f"shard{index}": 1},
                         object_store_memory=100 * 2**20)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        shards = tmp / "shards"
        create_shards(shards, n_shards, manifest)
        started = time.perf_counter()
        report = index_on_ray(cluster.address, str(shards), articles, actors=1)
        index_s = time.perf_counter() - started
        port = loadtest.free_port()
        ray_serve.run(cluster.address, shards, Settings(collection=shards, port=port),
                      shard_cpus=0.5, ingress_cpus=1.0, blocking=False)

        class Deployed:
            def __enter__(self) -> str:
                return f"http://127.0.0.1:{port}"

            def __exit__(self, *exc: object) -> None:
                pass

        results = load(Deployed, queries, levels, counts)
        call_ms = shard_call_ms(serve.get_deployment_handle("shard0", ray_serve.APP_NAME))
        serve.shutdown()  # type: ignore[no-untyped-call]
    finally:
        ray.shutdown()
        cluster.shutdown()  # type: ignore[no-untyped-call]
    return {"index_s": round(index_s, 2), "passages": report.passages_added,
            "load": results, "shard_call_ms": call_ms}


def shard_call_ms(handle: Any, calls: int = 50) -> float:
    """Mean milliseconds of one small call to a shard deployment, from outside it."""
    handle.size.remote().result()
    started = time.perf_counter()
    for _ in range(calls):
        handle.size.remote().result()
    return round(1000 * (time.perf_counter() - started) / calls, 2)


def ray_table(r: dict[str, Any]) -> str:
    cpu = r["cpu"]
    lines = [
        f"ray: {r['articles']} articles ({r['passages']} passages, {r['corpus']}), "
        f"{r['shards']} shards on a simulated cluster; CPU {cpu.get('model', cpu)}",
        "",
        "| ingest | seconds | passages/s |",
        "|---|---|---|",
        f"| retrieval index, one process (model loaded) | {r['index_single_s']} "
        f"| {r['index_single_passages_per_s']} |",
        f"| Ray Data, 1 actor, end to end (actor start, model load) | {r['index_ray_s']} "
        f"| {r['index_ray_passages_per_s']} |",
        "",
        "| concurrency | server | requests | QPS | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {row['concurrency']} | {row['server']} | {row['requests']} | {row['qps']} "
        f"| {row['p50_ms']} | {row['p99_ms']} |"
        for row in r["levels"]
    ]
    lines += [
        "",
        f"one call to a shard deployment: {r['shard_call_ms']} ms; a hybrid search makes "
        f"{FAN_OUTS['hybrid']} fan-outs (dense {FAN_OUTS['dense']}), each a call to every "
        f"shard; {r['bytes_per_passage_on_disk']} bytes per passage on disk; "
        f"errors: {r['errors']}",
    ]
    if r["errors"]:
        lines.append(f"first errors: {r['error_samples']}")
    return "\n".join(lines)

"""`retrieval bench ray`: what distribution costs on this machine, against one process.

One run, on one machine, in this order (never two at once, so they never compete):

1. `retrieval index` on one machine: the BBC sample indexed in this process.
2. The single-process service on that collection, under load (service.bench.loadtest).
3. A simulated cluster (ray.cluster_utils.Cluster: a head and one worker node per
   shard, each worker holding its shard's resource), then Ray Data indexing of the same
   articles into empty shards (`index_on_ray`), end to end (actor start and model load
   included: they are part of every Ray Data run).
4. Those shards served on Ray Serve (service/ray_serve.py), under the same load; and the
   round trip of one call to a shard deployment, and the rounds and shard calls the
   ingress's router counted during the load: together they explain the overhead.
5. With `--replicas 1,2`: the app deployed again with 2 replicas of every shard and of
   the ingress, under the highest load level: what replicas add on this machine's cores.

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


def add_ray_parser(benches: Any) -> None:
    parser = benches.add_parser("ray", help="Ray Serve and Ray Data against one process")
    parser.add_argument("--corpus", type=Path, default=BBC, help="articles (JSONL); default BBC")
    parser.add_argument("--articles", type=int, default=200, metavar="N",
                        help="first N articles (default 200)")
    parser.add_argument("--shards", type=int, default=2, metavar="N", help="default 2")
    parser.add_argument("--concurrency", default="1,8", help="load levels (default 1,8)")
    parser.add_argument("--requests", default="100,200", help="requests per level")
    parser.add_argument("--replicas", default="1",
                        help="replica counts to deploy, e.g. 1,2 (default 1): each shard "
                        "and the ingress get that many; levels past the first run only "
                        "the highest concurrency")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(run=run_ray_bench)


def run_ray_bench(args: argparse.Namespace) -> int:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from retrieval.ingestion.loaders import load_articles

    articles = list(islice(load_articles([args.corpus]).articles, args.articles))
    levels = [int(c) for c in args.concurrency.split(",")]
    counts = [int(n) for n in args.requests.split(",")]
    replicas = [int(n) for n in args.replicas.split(",")]
    with tempfile.TemporaryDirectory(prefix="retrieval-bench-ray-") as tmp:
        result = measure(Path(tmp), articles, args.shards, levels, counts, replicas)
    result["corpus"] = str(args.corpus)
    print_result(result, args.json, ray_table)
    return 1 if result["errors"] else 0


def measure(
    tmp: Path, articles: list[Any], n_shards: int, levels: list[int], counts: list[int],
    replicas: list[int] | None = None,
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
    with loadtest.running_server(single, batch_window_ms=2.0, max_batch=32) as url:
        local_http_ms = http_call_ms(url)
    ray_part = measure_ray(tmp, articles, manifest, n_shards, queries, levels, counts,
                           replicas or [1])
    errors = [e for runs in (local, ray_part["load"]) for r in runs.values() for e in r.errors]
    errors += ["replica run error"] * sum(row["errors"] for row in ray_part["replicas"])
    return {
        "benchmark": "ray", "articles": len(articles), "passages": report.passages_added,
        "shards": n_shards, "errors": len(errors), "error_samples": errors[:5],
        "index_single_s": round(single_s, 2),
        "index_single_passages_per_s": round(report.passages_added / single_s, 1),
        "index_ray_s": ray_part["index_s"],
        "index_ray_passages_per_s": round(ray_part["passages"] / ray_part["index_s"], 1),
        "bytes_per_passage_on_disk": round(info.bytes_on_disk / max(info.passages, 1)),
        "shard_call_ms": ray_part["shard_call_ms"],
        "traffic": ray_part["traffic"],
        "http_ms": ray_part["http_ms"],
        "local_http_ms": local_http_ms,
        "replicas": ray_part["replicas"],
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
    queries: list[str], levels: list[int], counts: list[int], replicas: list[int],
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
        settings = Settings(collection=shards, port=port)
        ray_serve.run(cluster.address, shards, settings, shard_cpus=0.5, ingress_cpus=1.0,
                      replicas=replicas[0], ingress_replicas=replicas[0], blocking=False)

        class Deployed:
            def __enter__(self) -> str:
                return f"http://127.0.0.1:{port}"

            def __exit__(self, *exc: object) -> None:
                pass

        ingress = serve.get_deployment_handle("ingress", ray_serve.APP_NAME)
        results = load(Deployed, queries, levels, counts)
        traffic = ingress.traffic.remote().result()
        http_ms = http_call_ms(f"http://127.0.0.1:{port}")
        call_ms = shard_call_ms(serve.get_deployment_handle("shard0", ray_serve.APP_NAME))
        scaled = {}
        for count in replicas[1:]:  # every replica's CPUs shrink so that they all fit
            ray_serve.run(cluster.address, shards, settings, shard_cpus=0.5 / count,
                          ingress_cpus=1.0 / count, replicas=count, ingress_replicas=count,
                          blocking=False)
            scaled[count] = load(Deployed, queries, levels[-1:], counts[-1:])[levels[-1]]
        serve.shutdown()  # type: ignore[no-untyped-call]
    finally:
        ray.shutdown()
        cluster.shutdown()  # type: ignore[no-untyped-call]
    return {"index_s": round(index_s, 2), "passages": report.passages_added,
            "load": results, "shard_call_ms": call_ms, "traffic": traffic,
            "http_ms": http_ms,
            "replicas": [
                {"replicas": count, "concurrency": levels[-1], "qps": round(r.qps, 1),
                 "p50_ms": round(r.percentile_ms(50), 1), "errors": len(r.errors)}
                for count, r in scaled.items()
            ]}


def shard_call_ms(handle: Any, calls: int = 50) -> float:
    """Mean milliseconds of one small call to a shard deployment, from outside it."""
    handle.size.remote().result()
    started = time.perf_counter()
    for _ in range(calls):
        handle.size.remote().result()
    return round(1000 * (time.perf_counter() - started) / calls, 2)


def http_call_ms(url: str, calls: int = 50) -> float:
    """Mean milliseconds of GET /healthz (no search): what HTTP costs before any search,
    through Serve's proxy and the ingress replica on Ray."""
    import httpx2

    with httpx2.Client(base_url=url, timeout=30) as client:
        client.get("/healthz")
        started = time.perf_counter()
        for _ in range(calls):
            client.get("/healthz")
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
    by = {(row["concurrency"], row["server"]): row for row in r["levels"]}
    ratios = []
    for level in sorted({row["concurrency"] for row in r["levels"]}):
        one, ray = by[level, "one process"], by[level, "ray serve"]
        ratios.append(f"concurrency {level}: p50 {ray['p50_ms'] / max(one['p50_ms'], 1e-9):.2f}x, "
                      f"QPS {ray['qps'] / max(one['qps'], 1e-9):.2f}x")
    lines += ["", "Ray against one process: " + "; ".join(ratios)
              + f"; ingest {r['index_ray_passages_per_s'] / r['index_single_passages_per_s']:.2f}x"]
    if r.get("replicas"):
        lines += ["", "| replicas (each shard, ingress) | concurrency | QPS | p50 ms |",
                  "|---|---|---|---|"]
        lines += [f"| {row['replicas']} | {row['concurrency']} | {row['qps']} | "
                  f"{row['p50_ms']} |" for row in r["replicas"]]
    traffic = r["traffic"]
    searches = max(traffic["searches"], 1)
    lines += [
        "",
        f"counted at the ingress's router over the whole load (warm-up included): "
        f"{traffic['searches']} searches, {traffic['rounds'] / searches:.2f} rounds and "
        f"{traffic['calls'] / searches:.2f} shard calls per search "
        f"(a round is one call to each shard it needs, sent together)",
        f"one round trip to a shard deployment, measured in this run: "
        f"{r['shard_call_ms']} ms, so rounds cost about "
        f"{traffic['rounds'] / searches * r['shard_call_ms']:.1f} ms of each search's "
        f"latency",
        f"one HTTP request without a search (GET /healthz): {r['http_ms']} ms through "
        f"Serve's proxy and the ingress, {r['local_http_ms']} ms to one process; the rest "
        f"is the model and ranking, and on a shared machine waiting for the cores",
        f"{r['bytes_per_passage_on_disk']} bytes per passage on disk; errors: {r['errors']}",
    ]
    if r["errors"]:
        lines.append(f"first errors: {r['error_samples']}")
    return "\n".join(lines)

"""`retrieval bench defaults`: what a newcomer gets, against the model's own limits.

Everything is built by the defaults, as `make serve` builds it: the collection by the
default backend of new collections (auto: retrieval/models/choice.py), the service by its
default settings, every search in the default mode (hybrid). One run measures, side by
side on the same machine:

- m1: the collection's own embedder on one headline, in process (median over BBC
  headlines), and L: the same embedder on batches of 32 headlines, queries/s. L is the
  model-bound ceiling of a loaded service, m1 the floor of a lone search's latency: the
  goals are stated against them, so they mean the same on any CPU and backend;
- E: plain sentence-transformers (torch fp32, in process) on one headline, for scale;
- ingest: the collection built end to end from the BBC corpus against plain
  `SentenceTransformer.encode` (torch fp32, batch 32) of the same passages
  (bench.measure_ingest), and the share of time spent outside the model;
- the service under `wrk` (C, one thread: the load costs the server's two cores little)
  at concurrency 1 and 32, posting BBC headlines to /search: p50, p99, QPS, errors;
- the peer a user would write first, under the same load: plain sentence-transformers
  behind a minimal FastAPI endpoint (service/bench/query.py, `serve_naive`);
- the backends' speeds from the machine's automatic choice, and the CPU's instruction sets.

It needs `wrk` on the PATH (Debian: apt-get install wrk).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from retrieval.bench.common import BBC, print_result
from retrieval.models.cpu import cpu_summary

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}
E_QUERIES = 200
L_BATCH = 32  # the service's largest micro-batch (Settings.max_batch)
L_ROUNDS = 3  # passes over the headlines for L
GOALS = {  # from the issue "Near the model's limit"
    "outside_model_share": 0.10, "c1_p50_over_m1_ms": 2.0, "c32_qps_over_l": 0.75,
}


def add_defaults_parser(benches: Any) -> None:
    parser = benches.add_parser(
        "defaults", help="the defaults (backend, service, hybrid) as ratios to one model call")
    parser.add_argument("--corpus", type=Path, default=BBC, help="articles (JSONL); default BBC")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="first N articles")
    parser.add_argument("--collection", type=Path, default=None, metavar="DIR",
                        help="serve this built collection instead of building one (no ingest "
                        "figures then)")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="build the collection here and keep it")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="load per concurrency level (default 20 s)")
    parser.add_argument("--no-peer", action="store_true",
                        help="leave out the peer (sentence-transformers behind FastAPI)")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(run=run_defaults_bench)


def run_defaults_bench(args: argparse.Namespace) -> int:
    from retrieval.bench.ingest import measure_ingest
    from retrieval.ingestion.loaders import load_articles
    from service.bench import loadtest

    if shutil.which("wrk") is None:
        print("error: bench defaults needs wrk on the PATH (Debian: apt-get install wrk)",
              file=sys.stderr)
        return 2
    queries = loadtest.load_queries(args.corpus)
    result: dict[str, Any] = {"benchmark": "defaults", "corpus": str(args.corpus)}
    with tempfile.TemporaryDirectory(prefix="retrieval-bench-") as tmp:
        collection = args.collection
        if collection is None:
            collection = args.keep or Path(tmp) / "collection"
            started = time.perf_counter()
            loaded = load_articles([args.corpus])
            articles = loaded.articles[: args.limit] if args.limit else loaded.articles
            result["ingest"] = measure_ingest(articles, None, keep=collection, rounds=4,
                                              load_s=time.perf_counter() - started)
        result["e_ms"] = plain_query_ms(queries[:E_QUERIES])
        result["model"] = model_limits(collection, queries)
        script = Path(tmp) / "search.lua"
        script.write_text(wrk_script(queries), "utf-8")
        with loadtest.running_server(collection, **service_defaults()) as url:
            result["load"] = load_levels(url, script, args.seconds)
        if not args.no_peer:
            from service.bench.query import naive_server

            with naive_server(collection, loadtest) as url:
                result["peer"] = load_levels(url, script, args.seconds)
        result["backend"] = json.loads((collection / "manifest.json").read_text())["embedder"]
    result["backends"] = backend_speeds()
    result["cpu"] = cpu_summary()
    result["checks"] = checks(result)
    print_result(result, args.json, table)
    return 0 if all(ok for _, _, _, ok in result["checks"]) else 1


def service_defaults() -> dict[str, Any]:
    """The service's own defaults for batching, so the benchmark serves as `make serve`."""
    from service.settings import Settings

    settings = Settings()
    return {"batch_window_ms": settings.batch_window_ms, "max_batch": settings.max_batch}


def load_levels(url: str, script: Path, seconds: float) -> dict[int, dict[str, Any]]:
    """wrk at concurrency 1 and 32 against a ready server, after a short warm-up."""
    wrk(url, script, connections=4, seconds=3)  # warm: first calls, connections
    return {c: wrk(url, script, connections=c, seconds=seconds) for c in (1, 32)}


def model_limits(collection: Path, queries: list[str]) -> dict[str, float]:
    """m1 (ms, one headline per call) and L (queries/s, batches of L_BATCH) of the
    collection's own embedder, in this process, warmed up as the service warms it up."""
    from retrieval.collection.collection import Collection
    from service.settings import QUERY_WARM_UP_TOKENS

    with Collection.open(collection, create=False) as opened:
        embedder = opened.embedder
        embedder.warm_up(QUERY_WARM_UP_TOKENS)
        singles = queries[:E_QUERIES]
        for query in singles[:10]:
            embedder.embed_queries([query])
        timings = []
        for query in singles:
            started = time.perf_counter()
            embedder.embed_queries([query])
            timings.append(time.perf_counter() - started)
        batches = [queries[i : i + L_BATCH]
                   for i in range(0, len(queries) - L_BATCH + 1, L_BATCH)] * L_ROUNDS
        started = time.perf_counter()
        for batch in batches:
            embedder.embed_queries(batch)
        batch_s = time.perf_counter() - started
    return {"m1_ms": round(1000 * statistics.median(timings), 3),
            "l_qps": round(L_BATCH * len(batches) / batch_s, 1)}


def backend_speeds() -> dict[str, dict[str, float]] | None:
    """Each backend's speeds as the automatic choice measured them on this machine (None
    if it never measured: the collection was built with an explicit backend)."""
    from dataclasses import asdict

    from retrieval.models.choice import cached_choice
    from retrieval.models.embedding import default_model_path

    choice = cached_choice(default_model_path())
    return None if choice is None else {name: asdict(s) for name, s in choice.speeds.items()}


def plain_query_ms(queries: list[str]) -> float:
    """E: the median time of `SentenceTransformer.encode` on one query, torch fp32."""
    from sentence_transformers import SentenceTransformer

    from retrieval.models.embedding import default_model_path

    model = SentenceTransformer(str(default_model_path()), device="cpu", local_files_only=True)
    for query in queries[:10]:
        model.encode([query], normalize_embeddings=True)
    timings = []
    for query in queries:
        started = time.perf_counter()
        model.encode([query], normalize_embeddings=True)
        timings.append(time.perf_counter() - started)
    return round(1000 * statistics.median(timings), 3)


def wrk_script(queries: list[str]) -> str:
    """A wrk script posting the queries in turn, each as /search's JSON body."""
    bodies = ",\n".join(lua_string(json.dumps({"query": q, "k": 10})) for q in queries)
    return f"""local bodies = {{
{bodies}
}}
local i = 0
local headers = {{["Content-Type"] = "application/json"}}
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", "/search", headers, bodies[i])
end
"""


def lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def wrk(url: str, script: Path, *, connections: int, seconds: float) -> dict[str, Any]:
    """One wrk run: requests, QPS, p50 and p99 in ms, and the requests that failed."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency",
               "--timeout", "10s", "-s", str(script), url]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return parse_wrk(done.stdout)


def parse_wrk(text: str) -> dict[str, Any]:
    def latency(percent: str) -> float:
        found = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        if found is None:
            raise ValueError(f"no {percent}% latency in wrk's output:\n{text}")
        return round(float(found[1]) * UNITS[found[2]], 3)

    requests = re.search(r"(\d+) requests in", text)
    qps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                        text)
    if requests is None or qps is None:
        raise ValueError(f"wrk's output has no totals:\n{text}")
    return {
        "requests": int(requests[1]), "qps": float(qps[1]),
        "p50_ms": latency("50"), "p99_ms": latency("99"),
        "errors": (int(non_2xx[1]) if non_2xx else 0)
        + (sum(int(n) for n in sockets.groups()) if sockets else 0),
    }


def checks(r: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(what, measured, goal, met) for each goal."""
    m1, limit = r["model"]["m1_ms"], r["model"]["l_qps"]
    c1, c32 = r["load"][1], r["load"][32]
    rows = []
    if "ingest" in r:
        share = r["ingest"]["outside_model_share"]
        rows.append(("ingest: time outside the model", f"{100 * share:.1f}%",
                     f"< {100 * GOALS['outside_model_share']:g}%",
                     share < GOALS["outside_model_share"]))
    rows += [
        ("concurrency 1: HTTP p50 - m1", f"{c1['p50_ms']:.2f} ms = m1 "
         f"{c1['p50_ms'] - m1:+.2f} ms", f"<= m1 + {GOALS['c1_p50_over_m1_ms']:g} ms",
         c1["p50_ms"] - m1 <= GOALS["c1_p50_over_m1_ms"]),
        ("concurrency 32: QPS / L", f"{c32['qps']:.0f} QPS = {c32['qps'] / limit:.2f} L",
         f">= {GOALS['c32_qps_over_l']:g} L", c32["qps"] / limit >= GOALS["c32_qps_over_l"]),
        ("failed requests (non-2xx, socket errors)", str(c1["errors"] + c32["errors"]), "0",
         c1["errors"] + c32["errors"] == 0),
    ]
    return rows


def table(r: dict[str, Any]) -> str:
    backend, e, model = r["backend"], r["e_ms"], r["model"]
    m1, limit = model["m1_ms"], model["l_qps"]
    lines = [
        f"defaults: collection built by {backend['backend']}, served by `python -m service` "
        "with its default settings, POST /search {query, k: 10} (mode: the default, hybrid)",
        f"CPU: {r['cpu']}",
        "",
        f"m1 = {m1:.2f} ms ({backend['backend']}, one headline in process, median of "
        f"{E_QUERIES}); L = {limit:.0f} queries/s (batches of {L_BATCH}, in process)",
        f"E = {e:.2f} ms (SentenceTransformer.encode of one headline, torch fp32): "
        f"m1 = {m1 / e:.2f} E",
    ]
    if "ingest" in r:
        i = r["ingest"]
        lines.append(
            f"ingest: {i['articles']} articles, {i['passages']} passages: baseline "
            f"{i['baseline_s']} s ({i['baseline_passages_per_s']}/s), retrieval "
            f"{i['pipeline_s']} s ({i['pipeline_passages_per_s']}/s): {i['ratio']:.2f}x "
            f"plain encode, {100 * i['outside_model_share']:.1f}% outside the model")
    lines += ["", "| server | concurrency | requests | QPS | QPS / L | p50 ms | p50 - m1 ms "
              "| p99 ms | failed |", "|---|---|---|---|---|---|---|---|---|"]
    servers = [("service", r["load"])] + ([("peer: sentence-transformers + FastAPI",
                                            r["peer"])] if "peer" in r else [])
    for name, levels in servers:
        for c, load in levels.items():
            lines.append(
                f"| {name} | {c} | {load['requests']} | {load['qps']:.1f} "
                f"| {load['qps'] / limit:.2f} | {load['p50_ms']} | {load['p50_ms'] - m1:+.2f} "
                f"| {load['p99_ms']} | {load['errors']} |")
    if "peer" in r:
        ratios = ", ".join(f"concurrency {c}: {r['load'][c]['qps'] / p['qps']:.2f}x"
                           for c, p in r["peer"].items() if p["qps"])
        lines.append(f"\nservice QPS / peer QPS: {ratios}")
    if r.get("backends"):
        lines += ["", "backends (the automatic choice's measurement on this machine):",
                  "| backend | ms/query | queries/s in batches | passages/s |", "|---|---|---|---|"]
        lines += [f"| {name} | {s['query_ms']:.1f} | {s['queries_per_s']:.0f} "
                  f"| {s['passages_per_s']:.1f} |" for name, s in r["backends"].items()]
    lines += ["", "| goal | measured | target | |", "|---|---|---|---|"]
    lines += [f"| {what} | {value} | {goal} | {'pass' if ok else '**fail**'} |"
              for what, value, goal, ok in r["checks"]]
    return "\n".join(lines)

"""`retrieval bench defaults`: what a newcomer gets, as ratios to one plain model call.

Everything is built by the defaults, as `make serve` builds it: the collection by the
default backend of new collections (auto: retrieval/models/choice.py), the service by its
default settings, every search in the default mode (hybrid). One run measures, side by
side on the same machine:

- E: plain sentence-transformers (torch fp32, in process) embedding one short query, the
  median over BBC headlines. Every latency goal is a multiple of E, so the goals mean
  the same on a fast CPU and a slow one;
- ingest: the collection built end to end from the BBC corpus against plain
  `SentenceTransformer.encode` (torch fp32, batch 32) of the same passages
  (bench.measure_ingest), and the share of time spent outside the model;
- the service under `wrk` (C, one thread: the load costs the server's two cores little)
  at concurrency 1 and 32, posting BBC headlines to /search: p50, p99, QPS, errors.

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
GOALS = {  # from the issue "Fast by default, on the CPU it runs on"
    "ingest_ratio": 3.0, "outside_model_share": 0.10,
    "c1_p50_over_e": 0.4, "c32_qps_times_e": 8.0, "c32_p99_over_e": 8.0,
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
        script = Path(tmp) / "search.lua"
        script.write_text(wrk_script(queries), "utf-8")
        with loadtest.running_server(collection, **service_defaults()) as url:
            wrk(url, script, connections=4, seconds=3)  # warm: first calls, connections
            result["load"] = {c: wrk(url, script, connections=c, seconds=args.seconds)
                              for c in (1, 32)}
        result["backend"] = json.loads((collection / "manifest.json").read_text())["embedder"]
    result["cpu"] = cpu_summary()
    result["checks"] = checks(result)
    print_result(result, args.json, table)
    return 0 if all(ok for _, _, _, ok in result["checks"]) else 1


def service_defaults() -> dict[str, Any]:
    """The service's own defaults for batching, so the benchmark serves as `make serve`."""
    from service.settings import Settings

    settings = Settings()
    return {"batch_window_ms": settings.batch_window_ms, "max_batch": settings.max_batch}


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
    e, c1, c32 = r["e_ms"], r["load"][1], r["load"][32]
    rows = []
    if "ingest" in r:
        ingest = r["ingest"]
        rows += [
            ("ingest: retrieval index end to end / plain encode", f"{ingest['ratio']:.2f}x",
             f">= {GOALS['ingest_ratio']:g}x", ingest["ratio"] >= GOALS["ingest_ratio"]),
            ("ingest: time outside the model", f"{100 * ingest['outside_model_share']:.1f}%",
             f"< {100 * GOALS['outside_model_share']:g}%",
             ingest["outside_model_share"] < GOALS["outside_model_share"]),
        ]
    rows += [
        ("concurrency 1: HTTP p50 / E", f"{c1['p50_ms']:.2f} ms = {c1['p50_ms'] / e:.2f} E",
         f"<= {GOALS['c1_p50_over_e']:g} E", c1["p50_ms"] / e <= GOALS["c1_p50_over_e"]),
        ("concurrency 32: QPS x E", f"{c32['qps']:.0f} QPS = {c32['qps'] * e / 1000:.1f} / E",
         f">= {GOALS['c32_qps_times_e']:g} / E",
         c32["qps"] * e / 1000 >= GOALS["c32_qps_times_e"]),
        ("concurrency 32: p99 / E", f"{c32['p99_ms']:.1f} ms = {c32['p99_ms'] / e:.1f} E",
         f"<= {GOALS['c32_p99_over_e']:g} E", c32["p99_ms"] / e <= GOALS["c32_p99_over_e"]),
        ("failed requests (non-2xx, socket errors)", str(c1["errors"] + c32["errors"]), "0",
         c1["errors"] + c32["errors"] == 0),
    ]
    return rows


def table(r: dict[str, Any]) -> str:
    backend = r["backend"]
    lines = [
        f"defaults: collection built by {backend['backend']}, served by `python -m service` "
        "with its default settings, POST /search {query, k: 10} (mode: the default, hybrid)",
        "",
        f"E = {r['e_ms']:.2f} ms (SentenceTransformer.encode of one headline, torch fp32, "
        f"median of {E_QUERIES})",
    ]
    if "ingest" in r:
        i = r["ingest"]
        lines.append(
            f"ingest: {i['articles']} articles, {i['passages']} passages: baseline "
            f"{i['baseline_s']} s ({i['baseline_passages_per_s']}/s), retrieval "
            f"{i['pipeline_s']} s ({i['pipeline_passages_per_s']}/s)")
    for c, load in r["load"].items():
        lines.append(f"concurrency {c}: {load['requests']} requests, {load['qps']:.1f} QPS, "
                     f"p50 {load['p50_ms']} ms, p99 {load['p99_ms']} ms, "
                     f"{load['errors']} failed")
    lines += ["", "| goal | measured | target | |", "|---|---|---|---|"]
    lines += [f"| {what} | {value} | {goal} | {'pass' if ok else '**fail**'} |"
              for what, value, goal, ok in r["checks"]]
    lines += ["", f"CPU: {r['cpu']}"]
    return "\n".join(lines)

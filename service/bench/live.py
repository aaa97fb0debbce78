"""`retrieval bench live`: a collection that stays exact, fresh and fast while news arrives.

    python -m service.bench.live --dir /tmp/live --reuse        (or: retrieval bench live)

One run, on public surfaces only (the HTTP service, the `retrieval` CLI, the library):

1. builds (or, with --dir and --reuse, reuses) a collection of --size passages whose
   vectors derive from real BBC passage vectors, plus a few hundred real BBC articles;
2. starts service A and service B (`python -m service`, batching on) on it, then
   --searchers concurrent searchers: a warm-up (with one post and delete, so the write
   path has allocated what it needs once), an IDLE phase (searches only) and a WRITING
   phase, in which an HTTP writer posts an article to A every --write-every s
   and deletes older ones, and `retrieval index` / `retrieval delete` run every
   --cli-every s from another process;
3. checks every answer (no 5xx, no passage twice, no hit from an article already
   deleted), measures how soon each posted article is found in A and in B, search
   latency idle against writing, and the growth of A's resident memory;
4. at the end, /stats of A and B and `retrieval info` must say store and index agree;
5. write cost: batches of 10 real articles added in process to collections of each
   --write-cost-sizes size: seconds and bytes written per batch, and their ratio.

It prints one Markdown table (metric, value, goal, pass) with the CPU and the command
line, or JSON with --json, and exits 1 if any goal fails or any request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import httpx2

from retrieval.bench.common import BBC, percentile_ms, print_result
from retrieval.bench.writes import renamed
from retrieval.models.cpu import cpu_info, cpu_summary
from retrieval.records import Article
from service.bench import live_load
from service.bench.live_load import Soak, child_env
from service.bench.loadtest import free_port, load_queries, wait_until_ready

WARMUP_S = 30.0
PROG = "python -m service.bench.live"


def default_backend() -> str:
    return "openvino-int8" if find_spec("openvino") and find_spec("nncf") else "torch"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--size", type=int, default=200_000, help="passages in the collection (default 200000)")
    add("--duration", type=float, default=600, help="seconds of the writing phase (default 600)")
    add("--idle", type=float, default=120, help="seconds of the idle phase (default 120)")
    add("--warmup", type=float, default=WARMUP_S, help="seconds of warm-up (default 30)")
    add("--searchers", type=int, default=64, help="concurrent HTTP searchers (default 64)")
    add("--write-every", type=float, default=1.0, help="seconds between HTTP posts (default 1)")
    add("--cli-every", type=float, default=5.0,
        help="seconds between `retrieval index` runs (default 5)")
    add("--write-cost-sizes", default="200000,1000000",
        help="collection sizes of the write-cost measure (default 200000,1000000)")
    add("--write-cost-batches", type=int, default=20, help="batches at each size (default 20)")
    add("--real-articles", type=int, default=300,
        help="real BBC articles indexed into the live collection (default 300)")
    add("--base", type=int, default=3000,
        help="real passage vectors the synthetic ones derive from (default 3000)")
    add("--backend", default=default_backend(),
        help="embedding backend (default openvino-int8 when installed, else torch)")
    add("--dir", type=Path, default=None,
        help="build the collections here and keep them (default: a temporary directory)")
    add("--reuse", action="store_true",
        help="reuse the collections already in --dir instead of rebuilding them")
    add("--json", action="store_true", help="print the result as JSON")


def add_live_parser(benches: Any) -> None:
    """Adds `live` to `retrieval bench` (the `retrieval.benchmarks` entry point)."""
    parser = benches.add_parser("live", help="exact, fresh and fast while articles arrive",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.set_defaults(run=run_live_bench)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.command_line = f"{PROG} {shlex.join(argv)}".strip()
    return run_live_bench(args)


# -- the run -------------------------------------------------------------------------------


def run_live_bench(args: argparse.Namespace) -> int:
    from retrieval.bench.writes import bbc_articles, build_collection, write_cost
    from retrieval.models.backends import make_embedder

    command = getattr(args, "command_line", None) or shlex.join(["retrieval", *sys.argv[1:]])
    sizes = [int(s) for s in args.write_cost_sizes.split(",") if s.strip()]
    run = time.strftime("%Y%m%d%H%M%S")
    embedder = make_embedder(args.backend)
    articles = bbc_articles()
    real, rest = articles[: args.real_articles], articles[args.real_articles :]
    http_pool, cli_pool = rest[: len(rest) // 2], rest[len(rest) // 2 :]
    with workspace(args.dir) as root:
        path = root / f"live-{args.backend}-{args.size}"
        build_s = build_collection(path, embedder, args.size, base=args.base, real=real,
                                   reuse=args.reuse)
        with services(path) as servers:
            soak, end = asyncio.run(soak_and_check(args, servers, path, http_pool,
                                                   cli_pool, run, root))
        costs = {}
        for size in sizes:
            cost_path = root / f"writecost-{args.backend}-{size}"
            build_collection(cost_path, embedder, size, base=args.base, real=[],
                             reuse=args.reuse)
            costs[size] = write_cost(cost_path, embedder, http_pool,
                                     batches=args.write_cost_batches, per_batch=10, run=run)
    result = report(args, command, soak, end, costs, build_s)
    print_result(result, args.json, live_table)
    return 0 if result["passed"] else 1


@contextmanager
def workspace(keep: Path | None) -> Iterator[Path]:
    """--dir, or a temporary directory removed at the end."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="retrieval-bench-live-") as tmp:
        yield Path(tmp)


@dataclass(frozen=True, slots=True)
class Server:
    url: str
    pid: int


@contextmanager
def services(collection: Path) -> Iterator[tuple[Server, Server]]:
    """Services A and B on free ports of 127.0.0.1, started together; both stopped at exit."""
    started: list[tuple[subprocess.Popen[bytes], str]] = []
    try:
        for _ in range(2):
            port = free_port()
            command = [sys.executable, "-m", "service", "--collection", str(collection),
                       "--host", "127.0.0.1", "--port", str(port), "--batch-window-ms", "2",
                       "--max-batch", "32", "--warm-up", "all", "--log-level", "warning"]
            # stdout=2: a child's prints must never mix into this process's JSON.
            process = subprocess.Popen(command, env=child_env(), cwd=live_load.ROOT, stdout=2)
            started.append((process, f"http://127.0.0.1:{port}"))
        for process, url in started:
            wait_until_ready(url, process, 300)
        (a, a_url), (b, b_url) = started
        yield Server(a_url, a.pid), Server(b_url, b.pid)
    finally:
        for process, _ in started:
            process.terminate()
        for process, _ in started:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def soak_and_check(
    args: argparse.Namespace, servers: tuple[Server, Server], path: Path,
    http_pool: list[Article], cli_pool: list[Article], run: str, root: Path,
) -> tuple[Soak, dict[str, Any]]:
    """The warm-up, idle and writing phases, then the end-of-run agreement checks."""
    a, b = servers
    queries = load_queries(BBC)
    posts = int(args.duration / args.write_every) + 1
    rounds = int(args.duration / args.cli_every) + 1
    hot = [art.title for art in http_pool[:posts] + cli_pool[: rounds * live_load.CLI_ARTICLES]]
    warm_article = renamed(http_pool[-1], f"live-{run}-warmup")
    soak = Soak.starting_now(args.warmup, args.idle, args.duration)
    n = args.searchers + 16
    limits = httpx2.Limits(max_connections=n, max_keepalive_connections=n)
    with tempfile.TemporaryDirectory(prefix="cli-", dir=root) as tmp:
        async with httpx2.AsyncClient(timeout=live_load.REQUEST_TIMEOUT_S, limits=limits) as client:
            async with asyncio.TaskGroup() as group:
                for i in range(args.searchers):
                    group.create_task(live_load.searcher(
                        soak, client, (a if i % 2 == 0 else b).url, queries, hot, seed=i))
                group.create_task(live_load.sample_rss(soak, a.pid))
                group.create_task(live_load.warm_writes(soak, client, a.url, warm_article))
                group.create_task(live_load.http_writer(
                    soak, client, (a.url, b.url), http_pool, every=args.write_every, run=run))
                group.create_task(live_load.cli_writer(
                    soak, path, cli_pool, every=args.cli_every, run=run, tmp=Path(tmp)))
            end: dict[str, Any] = {"A": await stats(soak, client, a.url),
                                   "B": await stats(soak, client, b.url)}
    end["info_exit"] = await asyncio.to_thread(retrieval_info, path, soak)
    return soak, end


def retrieval_info(path: Path, soak: Soak) -> int | None:
    """`python -m retrieval info`'s exit status (1: store and index disagree); None if hung."""
    command = [sys.executable, "-m", "retrieval", "info", "--collection", str(path)]
    try:
        done = subprocess.run(command, env=child_env(), cwd=live_load.ROOT, capture_output=True,
                              timeout=300, check=False)
    except subprocess.TimeoutExpired:
        soak.error("retrieval info still running after 300 s: killed")
        return None
    if done.returncode not in (0, 1):  # 1 (disagreement) is the agreement goal's to report
        soak.error(f"retrieval info exited {done.returncode}: {done.stderr.decode()[-300:]}")
    return done.returncode


async def stats(soak: Soak, client: httpx2.AsyncClient, url: str) -> dict[str, Any]:
    response = await soak.request(client, "GET", f"{url}/stats")
    return {} if response is None else dict(response.json())


# -- the report ----------------------------------------------------------------------------


def report(
    args: argparse.Namespace, command: str, soak: Soak, end: dict[str, Any],
    costs: dict[int, dict[str, Any]], build_s: float,
) -> dict[str, Any]:
    """Every figure, and each goal with its verdict (None: nothing to judge, e.g. one size)."""
    idle, writing = soak.latencies["idle"], soak.latencies["writing"]
    p99_idle, p99_writing = percentile_ms(idle, 99), percentile_ms(writing, 99)
    rss_warm, rss_max = rss_after_warmup(soak)
    a, b = end.get("A", {}), end.get("B", {})
    metrics: dict[str, Any] = {
        "searches": soak.answers, "statuses": {str(k): v for k, v in sorted(soak.statuses.items())},
        "http_5xx": sum(v for k, v in soak.statuses.items() if k >= 500),
        "unexpected_errors": soak.error_count - soak.duplicate_answers - soak.deleted_hits,
        "duplicate_answers": soak.duplicate_answers, "deleted_hits": soak.deleted_hits,
        "search_p50_ms_idle": percentile_ms(idle, 50), "search_p99_ms_idle": p99_idle,
        "search_p50_ms_writing": percentile_ms(writing, 50), "search_p99_ms_writing": p99_writing,
        "searches_idle": len(idle), "searches_writing": len(writing),
        "qps_idle": rate(len(idle), args.idle), "qps_writing": rate(len(writing), args.duration),
        "p99_ratio_writing_idle": ratio(p99_writing, p99_idle),
        **{f"{k}": v for k, v in sorted(soak.writes.items())},
        "cli_index_p50_s": seconds(soak.cli_seconds["index"], 50),
        "freshness_probes": len(soak.fresh["A"]), "freshness_timeouts": soak.fresh_timeouts,
        "rss_warm_mb": round(rss_warm / 1024, 1), "rss_max_mb": round(rss_max / 1024, 1),
        "rss_growth": ratio(rss_max, rss_warm) - 1 if rss_warm else float("nan"),
        "in_agreement_a": bool(a.get("in_agreement")),
        "in_agreement_b": bool(b.get("in_agreement")),
        "generation_a": a.get("generation"), "generation_b": b.get("generation"),
        "passages_a": a.get("passages"), "passages_b": b.get("passages"),
        "info_exit": end.get("info_exit"), "build_s": round(build_s, 1),
    }
    for server in ("A", "B"):
        for q, name in ((50, "p50"), (99, "p99"), (100, "max")):
            metrics[f"freshness_{server.lower()}_{name}_s"] = seconds(soak.fresh[server], q)
    sizes = sorted(costs)
    for size in sizes:
        for key in ("median_s", "p90_s", "median_bytes", "p90_bytes", "median_dir_growth_bytes",
                    "p90_dir_growth_bytes"):
            metrics[f"write_{size}_{key}"] = costs[size][key]
    small, large = (costs[sizes[0]], costs[sizes[-1]]) if sizes else ({}, {})
    one_size = len(sizes) < 2
    metrics["write_cost_ratio_s"] = (
        None if one_size else ratio(large["median_s"], small["median_s"]))
    metrics["write_cost_ratio_bytes"] = (
        None if one_size else ratio(large["median_bytes"], small["median_bytes"]))
    rows = goal_rows(metrics)
    return {
        "benchmark": "live", "command": command, "cpu": cpu_info(),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                     if k not in ("run", "command_line")},
        "metrics": {k: finite(v) for k, v in metrics.items()},
        "write_cost": {str(size): costs[size] for size in sizes},
        "rss_mb_each_second": [round(kb / 1024, 1) for _, kb in soak.rss_kb],
        "rows": rows, "passed": all(row["pass"] is not False for row in rows),
        "errors": soak.errors,
    }


def goal_rows(m: dict[str, Any]) -> list[dict[str, Any]]:
    """(metric, value, goal, pass) for each goal; pass is None when there is nothing to judge."""

    def row(metric: str, value: Any, goal: str, ok: bool | None) -> dict[str, Any]:
        return {"metric": metric, "value": finite(value), "goal": goal, "pass": ok}

    agree = m["in_agreement_a"] and m["in_agreement_b"] and m["info_exit"] == 0
    def under(value: Any, bound: float) -> bool:
        return value is not None and value == value and value <= bound  # nan fails

    return [
        row("HTTP 5xx answers", m["http_5xx"], "0", m["http_5xx"] == 0),
        row("other failed requests and commands", m["unexpected_errors"], "0",
            m["unexpected_errors"] == 0),
        row("answers with a passage twice", m["duplicate_answers"], "0",
            m["duplicate_answers"] == 0),
        row("hits from already-deleted articles", m["deleted_hits"], "0", m["deleted_hits"] == 0),
        row("store and index agree at the end (A, B, retrieval info)",
            f"{m['in_agreement_a']}, {m['in_agreement_b']}, exit {m['info_exit']}", "true", agree),
        row("A resident memory growth after warm-up", m["rss_growth"], "< 0.10",
            under(m["rss_growth"], 0.0999999)),
        row("search p99 writing / idle", m["p99_ratio_writing_idle"], "<= 2",
            under(m["p99_ratio_writing_idle"], 2)),
        row("freshness p99 in A (s)", m["freshness_a_p99_s"], "<= 1",
            under(m["freshness_a_p99_s"], 1)),
        row("freshness p99 in B (s)", m["freshness_b_p99_s"], "<= 1",
            under(m["freshness_b_p99_s"], 1)),
        row("write cost ratio, seconds per batch (largest / smallest size)",
            m["write_cost_ratio_s"], "< 3",
            None if m["write_cost_ratio_s"] is None else under(m["write_cost_ratio_s"], 2.999999)),
        row("write cost ratio, bytes per batch (largest / smallest size)",
            m["write_cost_ratio_bytes"], "< 3",
            None if m["write_cost_ratio_bytes"] is None
            else under(m["write_cost_ratio_bytes"], 2.999999)),
    ]


def rss_after_warmup(soak: Soak) -> tuple[float, float]:
    """(VmRSS kB at the end of the warm-up, the most after it); zeros without samples."""
    before = [kb for t, kb in soak.rss_kb if t <= soak.warm_end]
    after = [kb for t, kb in soak.rss_kb if t > soak.warm_end]
    warm = before[-1] if before else after[0] if after else 0
    return float(warm), float(max(after, default=warm))


def seconds(values: list[float], q: float) -> float:
    return round(percentile_ms(values, q) / 1000, 4)


def rate(count: int, duration: float) -> float:
    return round(count / duration, 1) if duration > 0 else float("nan")


def ratio(top: float, bottom: float) -> float:
    return round(top / bottom, 3) if bottom and bottom == bottom else float("nan")


def finite(value: Any) -> Any:
    """nan becomes None, so the JSON is plain JSON."""
    return None if isinstance(value, float) and value != value else value


def live_table(r: dict[str, Any]) -> str:
    s, m, cpu = r["settings"], r["metrics"], r["cpu"]
    verdict = {True: "pass", False: "FAIL", None: "n/a"}
    lines = [
        f"live: {m['passages_a']} passages ({s['size']} synthetic from real BBC passage vectors "
        f"+ {s['real_articles']} real articles), services A and B, {s['searchers']} searchers; "
        f"idle {s['idle']} s, writing {s['duration']} s ({s['backend']})",
        "",
        "| metric | value | goal | pass |",
        "|---|---|---|---|",
    ]
    lines += [f"| {row['metric']} | {show(row['value'])} | {row['goal']} | {verdict[row['pass']]} |"
              for row in r["rows"]]
    facts = [
        ("searches answered (idle / writing, QPS)",
         f"{m['searches']} ({m['qps_idle']} / {m['qps_writing']})"),
        ("search p50 / p99 ms, idle", f"{show(m['search_p50_ms_idle'])} / "
         f"{show(m['search_p99_ms_idle'])}"),
        ("search p50 / p99 ms, writing", f"{show(m['search_p50_ms_writing'])} / "
         f"{show(m['search_p99_ms_writing'])}"),
        ("freshness A p50 / p99 / max s", f"{show(m['freshness_a_p50_s'])} / "
         f"{show(m['freshness_a_p99_s'])} / {show(m['freshness_a_max_s'])}"),
        ("freshness B p50 / p99 / max s", f"{show(m['freshness_b_p50_s'])} / "
         f"{show(m['freshness_b_p99_s'])} / {show(m['freshness_b_max_s'])}"),
        ("writes (HTTP posts / deletes, CLI index / delete runs)",
         f"{m.get('http_posts', 0)} / {m.get('http_deletes', 0)}, "
         f"{m.get('cli_index_runs', 0)} / {m.get('cli_delete_runs', 0)}"),
        ("A resident memory MB (end of warm-up / max)", f"{m['rss_warm_mb']} / {m['rss_max_mb']}"),
    ]
    for size, cost in r["write_cost"].items():
        facts.append((f"write cost at {int(size):,} passages: s per batch (median / p90)",
                      f"{cost['median_s']} / {cost['p90_s']}"))
        facts.append((f"write cost at {int(size):,} passages: bytes per batch "
                       f"({cost['bytes_source']}; median / p90; dir growth median)",
                       f"{cost['median_bytes']:,.0f} / {cost['p90_bytes']:,.0f}; "
                       f"{cost['median_dir_growth_bytes']:,.0f}"))
        facts.append((f"checkpoint at {int(size):,} passages: s, bytes; amortized per batch "
                      "(one is due every delta_max added passages)",
                      f"{cost['checkpoint_s']} s, {cost['checkpoint_bytes']:,.0f} B; "
                      f"{cost['amortized_checkpoint_s']} s, "
                      f"{cost['amortized_checkpoint_bytes']:,.0f} B"))
    lines += [f"| {name} | {value} | - | - |" for name, value in facts]
    lines += [
        "",
        f"CPU: {cpu_summary(cpu)}",
        f"command: {r['command']}",
        f"result: {'PASS' if r['passed'] else 'FAIL'}",
    ]
    lines += [f"error: {e}" for e in r["errors"][:5]]
    return "\n".join(lines)


def show(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


if __name__ == "__main__":
    sys.exit(main())

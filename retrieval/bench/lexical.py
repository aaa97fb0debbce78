"""`retrieval bench lexical`: the engine's BM25 (retrieval/collection/bm25.py) against FTS5's
bm25(), one run.

Over a built collection, every query (BBC headlines by default) is searched by both, one
after the other: it checks that both return the same passages with the same scores (ties
may come in another order) and prints the CPU time per query of each and their ratio.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from retrieval.bench.common import BBC, print_result
from retrieval.models.cpu import cpu_summary


def add_lexical_parser(benches: Any) -> None:
    parser = benches.add_parser(
        "lexical", help="in-memory BM25 against FTS5's bm25(): same answers, CPU per query")
    parser.add_argument("--collection", type=Path, required=True, metavar="DIR",
                        help="a built collection (e.g. from `retrieval bench ingest --keep`)")
    parser.add_argument("--queries", type=Path, default=BBC,
                        help="JSONL whose titles are the queries; default BBC")
    parser.add_argument("--limit", type=int, default=400, metavar="N", help="first N queries")
    parser.add_argument("--k", type=int, default=100,
                        help="passages per query (default 100, hybrid's candidate depth)")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(run=run_lexical_bench)


def run_lexical_bench(args: argparse.Namespace) -> int:
    from retrieval.collection.bm25 import MemoryBm25
    from retrieval.collection.lexical import Fts5Index
    from retrieval.collection.store import STORE, Store
    from retrieval.records import Filters

    store = Store(args.collection / STORE, readonly=True)
    memory, fts5 = MemoryBm25(store), Fts5Index(store)
    started = time.perf_counter()
    passages = len(memory)  # builds the postings
    build_s = time.perf_counter() - started
    queries = headlines(args.queries)[: args.limit]
    if not queries:
        raise SystemExit(f"error: no titles to use as queries in {args.queries}")
    spent = {"memory": 0.0, "fts5": 0.0}
    differ, largest = 0, 0.0
    for query in queries:
        answers = {}
        for name, index in (("memory", memory), ("fts5", fts5)):
            started = time.process_time()
            answers[name] = index.search(query, args.k, filters=Filters(), allowed=None)
            spent[name] += time.process_time() - started
        mine, theirs = answers["memory"], answers["fts5"]
        gaps = [abs(a[1] - b[1]) for a, b in zip(mine, theirs, strict=False)]
        largest = max([largest, *gaps])
        if len(mine) != len(theirs) or any(gap > 1e-9 for gap in gaps):
            differ += 1
    result = {
        "benchmark": "lexical", "collection": str(args.collection), "passages": passages,
        "queries": len(queries), "k": args.k, "build_s": round(build_s, 3),
        "memory_cpu_ms": round(1000 * spent["memory"] / len(queries), 3),
        "fts5_cpu_ms": round(1000 * spent["fts5"] / len(queries), 3),
        "largest_score_difference": largest, "answers_that_differ": differ,
        "cpu": cpu_summary(),
    }
    result["ratio"] = round(result["fts5_cpu_ms"] / result["memory_cpu_ms"], 2)
    print_result(result, args.json, table)
    store.close()
    return 0 if differ == 0 else 1


def headlines(path: Path) -> list[str]:
    """The non-empty titles of a JSONL corpus, in order."""
    with open(path, encoding="utf-8") as lines:
        titles = [json.loads(line).get("title", "").strip() for line in lines if line.strip()]
    return [title for title in titles if title]


def table(r: dict[str, Any]) -> str:
    return "\n".join([
        f"lexical: {r['queries']} queries, k={r['k']}, over {r['passages']} passages "
        f"({r['collection']}); postings built in {r['build_s']} s",
        "",
        "| BM25 | CPU ms per query | ratio |",
        "|---|---|---|",
        f"| FTS5 bm25() in SQLite (baseline) | {r['fts5_cpu_ms']} | 1.00x |",
        f"| in memory, FTS5's formula (the engine's) | {r['memory_cpu_ms']} | "
        f"**{r['ratio']}x** |",
        "",
        f"answers that differ (ids or scores beyond 1e-9): {r['answers_that_differ']}; "
        f"largest score difference {r['largest_score_difference']:.1e}",
        f"CPU: {r['cpu']}",
    ])

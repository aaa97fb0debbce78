"""Cost per query of hybrid search at several fusion depths, on a cached evaluation
collection (queries embedded beforehand, so only the search is timed).

    python scripts/ranking_cost.py /work/shared/datasets/scifact zscore:0.6 zscore:0.6@400
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from retrieval.evaluation import cli as eval_cli
from retrieval.search.fusion import Fusion
from retrieval.search.options import SearchOptions
from retrieval.search.retriever import Retriever

ROUNDS = 3


def main(argv: list[str]) -> None:
    dataset, specs = Path(argv[0]), argv[1:]
    parser = argparse.ArgumentParser(prog="retrieval")
    eval_cli.register(parser.add_subparsers())
    args = parser.parse_args(["eval", str(dataset), "--quiet"])
    task = eval_cli.load_task(args)
    queries = list(task.queries.values())
    with eval_cli.open_collection(args, task) as collection:
        vectors = collection.embedder.embed_queries(queries)
        options = SearchOptions(k=10, mode="hybrid")
        for spec in specs:
            retriever = Retriever(collection, fusion=Fusion.parse(spec))
            retriever.search_embedded(queries[:20], vectors[:20], options)  # warm up
            times = []
            for _ in range(ROUNDS):
                for i, query in enumerate(queries):
                    started = time.perf_counter()
                    retriever.search_embedded([query], vectors[i : i + 1], options)
                    times.append(time.perf_counter() - started)
            times.sort()
            print(f"{spec:18} median {statistics.median(times) * 1e3:6.2f} ms  "
                  f"p95 {times[int(0.95 * len(times))] * 1e3:6.2f} ms  ({len(times)} searches, "
                  f"k=10, collapse on)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

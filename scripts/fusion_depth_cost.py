"""Cost of one collapsed hybrid search (k=10) at fusion depth 100 and 400, over any collection.

The queries are the first 300 titles of a JSONL corpus, embedded once beforehand, so only
the search is timed; the two depths alternate over three rounds, medians printed.

    python scripts/fusion_depth_cost.py COLLECTION $RETRIEVAL_DATASETS/bbc/corpus.jsonl
"""

from __future__ import annotations

import json
import statistics
import sys
import time

from retrieval.collection.collection import Collection
from retrieval.search.fusion import Fusion
from retrieval.search.options import SearchOptions
from retrieval.search.retriever import Retriever

DEPTHS = (100, 400)
ROUNDS = 3


def main(collection_path: str, corpus: str) -> None:
    with open(corpus, encoding="utf-8") as lines:
        titles = [json.loads(line)["title"] for line in lines][:300]
    with Collection.open(collection_path, create=False, background=False) as collection:
        vectors = collection.embedder.embed_queries(titles)
        medians: dict[int, list[float]] = {depth: [] for depth in DEPTHS}
        for _ in range(ROUNDS):
            for depth in DEPTHS:
                retriever = Retriever(collection, fusion=Fusion("zscore", 0.6, depth))
                times = []
                for i, title in enumerate(titles):
                    started = time.perf_counter()
                    retriever.search_embedded([title], vectors[i : i + 1], SearchOptions(k=10))
                    times.append((time.perf_counter() - started) * 1000)
                medians[depth].append(statistics.median(times))
        print(f"{len(collection.index)} passages; median ms per search, by round:")
        for depth, values in medians.items():
            print(f"  depth {depth}: " + ", ".join(f"{v:.2f}" for v in values))


if __name__ == "__main__":
    main(*sys.argv[1:3])

"""Do pages tile one ranking? Issue 22, item 1, measured on an evaluation collection.

    python scripts/paging_check.py /work/shared/datasets/scifact [QUERIES]

For the first QUERIES (default 50) queries, in each mode, with collapse on and with
max_per_article=1: ten pages of k=10 (offsets 0, 10, ..., 90) against one k=100 search
(hits repeated on another page, hits of the k=100 search on no page), and a k=10 search
against the first 10 of the k=100 one (queries where they differ).
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from retrieval.evaluation import cli as eval_cli
from retrieval.search.retriever import Retriever


def passage_ids(retriever: Retriever, query: str, k: int, offset: int = 0, *, mode: Any,
                options: dict[str, Any]) -> list[int]:
    return [h.passage_id for h in retriever.search(query, k, mode=mode, offset=offset, **options)]


def main(argv: list[str]) -> None:
    dataset, count = Path(argv[0]), int(argv[1]) if len(argv) > 1 else 50
    parser = argparse.ArgumentParser(prog="retrieval")
    eval_cli.register(parser.add_subparsers())
    args = parser.parse_args(["eval", str(dataset), "--quiet"])
    task = eval_cli.load_task(args)
    queries = list(task.queries.values())[:count]
    with eval_cli.open_collection(args, task) as collection:
        retriever = Retriever(collection)
        for mode in ("dense", "lexical", "hybrid"):
            for options in ({"collapse": True}, {"max_per_article": 1, "collapse": False}):
                repeated = missing = differ = total = 0
                for query in queries:
                    search = functools.partial(passage_ids, retriever, query, mode=mode,
                                               options=options)
                    whole = search(100)
                    pages = [pid for offset in range(0, 100, 10) for pid in search(10, offset)]
                    counts = Counter(pages)
                    repeated += sum(n - 1 for n in counts.values())
                    missing += len(set(whole) - set(pages))
                    total += len(whole)
                    differ += search(10) != whole[:10]
                print(f"{mode:8} {options}: of {total} hits, {repeated} repeated on another "
                      f"page, {missing} on no page; k=10 differs from the first 10 of k=100 "
                      f"in {differ} of {len(queries)} queries", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

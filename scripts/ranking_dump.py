"""Dumps every query's full dense and BM25 scores over an evaluation collection, so that
ranking variants (fusion, depth, document evidence, feedback) cost seconds in numpy.

    python scripts/ranking_dump.py /work/shared/datasets/scifact OUT.npz [--split train]
        [--chunking none]

It opens the collection `retrieval eval` caches (same cache key: build it first with
`retrieval eval DATASET`). OUT.npz holds: passage ids, their article ids, query ids,
dense (queries x passages, cosine), lexical (queries x passages, BM25, 0 = no match),
passage vectors and query vectors (for feedback experiments).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from retrieval.evaluation import cli as eval_cli
from retrieval.records import Filters


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dataset", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--chunking", default="paragraph")
    parser.add_argument("--squad", action="store_true")
    parser.add_argument("--known-item", default=None)
    mine = parser.parse_args(argv)
    eval_parser = argparse.ArgumentParser(prog="retrieval")
    eval_cli.register(eval_parser.add_subparsers())
    eval_argv = ["eval", str(mine.dataset), "--split", mine.split, "--chunking", mine.chunking,
                 "--quiet"]
    if mine.squad:
        eval_argv.append("--squad")
    if mine.known_item:
        eval_argv += ["--known-item", mine.known_item]
    args = eval_parser.parse_args(eval_argv)
    task = eval_cli.load_task(args)
    with eval_cli.open_collection(args, task) as collection:
        query_ids = list(task.queries)
        texts = [task.queries[q] for q in query_ids]
        vectors = collection.embedder.embed_queries(texts)
        with collection.reading() as reader:
            size = reader.size()
            scores, ids = reader.dense(vectors[:1], size)
            passage_ids = np.sort(ids[0][ids[0] >= 0]).astype(np.int64)
            column = {int(p): i for i, p in enumerate(passage_ids)}
            owners = reader.article_of(passage_ids.tolist())
            dense = np.zeros((len(query_ids), len(passage_ids)), np.float32)
            for start in range(0, len(query_ids), 64):
                batch = vectors[start : start + 64]
                scores, ids = reader.dense(batch, size)
                for row, (s, i) in enumerate(zip(scores, ids, strict=True)):
                    keep = i >= 0
                    dense[start + row, [column[int(p)] for p in i[keep]]] = s[keep]
        lexical = np.zeros_like(dense)
        for row, text in enumerate(texts):
            for passage_id, score in collection.lexical.search(
                text, size, filters=Filters(), allowed=None
            ):
                lexical[row, column[passage_id]] = score
        rows = collection.store._db.execute("SELECT id, vector, n_tokens FROM passages")
        stored = {int(i): (blob, n) for i, blob, n in rows}
        passage_vectors = np.stack([
            np.frombuffer(stored[int(p)][0], "<f4") for p in passage_ids])
        lengths = np.array([stored[int(p)][1] for p in passage_ids])
        np.savez_compressed(
            mine.out, passage_ids=passage_ids,
            articles=np.array([owners[int(p)] for p in passage_ids]),
            query_ids=np.array(query_ids), dense=dense, lexical=lexical,
            query_vectors=vectors, passage_vectors=passage_vectors, lengths=lengths,
        )
    print(f"{mine.out}: {len(query_ids)} queries x {len(passage_ids)} passages", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])

"""`retrieval bench ingest`: the BBC corpus indexed end to end against plain encode.

The corpus goes into a temporary collection and is timed against plain
`SentenceTransformer.encode` (torch fp32, batch 32) on the same passage texts, the two
interleaved round by round so that load from other processes hits both alike. It also
prints the share of the time spent outside the model (reading, chunking, counting
tokens, signatures, SQLite, FAISS).
"""


from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.bench.common import BBC, print_result
from retrieval.models.cpu import cpu_info, cpu_summary


def add_ingest_parser(benches: Any) -> None:
    ingest = benches.add_parser("ingest", help="passages/s indexing a corpus vs plain encode")
    ingest.add_argument("--corpus", type=Path, default=BBC, help="articles (JSONL); default BBC")
    ingest.add_argument("--limit", type=int, default=None, metavar="N", help="first N articles")
    ingest.add_argument("--backend", default=None,
                        help="embedding backend of the collection (default: the default of "
                        "new collections, auto)")
    ingest.add_argument("--rounds", type=int, default=4,
                        help="interleaved rounds of pipeline and baseline (default 4)")
    ingest.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="build the collection here and keep it (for bench query)")
    ingest.add_argument("--json", action="store_true")
    ingest.set_defaults(run=run_ingest)


# -- ingest ------------------------------------------------------------------------------


class TimedEmbedder:
    """Passes calls to an embedder, timing embed_documents and keeping the texts it saw."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.texts: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        started = time.perf_counter()
        vectors = self.inner.embed_documents(texts)
        self.seconds += time.perf_counter() - started
        self.texts.extend(texts)
        return np.asarray(vectors)


def run_ingest(args: argparse.Namespace) -> int:
    from retrieval.ingestion.loaders import load_articles

    started = time.perf_counter()
    loaded = load_articles([args.corpus])
    articles = loaded.articles[: args.limit] if args.limit else loaded.articles
    load_s = time.perf_counter() - started
    result = measure_ingest(articles, args.backend, keep=args.keep, rounds=args.rounds,
                            load_s=load_s)
    result["corpus"] = str(args.corpus)
    print_result(result, args.json, ingest_table)
    return 0 if result["in_agreement"] and result["passages"] == result["stored"] else 1


def measure_ingest(
    articles: Sequence[Any], backend: str | None, *, keep: Path | None, rounds: int,
    load_s: float = 0.0,
) -> dict[str, Any]:
    """Indexes the articles end to end, against plain `SentenceTransformer.encode` (torch
    fp32, batch 32) on the same passages, interleaved in `rounds` so that both see the
    same state of a shared machine. `backend` None is the default of new collections."""
    from sentence_transformers import SentenceTransformer

    from retrieval.collection.collection import Collection
    from retrieval.models.backends import make_embedder
    from retrieval.models.embedding import default_model_path

    started = time.perf_counter()
    embedder = TimedEmbedder(make_embedder(backend))
    model_load_s = time.perf_counter() - started
    started = time.perf_counter()
    baseline = SentenceTransformer(str(default_model_path()), device="cpu", local_files_only=True)
    baseline_load_s = time.perf_counter() - started

    pipeline_s = baseline_s = 0.0
    rounds = max(1, min(rounds, len(articles)))
    with tempfile.TemporaryDirectory(prefix="retrieval-bench-") as tmp:
        path = keep or Path(tmp) / "collection"
        with Collection.open(path, embedder, background=False) as collection:
            for part in np.array_split(np.arange(len(articles)), rounds):
                seen = len(embedder.texts)
                started = time.perf_counter()
                collection.add_articles([articles[i] for i in part])
                collection.checkpoint()  # when due, as `retrieval index` does
                pipeline_s += time.perf_counter() - started
                started = time.perf_counter()
                baseline.encode(embedder.texts[seen:], batch_size=32, convert_to_numpy=True,
                                normalize_embeddings=True)
                baseline_s += time.perf_counter() - started
            info = collection.info()
    passages = len(embedder.texts)
    total_s = load_s + pipeline_s
    return {
        "benchmark": "ingest", "articles": len(articles),
        "passages": passages, "stored": info.passages,
        "backend": embedder.spec()["backend"],
        "pipeline_s": round(total_s, 2), "model_s": round(embedder.seconds, 2),
        "outside_model_share": round(1 - embedder.seconds / total_s, 4),
        "pipeline_passages_per_s": round(passages / total_s, 2),
        "baseline_s": round(baseline_s, 2),
        "baseline_passages_per_s": round(passages / baseline_s, 2),
        "ratio": round(baseline_s / total_s, 3),
        "model_load_s": round(model_load_s, 2), "baseline_model_load_s": round(baseline_load_s, 2),
        "index": info.manifest["index"]["spec"], "in_agreement": info.in_agreement,
        "cpu": cpu_info(),
    }


def ingest_table(r: dict[str, Any]) -> str:
    return "\n".join([
        f"ingest: {r['articles']} articles -> {r['passages']} passages ({r['corpus']})",
        "",
        "| run | seconds | passages/s | ratio |",
        "|---|---|---|---|",
        f"| baseline: SentenceTransformer.encode, torch fp32, batch 32 | {r['baseline_s']} "
        f"| {r['baseline_passages_per_s']} | 1.00x |",
        f"| retrieval index, {r['backend']}, end to end | {r['pipeline_s']} "
        f"| {r['pipeline_passages_per_s']} | {r['ratio']:.2f}x |",
        "",
        f"time outside the model (loading, chunking, storing, indexing): "
        f"{100 * r['outside_model_share']:.1f}% of {r['pipeline_s']} s; "
        f"model loads (not counted): {r['model_load_s']} s vs baseline "
        f"{r['baseline_model_load_s']} s; index {r['index']}; "
        f"store and index agree: {r['in_agreement']}",
        "",
        f"CPU: {cpu_summary(r['cpu'])}",
    ])

"""`retrieval bench ingest|index|query|live`: speed measured against a baseline in the same run.

Every figure is a ratio or a bound measured side by side on this machine, never compared
with numbers from elsewhere. Each benchmark prints a Markdown table (or JSON with --json):

- ingest: the BBC corpus indexed end to end into a temporary collection, against plain
  `SentenceTransformer.encode` (torch fp32, batch 32) on the same passage texts, the two
  interleaved round by round so that load from other processes hits both alike.
- index: a large synthetic collection (real passage vectors plus noise), its approximate
  index against exact search: latency, recall@10, bytes per vector, time to open.
- query: the service under load from a second process, against a naive endpoint.
- live: two services on one collection under search load while articles are added and
  deleted over HTTP and by the CLI: exactness, freshness, latency, memory, write cost.

The query and live benchmarks live in service/ (bench_query.py, bench_live.py: they drive
the service and FastAPI, which the library never imports) and plug in through the
`retrieval.benchmarks` entry point group.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.bench_common import BBC, print_result
from retrieval.cpu import cpu_info, cpu_summary


def register(commands: Any) -> None:
    """Adds `bench` and its benchmarks to the `retrieval` command."""
    from retrieval.bench_index import add_index_parser
    from retrieval.bench_lexical import add_lexical_parser

    parser = commands.add_parser(
        "bench", help="measure ingest, index and query speed against baselines",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    benches = parser.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
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
    add_index_parser(benches)
    add_lexical_parser(benches)
    for add_parser in extra_benchmarks():
        add_parser(benches)


def extra_benchmarks() -> list[Any]:
    """Benchmarks registered by other modules as entry points (the service's `query`).

    The query benchmark drives the HTTP service, which this library must not import.
    """
    from importlib.metadata import entry_points

    from retrieval.cli import unavailable_command

    found = []
    for entry in sorted(entry_points(group="retrieval.benchmarks"), key=lambda e: e.name):
        try:
            found.append(entry.load())
        except ImportError as error:
            found.append(unavailable_command(entry.name, error))
    return found


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
    from retrieval.loaders import load_articles

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

    from retrieval.backends import make_embedder
    from retrieval.collection import Collection
    from retrieval.embedding import default_model_path

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

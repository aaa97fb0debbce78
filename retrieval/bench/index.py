"""`retrieval bench index`: an approximate index at scale against exact search.

The collection holds `--size` passages whose vectors derive from real BBC passage
vectors: one of them, plus a random share (up to `--mix`) of a second, plus Gaussian
noise, renormalised. Uniform random vectors have no neighbourhoods for an ANN index to
exploit; copies of a few thousand real vectors plus small noise (`--mix 0`) collapse
into tight clusters of near-duplicates, harder than real text; the mix keeps 1M vectors
distinct while staying inside the region real passages occupy. Queries are real BBC headlines
embedded by the same model. The store is written directly, its index files removed, and
the collection opened: that derives the index from the store by the collection's own
policy (HNSW above the auto threshold), as a real open after a lost index would. Then it
is closed, reopened from disk and searched:

- open: Collection.open with the model, index loaded from its file, first search done;
- latency: one query at a time (one thread, as a served query), p50 and p99;
- recall@10 at each nprobe (IVF) or efSearch (HNSW) against exact search (FAISS
  IndexFlatIP) over the same vectors;
- latency as wall time and as the searching thread's CPU time: on a shared machine the
  wall time includes waiting for a core, the CPU time does not;
- bytes per vector: the index file's size over the passages.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.bench.common import BBC, percentile_ms, print_result

CACHE = Path.home() / ".cache" / "retrieval" / "bench"


def add_index_parser(benches: Any) -> None:
    parser = benches.add_parser("index", help="approximate index at scale vs exact search")
    parser.add_argument("--size", type=int, default=1_000_000, help="passages (default 1M)")
    parser.add_argument("--spec", default="auto",
                        help='index spec of the collection (default "auto": the size policy)')
    parser.add_argument("--probes", default=None,
                        help="nprobe values (IVF; default 8,16,32) or efSearch values (HNSW; "
                        "default 64,128,256) to measure")
    parser.add_argument("--queries", type=int, default=300, help="queries (BBC headlines)")
    parser.add_argument("--base", type=int, default=3000,
                        help="real passage vectors the synthetic ones derive from")
    parser.add_argument("--noise", type=float, default=0.02,
                        help="noise per dimension before renormalising (default 0.02)")
    parser.add_argument("--mix", type=float, default=0.5,
                        help="each vector adds up to this share of a second real vector, so "
                        "1M vectors do not collapse onto a few thousand tight clusters "
                        "(default 0.5; 0 = one real vector plus noise)")
    parser.add_argument("--backend", default="openvino-int8")
    parser.add_argument("--dir", type=Path, default=None,
                        help="build the collection here and keep it (default: a temp dir)")
    parser.add_argument("--reuse", action="store_true",
                        help="--dir already holds this benchmark's collection (same --size, "
                        "--base, --noise): measure it again without rebuilding")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(run=run_index_bench)


def run_index_bench(args: argparse.Namespace) -> int:
    import faiss

    from retrieval.collection.collection import Collection
    from retrieval.models.backends import make_embedder

    embedder = make_embedder(args.backend)
    base, queries = real_vectors(embedder, args.base, args.queries)
    vectors = synthesize(base, args.size, args.noise, args.mix)
    tmp = None if args.dir else Path(tempfile.mkdtemp(prefix="retrieval-bench-index-"))
    path = args.dir or tmp / "collection"  # type: ignore[operator]
    try:
        store_s = build_s = float("nan")
        if not (args.reuse and (path / "manifest.json").exists()):
            started = time.perf_counter()
            write_collection(path, embedder, vectors, args.spec)
            store_s = time.perf_counter() - started
            started = time.perf_counter()
            with Collection.open(path, embedder, background=False) as built:
                built.checkpoint(force=True)  # no index file yet: derived from the store
            build_s = time.perf_counter() - started

        started = time.perf_counter()
        collection = Collection.open(path, background=False)  # the manifest's model
        collection.refresh()  # the checkpoint loaded, nothing to replay
        collection.index.search(queries[:1], 10)
        open_s = time.perf_counter() - started
        index = collection.index.base
        ids = np.sort(index.ids())  # store ids are 1..n in insertion order
        exact = faiss.IndexFlatIP(vectors.shape[1])
        exact.add(vectors)
        _, truth = exact.search(queries, 10)
        truth = ids[truth]
        exact_times, _ = time_queries(lambda q: exact.search(q, 10), queries[:20])
        rows = []
        param = "nprobe" if index.ivf else "efSearch"
        probes = args.probes or ("8,16,32" if index.ivf else "64,128,256")
        for value in [int(x) for x in probes.split(",")]:
            setattr(index, "nprobe" if index.ivf else "ef_search", value)
            found = index.search(queries, 10)[1]
            recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
            times, cpu = time_queries(lambda q: index.search(q, 10), queries)
            rows.append({param: value, "recall_at_10": round(float(recall), 4),
                         "p50_ms": percentile_ms(times, 50), "p99_ms": percentile_ms(times, 99),
                         "p50_cpu_ms": percentile_ms(cpu, 50)})
        file = max(path.glob("index-*.faiss"))
        result = {
            "benchmark": "index", "size": args.size, "spec": index.spec,
            "manifest_spec": collection.manifest["index"], "noise": args.noise, "mix": args.mix,
            "base_vectors": len(base), "queries": len(queries),
            "bytes_per_vector": round(file.stat().st_size / args.size, 1),
            "store_write_s": round(store_s, 1), "index_build_s": round(build_s, 1),
            "open_s": round(open_s, 3), "exact_p50_ms": percentile_ms(exact_times, 50),
            "param": param, "rows": rows,
        }
        collection.close()
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    print_result(result, args.json, index_table)
    return 0


def index_table(r: dict[str, Any]) -> str:
    lines = [
        f"index: {r['size']:,} passages (from {r['base_vectors']} real BBC passage vectors: "
        f"mix {r['mix']}, noise {r['noise']}), {r['queries']} BBC headlines as queries, k=10, "
        "one query at a time",
        "",
        f"| index | {r['param']} | recall@10 vs exact | p50 ms | p99 ms | p50 CPU ms "
        "| speed-up vs exact (p50) |",
        "|---|---|---|---|---|---|---|",
        f"| Flat (exact, baseline) | - | 1.0 | {r['exact_p50_ms']} | - | - | 1.00x |",
    ]
    for row in r["rows"]:
        lines.append(
            f"| {r['spec']} | {row[r['param']]} | {row['recall_at_10']} | {row['p50_ms']} "
            f"| {row['p99_ms']} | {row['p50_cpu_ms']} | {r['exact_p50_ms'] / row['p50_ms']:.0f}x |"
        )
    lines += [
        "",
        f"bytes/vector on disk: {r['bytes_per_vector']}; open (store + index file + model + "
        f"first search): {r['open_s']} s; index built from the store in {r['index_build_s']} s "
        f"(store written in {r['store_write_s']} s); manifest index: {r['manifest_spec']}",
    ]
    return "\n".join(lines)


def time_queries(search: Any, queries: np.ndarray) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of each query, searched one at a time."""
    search(queries[:1])  # warm
    wall, cpu = [], []
    for i in range(len(queries)):
        started, started_cpu = time.perf_counter(), time.thread_time()
        search(queries[i : i + 1])
        cpu.append(time.thread_time() - started_cpu)
        wall.append(time.perf_counter() - started)
    return wall, cpu


def real_vectors(embedder: Any, n_base: int, n_queries: int) -> tuple[np.ndarray, np.ndarray]:
    """BBC paragraph vectors and headline vectors from the embedder, cached on disk."""
    import json

    key = embedder.spec().get("export_fingerprint") or embedder.spec()["fingerprint"]
    cache = CACHE / f"bbc-{embedder.spec()['backend']}-{key}-{n_base}-{n_queries}.npz"
    if cache.exists():
        saved = np.load(cache)
        return saved["base"], saved["queries"]
    with open(BBC, encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    paragraphs = [p for r in records for p in r["text"].split("\n\n") if len(p.split()) > 12]
    step = max(1, len(paragraphs) // n_base)
    base = embedder.embed_documents(paragraphs[::step][:n_base])
    titles = [r["title"] for r in records][::-1][:n_queries]
    queries = embedder.embed_queries(titles)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(cache, base=base, queries=queries)
    return base, queries


def synthesize(
    base: np.ndarray, size: int, noise: float, mix: float = 0.0, seed: int = 0
) -> np.ndarray:
    """`size` unit vectors: a random real vector, plus up to `mix` times another one, plus
    Gaussian noise (`noise` per dimension), renormalised."""
    rng = np.random.default_rng(seed)
    out = np.empty((size, base.shape[1]), dtype=np.float32)
    for start in range(0, size, 100_000):
        n = min(100_000, size - start)
        chunk = base[rng.integers(0, len(base), n)]
        if mix:
            share = rng.uniform(0, mix, (n, 1)).astype(np.float32)
            chunk += share * base[rng.integers(0, len(base), n)]
        chunk += noise * rng.standard_normal(chunk.shape, dtype=np.float32)
        out[start : start + n] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return out


def write_collection(path: Path, embedder: Any, vectors: np.ndarray, spec: str) -> None:
    """A collection of 10-passage articles holding `vectors`, with no index file yet."""
    from retrieval.collection.collection import Collection
    from retrieval.collection.store import STORE, NewPassage, Store
    from retrieval.records import Article

    with Collection.open(path, embedder, index_spec=spec, background=False):
        pass
    store = Store(path / STORE)
    per_article = 10
    try:
        for start in range(0, len(vectors), 100_000):
            with store.transaction() as generation:
                for a in range(start, min(start + 100_000, len(vectors)), per_article):
                    # A text of its own: one text for all would make every synthetic
                    # article a copy of the others, a single duplicate group.
                    text = f"synthetic passage {a // per_article}"
                    article = Article(id=f"a{a // per_article}", title="", text=text)
                    rows = [
                        NewPassage(ordinal=i, start=0, end=len(text), text=text, n_tokens=4,
                                   vector=vectors[a + i])
                        for i in range(min(per_article, len(vectors) - a))
                    ]
                    store.put_article(article, rows, generation)
    finally:
        store.close()

"""`retrieval eval`: score the engine on labelled data and report it.

Three tasks share one path (load, index into a cached collection, search every query in
batches, score with ranx, report):

- BEIR folders (the default): qrels judge documents; a document scores its best passage.
- `--squad`: SQuAD's whole articles are indexed with the chosen chunker, and a passage
  answers a question when its span overlaps the paragraph the question was written on.
- `--known-item title`: a corpus without qrels; each article's title is a query whose
  answer is the article (or an exact duplicate of it, when `exact_duplicates.tsv` says so).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXIT_OK = 0


def default_cache() -> Path:
    """$XDG_CACHE_HOME/retrieval/eval, else ~/.cache/retrieval/eval."""
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home) / "retrieval" / "eval"


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "eval", help="score search on a labelled data set (BEIR folder, SQuAD, known-item)",
        description="Index a data set into a cached collection (built once per corpus, "
        "model and chunking; changing only search options re-embeds nothing), run its "
        "queries and report nDCG@10, Recall@100, MRR@10 and MAP@100 (ranx), with a "
        "paired significance test between modes.",
    )
    parser.add_argument("dataset", type=Path, metavar="DATASET_DIR",
                        help="a BEIR folder: corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv")
    parser.add_argument("--split", default="test",
                        help="qrels file to score against (default test)")
    parser.add_argument("--mode", nargs="+", choices=["dense", "lexical", "hybrid"],
                        default=["dense", "lexical", "hybrid"], help="modes to run (default all)")
    parser.add_argument("--fusion", nargs="+", default=None, metavar="SPEC",
                        help="hybrid fusions to compare: rrf, minmax:ALPHA, zscore:ALPHA "
                        "(ALPHA = weight of dense); default: the engine's")
    parser.add_argument("--lexical", choices=["fts5", "bm25s"], default="fts5",
                        help="BM25 implementation: fts5 (SQLite FTS5's bm25() scores, "
                        "computed in memory as the engine does; default) or bm25s "
                        "(stopwords + Snowball stemming, for comparison)")
    parser.add_argument("--chunking", choices=["paragraph", "none"], default="paragraph",
                        help="paragraph (the engine's default) or none: one passage per "
                        "document, title and text, truncated by the model (as MTEB)")
    parser.add_argument("--squad", action="store_true",
                        help="paragraph retrieval on SQuAD: index articles.jsonl, score "
                        "passages against each question's paragraph")
    parser.add_argument("--known-item", choices=["title"], default=None,
                        help="no qrels: each article's title is the query, the article its answer")
    parser.add_argument("-k", type=int, default=100,
                        help="documents retrieved per query (default 100)")
    parser.add_argument("--batch-size", type=int, default=64, help="queries per search call")
    parser.add_argument(
        "--collapse", action="store_true",
        help="also run each mode with duplicate groups collapsed (runs MODE-collapsed), "
        "as the service answers by default, and compare the two",
    )
    parser.add_argument("--stat-test", choices=["student", "fisher"], default="student",
                        help="paired test between runs (default student's t)")
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="model name or folder")
    parser.add_argument("--backend", choices=["auto", "torch", "openvino-int8", "openvino-fp32"],
                        default=None, help="embedding backend (default auto: the engine's "
                        "choice for new collections on this machine)")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="write metrics.json, results.md, results.png and run.MODE.trec")
    parser.add_argument("--cache", type=Path, default=None, metavar="DIR",
                        help=f"where evaluation collections are kept (default {default_cache()})")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run_eval)


@dataclass
class Task:
    """What to index, what to ask, and how to judge the answers."""

    title: str
    corpus: Path
    articles: list[Any]
    queries: dict[str, str]
    metrics: tuple[str, ...]
    level: str
    k: int
    notes: list[str] = field(default_factory=list)
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)
    # Called once the collection exists, for judgements that name passages.
    derive_qrels: Callable[[Any], dict[str, dict[str, int]]] | None = None


@functools.lru_cache(maxsize=2)
def load_model(model: str, backend: str | None = None) -> Any:
    """The embedding model, loaded once per process (several evaluations in one test run)."""
    from retrieval.models.backends import make_embedder

    return make_embedder(backend, model)


def run_eval(args: argparse.Namespace) -> int:
    task = load_task(args)
    collection = open_collection(args, task)
    with collection:
        embedder = collection.embedder
        info = collection.info()
        task.notes.append(
            f"collection {info.path}: {info.articles} documents, {info.passages} passages "
            f"(chunking {args.chunking}), model {embedder.spec()['model']} "
            f"({embedder.spec()['backend']})"
        )
        if args.collapse:
            groups = collection.store.duplicate_summary()
            task.notes.append(
                f"collapsed runs: {groups['articles_in_duplicate_groups']} documents are in "
                f"{groups['duplicate_groups']} duplicate groups of two or more"
            )
        runs = search_all(args, task, collection)
    report(args, task, runs)
    return EXIT_OK


def open_collection(args: argparse.Namespace, task: Task) -> Any:
    """The task's cached collection (indexed now if it is not yet), with its qrels
    derived when they name passages. Close it when done."""
    from retrieval.evaluation.scoring import QueryCache, cached_collection
    from retrieval.ingestion.chunking import ChunkerSettings

    embedder = QueryCache(load_model(args.model, args.backend))
    chunker = ChunkerSettings(mode=args.chunking)
    name = f"{args.dataset.resolve().name}-{args.chunking}"
    bar = _bar(len(task.articles), "indexing (once per corpus and settings)", "doc", args.quiet)
    collection = cached_collection(
        task.articles, task.corpus, embedder=embedder, chunker=chunker,
        cache=args.cache or default_cache(), name=name, progress=bar.update if bar else None,
    )
    if bar:
        bar.close()
    if task.derive_qrels is not None:
        task.qrels = task.derive_qrels(collection)
    return collection


def search_all(args: argparse.Namespace, task: Task, collection: Any) -> dict[str, Any]:
    from retrieval.collection.lexical import Bm25sIndex
    from retrieval.evaluation.scoring import run
    from retrieval.search.fusion import DEFAULT_FUSION, Fusion
    from retrieval.search.retriever import Retriever

    store = collection.store
    lexical = Bm25sIndex(store) if args.lexical == "bm25s" else collection.lexical
    fusions = [Fusion.parse(spec) for spec in args.fusion] if args.fusion else [DEFAULT_FUSION]
    plan: list[tuple[str, str, Fusion]] = []
    for mode in args.mode:
        if mode != "hybrid":
            plan.append((mode, mode, DEFAULT_FUSION))
            continue
        for fusion in fusions:
            label = "hybrid" if not args.fusion else f"hybrid-{fusion}".replace(":", "-")
            plan.append((label, mode, fusion))
    collapses = (False, True) if args.collapse else (False,)
    runs = {}
    for (label, mode, fusion), collapse in itertools.product(plan, collapses):
        label = f"{label}-collapsed" if collapse else label
        searcher = Retriever(collection, fusion=fusion, lexical=lexical)
        bar = _bar(len(task.queries), label, "query", args.quiet)
        runs[label] = run(
            searcher, task.queries, mode=mode, k=task.k, level=task.level,  # type: ignore[arg-type]
            batch_size=args.batch_size, progress=bar.update if bar else None, collapse=collapse,
        )
        if bar:
            bar.close()
    if "hybrid" in args.mode:
        task.notes.append(f"hybrid fusion: {', '.join(str(f) for f in fusions)}")
    task.notes.append(f"lexical: {args.lexical}")
    return runs


def runs_of(argv: list[str]) -> tuple[Task, dict[str, Any]]:
    """The task and runs of one `retrieval eval` command line (`argv` starts with "eval"),
    without the report: for the guard and the studies that compare runs."""
    parser = argparse.ArgumentParser(prog="retrieval")
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    task = load_task(args)
    with open_collection(args, task) as collection:
        return task, search_all(args, task, collection)


def report(args: argparse.Namespace, task: Task, runs: dict[str, Any]) -> None:
    from retrieval.evaluation.scoring import compare, evaluate, markdown_table, write_report

    results = evaluate(task.qrels, runs, task.metrics)
    lines = [f"# {task.title}", "", markdown_table(results, task.metrics), ""]
    lines += [f"- {note}" for note in task.notes]
    comparison = compare(task.qrels, runs, task.metrics, stat_test=args.stat_test)
    if comparison:
        lines += ["", f"Paired {args.stat_test} test (ranx compare; a superscript letter "
                  "marks a run this one beats at p < 0.05):", "", "```", comparison, "```"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        write_report(args.out, results, runs, task.metrics, title=task.title, text=text)
        print(f"\nwrote {args.out}/metrics.json, results.md, results.png, run.*.trec")


# -- loading the three kinds of task -----------------------------------------------------


def load_task(args: argparse.Namespace) -> Task:
    if args.squad:
        return squad_task(args)
    if args.known_item:
        return known_item_task(args)
    return beir_task(args)


def beir_task(args: argparse.Namespace) -> Task:
    from retrieval.evaluation.datasets import load_beir
    from retrieval.evaluation.scoring import BEIR_METRICS

    data = load_beir(args.dataset, args.split)
    notes = [f"{len(data.queries)} queries with qrels in {args.split}"]
    notes += _skipped(data.errors)
    return Task(
        title=f"{data.name} ({args.split})", corpus=args.dataset / "corpus.jsonl",
        articles=data.articles, queries=data.queries, metrics=BEIR_METRICS,
        level="document", k=args.k, notes=notes, qrels=data.qrels,
    )


def squad_task(args: argparse.Namespace) -> Task:
    from retrieval.evaluation.datasets import paragraph_spans, read_queries
    from retrieval.evaluation.scoring import PASSAGE_METRICS
    from retrieval.ingestion.loaders import load_file

    corpus = args.dataset / "articles.jsonl"
    loaded = load_file(corpus)
    queries, metadata = read_queries(args.dataset / "queries.jsonl")
    gold = {qid: str(meta["paragraph"]) for qid, meta in metadata.items() if "paragraph" in meta}
    queries = {qid: text for qid, text in queries.items() if qid in gold}
    spans = {pid: (article.id, span) for article in loaded.articles
             for pid, span in paragraph_spans(article).items()}

    def derive(collection: Any) -> dict[str, dict[str, int]]:
        passages = {a.id: collection.passages_of(a.id) for a in loaded.articles}
        qrels = {}
        for qid, paragraph in gold.items():
            article_id, (start, end) = spans[paragraph]
            qrels[qid] = {
                str(p.id): 1 for p in passages[article_id] if p.start < end and start < p.end
            }
        return qrels

    notes = [f"{len(queries)} questions over {len(loaded.articles)} articles; a passage is "
             "correct when its span overlaps the question's paragraph",
             "hit_rate@k = recall@k of the answer: share of questions with a correct "
             "passage in the top k passages"]
    return Task(
        title="SQuAD v1.1 dev: paragraph retrieval", corpus=corpus, articles=loaded.articles,
        queries=queries, metrics=PASSAGE_METRICS, level="passage", k=20,
        notes=notes + _skipped(loaded.errors), derive_qrels=derive,
    )


def known_item_task(args: argparse.Namespace) -> Task:
    from retrieval.evaluation.datasets import read_duplicates
    from retrieval.evaluation.scoring import KNOWN_ITEM_METRICS
    from retrieval.ingestion.loaders import load_file

    corpus = args.dataset / "corpus.jsonl"
    loaded = load_file(corpus)
    duplicates_file = args.dataset / "exact_duplicates.tsv"
    groups = read_duplicates(duplicates_file) if duplicates_file.exists() else {}
    queries = {a.id: a.title for a in loaded.articles if a.title.strip()}
    qrels = {qid: dict.fromkeys(sorted(groups.get(qid, {qid})), 1) for qid in queries}
    notes = [f"{len(queries)} titles as queries; each answer is its own article"]
    if groups:
        notes.append(f"{sum(1 for q in queries if q in groups)} articles have exact duplicates "
                     f"({duplicates_file.name}): any copy of the answer counts as correct")
    notes.append("the title is also indexed (FTS title field, embedding prefix), so this "
                 "measures finding a known article by its headline, not topical relevance")
    return Task(
        title=f"{args.dataset.resolve().name}: known item (title as query)", corpus=corpus,
        articles=loaded.articles, queries=queries, metrics=KNOWN_ITEM_METRICS,
        level="document", k=max(args.k, 10), notes=notes + _skipped(loaded.errors), qrels=qrels,
    )


def _skipped(errors: list[Any]) -> list[str]:
    for error in errors:
        print(f"skipped: {error}", file=sys.stderr)
    return [f"skipped {len(errors)} corpus record(s) the loader refused: "
            + "; ".join(str(e) for e in errors[:3])] if errors else []


def _bar(total: int, desc: str, unit: str, quiet: bool) -> Any:
    if quiet or total == 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False)

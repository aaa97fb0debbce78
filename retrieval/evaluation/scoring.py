"""Scoring a searcher on labelled data: runs, document aggregation, metrics, reports.

A run is `{query_id: {doc_id: score}}` and qrels are `{query_id: {doc_id: grade}}`, the
shapes ranx, pytrec_eval and ir_measures read unchanged. Metrics come from ranx, never
from hand-written formulas. Everything here takes a `Searcher` (the in-process
`Retriever`, or the HTTP client), so one evaluation scores either.

When documents were cut into passages and the qrels judge whole documents, a document's
score is the score of its best passage: the search is asked for at most one passage per
article (`max_per_article=1`), so k hits are k distinct documents, each represented by
its best passage, and `documents_from_hits` keeps the maximum in any case.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from retrieval.collection.collection import Collection
from retrieval.errors import InputError
from retrieval.ingestion.chunking import ChunkerSettings
from retrieval.models.embedding import Embedder
from retrieval.records import Article, Hit
from retrieval.search.options import Mode
from retrieval.search.retriever import Searcher

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]

BEIR_METRICS = ("ndcg@10", "recall@100", "mrr@10", "map@100")
# A question counts as answered at k when any correct passage is in its top k.
PASSAGE_METRICS = ("hit_rate@1", "hit_rate@5", "hit_rate@20", "mrr@10")
KNOWN_ITEM_METRICS = ("mrr@10", "hit_rate@10")
COMPLETE_MARK = "eval-complete.json"


# -- collections, cached by what they were built from ---------------------------------


def cache_key(corpus: Path, embedder: Embedder, chunker: ChunkerSettings, index_spec: str) -> str:
    """A digest of everything an evaluation collection depends on.

    The corpus file's path and content, the model (its fingerprint), and the chunker and
    index settings: change any and a new collection is built; change only search
    options and the cached one is reused as it is.
    """
    digest = hashlib.sha256()
    digest.update(str(corpus.resolve()).encode() + b"\0")
    with open(corpus, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    settings = [embedder.spec(), chunker.to_dict(), index_spec]
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def cached_collection(
    articles: Sequence[Article],
    corpus: Path,
    *,
    embedder: Embedder,
    chunker: ChunkerSettings,
    cache: Path,
    name: str,
    index_spec: str = "Flat",
    progress: Callable[[int], None] | None = None,
) -> Collection:
    """Opens the collection for this corpus and settings, indexing it the first time only.

    Args:
        articles: the corpus as loaded from `corpus`.
        corpus: the file the articles came from (part of the cache key).
        cache: folder holding evaluation collections, one sub-folder per key.
        name: readable prefix of the sub-folder (dataset and chunking).
        progress: called with articles done, while indexing.

    Returns:
        An open Collection (close it when done). A collection whose indexing was
        interrupted is completed on the next call: unchanged articles are skipped.
    """
    path = cache / f"{name}-{cache_key(corpus, embedder, chunker, index_spec)}"
    collection = Collection.open(
        path, embedder, chunker=chunker, index_spec=index_spec, background=False
    )
    if not (path / COMPLETE_MARK).exists():
        report = collection.add_articles(articles, progress=progress)
        collection.checkpoint()  # when due, as `retrieval index` does: the next open loads it
        mark = {"corpus": str(corpus.resolve()), "articles": len(articles), **report.as_dict()}
        (path / COMPLETE_MARK).write_text(json.dumps(mark, indent=2), "utf-8")
    return collection


class QueryCache:
    """An Embedder that remembers query vectors, so several modes embed each query once.

    Passes everything else through to the wrapped embedder (same spec, so a collection
    built with that embedder opens with this one).
    """

    def __init__(self, embedder: Embedder) -> None:
        self.inner = embedder
        self._vectors: dict[str, NDArray[np.float32]] = {}

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def max_tokens(self) -> int:
        return self.inner.max_tokens

    def spec(self) -> dict[str, Any]:
        return self.inner.spec()

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return self.inner.token_offsets(text)

    def embed_documents(self, texts: Sequence[str]) -> NDArray[np.float32]:
        return self.inner.embed_documents(texts)

    def warm_up(self, max_tokens: int) -> None:
        self.inner.warm_up(max_tokens)

    def embed_queries(self, texts: Sequence[str]) -> NDArray[np.float32]:
        new = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if new:
            for text, vector in zip(new, self.inner.embed_queries(new), strict=True):
                self._vectors[text] = vector
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._vectors[t] for t in texts])


# -- runs -------------------------------------------------------------------------------


def run(
    searcher: Searcher,
    queries: Mapping[str, str],
    *,
    mode: Mode,
    k: int = 100,
    level: str = "document",
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
    collapse: bool = False,
) -> Run:
    """Searches every query and returns the ranked results as a run.

    Args:
        searcher: anything with `search_batch` (Retriever, or the HTTP client).
        queries: query id -> text.
        mode: "dense", "lexical" or "hybrid".
        k: results per query: documents (level "document") or passages ("passage").
        level: "document": ids are article ids, each scored by its best passage;
            "passage": ids are passage ids (as strings), for passage-level judgements.
        batch_size: queries per `search_batch` call.
        progress: called with the number of queries done after each batch.
        collapse: one hit per duplicate group (its best article), as searches answer
            by default; the group's other articles are then not in the run. Off here:
            labelled sets judge every document, copies included.

    Returns:
        {query_id: {id: score}}, at most k entries per query; a query with no match
        maps to {}.
    """
    if level not in ("document", "passage"):
        raise InputError(f"level must be 'document' or 'passage', got {level!r}")
    ids, texts = list(queries), list(queries.values())
    out: Run = {}
    for start in range(0, len(ids), batch_size):
        batch = texts[start : start + batch_size]
        if level == "document":
            results = _search(searcher, batch, k, mode, collapse, max_per_article=1)
            ranked = [documents_from_hits(hits, k) for hits in results]
        else:
            results = _search(searcher, batch, k, mode, collapse)
            ranked = [{str(hit.passage_id): hit.score for hit in hits} for hits in results]
        out.update(zip(ids[start : start + batch_size], ranked, strict=True))
        if progress:
            progress(len(batch))
    return out


def _search(
    searcher: Searcher, batch: list[str], k: int, mode: Mode, collapse: bool,
    max_per_article: int | None = None,
) -> list[list[Hit]]:
    # `collapse` is always passed: searches collapse by default, but labelled sets judge
    # each document, copies included, so an evaluation collapses only when asked to.
    return searcher.search_batch(
        batch, k, mode=mode, max_per_article=max_per_article, collapse=collapse
    )


def documents_from_hits(hits: Iterable[Hit], k: int) -> dict[str, float]:
    """Article id -> the best score among its passages; the k best articles, best first."""
    best: dict[str, float] = {}
    for hit in hits:
        if hit.article_id not in best or hit.score > best[hit.article_id]:
            best[hit.article_id] = hit.score
    ordered = sorted(best.items(), key=lambda item: (-item[1], item[0]))[:k]
    return dict(ordered)


# -- metrics ----------------------------------------------------------------------------


def _ranx_qrels(qrels: Qrels) -> Any:
    from ranx import Qrels as RanxQrels

    return RanxQrels.from_dict({q: dict(docs) for q, docs in qrels.items() if docs})


def _ranx_run(run_: Run, name: str) -> Any:
    from ranx import Run as RanxRun

    # ranx cannot hold a query with no results; make_comparable scores it as a miss.
    return RanxRun.from_dict({q: dict(docs) for q, docs in run_.items() if docs}, name=name)


def evaluate(
    qrels: Qrels, runs: Mapping[str, Run], metrics: Sequence[str]
) -> dict[str, dict[str, float]]:
    """{run name: {metric: mean over the judged queries}}, computed by ranx.

    Every query in the qrels counts: one missing from a run (or with no results) scores
    zero. Queries in a run but not in the qrels are ignored. nDCG uses linear gains, as
    trec_eval and pytrec_eval (and so BEIR and MTEB) do.
    """
    from ranx import evaluate as ranx_evaluate

    ranx_qrels = _ranx_qrels(qrels)
    out: dict[str, dict[str, float]] = {}
    for name, run_ in runs.items():
        with _quiet_numba():
            scores = ranx_evaluate(
                ranx_qrels, _ranx_run(run_, name), list(metrics), make_comparable=True
            )
        # ranx returns a bare float for a single metric, a dict for several.
        values = scores if isinstance(scores, dict) else {metrics[0]: scores}
        out[name] = {metric: float(values[metric]) for metric in metrics}
    return out


def per_query(qrels: Qrels, run_: Run, metric: str) -> dict[str, float]:
    """{query id: the metric for that query} over every judged query (0 for one the run
    missed), computed by ranx: the values a paired test between two runs compares."""
    from ranx import evaluate as ranx_evaluate

    ranx_run = _ranx_run(run_, "run")
    with _quiet_numba():
        ranx_evaluate(_ranx_qrels(qrels), ranx_run, metric, make_comparable=True)
    scores = ranx_run.scores[metric]
    return {qid: float(scores.get(qid, 0.0)) for qid, docs in qrels.items() if docs}


@contextmanager
def _quiet_numba() -> Iterator[None]:
    """ranx's numba kernels warn about an unsigned-to-signed cast of query counts."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="unsafe cast", module="ranx")
        warnings.filterwarnings("ignore", category=UserWarning, module="numba")
        yield


def compare(
    qrels: Qrels, runs: Mapping[str, Run], metrics: Sequence[str], *, stat_test: str = "student"
) -> str:
    """ranx's comparison table: each run's metrics, with a superscript naming the runs it
    beats significantly (paired test over queries, p < 0.05, Bonferroni-free as in ranx).

    Args:
        stat_test: "student" (paired t-test) or "fisher" (randomisation test).
    """
    from ranx import compare as ranx_compare

    if len(runs) < 2:
        return ""
    with _quiet_numba():
        report = ranx_compare(
            _ranx_qrels(qrels), [_ranx_run(r, name) for name, r in runs.items()], list(metrics),
            stat_test=stat_test, max_p=0.05, make_comparable=True,
        )
    return str(report)


# -- output -----------------------------------------------------------------------------


def write_trec(run_: Run, path: Path, tag: str) -> None:
    """TREC run format, one line per result: `qid Q0 docid rank score tag`, best first."""
    with open(path, "w", encoding="utf-8") as handle:
        for query_id, docs in run_.items():
            ordered = sorted(docs.items(), key=lambda item: (-item[1], item[0]))
            for rank, (doc_id, score) in enumerate(ordered, start=1):
                handle.write(f"{query_id} Q0 {doc_id} {rank} {score:.6f} {tag}\n")


def markdown_table(results: Mapping[str, Mapping[str, float]], metrics: Sequence[str]) -> str:
    """Runs as rows, metrics as columns, four decimals."""
    lines = ["| run | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
    for name, values in results.items():
        cells = " | ".join(_number(values.get(metric)) for metric in metrics)
        lines.append(f"| {name} | {cells} |")
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.4f}"


def plot(
    results: Mapping[str, Mapping[str, float]], metrics: Sequence[str], path: Path, title: str
) -> None:
    """A grouped bar chart: one group per metric, one bar per run."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    names = list(results)
    width = 0.8 / max(1, len(names))
    figure, axes = plt.subplots(figsize=(max(6.0, 1.6 * len(metrics) * max(1, len(names)) / 2), 4))
    for i, name in enumerate(names):
        xs = [m + i * width for m in range(len(metrics))]
        values = [results[name].get(metric, 0.0) for metric in metrics]
        bars = axes.bar(xs, values, width, label=name)
        axes.bar_label(bars, fmt="%.3f", fontsize=7)
    axes.set_xticks([m + width * (len(names) - 1) / 2 for m in range(len(metrics))], list(metrics))
    axes.set_ylim(0, 1.05)
    axes.set_title(title)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_report(
    out: Path,
    results: Mapping[str, Mapping[str, float]],
    runs: Mapping[str, Run],
    metrics: Sequence[str],
    *,
    title: str,
    text: str,
) -> None:
    """metrics.json, results.md (the printed report), results.png and run.<name>.trec."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(results, indent=2) + "\n", "utf-8")
    (out / "results.md").write_text(text + "\n", "utf-8")
    plot(results, metrics, out / "results.png", title)
    for name, run_ in runs.items():
        write_trec(run_, out / f"run.{name}.trec", tag=name)

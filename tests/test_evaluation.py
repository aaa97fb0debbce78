"""Evaluation: metrics plumbing against hand-computed values, and real runs through the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import DATASETS
from sharded_fixtures import bbc_sample

from retrieval.cli.main import main
from retrieval.errors import InputError
from retrieval.evaluation.datasets import load_beir, paragraph_spans, read_duplicates
from retrieval.evaluation.scoring import (
    BEIR_METRICS,
    COMPLETE_MARK,
    documents_from_hits,
    evaluate,
    run,
    write_trec,
)
from retrieval.records import Article, Hit
from retrieval.search.fusion import Candidate, Fusion, fuse
from retrieval.search.retriever import Retriever

# -- a tiny BEIR folder whose right answers are obvious ----------------------------------

CORPUS = [
    ("volcano", "Volcano erupts", "Lava poured from the volcano and ash covered the village."),
    ("chess", "Chess final", "The grandmaster won the chess final with a queen sacrifice."),
    ("bread", "Baking bread", "Bake the dough in a hot oven until the crust is golden brown."),
    ("whales", "Whale migration", "Blue whales migrate thousands of kilometres across the ocean."),
    ("tax", "Tax reform", "Parliament passed a reform of income tax for small businesses."),
    ("empty", "", "   "),  # no title either: a title alone would be a title-only article
]
QUERIES = {
    "q1": "volcanic eruption and ash",
    "q2": "chess grandmaster queen sacrifice",
    "q3": "how to bake bread in an oven",
    "q4": "whales migrating across the ocean",
    "unjudged": "a query without judgements is not scored",
}
QRELS = {"q1": {"volcano": 1}, "q2": {"chess": 1}, "q3": {"bread": 2}, "q4": {"whales": 1}}


def write_beir(folder: Path, corpus, queries, qrels, split="test") -> Path:
    (folder / "qrels").mkdir(parents=True)
    with open(folder / "corpus.jsonl", "w") as f:
        for doc_id, title, text in corpus:
            f.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with open(folder / "queries.jsonl", "w") as f:
        for qid, text in queries.items():
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    with open(folder / "qrels" / f"{split}.tsv", "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for qid, docs in qrels.items():
            for doc_id, grade in docs.items():
                f.write(f"{qid}\t{doc_id}\t{grade}\n")
    return folder


@pytest.fixture
def tiny_beir(tmp_path):
    return write_beir(tmp_path / "tiny", CORPUS, QUERIES, QRELS)


# -- metrics plumbing, no model ------------------------------------------------------------


def hit(article_id: str, passage_id: int, score: float) -> Hit:
    return Hit(passage_id, article_id, "", None, None, None, "", score, 0, 0, 1)


class TableSearcher:
    """A Searcher answering from a fixed table: query text -> hits, best first."""

    def __init__(self, table):
        self.table = table
        self.calls = []

    def search_batch(self, queries, k=10, *, mode="dense", filters=None, max_per_article=None,
                     collapse=True):
        self.calls.append((len(queries), k, mode, max_per_article, collapse))
        out = []
        for query in queries:
            hits, seen = [], {}
            for h in self.table.get(query, []):
                if max_per_article and seen.get(h.article_id, 0) >= max_per_article:
                    continue
                seen[h.article_id] = seen.get(h.article_id, 0) + 1
                hits.append(h)
            out.append(hits[:k])
        return out


def test_loading_keeps_judged_queries_and_reports_empty_docs(tiny_beir):
    data = load_beir(tiny_beir)
    assert set(data.queries) == set(QRELS)  # "unjudged" is left out
    assert data.qrels == QRELS
    assert [a.id for a in data.articles] == ["volcano", "chess", "bread", "whales", "tax"]
    assert len(data.errors) == 1 and "empty text" in str(data.errors[0])


def test_metrics_equal_hand_computed_values():
    qrels = {"a": {"d1": 1, "d2": 1}, "b": {"d9": 1}, "c": {"d5": 3, "d6": 1}}
    runs = {"r": {
        "a": {"d3": 0.9, "d1": 0.8, "d4": 0.7, "d2": 0.6},  # relevant at ranks 2 and 4
        "b": {},  # nothing found: scores zero
        "c": {"d6": 0.5, "d5": 0.4},  # graded: the better document second
    }}
    got = evaluate(qrels, runs, BEIR_METRICS)["r"]
    log2 = math.log2
    ndcg_a = (1 / log2(3) + 1 / log2(5)) / (1 + 1 / log2(3))
    ndcg_c = (1 + 3 / log2(3)) / (3 + 1 / log2(3))  # linear gains, as trec_eval
    assert got["ndcg@10"] == pytest.approx((ndcg_a + 0 + ndcg_c) / 3)
    assert got["recall@100"] == pytest.approx((1 + 0 + 1) / 3)
    assert got["mrr@10"] == pytest.approx((1 / 2 + 0 + 1) / 3)
    assert got["map@100"] == pytest.approx(((1 / 2 + 2 / 4) / 2 + 0 + (1 / 1 + 2 / 2) / 2) / 3)


def test_a_document_scores_its_best_passage():
    hits = [hit("a", 1, 0.2), hit("b", 2, 0.5), hit("a", 3, 0.9), hit("c", 4, 0.1)]
    assert documents_from_hits(hits, 10) == {"a": 0.9, "b": 0.5, "c": 0.1}
    assert list(documents_from_hits(hits, 2)) == ["a", "b"]


def test_run_batches_queries_and_asks_for_one_passage_per_document():
    table = {
        "first": [hit("x", 1, 0.9), hit("x", 2, 0.8), hit("y", 3, 0.7)],
        "second": [hit("y", 4, 0.6)],
        "third": [],
    }
    searcher = TableSearcher(table)
    queries = {"1": "first", "2": "second", "3": "third"}
    got = run(searcher, queries, mode="lexical", k=5, batch_size=2)
    assert got == {"1": {"x": 0.9, "y": 0.7}, "2": {"y": 0.6}, "3": {}}
    # One passage per document, and every document: labelled sets judge copies too.
    assert searcher.calls == [(2, 5, "lexical", 1, False), (1, 5, "lexical", 1, False)]
    passages = run(searcher, queries, mode="dense", k=2, level="passage")
    assert passages["1"] == {"1": 0.9, "2": 0.8}


def test_trec_file_is_ranked_and_has_six_columns(tmp_path):
    write_trec({"q1": {"d2": 0.5, "d1": 0.75}, "q2": {"d3": 1.0}}, tmp_path / "run.trec", "dense")
    lines = [line.split() for line in (tmp_path / "run.trec").read_text().splitlines()]
    assert lines == [
        ["q1", "Q0", "d1", "1", "0.750000", "dense"],
        ["q1", "Q0", "d2", "2", "0.500000", "dense"],
        ["q2", "Q0", "d3", "1", "1.000000", "dense"],
    ]


def test_normalised_fusion_by_hand():
    dense = [Candidate(1, 0.9), Candidate(2, 0.5), Candidate(3, 0.1)]
    lexical = [Candidate(3, 12.0), Candidate(4, 4.0)]
    minmax = {c.passage_id: c.score for c in fuse(dense, lexical, Fusion("minmax", 0.5))}
    # dense -> 1, 0.5, 0; lexical -> 1, 0; a missing passage gets its list's minimum (0).
    assert minmax == pytest.approx({1: 0.5, 2: 0.25, 3: 0.5, 4: 0.0})
    zscore = {c.passage_id: c.score for c in fuse(dense, lexical, Fusion("zscore", 0.5))}
    z = 0.4 / math.sqrt(0.32 / 3)  # dense -> z, 0, -z; lexical -> 1, -1
    assert zscore == pytest.approx({1: (z - 1) / 2, 2: -0.5, 3: (1 - z) / 2, 4: (-z - 1) / 2})
    assert [c.passage_id for c in fuse(dense, lexical, Fusion("rrf"))][0] == 3
    assert str(Fusion.parse("minmax:0.3")) == "minmax:0.3" and Fusion.parse("rrf").method == "rrf"
    assert Fusion.parse("zscore:0.6@400") == Fusion("zscore", 0.6, depth=400)
    assert str(Fusion.parse("rrf@50")) == "rrf@50" and Fusion.parse("rrf@50").depth == 50


@pytest.mark.parametrize("spec", ["zscore:0.6@0", "rrf@many", "zscore:0.6@"])
def test_a_bad_fusion_depth_says_what_to_fix(spec):
    with pytest.raises(InputError, match="depth|bad fusion"):
        Fusion.parse(spec)


@pytest.mark.slow
@pytest.mark.parametrize("collapse", [False, True])
def test_an_evaluation_scores_what_a_user_asking_for_its_cut_off_gets(collection, collapse):
    # `retrieval eval` reads 100 documents deep to score nDCG@10 as well as Recall@100:
    # its first 10 must be the 10 a user asking for 10 gets. A fused pool of 8 passages
    # per half makes both reads go far past it.
    collection.add_articles(bbc_sample())
    searcher = Retriever(collection, fusion=Fusion("zscore", 0.6, depth=8))
    queries = {"1": "mobile phone sales", "2": "oil prices rise", "3": "film awards ceremony"}
    deep = run(searcher, queries, mode="hybrid", k=100, collapse=collapse)
    top = run(searcher, queries, mode="hybrid", k=10, collapse=collapse)
    for query_id in queries:
        assert len(deep[query_id]) > 10
        assert list(deep[query_id].items())[:10] == list(top[query_id].items())


def test_paragraph_spans_and_duplicate_groups(tmp_path):
    article = Article("7", "T", "First para.\n\nSecond para.\n\nThird.",
                      metadata={"paragraph_ids": ["7_0", "7_1", "7_2"]})
    spans = paragraph_spans(article)
    texts = [article.text[a:b] for a, b in spans.values()]
    assert texts == ["First para.", "Second para.", "Third."]
    (tmp_path / "d.tsv").write_text("doc-id\tduplicate-of\nb\ta\nc\ta\n")
    groups = read_duplicates(tmp_path / "d.tsv")
    assert groups["a"] == groups["b"] == groups["c"] == {"a", "b", "c"}


# -- through the CLI, with the real model ------------------------------------------------


def eval_cli(dataset: Path, out: Path, cache: Path, *extra: str) -> dict:
    code = main(["eval", str(dataset), "--out", str(out), "--cache", str(cache), "--quiet", *extra])
    assert code == 0
    return json.loads((out / "metrics.json").read_text())


def test_cli_scores_the_tiny_set_perfectly_and_reuses_its_collection(tiny_beir, tmp_path, capsys):
    out, cache = tmp_path / "out", tmp_path / "cache"
    metrics = eval_cli(tiny_beir, out, cache)
    assert set(metrics) == {"dense", "lexical", "hybrid"}
    for mode, values in metrics.items():
        assert set(values) == set(BEIR_METRICS), mode
        assert values["ndcg@10"] == pytest.approx(1.0), mode  # each query's one right answer first
    printed = capsys.readouterr().out
    assert "| dense |" in printed and "skipped 1 corpus record" in printed
    files = ("results.md", "results.png", "run.dense.trec", "run.lexical.trec", "run.hybrid.trec")
    for name in files:
        assert (out / name).stat().st_size > 0, name
    first = (out / "run.dense.trec").read_text().splitlines()[0].split()
    assert first[1:4] == ["Q0", first[2], "1"] and first[5] == "dense"

    [collection] = list(cache.iterdir())
    assert (collection / COMPLETE_MARK).exists()
    store_before = (collection / "store.sqlite").stat().st_mtime_ns
    again = eval_cli(tiny_beir, tmp_path / "out2", cache, "--mode", "lexical", "--fusion", "rrf")
    assert again["lexical"] == metrics["lexical"]
    assert list(cache.iterdir()) == [collection]  # same collection, nothing re-embedded
    assert (collection / "store.sqlite").stat().st_mtime_ns == store_before


def test_cli_scores_a_query_longer_than_the_services_limit(tmp_path):
    # A public test collection's longest query is 2,023 characters: a fair question to the
    # library, whose model reads its first word pieces and whose BM25 caps its terms.
    long = "volcanic eruption and ash over the village " + " ".join(
        f"witness{i} described lava" for i in range(100))
    assert len(long) > 2023
    queries = {**QUERIES, "long": long}
    qrels = {**QRELS, "long": {"volcano": 1}}
    dataset = write_beir(tmp_path / "long", CORPUS, queries, qrels)
    metrics = eval_cli(dataset, tmp_path / "out", tmp_path / "cache")
    for mode, values in metrics.items():
        assert values["ndcg@10"] == pytest.approx(1.0), mode  # the long one found too
        run_file = (tmp_path / "out" / f"run.{mode}.trec").read_text().splitlines()
        assert any(line.startswith("long Q0 volcano 1 ") for line in run_file), mode


def test_cli_squad_paragraphs_and_known_items(tmp_path):
    squad = tmp_path / "squad"
    squad.mkdir()
    paragraphs = [
        ["The volcano erupted in May and covered the valley in ash.",
         "Tourism to the island fell by half in the following year."],
        ["The chess club meets every Tuesday in the library.",
         "Its best player reached the national final last spring."],
    ]
    with open(squad / "articles.jsonl", "w") as f:
        for a, paras in enumerate(paragraphs):
            record = {"_id": str(a), "title": f"Article {a}", "text": "\n\n".join(paras),
                      "paragraph_ids": [f"{a}_{p}" for p in range(len(paras))]}
            f.write(json.dumps(record) + "\n")
    questions = [
        ("qa", "When did the volcano erupt?", "0_0"),
        ("qb", "Where does the chess club meet?", "1_0"),
    ]
    with open(squad / "queries.jsonl", "w") as f:
        for qid, text, paragraph in questions:
            record = {"_id": qid, "text": text, "metadata": {"paragraph": paragraph}}
            f.write(json.dumps(record) + "\n")
    metrics = eval_cli(squad, tmp_path / "squad-out", tmp_path / "cache", "--squad")
    assert set(metrics) == {"dense", "lexical", "hybrid"}
    assert all(values["hit_rate@20"] == 1.0 for values in metrics.values())

    items = tmp_path / "items"
    items.mkdir()
    docs = [(i, title, text) for i, title, text in CORPUS if text.strip()]
    docs.append(("volcano-copy", "Volcano erupts", CORPUS[0][2]))
    with open(items / "corpus.jsonl", "w") as f:
        for doc_id, title, text in docs:
            f.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    (items / "exact_duplicates.tsv").write_text("doc-id\tduplicate-of\nvolcano-copy\tvolcano\n")
    known = eval_cli(items, tmp_path / "known-out", tmp_path / "cache", "--known-item", "title",
                     "--mode", "lexical")
    # Two copies share one title: whichever comes first is a right answer.
    assert known["lexical"] == {"mrr@10": 1.0, "hit_rate@10": 1.0}


SCIFACT = DATASETS / "scifact"


@pytest.mark.skipif(not SCIFACT.exists(), reason=f"shared data set absent: {SCIFACT}")
def test_cli_on_a_scifact_slice(tmp_path):
    """100 real abstracts and the test queries judged on them, end to end."""
    data = load_beir(SCIFACT)
    keep_queries = sorted(data.qrels, key=int)[:25]
    wanted = {doc for q in keep_queries for doc in data.qrels[q]}
    fillers = [a.id for a in data.articles if a.id not in wanted][: 100 - len(wanted)]
    docs = wanted | set(fillers)
    corpus = [(a.id, a.title, a.text) for a in data.articles if a.id in docs]
    slice_dir = write_beir(
        tmp_path / "scifact-slice", corpus, {q: data.queries[q] for q in keep_queries},
        {q: data.qrels[q] for q in keep_queries},
    )
    metrics = eval_cli(slice_dir, tmp_path / "out", tmp_path / "cache", "--chunking", "none")
    for mode in ("dense", "lexical", "hybrid"):
        # On 100 documents the right abstract is nearly always on top.
        assert metrics[mode]["ndcg@10"] > 0.7, (mode, metrics[mode])
        # Lexical search returns only abstracts sharing a word with the claim.
        assert metrics[mode]["recall@100"] >= 0.9, (mode, metrics[mode])


def test_bm25s_index_follows_adds_deletes_and_filters(collection):
    from retrieval.collection.lexical import Bm25sIndex
    from retrieval.records import Filters
    from retrieval.search.retriever import Retriever

    docs = [Article(i, t, x) for i, t, x in CORPUS if x.strip()]
    collection.add_articles(docs[:3])
    retriever = Retriever(collection, lexical=Bm25sIndex(collection.store))
    [hits] = retriever.search_batch(["volcano ash"], 5, mode="lexical")
    assert [h.article_id for h in hits] == ["volcano"]  # only passages sharing a word
    cloud = Article("ash", "Ash cloud", "An ash cloud from the volcano grounded flights.")
    collection.add_articles([cloud])
    [hits] = retriever.search_batch(["volcano ash"], 5, mode="lexical")
    assert {h.article_id for h in hits} == {"volcano", "ash"}
    only = Filters(article_ids=("ash",))
    [hits] = retriever.search_batch(["volcano ash"], 5, mode="lexical", filters=only)
    assert [h.article_id for h in hits] == ["ash"]
    collection.delete_article("volcano")
    [hits] = retriever.search_batch(["volcano ash"], 5, mode="lexical")
    assert [h.article_id for h in hits] == ["ash"]

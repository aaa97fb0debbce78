"""What search scores look like on real news: the numbers behind docs/search.md's
"What scores mean" and "Related articles" sections.

    python scripts/score_study.py scores /tmp/bbc-news2    # dense and hybrid scores
    python scripts/score_study.py related /tmp/bbc-news2   # centroid vs best pair

The collection is BBC News (2,225 articles in 5 topics, the topic is the id prefix):
    retrieval index $RETRIEVAL_DATASETS/bbc/corpus.jsonl --collection /tmp/bbc-news2 \
        --backend openvino-int8 --quiet
"""

from __future__ import annotations

import random
import sqlite3
import sys
from pathlib import Path

import numpy as np

from retrieval.collection.collection import Collection
from retrieval.evaluation.location import datasets_dir
from retrieval.search.retriever import Retriever

SAMPLE = 300
UNRELATED = [
    "recipe for sourdough bread with a long cold fermentation",
    "how to replace the inner tube of a bicycle tyre",
    "symptoms of measles in young children",
    "quantum error correction with superconducting qubits",
    "best hiking trails in Patagonia",
    "how do octopuses change colour",
    "knitting pattern for a wool scarf",
    "the life cycle of a monarch butterfly",
    "orbital mechanics of a Hohmann transfer",
    "how to prune roses in winter",
    "volcanic eruption in Iceland grounds flights",
    "ancient Egyptian burial practices",
]


def pct(values: list[float]) -> str:
    p = np.percentile(values, [5, 25, 50, 75, 95])
    return " / ".join(f"{v:.3f}" for v in p) + f"  (n={len(values)})"


def scores(path: Path) -> None:
    with Collection.open(path, create=False, background=False) as collection:
        retriever = Retriever(collection)
        ids = sorted(r[0] for r in collection.store._db.execute("SELECT id FROM articles"))
        sample = random.Random(0).sample(ids, SAMPLE)
        titles = [collection.article(i).title for i in sample]
        for mode in ("dense", "hybrid"):
            own, other1, other10, unrelated1, unrelated10 = [], [], [], [], []
            for start in range(0, len(titles), 32):
                batch = titles[start : start + 32]
                results = retriever.search_batch(batch, 11, mode=mode, max_per_article=1,
                                                  collapse=False)
                for article_id, hits in zip(sample[start : start + 32], results, strict=True):
                    mine = [h.score for h in hits if h.article_id == article_id]
                    others = [h.score for h in hits if h.article_id != article_id]
                    if mine:
                        own.append(mine[0])
                    other1.append(others[0])
                    other10.append(others[9])
            for hits in retriever.search_batch(UNRELATED, 10, mode=mode, max_per_article=1):
                unrelated1.append(hits[0].score)
                unrelated10.append(hits[9].score)
            print(f"{mode}: percentiles 5 / 25 / 50 / 75 / 95")
            print(f"  headline -> its own article       {pct(own)}")
            print(f"  headline -> best other article    {pct(other1)}")
            print(f"  headline -> 10th other article    {pct(other10)}")
            print(f"  unrelated query -> best article   {pct(unrelated1)}")
            print(f"  unrelated query -> 10th article   {pct(unrelated10)}")
            found = sum(1 for o in own) / len(sample)
            print(f"  own article in the top 11: {found:.1%}")


def related(path: Path) -> None:
    """Topic precision@10 of related articles: centroid query vs best passage pair."""
    db = sqlite3.connect(path / "store.sqlite")
    rows = db.execute("SELECT article_id, vector FROM passages ORDER BY id").fetchall()
    owners = np.array([r[0] for r in rows])
    vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), -1)
    articles = sorted(set(owners))
    topic = {a: a.split("_")[0] for a in articles}
    index = {a: np.flatnonzero(owners == a) for a in articles}
    duplicates_tsv = datasets_dir() / "bbc" / "exact_duplicates.tsv"
    pairs = [line.split("\t") for line in duplicates_tsv.read_text().splitlines()[1:]]
    duplicate_of = {a: b for a, b in pairs if a in index and b in index}
    sample = random.Random(0).sample(articles, SAMPLE)
    results: dict[str, list[float]] = {"centroid": [], "best pair": [], "mean of pairs": []}
    firsts: dict[str, list[bool]] = {name: [] for name in results}
    for article in dict.fromkeys([*sample, *duplicate_of]):
        mine = vectors[index[article]]
        sims = mine @ vectors.T  # (own passages, all passages)
        centre = mine.mean(axis=0)
        centre /= np.linalg.norm(centre)
        by_centroid = centre @ vectors.T
        for name, per_passage in (
            ("centroid", by_centroid),
            ("best pair", sims.max(axis=0)),
            ("mean of pairs", sims.mean(axis=0)),
        ):
            best: dict[str, float] = {}
            for i in np.argsort(-per_passage):
                a = owners[i]
                if a != article and a not in best:
                    best[a] = float(per_passage[i])
                if len(best) == 10:
                    break
            if article in duplicate_of:
                firsts[name].append(next(iter(best)) == duplicate_of[article])
            else:
                results[name].append(np.mean([topic[a] == topic[article] for a in best]))
    for name, values in results.items():
        print(
            f"{name:14s} topic precision@10 = {np.mean(values):.3f} over {len(values)} "
            f"articles; exact duplicate first for {np.mean(firsts[name]):.1%} of "
            f"{len(firsts[name])}"
        )


if __name__ == "__main__":
    {"scores": scores, "related": related}[sys.argv[1]](Path(sys.argv[2]))

"""How well duplicate grouping works on real news: the numbers behind
docs/duplicates.md, and the measurement that chose the method.

    python scripts/dup_study.py --collection /tmp/bbc-dups     # prints the table
    python scripts/dup_study.py --collection /tmp/bbc-dups --show-merges

The articles: BBC News (2,225, $RETRIEVAL_DATASETS/bbc) plus one republished copy of
each of 300 sampled BBC articles, made the way republishers make them (`republish`).
The truth: the corpus's listed exact duplicates (exact_duplicates.tsv), the articles
whose body text is byte-identical under another headline, and each copy with its
original. Every other pair put in one group is a false merge: two distinct BBC
articles, typically follow-ups on one story.

Methods, each grouping articles one at a time in corpus order, copies last (as at
ingest: an article joins the group of its most similar earlier article at or above the
threshold): MinHash over 5-word shingles of the body, through the store's own code
(retrieval/collection/groups.py, a temporary store without vectors); and the cosine between article
centroids (the mean of an article's passage vectors, renormalised), from the collection
(embedded on first use, all-MiniLM-L6-v2, torch, once).
"""

from __future__ import annotations

import argparse
import itertools
import random
import re
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from retrieval.collection.collection import Collection
from retrieval.collection.duplicates import JACCARD, DuplicateRule, shingles
from retrieval.collection.store import Store
from retrieval.evaluation.datasets import read_duplicates
from retrieval.evaluation.location import datasets_dir
from retrieval.ingestion.loaders import load_file
from retrieval.records import Article
from retrieval.search.related import centroid

BBC = datasets_dir() / "bbc"
COPIES = 300
SEED = 7
JACCARD_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
CONTAINMENT_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
CENTROID_THRESHOLDS = (0.90, 0.93, 0.95, 0.97, 0.98, 0.99)
# A merged pair of real articles sharing this much of their shingles exactly is one of
# the corpus's own unlisted copies (the same text re-filed), not a wrong merge of two stories.
NEAR_IDENTICAL = 0.9
FOLLOW_UP_COSINE = 0.8
FOLLOW_UP_CONTAINMENT = 0.3

AGENCIES = ("Reuters", "AP", "AFP", "Bloomberg", "PA")
CITIES = ("LONDON", "NEW YORK", "PARIS", "BRUSSELS", "WASHINGTON", "MANCHESTER")
NAMES = ("Jane Smith", "Tom Evans", "Priya Patel", "Luis Garcia", "Anna Kowalski")
SWAPS = ("reportedly", "major", "new", "key", "latest", "recent", "senior", "big")
LAST_PARAGRAPH = ("dropped", "trimmed to its first sentence", "swapped with the one before")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def republish(article: Article, rng: random.Random) -> tuple[Article, str]:
    """A republished copy: new headline and byline, a dateline, the last paragraph
    dropped, trimmed or moved, and 3 to 8 words changed. Returns it and what was done
    to the last paragraph."""
    paragraphs = [p for p in article.text.split("\n\n") if p.strip()]
    how = rng.choice(LAST_PARAGRAPH)
    if how == LAST_PARAGRAPH[0]:
        paragraphs = paragraphs[:-1]
    elif how == LAST_PARAGRAPH[1]:
        paragraphs[-1] = _SENTENCE_END.split(paragraphs[-1])[0]
    else:
        paragraphs[-2], paragraphs[-1] = paragraphs[-1], paragraphs[-2]
    agency = rng.choice(AGENCIES)
    paragraphs[0] = f"{rng.choice(CITIES)} ({agency}) - {paragraphs[0]}"
    body = change_words("\n\n".join(paragraphs), rng, rng.randint(3, 8))
    byline = f"By {rng.choice(NAMES)}, {agency}"
    first_words = _SENTENCE_END.split(article.text)[0].split()[:8]
    headline = " ".join(first_words).rstrip(".,;:")
    copy = replace(article, id=f"{article.id}-copy", title=headline, text=f"{byline}\n\n{body}")
    return copy, how


def change_words(text: str, rng: random.Random, n: int) -> str:
    words = text.split(" ")
    eligible = [i for i, w in enumerate(words) if len(w) > 3 and w.isalpha() and i > 8]
    for i in rng.sample(eligible, min(n, len(eligible))):
        words[i] = rng.choice(SWAPS)
    return " ".join(words)


def corpus() -> tuple[list[Article], list[set[str]], dict[str, str]]:
    """BBC plus copies, the true groups (of 2 or more), and each copy's last-paragraph change."""
    originals = load_file(BBC / "corpus.jsonl").articles
    truth = _union(
        [*read_duplicates(BBC / "exact_duplicates.tsv").values(), *_same_text(originals)]
    )
    grouped = {a for group in truth for a in group}
    rng = random.Random(SEED)
    eligible = [a for a in originals if a.id not in grouped and a.text.count("\n\n") >= 3]
    copies, how = [], {}
    for article in rng.sample(eligible, COPIES):
        copy, change = republish(article, rng)
        copies.append(copy)
        how[copy.id] = change
        truth.append({article.id, copy.id})
    return originals + copies, truth, how


def _same_text(articles: list[Article]) -> list[set[str]]:
    by_text: dict[str, set[str]] = defaultdict(set)
    for article in articles:
        by_text[article.text].add(article.id)
    return [ids for ids in by_text.values() if len(ids) > 1]


def _union(groups: list[set[str]]) -> list[set[str]]:
    merged: list[set[str]] = []
    for group in groups:
        overlapping = [g for g in merged if g & group]
        for g in overlapping:
            merged.remove(g)
            group = group | g
        merged.append(set(group))
    return merged


def pairs(groups: list[set[str]]) -> set[frozenset[str]]:
    return {frozenset(p) for g in groups for p in itertools.combinations(sorted(g), 2)}


def by_minhash(articles: list[Article], rule: DuplicateRule) -> tuple[list[set[str]], float]:
    """Groups from the store's own code, and milliseconds per article."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "store.sqlite", duplicate_rule=rule)
        started = time.perf_counter()
        with store.transaction() as generation:
            for article in articles:
                store.put_article(article, [], generation)
        ms = (time.perf_counter() - started) * 1000 / len(articles)
        rows = store._db.execute("SELECT grp, article_id FROM duplicates").fetchall()
        store.close()
    return _grouped(rows), ms


def by_centroid(
    articles: list[Article], centroids: np.ndarray, threshold: float
) -> list[set[str]]:
    sims = centroids @ centroids.T
    group_of: list[int] = []
    for i in range(len(articles)):
        best = int(np.argmax(sims[i, :i])) if i else -1
        join = best >= 0 and sims[i, best] >= threshold
        group_of.append(group_of[best] if join else i)
    return _grouped([(g, a.id) for g, a in zip(group_of, articles, strict=True)])


def _grouped(rows: list[tuple[int, str]]) -> list[set[str]]:
    groups: dict[int, set[str]] = defaultdict(set)
    for group, article_id in rows:
        groups[group].add(article_id)
    return [g for g in groups.values() if len(g) > 1]


def centroids_of(articles: list[Article], path: Path) -> np.ndarray:
    with Collection.open(path, background=False) as collection:
        report = collection.add_articles(articles)
        if report.added or report.updated:
            collection.checkpoint()
        with collection.reading() as reader:
            return np.vstack([centroid(reader.article_vectors(a.id)) for a in articles])


def score(
    found: list[set[str]], truth: list[set[str]], how: dict[str, str], study: Study
) -> dict[str, object]:
    got, want = pairs(found), pairs(truth)
    copy_pairs = {p for p in want if any(a.endswith("-copy") for a in p)}
    hit = got & want
    wrong = got - want
    real = {p for p in wrong if not any(a.endswith("-copy") for a in p)}
    by_change = {
        change: _share(
            {p for p in copy_pairs & hit if any(how.get(a) == change for a in p)},
            {p for p in copy_pairs if any(how.get(a) == change for a in p)},
        )
        for change in LAST_PARAGRAPH
    }
    return {
        "precision": _share(hit, got), "recall": _share(hit, want),
        "recall_exact": _share(hit - copy_pairs, want - copy_pairs),
        "recall_copies": _share(hit & copy_pairs, copy_pairs),
        "by_change": by_change, "false_merges": len(wrong), "real": len(real),
        "real_near_identical": sum(1 for p in real if study.jaccard(*p) >= NEAR_IDENTICAL),
        "follow_ups": len(got & study.follow_ups),
        "wrong": sorted(tuple(sorted(p)) for p in wrong),
    }


@dataclass
class Study:
    """What the scores need besides the groups: exact shingle sets, and the follow-ups."""

    articles: list[Article]
    centroids: np.ndarray
    shingle_sets: dict[str, set[bytes]] = field(default_factory=dict)
    follow_ups: set[frozenset[str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.shingle_sets = {a.id: set(shingles(a.text)) for a in self.articles}
        self.follow_ups = self._follow_ups()

    def jaccard(self, a: str, b: str) -> float:
        x, y = self.shingle_sets[a], self.shingle_sets[b]
        return len(x & y) / len(x | y)

    def containment(self, a: str, b: str) -> float:
        x, y = self.shingle_sets[a], self.shingle_sets[b]
        return len(x & y) / min(len(x), len(y))

    def _follow_ups(self) -> set[frozenset[str]]:
        """Each real article and its nearest other real one by meaning (centroid cosine
        at least FOLLOW_UP_COSINE) when they share little text (containment under
        FOLLOW_UP_CONTAINMENT): the same story told again, which must stay apart."""
        real = [i for i, a in enumerate(self.articles) if not a.id.endswith("-copy")]
        vectors = self.centroids[real]
        sims = vectors @ vectors.T
        np.fill_diagonal(sims, -1.0)
        out = set()
        for row, i in enumerate(real):
            j = real[int(np.argmax(sims[row]))]
            a, b = self.articles[i].id, self.articles[j].id
            close = sims[row].max() >= FOLLOW_UP_COSINE
            if close and self.containment(a, b) < FOLLOW_UP_CONTAINMENT:
                out.add(frozenset((a, b)))
        return out


def _share(part: set[frozenset[str]], whole: set[frozenset[str]]) -> float:
    return len(part) / len(whole) if whole else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--collection", type=Path, required=True,
                        help="where BBC and the copies are embedded (reused when there)")
    parser.add_argument("--show-merges", action="store_true",
                        help="list the false merges of the default rule")
    args = parser.parse_args()
    articles, truth, how = corpus()
    study = Study(articles, centroids_of(articles, args.collection))
    n_exact = len(pairs(truth)) - COPIES
    print(f"{len(articles)} articles; true pairs: {n_exact} exact (listed or same body), "
          f"{COPIES} republished copies; {len(study.follow_ups)} follow-up pairs "
          f"(nearest by centroid, cosine >= {FOLLOW_UP_COSINE}, containment < "
          f"{FOLLOW_UP_CONTAINMENT})")
    header = (
        "| method | threshold | precision | recall | recall: exact | recall: copies | "
        "copies: last paragraph " + " / ".join(LAST_PARAGRAPH) + " | false merges | "
        f"of which two real articles (near-identical, J >= {NEAR_IDENTICAL}) | "
        "follow-ups merged | ms/article |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for threshold in JACCARD_THRESHOLDS:
        found, ms = by_minhash(articles, DuplicateRule(threshold, 0.0))
        _row("MinHash: Jaccard", f"{threshold:g}", score(found, truth, how, study), f"{ms:.2f}")
    for threshold in CONTAINMENT_THRESHOLDS:
        found, ms = by_minhash(articles, DuplicateRule(JACCARD, threshold))
        label = f"{threshold:g} (Jaccard >= {JACCARD:g})"
        _row("MinHash: containment", label, score(found, truth, how, study), f"{ms:.2f}")
    for threshold in CENTROID_THRESHOLDS:
        found = by_centroid(articles, study.centroids, threshold)
        _row("centroid cosine", f"{threshold:g}", score(found, truth, how, study), "-")
    if args.show_merges:
        found, _ = by_minhash(articles, DuplicateRule())
        titles = {a.id: a.title for a in articles}
        for a, b in score(found, truth, how, study)["wrong"]:  # type: ignore[union-attr]
            print(f"J {study.jaccard(a, b):.2f} C {study.containment(a, b):.2f}  "
                  f"{a}: {titles[a]}  |  {b}: {titles[b]}")


def _row(method: str, threshold: str, s: dict[str, object], ms: str) -> None:
    changes = " / ".join(f"{v:.3f}" for v in s["by_change"].values())  # type: ignore[attr-defined]
    print(
        f"| {method} | {threshold} | {s['precision']:.3f} | {s['recall']:.3f} | "
        f"{s['recall_exact']:.3f} | {s['recall_copies']:.3f} | {changes} | "
        f"{s['false_merges']} | {s['real']} ({s['real_near_identical']}) | "
        f"{s['follow_ups']} | {ms} |"
    )


if __name__ == "__main__":
    main()

"""Do wire-service copies with frequent words changed join their original's group?

    python scripts/wire_copies.py                               # recall and false merges
    python scripts/wire_copies.py --collection /tmp/bbc         # and follow-ups merged
    python scripts/wire_copies.py --show-merges                 # read the new merges

Issue 22, item 5: copies made the way wire services edit (a new headline and byline, a
dateline, the last paragraph dropped, a few frequent words replaced everywhere: "said"
becomes "stated") were grouped less often than dup_study.py's copies, whose changed words
are a handful of single occurrences. Replacing "said" everywhere breaks every shingle
around each of its occurrences at once.

Recall (as the issue tried it): per seed, 120 BBC articles and their wire copies mixed
with 200 unrelated BBC articles, grouped one at a time through the store's own code
(retrieval/collection/groups.py, a temporary store without vectors), originals first; a
copy is found when it is in its original's group. SEEDS seeds, for 1, 3 and 5 frequent
words replaced (SWAPS: each copy replaces the ones its article uses most).

False merges: the whole BBC corpus (2,225 articles) grouped alone. A pair in one group
that is neither listed in exact_duplicates.tsv nor of byte-identical bodies is a false
merge (dup_study.py reads the ones of the default rule one by one: versions of one
article). With --collection (BBC embedded, any backend), follow-ups are counted as
dup_study.py defines them: each article and its nearest other by centroid cosine (at
least 0.8) sharing under 30% of their 5-word shingles: the same story told again.

Each rule is a shingle width and the store's thresholds; the width is a module constant
of retrieval/collection/duplicates.py, set here for the run of each row.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import random
import re
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
from dup_study import (
    BBC,
    FOLLOW_UP_CONTAINMENT,
    FOLLOW_UP_COSINE,
    _grouped,
    _same_text,
    _union,
    pairs,
)

from retrieval.collection import duplicates
from retrieval.collection.collection import Collection
from retrieval.collection.duplicates import DuplicateRule, shingles
from retrieval.collection.store import Store
from retrieval.evaluation.datasets import read_duplicates
from retrieval.ingestion.loaders import load_file
from retrieval.records import Article
from retrieval.search.related import centroid

PAIRS, UNRELATED = 120, 200
SEEDS = 5
SWAP_COUNTS = (1, 3, 5)
# What wire desks change throughout a story: house style and register, word for word.
SWAPS = (
    ("said", "stated"), ("says", "states"), ("told", "informed"), ("also", "additionally"),
    ("but", "however"), ("people", "individuals"), ("about", "around"),
    ("after", "following"), ("because", "as"), ("while", "whilst"),
    ("expected", "anticipated"), ("help", "assist"), ("bought", "purchased"),
)
_WORD = re.compile(r"\w+")


def wire_copy(article: Article, rng: random.Random, swaps: int) -> Article:
    """New headline and byline, a dateline, the last paragraph dropped, and the `swaps`
    SWAPS words the article uses most replaced at every occurrence."""
    paragraphs = [p for p in article.text.split("\n\n") if p.strip()][:-1]
    paragraphs[0] = f"{rng.choice(('LONDON', 'NEW YORK', 'PARIS'))} (Reuters) - {paragraphs[0]}"
    body = replace_frequent_words("\n\n".join(paragraphs), rng, swaps)
    headline = " ".join(article.text.split()[:8]).rstrip(".,;:")
    return replace(article, id=f"{article.id}-copy", title=headline,
                   text=f"By Jane Smith, Reuters\n\n{body}")


def replace_frequent_words(text: str, rng: random.Random, swaps: int) -> str:
    counts = collections.Counter(_WORD.findall(text.lower()))
    present = [pair for pair in SWAPS if counts[pair[0]]]
    rng.shuffle(present)  # ties in random order
    present.sort(key=lambda pair: -counts[pair[0]])
    for old, new in present[:swaps]:
        text = re.sub(rf"\b{old}\b", new, text)
        text = re.sub(rf"\b{old.capitalize()}\b", new.capitalize(), text)
    return text


@contextlib.contextmanager
def shingle_width(words: int) -> Iterator[None]:
    """Runs the store's own grouping code with another shingle width."""
    saved = duplicates.SHINGLE_WORDS
    duplicates.SHINGLE_WORDS = words
    try:
        yield
    finally:
        duplicates.SHINGLE_WORDS = saved


def grouped(articles: list[Article], rule: DuplicateRule) -> list[set[str]]:
    """Groups of two or more, made by the store's code, articles in the order given."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "store.sqlite", duplicate_rule=rule)
        with store.transaction() as generation:
            for article in articles:
                store.put_article(article, [], generation)
        rows = store._db.execute("SELECT grp, article_id FROM duplicates").fetchall()
        store.close()
    return _grouped(rows)


def copy_recall(originals: list[Article], rule: DuplicateRule, swaps: int) -> tuple[int, int]:
    """Copies found in their original's group, and copies made, over SEEDS mixes."""
    eligible = [a for a in originals if a.text.count("\n\n") >= 3]
    found = made = 0
    for seed in range(SEEDS):
        rng = random.Random(seed)
        chosen = rng.sample(eligible, PAIRS + UNRELATED)
        sources, unrelated = chosen[:PAIRS], chosen[PAIRS:]
        copies = [wire_copy(a, rng, swaps) for a in sources]
        groups = grouped([*sources, *unrelated, *copies], rule)
        together = pairs(groups)
        found += sum(1 for a, c in zip(sources, copies, strict=True)
                     if frozenset((a.id, c.id)) in together)
        made += len(copies)
    return found, made


def follow_ups(articles: list[Article], collection: Path) -> set[frozenset[str]]:
    """dup_study.py's follow-ups, from the centroids of an embedded BBC collection."""
    with Collection.open(collection, create=False, background=False) as opened, \
            opened.reading() as reader:
        vectors = np.vstack([centroid(reader.article_vectors(a.id)) for a in articles])
    sets = {a.id: set(shingles(a.text)) for a in articles}
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -1.0)
    out = set()
    for i, article in enumerate(articles):
        j = int(np.argmax(sims[i]))
        x, y = sets[article.id], sets[articles[j].id]
        if sims[i, j] >= FOLLOW_UP_COSINE and len(x & y) / min(len(x), len(y)) < \
                FOLLOW_UP_CONTAINMENT:
            out.add(frozenset((article.id, articles[j].id)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[5, 4, 3],
                        help="shingle widths to compare (words)")
    parser.add_argument("--containment", type=float, nargs="+",
                        default=[duplicates.CONTAINMENT])
    parser.add_argument("--collection", type=Path,
                        help="BBC embedded (retrieval index corpus.jsonl): counts follow-ups")
    parser.add_argument("--show-merges", action="store_true",
                        help="list the false merges that the first rule does not make")
    args = parser.parse_args()
    originals = load_file(BBC / "corpus.jsonl").articles
    with shingle_width(5):  # dup_study.py's definition, whatever the row
        follow = follow_ups(originals, args.collection) if args.collection else None
    truth = pairs(_union([*read_duplicates(BBC / "exact_duplicates.tsv").values(),
                          *_same_text(originals)]))
    titles = {a.id: a.title for a in originals}
    print(f"copies: {SEEDS} mixes of {PAIRS} wire copies + {UNRELATED} unrelated articles; "
          f"false merges: BBC's {len(originals)} articles ({len(truth)} true pairs)"
          + (f"; {len(follow)} follow-up pairs" if follow is not None else ""))
    swapped = " / ".join(str(n) for n in SWAP_COUNTS)
    print(f"| shingle words | containment | copies found, {swapped} frequent words replaced "
          "| false merges in BBC | follow-ups merged |")
    print("|---|---|---|---|---|")
    first_wrong: set[frozenset[str]] | None = None
    for words in args.widths:
        for containment in args.containment:
            rule = DuplicateRule(duplicates.JACCARD, containment)
            with shingle_width(words):
                recalls = [copy_recall(originals, rule, n) for n in SWAP_COUNTS]
                wrong = pairs(grouped(originals, rule)) - truth
            shown = " / ".join(f"{found}/{made} ({found / made:.1%})" for found, made in recalls)
            merged = "-" if follow is None else str(len(wrong & follow))
            print(f"| {words} | {containment:g} | {shown} | {len(wrong)} | {merged} |")
            if first_wrong is None:
                first_wrong = wrong
            elif args.show_merges:
                for a, b in sorted(tuple(sorted(p)) for p in wrong - first_wrong):
                    print(f"    new merge: {a}: {titles[a]}  |  {b}: {titles[b]}")


if __name__ == "__main__":
    main()

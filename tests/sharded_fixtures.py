"""Articles and queries for the sharded tests: a sample of BBC News with dates and sources.

Shared by test_sharded.py (shards in process) and test_ray.py (shards on Ray Serve), so
both check the same parity: the same queries over the same articles, one collection
against its shards.
"""

from __future__ import annotations

import json

from conftest import DATASETS

from retrieval.records import Article, Filters

BBC = DATASETS / "bbc" / "corpus.jsonl"
# Every 60th article, its first three paragraphs: 37 articles across the five BBC
# topics, about 110 passages. BBC repeats stories word for word; a repeated paragraph
# would tie in score with its copy, and which of two equal scores makes the cut at k is
# FAISS's choice, not a property of sharding: articles repeating a paragraph are left out.
EVERY = 60
PARAGRAPHS = 3

QUERIES = [
    "mobile phone sales",
    "election campaign promises",
    "football club manager sacked",
    "film awards ceremony",
    "oil prices rise",
]
# (mode, filters, max_per_article) as the parity tests run them.
CASES = [
    ("dense", None, None),
    ("lexical", None, None),
    ("hybrid", None, None),
    ("dense", Filters(sources=("tech", "sport")), None),
    ("lexical", Filters(date_from="2024-01-05", date_to="2024-01-20"), None),
    ("hybrid", Filters(date_from="2024-01-03"), 1),
    ("hybrid", None, 1),
]


def bbc_sample() -> list[Article]:
    """Articles dated 2024-01-01 .. 2024-01-28 and sourced by topic, so filters bite."""
    articles, seen = [], set()
    with open(BBC, encoding="utf-8") as lines:
        for number, line in enumerate(lines):
            if number % EVERY:
                continue
            record = json.loads(line)
            paragraphs = [p for p in record["text"].split("\n\n") if p.strip()][:PARAGRAPHS]
            if seen & set(paragraphs):
                continue
            seen.update(paragraphs)
            topic = record["_id"].split("_")[0]
            day = len(articles) % 28 + 1
            articles.append(Article(
                record["_id"], record["title"], "\n\n".join(paragraphs),
                date=f"2024-01-{day:02d}", source=topic,
            ))
    return articles


def same_hits(expected: list, got: list) -> None:
    """The same passage ids in the same order, scores within 1e-5, same fields."""
    assert [(h.passage_id, h.rank, h.article_id) for h in got] == [
        (h.passage_id, h.rank, h.article_id) for h in expected
    ]
    for mine, theirs in zip(expected, got, strict=True):
        assert abs(mine.score - theirs.score) <= 1e-5, (mine, theirs)
        assert (mine.text, mine.start, mine.end, mine.title, mine.date) == (
            theirs.text, theirs.start, theirs.end, theirs.title, theirs.date
        )

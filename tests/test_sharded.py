"""A sharded collection answers as one collection holding the same articles (no Ray).

The router (retrieval/cluster/router.py) over shards in this process: split, join, placement,
writes that touch one shard, and search parity in every mode, with filters, a per-article
cap and paging. test_ray.py runs the same parity over Ray Serve.
"""

from __future__ import annotations

import pytest
from sharded_fixtures import CASES, QUERIES, bbc_sample, same_hits

from retrieval.cluster.layout import ID_RANGE, create_shards, join, read_layout, shard_of, split
from retrieval.cluster.router import open_local
from retrieval.collection.collection import Collection
from retrieval.errors import CollectionFormatError, InputError, NotFoundError
from retrieval.records import Article
from retrieval.search.retriever import Retriever

N_SHARDS = 3


@pytest.fixture(scope="module")
def single(tmp_path_factory, embedder):
    path = tmp_path_factory.mktemp("single") / "collection"
    with Collection.open(path, embedder, background=False) as collection:
        collection.add_articles(bbc_sample())
        yield collection


@pytest.fixture(scope="module")
def sharded(single, tmp_path_factory, embedder):
    out = tmp_path_factory.mktemp("sharded") / "shards"
    split(single.path, out, N_SHARDS)
    with open_local(out, background=False) as collection:
        collection._embedder = embedder  # the session's model, loaded once
        yield collection


def test_placement_is_stable_and_spreads_articles():
    assert shard_of("business_001", 3) == shard_of("business_001", 3)
    # blake2b, not Python's salted hash: the value is fixed for ever.
    assert [shard_of(f"a{i}", 4) for i in range(8)] == [shard_of(f"a{i}", 4) for i in range(8)]
    counts = [0, 0, 0]
    for article in bbc_sample():
        counts[shard_of(article.id, 3)] += 1
    assert min(counts) >= 6, counts


def test_split_puts_each_article_in_its_shard_with_its_passage_ids(single, sharded):
    layout = sharded.layout
    assert read_layout(layout.path).shards == layout.shards
    for article in bbc_sample()[:10]:
        index = layout.shard_of(article.id)
        [article_back, passages] = sharded.article_with_passages(article.id)
        assert article_back == single.article(article.id)
        assert [p.id for p in passages] == [p.id for p in single.passages_of(article.id)]
        for other in range(layout.n):
            held = sharded.shards[other].server.collection.store.article(article.id)
            assert (held is not None) == (other == index)
    stats = sharded.stats()
    assert stats["passages"] == single.stats()["passages"] and stats["in_agreement"]


@pytest.mark.parametrize(("mode", "filters", "cap"), CASES)
def test_sharded_search_matches_one_collection(single, sharded, mode, filters, cap):
    one, many = Retriever(single), Retriever(sharded)
    expected = one.search_batch(QUERIES, 8, mode=mode, filters=filters, max_per_article=cap)
    got = many.search_batch(QUERIES, 8, mode=mode, filters=filters, max_per_article=cap)
    assert any(expected)
    for mine, theirs in zip(expected, got, strict=True):
        same_hits(mine, theirs)


def test_paging_highlight_and_related_match(single, sharded):
    one, many = Retriever(single), Retriever(sharded)
    for offset in (0, 3):
        same_hits(one.search(QUERIES[0], 4, mode="hybrid", offset=offset),
                  many.search(QUERIES[0], 4, mode="hybrid", offset=offset))
    mine = one.search(QUERIES[1], 3, mode="dense", highlight=True)
    theirs = many.search(QUERIES[1], 3, mode="dense", highlight=True)
    assert [h.highlight for h in theirs] == [h.highlight for h in mine]
    article_id = bbc_sample()[0].id
    assert [(r.article_id, round(r.score, 5)) for r in many.related(article_id, 5)] == [
        (r.article_id, round(r.score, 5)) for r in one.related(article_id, 5)
    ]


def test_writes_touch_only_their_shard_and_are_found(sharded):
    article = Article("harbour-1", "Harbour reopens", "The harbour reopened after the storm.\n\n"
                      "Fishing boats went out again on Tuesday morning.", date="2024-02-02",
                      source="wire")
    index = sharded.layout.shard_of(article.id)
    before = [s.server.collection.generation for s in sharded.shards]
    report = sharded.add_articles([article])
    assert (report.added, report.unchanged) == (1, 0)
    after = [s.server.collection.generation for s in sharded.shards]
    assert [b != a for b, a in zip(before, after, strict=True)] == [
        i == index for i in range(N_SHARDS)
    ]
    [hit] = Retriever(sharded).search("harbour reopened storm", 1, mode="dense")
    assert hit.article_id == article.id
    # New passages take ids from their shard's own range: unique across shards.
    assert (index + 1) * ID_RANGE <= hit.passage_id < (index + 2) * ID_RANGE
    assert sharded.passage(hit.passage_id).article_id == article.id
    assert sharded.add_articles([article]).unchanged == 1
    assert sharded.delete_article(article.id) == report.passages_added
    with pytest.raises(NotFoundError):
        sharded.article(article.id)
    with pytest.raises(NotFoundError):
        sharded.delete_article(article.id)


def test_join_gives_back_one_collection(single, sharded, tmp_path):
    joined = join(sharded.layout.path, tmp_path / "joined")
    with Collection.open(joined, create=False, background=False) as collection:
        assert collection.info().in_agreement
        assert collection.stats()["passages"] == single.stats()["passages"]
        same_hits(Retriever(single).search(QUERIES[2], 5, mode="dense"),
                  Retriever(collection).search(QUERIES[2], 5, mode="dense"))


def test_bad_requests_say_what_to_fix(single, tmp_path):
    with pytest.raises(CollectionFormatError, match="no sharded collection"):
        read_layout(tmp_path)
    with pytest.raises(InputError, match="between 1 and"):
        create_shards(tmp_path / "x", 0, single.manifest)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "file").write_text("x")
    with pytest.raises(InputError, match="not empty"):
        split(single.path, tmp_path / "full", 2)


def test_without_ray_nothing_imports_ray():
    """Ray is the `ray` extra: the library, the CLI and the service run without it."""
    import subprocess
    import sys

    code = ("import sys, retrieval.cluster.router, retrieval.cli.shards, retrieval.cli.main, "
            "service.app, service.cli; retrieval.cli.main.build_parser(); "
            "assert 'ray' not in sys.modules, 'ray was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)

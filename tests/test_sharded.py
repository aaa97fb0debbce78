"""A sharded collection answers as one collection holding the same articles (no Ray).

The router (retrieval/cluster/router.py) over shards in this process: split, join, placement,
writes that touch one shard, and search parity in every mode, with filters, a per-article
cap and paging. test_ray.py runs the same parity over Ray Serve.
"""

from __future__ import annotations

import threading

import pytest
from sharded_fixtures import CASES, QUERIES, bbc_sample, same_hits

from retrieval.cluster.clients import LocalShard
from retrieval.cluster.layout import ID_RANGE, create_shards, join, read_layout, shard_of, split
from retrieval.cluster.router import ShardedCollection, open_local
from retrieval.collection.collection import Collection
from retrieval.collection.ingest import embed_articles
from retrieval.errors import CollectionFormatError, InputError, NotFoundError
from retrieval.records import Article, Filters
from retrieval.search.options import SearchOptions
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


# Rounds of shard calls per search, by (mode, collapse): counted at the router.
ROUNDS = {("dense", False): 1, ("lexical", False): 1, ("hybrid", False): 1,
          ("hybrid", True): 1}


@pytest.mark.parametrize(("mode", "collapse"), sorted(ROUNDS))
def test_the_router_counts_its_rounds_per_search(sharded, mode, collapse):
    retriever = Retriever(sharded)
    retriever.search(QUERIES[0], 5, mode=mode, collapse=collapse)  # statistics warm
    before = sharded.traffic.now()
    retriever.search(QUERIES[1], 5, mode=mode, collapse=collapse)
    spent = sharded.traffic.now() - before
    assert (spent.searches, spent.rounds) == (1, ROUNDS[mode, collapse])
    assert spent.calls <= spent.rounds * N_SHARDS


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_reranked_collapsed_and_paged_searches_match(single, sharded, mode):
    """Options that read deeper than k (collapse, freshness, date order, paging) answer
    from the query phase as one collection does."""
    one, many = Retriever(single), Retriever(sharded)
    for options in (
        {"collapse": True, "filters": Filters(sources=("business", "tech"))},
        {"recency_half_life_days": 7.0, "now": "2024-01-28", "offset": 2},
        {"sort": "date", "min_score": 0.0 if mode == "lexical" else 0.1},
        {"max_per_article": 1, "offset": 5},
    ):
        expected = one.search_batch(QUERIES, 6, mode=mode, **options)
        got = many.search_batch(QUERIES, 6, mode=mode, **options)
        assert any(expected), options
        for mine, theirs in zip(expected, got, strict=True):
            same_hits(mine, theirs)


def test_a_write_costs_one_more_round_then_statistics_are_kept(sharded, embedder):
    """BM25's collection-wide statistics are cached at the router under each shard's
    generation: a write makes the next lexical search refresh them (2 rounds), never
    score with out-of-date ones."""
    retriever = Retriever(sharded)
    article = Article("tariff-1", "Steel tariffs", "Steel tariffs rise again for exporters.")
    sharded.add_articles([article])
    try:
        rounds = []
        for _ in range(2):
            before = sharded.traffic.now()
            [hit, *_] = retriever.search("steel tariffs exporters", 3, mode="lexical")
            rounds.append((sharded.traffic.now() - before).rounds)
            assert hit.article_id == article.id
        assert rounds == [2, 1]
    finally:
        sharded.delete_article(article.id)


def test_a_write_during_a_shards_read_is_not_half_seen(sharded, embedder, monkeypatch):
    """A shard answers its query phase in one read: a write that commits between its
    dense and its lexical half is seen by neither, and every candidate keeps its row."""
    query = "harbour strike closes the docks"
    article = Article("docks-1", "Harbour strike", "A harbour strike closes the docks.")
    index = sharded.layout.shard_of(article.id)
    server = sharded.shards[index].server
    items = list(zip([article], embed_articles([article], embedder, sharded.chunker),
                     strict=True))
    lexical = server.collection.lexical
    search = lexical.search

    def write_first(*args, **kwargs):
        if not written:  # another connection commits, as another process would
            writer = threading.Thread(target=server.write_embedded, args=(items,))
            writer.start()
            writer.join()
            written.append(True)
        return search(*args, **kwargs)

    written: list[bool] = []
    monkeypatch.setattr(lexical, "search", write_first)
    try:
        hits = Retriever(sharded).search(query, 5, mode="hybrid")
        assert written and len(hits) == 5
        assert all(hit.article_id != article.id for hit in hits)
        assert Retriever(sharded).search(query, 5, mode="hybrid")[0].article_id == article.id
    finally:
        monkeypatch.undo()
        sharded.delete_article(article.id)


FERRY = (
    "Ferry services across the Channel were suspended on Monday after gale force winds "
    "battered the south coast, leaving thousands of passengers stranded at Dover and "
    "Portsmouth.\n\nOperators said crossings would resume once the storm had passed, "
    "but warned that delays were likely to continue into Tuesday as vessels returned "
    "to their schedules and queues of lorries cleared from the approach roads."
)


def test_copies_in_two_shards_collapse_as_on_one_machine(single, sharded):
    """A story and its wire copy placed in different shards are one group, as in one
    collection: a collapsed search returns the story once, listing its copy."""
    story_id = "ferry-story"
    copy_id = next(f"ferry-copy-{i}" for i in range(100)
                   if shard_of(f"ferry-copy-{i}", N_SHARDS) != shard_of(story_id, N_SHARDS))
    articles = [
        Article(story_id, "Ferries suspended", FERRY, date="2024-01-10", source="wire"),
        Article(copy_id, "Channel crossings halted", "DOVER (Wire) - " + FERRY,
                date="2024-01-11", source="wire"),
    ]
    single.add_articles(articles)
    sharded.add_articles(articles)
    try:
        for mode in ("dense", "lexical", "hybrid"):
            one = Retriever(single).search("ferry crossings suspended gale", 4, mode=mode,
                                           collapse=True)
            many = Retriever(sharded).search("ferry crossings suspended gale", 4, mode=mode,
                                             collapse=True)
            assert {one[0].article_id, *one[0].duplicate_ids} == {story_id, copy_id}
            assert [(h.article_id, h.text, h.duplicate_ids) for h in many] == [
                (h.article_id, h.text, h.duplicate_ids) for h in one
            ]
            assert [h.score for h in many] == pytest.approx([h.score for h in one], abs=1e-5)
    finally:
        for article in articles:
            single.delete_article(article.id)
            sharded.delete_article(article.id)


def test_concurrent_searches_rounds_are_in_flight_together(sharded):
    """With search threads, the service's batcher keeps several searches' shard calls
    in flight at once: here shard 0 answers only once 4 searches wait on it together
    (one search thread would wait alone, and the barrier break)."""
    import asyncio

    from service.batching import Batcher

    meeting = threading.Barrier(4)

    class MeetingShard(LocalShard):
        def call(self, method, *args):
            if method == "query":
                meeting.wait(timeout=30)  # a bound on waiting, never an assertion
            return super().call(method, *args)

    shards = [MeetingShard(sharded.shards[0].server), *sharded.shards[1:]]
    meeting_collection = ShardedCollection(sharded.layout, shards, sharded.embedder)
    batcher = Batcher(Retriever(meeting_collection), window_s=0.05, search_threads=4)

    async def four_searches():
        batcher.start()
        try:
            return await asyncio.gather(*(
                batcher.search([query], SearchOptions(k=3, mode="dense"))
                for query in QUERIES[:4]
            ))
        finally:
            await batcher.stop()

    answers = asyncio.run(four_searches())
    assert [len(hits) for [hits] in answers] == [3, 3, 3, 3]


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


def test_one_read_protocol_for_a_collection_a_shard_and_shards(sharded):
    """The reads a search makes are SearchReader's, by name, everywhere: a collection's
    reader and the sharded reader implement each, and a shard server answers only them."""
    from retrieval.cluster.sharded_reader import ShardedReader
    from retrieval.collection.collection import Reader
    from retrieval.collection.reading import SEARCH_READS

    assert {"dense", "hit_rows", "group_keys", "duplicates_of"} <= SEARCH_READS
    for reader in (Reader, ShardedReader):
        assert all(callable(getattr(reader, name, None)) for name in SEARCH_READS), reader
    server = sharded.shards[0].server
    assert server.read("size") > 0
    with pytest.raises(ValueError, match="not a read of the SearchReader protocol"):
        server.read("write_embedded", [])

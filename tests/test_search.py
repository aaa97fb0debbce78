"""Search end to end with the real model: the right passage first, modes, filters, caps."""

from __future__ import annotations

import datetime
from dataclasses import replace

import pytest
from sharded_fixtures import bbc_sample

from retrieval.collection.lexical import fts_query
from retrieval.errors import EmptyIndexError, InputError, NotFoundError
from retrieval.records import Article, Filters
from retrieval.search import pool
from retrieval.search import retriever as search_module
from retrieval.search.fusion import (
    Candidate,
    Fusion,
    normalized_score_fusion,
    reciprocal_rank_fusion,
)
from retrieval.search.ranking import decayed, recency_factor
from retrieval.search.retriever import Retriever

PHONE_CALL = "phone call between the Cuban and Chinese presidents"

NEWS = [
    Article(
        "rain",
        "Storms hit the coast",
        "Heavy rain flooded roads along the coast on Monday.\n\n"
        "Emergency crews rescued drivers from stranded cars.",
        date="2024-01-10",
        source="wire",
    ),
    Article(
        "rates",
        "Central bank holds rates",
        "The central bank kept interest rates unchanged.\n\n"
        "Inflation has eased for three months in a row, officials said.",
        date="2024-02-01",
        source="finance",
    ),
    Article(
        "match",
        "Cup final ends in draw",
        "The cup final ended one-all after extra time.\n\n"
        "The replay will be held next week at the national stadium.",
        date="2024-03-05",
        source="sport",
    ),
    Article(
        "flood",
        "River floods town",
        "The river burst its banks and flooded the town centre.\n\n"
        "Residents were evacuated as water levels kept rising.",
        date="2024-01-12",
        source="wire",
    ),
]


@pytest.fixture
def news(collection):
    collection.add_articles(NEWS)
    return Retriever(collection)


def test_the_phone_call_passage_comes_first(seeded, seed_articles):
    hits = Retriever(seeded).search(PHONE_CALL, 3, collapse=False)  # passages of one article
    assert hits[0].article_id == seed_articles[0].id
    assert "by telephone" in hits[0].text and "Diaz-Canel" in hits[0].text
    assert [h.rank for h in hits] == [1, 2, 3]
    assert hits[0].score >= hits[1].score >= hits[2].score
    seed = seed_articles[0]
    assert seed.text[hits[0].start : hits[0].end] == hits[0].text


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_every_mode_finds_the_flood_articles(news, mode):
    hits = news.search("floods from heavy rain", 2, mode=mode, max_per_article=1)
    assert {h.article_id for h in hits} == {"rain", "flood"}


def test_search_is_search_batch_of_one(news):
    one = news.search("interest rates", 3)
    batch = news.search_batch(["interest rates", "football"], 3)
    assert [h.passage_id for h in one] == [h.passage_id for h in batch[0]]
    assert len(batch) == 2


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_filters_return_k_matches_when_k_exist(news, mode):
    # The query is about sport; the filter allows only the two wire articles: taking
    # the top 2 first and filtering after would return none.
    wire = Filters(sources=("wire",))
    hits = news.search("cup final replay at the stadium", 2, mode=mode, filters=wire)
    if mode == "lexical":  # BM25 only returns passages sharing a word with the query
        assert all(h.source == "wire" for h in hits)
        return
    assert len(hits) == 2 and {h.source for h in hits} == {"wire"}


def test_date_and_article_filters(news):
    january = Filters(date_from="2024-01-01", date_to="2024-01-31")
    assert {h.article_id for h in news.search("news", 10, filters=january)} == {"rain", "flood"}
    only = Filters(article_ids=("rates",))
    assert {h.article_id for h in news.search("rain", 10, filters=only)} == {"rates"}
    assert news.search("rain", 10, filters=Filters(sources=("nobody",))) == []


def test_max_per_article_and_offset(news):
    capped = news.search("water", 4, max_per_article=1)
    assert len({h.article_id for h in capped}) == 4
    everything = news.search("water", 4)
    page = news.search("water", 2, offset=1)
    assert [h.passage_id for h in page] == [h.passage_id for h in everything[1:3]]
    assert [h.rank for h in page] == [1, 2]


def test_k_larger_than_the_collection_returns_everything(news):
    assert len(news.search("anything", 1000)) == len(news.collection.index) == 4


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"query": "   "}, "empty"),
        ({"k": 0}, "k must be"),
        ({"k": -1}, "k must be"),
        ({"k": 10**9}, "k must be"),
        ({"mode": "semantic"}, "unknown mode"),
        ({"max_per_article": 0}, "max_per_article"),
        ({"offset": -1}, "offset"),
    ],
)
def test_bad_arguments_say_what_to_fix(news, kwargs, message):
    arguments = {"query": "rain", **kwargs}
    with pytest.raises(InputError, match=message):
        news.search(arguments.pop("query"), **arguments)


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_a_query_of_any_length_is_answered_from_its_beginning(news, mode):
    # Past the model's 256 word pieces and BM25's 256 distinct words, nothing is read.
    head = "heavy rain and floods " + " ".join(f"w{i}" for i in range(300))
    longer = head + " drought" * 5_000
    assert len(longer) > 20_000
    hits = news.search(longer, 3, mode=mode)
    assert hits and [h.passage_id for h in hits] == [
        h.passage_id for h in news.search(head, 3, mode=mode)]


def test_bad_filters_say_what_to_fix():
    with pytest.raises(InputError, match="YYYY-MM-DD"):
        Filters(date_from="last week")
    with pytest.raises(InputError, match="after"):
        Filters(date_from="2024-02-01", date_to="2024-01-01")


def test_empty_collection_says_so(collection):
    with pytest.raises(EmptyIndexError):
        Retriever(collection).search("anything")


def test_fts_query_neutralises_syntax():
    assert (
        fts_query('NEAR(a b) OR "x" col:y -z')
        == '"near" OR "a" OR "b" OR "or" OR "x" OR "col" OR "y" OR "z"'
    )
    assert fts_query("?!") == ""


@pytest.mark.parametrize("method", ["zscore", "minmax"])
def test_normalized_fusion_follows_its_formula(method):
    """alpha * normalised dense + (1 - alpha) * normalised lexical, a passage missing from a
    list taking that list's lowest normalised score; best first, ties by passage id."""
    dense = [Candidate(4, 0.9), Candidate(1, 0.7), Candidate(2, 0.5)]
    lexical = [Candidate(2, 12.0), Candidate(3, 6.0), Candidate(5, 6.0), Candidate(6, 3.0)]

    def normalised(scores: list[float]) -> list[float]:
        if method == "minmax":
            low, high = min(scores), max(scores)
            return [(s - low) / (high - low) for s in scores]
        mean = sum(scores) / len(scores)
        std = (sum((s - mean) ** 2 for s in scores) / len(scores)) ** 0.5
        return [(s - mean) / std for s in scores]

    d = dict(zip([4, 1, 2], normalised([0.9, 0.7, 0.5]), strict=True))
    lex = dict(zip([2, 3, 5, 6], normalised([12.0, 6.0, 6.0, 3.0]), strict=True))
    expected = {p: 0.6 * d.get(p, min(d.values())) + 0.4 * lex.get(p, min(lex.values()))
                for p in {*d, *lex}}
    fused = normalized_score_fusion(dense, lexical, alpha=0.6, method=method)
    assert [c.passage_id for c in fused] == sorted(expected, key=lambda p: (-expected[p], p))
    assert [c.score for c in fused] == pytest.approx([expected[c.passage_id] for c in fused])
    tie = [c.passage_id for c in fused].index(3)  # 3 and 5: the same scores in both lists
    assert fused[tie + 1].passage_id == 5 and fused[tie + 1].score == fused[tie].score
    top = normalized_score_fusion(dense, lexical, alpha=0.6, method=method, limit=2)
    assert top == fused[:2]
    alone = normalized_score_fusion([], lexical, alpha=0.6, method=method)
    assert [c.passage_id for c in alone] == [2, 3, 5, 6]


def test_rrf_rewards_agreement():
    fused = reciprocal_rank_fusion(
        [[Candidate(1, 0.9), Candidate(2, 0.8)], [Candidate(2, 5), Candidate(3, 4)]]
    )
    assert [c.passage_id for c in fused] == [2, 1, 3]


# -- min_score, freshness, date order ----------------------------------------------------

FLOODS = "floods from heavy rain"


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_min_score_keeps_a_prefix_of_the_ranking(news, mode):
    everything = news.search(FLOODS, 10, mode=mode)
    floor = (everything[0].score + everything[1].score) / 2  # between the first two
    kept = news.search(FLOODS, 10, mode=mode, min_score=floor)  # after fusion for hybrid
    assert [h.passage_id for h in kept] == [everything[0].passage_id]
    assert all(h.score >= floor for h in kept)


def test_min_score_can_answer_nothing(news):
    # The real model puts the flood passages near 0.6 and an unrelated query's best
    # passage near 0.05 (docs/search.md, "What scores mean"): a floor of 0.3 tells them
    # apart. Dense only: a hybrid score is relative to the query's own candidates and
    # cannot say "nothing".
    found = news.search(FLOODS, 10, mode="dense", min_score=0.3)
    assert {h.article_id for h in found} == {"rain", "flood"}
    assert news.search("recipe for sourdough bread", 10, mode="dense", min_score=0.3) == []


def same_story(article_id, date):
    return Article(
        article_id, "Harbour reopens after storm",
        "The harbour reopened on Tuesday after storm damage was repaired.", date=date,
    )


@pytest.fixture
def stories(collection):
    """One story three times: fresh, old and undated; and NEWS around them.

    The three copies are one duplicate group: the freshness tests search uncollapsed,
    to see each copy's own score."""
    collection.add_articles(
        [*NEWS, same_story("fresh", "2024-06-01"), same_story("old", "2019-06-01"),
         same_story("undated", None)]
    )
    return Retriever(collection)


def test_freshness_scales_scores_by_the_documented_factor(stories):
    query = "harbour reopened after the storm"
    plain = {h.article_id: h.score for h in stories.search(query, 3, collapse=False)}
    assert set(plain) == {"fresh", "old", "undated"}
    assert len({round(s, 6) for s in plain.values()}) == 1  # one text, one score
    hits = stories.search(query, 3, recency_half_life_days=30, now="2024-07-01", collapse=False)
    assert [h.article_id for h in hits][0] == "fresh"
    scores = {h.article_id: h.score for h in hits}
    assert scores["fresh"] == pytest.approx(plain["fresh"] * (0.5 + 0.5 * 0.5))  # 30 days
    assert scores["old"] == pytest.approx(plain["old"] * 0.5, abs=1e-9)  # ~5 years
    assert scores["undated"] == pytest.approx(plain["undated"] * 0.5)  # the floor: oldest
    future = stories.search(query, 1, recency_half_life_days=30, now="2024-01-01",
                            collapse=False)[0]
    assert future.article_id == "fresh" and future.score == pytest.approx(plain["fresh"])


@pytest.mark.parametrize("now", ["2024-03-10", "2030-01-01"])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_freshness_top_k_is_the_top_k_of_a_full_rerank(stories, mode, k, now, monkeypatch):
    # A pool of 4k candidates at first (RERANK_POOL lowered to 1, so that it must grow
    # on these 7 passages): the decayed top k are those of a re-rank of every candidate.
    query, half_life = "storm damage", 7.0
    every = stories.search(query, 1000, mode=mode, collapse=False)
    monkeypatch.setattr(pool, "RERANK_POOL", 1)
    pools = []
    ranked = search_module.Retriever._ranked

    def spy(self, reader, query, vector, mode, fetch, *rest, **named):
        pools.append(fetch)
        return ranked(self, reader, query, vector, mode, fetch, *rest, **named)

    monkeypatch.setattr(search_module.Retriever, "_ranked", spy)
    start = datetime.date.fromisoformat(now)
    expected = sorted(
        ((decayed(h.score, recency_factor(h.date, start, half_life)), h.passage_id) for h in every),
        key=lambda pair: (-pair[0], pair[1]),
    )[:k]
    hits = stories.search(query, k, mode=mode, recency_half_life_days=half_life, now=now,
                          collapse=False)
    if (mode, k, now) == ("dense", 1, "2030-01-01"):
        # Everything is years old, so every score about halves: the best decayed score
        # falls under the 4th raw one, and the pool has to grow past 4.
        assert pools == [4, 16]
    assert [h.passage_id for h in hits] == [pid for _, pid in expected]
    assert [h.score for h in hits] == pytest.approx([s for s, _ in expected])


def test_decay_lowers_negative_scores_too():
    assert decayed(0.4, 0.5) == pytest.approx(0.2)
    assert decayed(-0.2, 0.5) == pytest.approx(-0.4)  # older is lower, whatever the sign
    assert decayed(-0.2, 1.0) == -0.2


def test_sort_by_date_orders_the_hits_above_min_score_newest_first(stories):
    hits = stories.search("rain storm flood water harbour", 10, min_score=0.2, sort="date")
    assert hits and all(h.score >= 0.2 for h in hits)
    dated = [h.date for h in hits if h.date is not None]
    assert dated == sorted(dated, reverse=True)
    assert all(h.date is None for h in hits[len(dated):])  # undated ones last
    by_score = stories.search("rain storm flood water harbour", 1000, min_score=0.2)
    assert {h.passage_id for h in hits} == {h.passage_id for h in by_score}
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"min_score": float("nan")}, "min_score"),
        ({"min_score": float("inf")}, "min_score"),
        ({"recency_half_life_days": 0}, "recency_half_life_days"),
        ({"recency_half_life_days": -3}, "recency_half_life_days"),
        ({"recency_half_life_days": 30, "now": "yesterday"}, "now"),
        ({"sort": "newest", "min_score": 0.1}, "unknown sort"),
        ({"sort": "date"}, "needs min_score"),
    ],
)
def test_bad_ranking_options_say_what_to_fix(news, kwargs, message):
    with pytest.raises(InputError, match=message):
        news.search("rain", **kwargs)


# -- related articles ---------------------------------------------------------------------


def test_related_finds_the_other_flood_story_first_without_a_model_call(news, monkeypatch):
    def no_model(texts):
        raise AssertionError("related() must use the stored vectors")

    monkeypatch.setattr(news.collection.embedder, "embed_queries", no_model)
    monkeypatch.setattr(news.collection.embedder, "embed_documents", no_model)
    related = news.related("rain", 10)
    assert related[0].article_id == "flood"
    assert related[0].title == "River floods town" and related[0].date == "2024-01-12"
    ids = [r.article_id for r in related]
    assert "rain" not in ids and len(ids) == len(set(ids)) == 3  # one entry per article
    assert [r.score for r in related] == sorted((r.score for r in related), reverse=True)
    assert [r.article_id for r in news.related("rain", 1)] == ["flood"]


def test_related_of_a_many_passage_article(seeded, seed_articles):
    seeded.add_articles(NEWS)
    related = Retriever(seeded).related(seed_articles[0].id, 2)
    assert len(related) == 2 and seed_articles[0].id not in {r.article_id for r in related}


def test_related_respects_filters_and_refuses_unknown_ids(news):
    finance = Filters(sources=("finance", "sport"))
    assert {r.article_id for r in news.related("rain", 10, filters=finance)} == {"rates", "match"}
    assert news.related("rain", 10, filters=Filters(sources=("nobody",))) == []
    with pytest.raises(NotFoundError):
        news.related("no-such-article")
    with pytest.raises(InputError, match="k must be"):
        news.related("rain", 0)


# -- one ranking, however deep a search reads ---------------------------------------------


@pytest.fixture(scope="module")
def bbc_news(tmp_path_factory, embedder):
    """37 BBC articles (~110 passages), five of them again under another headline, so
    that collapsing bites (a headline of its own keeps the copies' vectors apart: two
    equal scores may come back in either order, whatever the ranking)."""
    from retrieval.collection.collection import Collection

    articles = bbc_sample()
    copies = [replace(a, id=f"{a.id}-copy", title=f"Update: {a.title}") for a in articles[:5]]
    with Collection.open(tmp_path_factory.mktemp("bbc") / "collection", embedder) as opened:
        opened.add_articles([*articles, *copies])
        yield opened


PAGED = [{}, {"max_per_article": 1}, {"collapse": True}, {"max_per_article": 2, "collapse": True}]


@pytest.mark.slow
@pytest.mark.parametrize("options", PAGED)
@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_pages_tile_one_ranking(bbc_news, mode, options):
    # A fused pool of 8 passages per half, so that the deeper reads a cap, collapsing
    # and later pages make go far past it: the ranking they extend must not move.
    searcher = Retriever(bbc_news, fusion=Fusion("zscore", 0.6, depth=8))
    options = {"collapse": False, **options}
    for query in ("mobile phone sales", "oil prices rise"):
        whole = searcher.search(query, 40, mode=mode, **options)
        pages = [hit for offset in range(0, 40, 10)
                 for hit in searcher.search(query, 10, mode=mode, offset=offset, **options)]
        assert [(h.passage_id, h.score) for h in pages] == [
            (h.passage_id, h.score) for h in whole
        ]
        first = searcher.search(query, 3, mode=mode, **options)
        assert [(h.passage_id, h.score) for h in first] == [
            (h.passage_id, h.score) for h in whole[:3]
        ]
        assert [h.score for h in whole] == sorted((h.score for h in whole), reverse=True)


@pytest.mark.slow
def test_hybrid_ranks_past_its_pool_in_dense_order(bbc_news):
    searcher = Retriever(bbc_news, fusion=Fusion("zscore", 0.6, depth=8))
    query = "oil prices rise"
    hits = searcher.search(query, 60, collapse=False)
    dense = searcher.search(query, 60, mode="dense", collapse=False)
    lexical = searcher.search(query, 8, mode="lexical", collapse=False)
    pooled = {h.passage_id for h in dense[:8]} | {h.passage_id for h in lexical}
    rest = [h for h in hits if h.passage_id not in pooled]
    assert len(hits) - len(rest) == len(pooled)
    assert [h.passage_id for h in rest] == [
        h.passage_id for h in dense if h.passage_id not in pooled
    ][: len(rest)]
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(scores)

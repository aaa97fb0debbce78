"""Search end to end with the real model: the right passage first, modes, filters, caps."""

from __future__ import annotations

import pytest

from retrieval.errors import EmptyIndexError, InputError
from retrieval.records import Article, Filters
from retrieval.search import Candidate, Retriever, fts_query, reciprocal_rank_fusion

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
    hits = Retriever(seeded).search(PHONE_CALL, 3)
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
        ({"query": "x" * 20_000}, "limit"),
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


def test_rrf_rewards_agreement():
    fused = reciprocal_rank_fusion(
        [[Candidate(1, 0.9), Candidate(2, 0.8)], [Candidate(2, 5), Candidate(3, 4)]]
    )
    assert [c.passage_id for c in fused] == [2, 1, 3]

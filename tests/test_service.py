"""The HTTP service in process, with the real model: every endpoint, its errors, writes
under concurrent searches, and the micro-batcher's contract (with a fake retriever)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from service_fixtures import build_collection

from retrieval.errors import EmptyIndexError, InputError
from retrieval.records import Hit
from retrieval.search.options import SearchOptions
from service.app import create_app
from service.batching import Batcher
from service.settings import Settings

KEY = "test-key"
AUTH = {"X-API-Key": KEY}
SEED_ID = "000_88e63c04297101a7"


@pytest.fixture(scope="session")
def service_collection(tmp_path_factory, embedder, seed_articles):
    return build_collection(tmp_path_factory.mktemp("service") / "c", embedder, seed_articles)


@pytest.fixture(scope="module")
def client(service_collection):
    app = create_app(Settings(collection=service_collection, api_key=KEY, batch_window_ms=5))
    with TestClient(app) as test_client:
        yield test_client


def search(client, **body):
    response = client.post("/search", json={"query": "rain", **body})
    assert response.status_code == 200, response.text
    return response.json()


# -- search --------------------------------------------------------------------------------


def test_search_finds_the_seed_article(client):
    answer = search(client, query="COVID-19 cooperation", k=3)
    assert answer["query"] == "COVID-19 cooperation" and answer["k"] == 3
    assert answer["mode"] == "hybrid" and answer["offset"] == 0 and answer["took_ms"] > 0
    hits = answer["hits"]
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert hits[0]["article_id"] == SEED_ID and hits[0]["highlight"] is None
    article = client.get(f"/articles/{SEED_ID}").json()
    assert article["text"][hits[0]["start"] : hits[0]["end"]] == hits[0]["text"]


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_every_mode_with_filters_and_cap(client, mode):
    hits = search(client, query="floods from heavy rain", k=2, mode=mode, max_per_article=1,
                  filters={"sources": ["wire"], "date_from": "2024-01-01"})["hits"]
    assert {h["article_id"] for h in hits} == {"rain", "flood"}
    assert all(h["source"] == "wire" and h["date"] >= "2024-01-01" for h in hits)


def test_offset_pages_through_the_ranking(client):
    everything = search(client, query="water", k=4)["hits"]
    page = search(client, query="water", k=2, offset=1)["hits"]
    assert [h["passage_id"] for h in page] == [h["passage_id"] for h in everything[1:3]]


def test_highlight_marks_the_best_sentence(client):
    hits = search(client, query="phone call between the Cuban and Chinese presidents", k=3,
                  highlight=True)["hits"]
    for hit in hits:
        span = hit["highlight"]
        assert 0 <= span["start"] < span["end"] <= len(hit["text"])
    best = hits[0]
    assert "telephone" in best["text"][best["highlight"]["start"] : best["highlight"]["end"]]


def test_lexical_search_can_highlight(client):
    hits = search(client, query="interest rates", mode="lexical", highlight=True)["hits"]
    assert hits and all(h["highlight"] is not None for h in hits)


def test_batch_search_answers_each_query_as_search_does(client):
    body = {"queries": ["interest rates", "cup final"], "k": 2}
    results = client.post("/search/batch", json=body).json()["results"]
    assert [r["query"] for r in results] == body["queries"]
    for query, result in zip(body["queries"], results, strict=True):
        alone = search(client, query=query, k=2)["hits"]
        assert [h["passage_id"] for h in result["hits"]] == [h["passage_id"] for h in alone]


def test_min_score_freshness_and_date_order(client):
    # Dense: a cosine floor can say "nothing relevant", and positive scores age by a factor.
    def dense(**body):
        return search(client, mode="dense", **body)["hits"]

    floods = dense(query="floods from heavy rain", k=10, min_score=0.3)
    assert {h["article_id"] for h in floods} == {"rain", "flood"}  # k counts at most
    assert dense(query="recipe for sourdough bread", min_score=0.3) == []
    plain = dense(query="floods from heavy rain", k=2)
    assert [h["article_id"] for h in plain] == ["rain", "flood"]
    # Two days older than `now` with a one-day half-life, "rain" keeps 0.625 of its score.
    fresh = dense(query="floods from heavy rain", k=2, recency_half_life_days=1, now="2024-01-12")
    assert [h["article_id"] for h in fresh] == ["flood", "rain"]
    assert fresh[1]["score"] == pytest.approx(plain[0]["score"] * 0.625)
    newest = search(client, query="storm", k=10, min_score=0.0, sort="date")["hits"]
    dates = [h["date"] for h in newest]
    assert newest and all(h["score"] >= 0.0 for h in newest)
    assert dates == sorted(dates, reverse=True)
    body = {"queries": ["storm"], "k": 10, "min_score": 0.0, "sort": "date"}
    [batch] = client.post("/search/batch", json=body).json()["results"]
    assert [h["passage_id"] for h in batch["hits"]] == [h["passage_id"] for h in newest]


def test_related_articles(client):
    answer = client.get("/articles/rain/related", params={"k": 2}).json()
    assert answer["article_id"] == "rain" and answer["k"] == 2
    related = answer["related"]
    assert [r["article_id"] for r in related][0] == "flood" and len(related) == 2
    assert set(related[0]) == {"article_id", "title", "date", "source", "url", "score"}
    everything = client.get("/articles/rain/related").json()["related"]  # k=10 by default
    ids = [r["article_id"] for r in everything]
    assert "rain" not in ids and len(ids) == len(set(ids))


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("/articles/no-such-article/related", 404, "no article"),
        ("/articles/a/b/related", 404, "no article"),
        ("/articles/rain/related?k=0", 422, "k"),
        ("/articles/rain/related?k=101", 422, "k"),
        ("/articles/rain/related?k=ten", 422, "k"),
    ],
)
def test_related_refuses_unknown_ids_and_bad_k(client, path, status, words):
    response = client.get(path)
    assert response.status_code == status and words in response.json()["detail"]


# -- bad input: always a 4xx that says what to fix -----------------------------------------

BAD_SEARCHES = [
    ({"query": ""}, "query"),
    ({"query": "   \n\t "}, "query"),
    ({"query": "x" * 1_000_000}, "2000"),
    ({"query": "rain", "k": 0}, "k"),
    ({"query": "rain", "k": -1}, "k"),
    ({"query": "rain", "k": 10**9}, "k"),
    ({"query": "rain", "k": 101}, "at most 100"),
    ({"query": "rain", "k": "ten"}, "k"),
    ({"query": "rain", "mode": "semantic"}, "mode"),
    ({"query": "rain", "offset": -1}, "offset"),
    ({"query": "rain", "offset": 1001}, "offset"),
    ({"query": "rain", "max_per_article": 0}, "max_per_article"),
    ({"query": "rain", "filters": {"date_from": "last week"}}, "date_from"),
    ({"query": "rain", "filters": {"date_from": "2024-02-30"}}, "date_from"),
    ({"query": "rain", "filters": {"date_from": "2024-03-01", "date_to": "2024-01-01"}}, "after"),
    ({"query": "rain", "filters": {"article_ids": "rain"}}, "article_ids"),
    ({"query": "rain", "filters": {"sources": [1, 2]}}, "sources"),
    ({"query": "rain", "filters": {"date_form": "2024-01-01"}}, "date_form"),
    ({"query": "rain", "filters": "wire"}, "filters"),
    ({"query": "rain", "top_k": 3}, "top_k"),
    ({"query": "rain", "min_score": "high"}, "min_score"),
    ({"query": "rain", "min_score": 1e300}, "min_score"),
    ({"query": "rain", "recency_half_life_days": 0}, "recency_half_life_days"),
    ({"query": "rain", "recency_half_life_days": -7}, "recency_half_life_days"),
    ({"query": "rain", "now": "2024-02-30"}, "now"),
    ({"query": "rain", "now": "today"}, "now"),
    ({"query": "rain", "sort": "newest"}, "sort"),
    ({"query": "rain", "sort": "date"}, "min_score"),
    ({"k": 3}, "query"),
    ([{"query": "rain"}], "body"),
]


@pytest.mark.parametrize(("body", "names"), BAD_SEARCHES)
def test_bad_searches_are_422_naming_the_problem(client, body, names):
    response = client.post("/search", json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and names in detail and len(detail) < 2000


@pytest.mark.parametrize(
    ("path", "body"),
    [("/search", {"query": "rain " * 401}), ("/search/batch", {"queries": ["rain", "x" * 2001]})],
)
def test_a_query_past_the_services_limit_is_told_what_to_do(client, path, body):
    response = client.post(path, json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert "at most 2000 characters" in detail and "shorten it" in detail
    assert "retrieval search" in detail  # where a longer text is taken


@pytest.mark.parametrize(
    ("content", "content_type", "status", "words"),
    [
        (b'{"query": "rain",', "application/json", 422, "not valid JSON"),
        (b'{"query": NaN}', "application/json", 422, "query"),
        (b'{"query": "rain", "filters": {"sources": ["\\ud800"]}}', "application/json", 422,
         "surrogate"),
        (b"", "application/json", 422, "body"),
        (b'{"query": "rain"}', "text/plain", 415, "content-type: application/json"),
        (b"query=rain", "application/x-www-form-urlencoded", 415, "JSON"),
    ],
)
def test_malformed_bodies_are_4xx(client, content, content_type, status, words):
    response = client.post("/search", content=content, headers={"content-type": content_type})
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [{"queries": []}, {"queries": ["rain"] * 65}, {"queries": ["rain", " "]}, {"queries": "rain"}],
)
def test_bad_batches_are_422(client, body):
    response = client.post("/search/batch", json=body)
    assert response.status_code == 422 and "queries" in response.json()["detail"]


# -- passages and articles -----------------------------------------------------------------


def test_passage_and_its_article(client):
    article = client.get("/articles/rain").json()
    assert article["title"] == "Storms hit the coast" and article["source"] == "wire"
    assert article["metadata"] == {} and article["passages"]
    ref = article["passages"][0]
    passage = client.get(f"/passages/{ref['passage_id']}").json()
    assert passage["article_id"] == "rain" and passage["ordinal"] == ref["ordinal"]
    assert passage["text"] == article["text"][ref["start"] : ref["end"]]
    assert passage["title"] == article["title"] and passage["n_tokens"] > 0


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("/passages/999999", 404, "no passage"),
        ("/passages/-1", 422, "passage_id"),
        ("/passages/abc", 422, "passage_id"),
        (f"/passages/{10**30}", 422, "passage_id"),
        ("/articles/no-such-article", 404, "no article"),
        ("/articles/a/b/c", 404, "no article"),
        ("/nowhere", 404, "Not Found"),
    ],
)
def test_unknown_ids_are_4xx(client, path, status, words):
    response = client.get(path)
    assert response.status_code == status and words in response.json()["detail"]


# -- writes --------------------------------------------------------------------------------


def article(article_id, text="Volcanic ash grounded flights across the islands.", **fields):
    return {"id": article_id, "title": "Ash cloud", "text": text, **fields}


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}],
)
def test_writes_need_the_api_key(client, headers):
    posted = client.post("/articles", json={"articles": [article("x")]}, headers=headers)
    deleted = client.delete("/articles/rain", headers=headers)
    for response in (posted, deleted):
        assert response.status_code == 401 and "X-API-Key" in response.json()["detail"]
    assert client.get("/articles/x").status_code == 404


def test_writes_are_open_without_a_configured_key(client, service_collection):
    settings = client.app.state.settings
    client.app.state.settings = Settings(collection=service_collection, api_key=None)
    try:
        response = client.delete("/articles/no-such-article")
    finally:
        client.app.state.settings = settings
    assert response.status_code == 404  # past the guard


ASH = article("news/2024/ash", date="2024-04-01", source="wire", url="https://example.org/ash",
              metadata={"tags": ["volcano"], "score": 1.5})


def test_post_search_update_delete(client):
    bearer = {"Authorization": f"Bearer {KEY}"}
    posted = client.post("/articles", json={"articles": [ASH]}, headers=bearer)
    assert posted.status_code == 200, posted.text
    assert posted.json() == {"added": 1, "updated": 0, "unchanged": 0, "passages_added": 1,
                             "passages_removed": 0}
    [top] = search(client, query="volcanic ash and flights", k=1)["hits"]
    assert top["article_id"] == "news/2024/ash"
    stored = client.get("/articles/news/2024/ash").json()
    assert stored["metadata"] == ASH["metadata"] and stored["date"] == "2024-04-01"

    same = client.post("/articles", json={"articles": [ASH]}, headers=AUTH).json()
    assert same["unchanged"] == 1 and same["passages_added"] == 0
    changed = client.post("/articles", json={"articles": [article("news/2024/ash", "Ash fell.")]},
                          headers=AUTH).json()
    assert changed["updated"] == 1 and changed["passages_removed"] == 1

    deleted = client.delete("/articles/news/2024/ash", headers=AUTH)
    assert deleted.json() == {"article_id": "news/2024/ash", "passages_removed": 1}
    assert client.get("/articles/news/2024/ash").status_code == 404
    hits = search(client, query="volcanic ash and flights", k=20)["hits"]
    assert "news/2024/ash" not in {h["article_id"] for h in hits}
    assert client.delete("/articles/news/2024/ash", headers=AUTH).status_code == 404


def test_a_headline_only_article_is_indexed_with_its_title_as_text(client):
    flash = {"id": "flash-1", "title": "Earthquake of magnitude 6 strikes off the coast"}
    response = client.post("/articles", json={"articles": [flash]}, headers=AUTH)
    assert response.status_code == 200 and response.json()["added"] == 1, response.text
    hits = search(client, query="earthquake off the coast", k=1)["hits"]
    assert hits[0]["article_id"] == "flash-1" and hits[0]["text"] == flash["title"]
    assert client.delete("/articles/flash-1", headers=AUTH).status_code == 200


@pytest.mark.parametrize(
    ("articles", "words"),
    [
        ([], "articles"),
        ([article("a"), article("a")], "twice"),
        ([article("a", text="   ", title="")], "text"),
        ([article("   ")], "id"),
        ([article("a", date="2024-02-30")], "date"),
        ([{"id": "a"}], "text"),
        ([article("a", metadata=[1])], "metadata"),
        ([article("a", color="red")], "color"),
    ],
)
def test_bad_articles_are_422(client, articles, words):
    response = client.post("/articles", json={"articles": articles}, headers=AUTH)
    assert response.status_code == 422 and words in response.json()["detail"], response.text


def test_a_write_while_another_process_writes_is_503_retry_after(client, service_collection):
    service = client.app.state.service
    service.settings = service.settings.model_copy(update={"lock_timeout_s": 0.2})
    other_process = sqlite3.connect(service_collection / "store.sqlite", isolation_level=None)
    try:
        other_process.execute("BEGIN IMMEDIATE")  # another writer holds the database
        response = client.post("/articles", json={"articles": [article("x")]}, headers=AUTH)
    finally:
        other_process.execute("ROLLBACK")
        other_process.close()
        service.settings = client.app.state.settings
    assert response.status_code == 503 and response.headers["retry-after"]
    assert "try again" in response.json()["detail"]


def test_searches_during_an_ingest_see_whole_articles_only(client):
    paragraphs = ["Glaciers in the northern range retreated again this summer. " * 12] * 3
    batches = [[article(f"glacier-{b}-{i}", "\n\n".join(paragraphs) + f" Report {b}.{i}.")
                for i in range(3)] for b in range(4)]
    ids = [a["id"] for batch in batches for a in batch]

    def ingest():
        for batch in batches:
            response = client.post("/articles", json={"articles": batch}, headers=AUTH)
            assert response.status_code == 200, response.text

    writer = threading.Thread(target=ingest)
    writer.start()
    seen = []
    while writer.is_alive():
        seen.append(search(client, query="glaciers retreating", k=100, collapse=False,
                           filters={"article_ids": ids})["hits"])
    writer.join()
    passages = {i: len(client.get(f"/articles/{i}").json()["passages"]) for i in ids}
    assert min(passages.values()) > 1  # else "whole" would prove nothing
    for hits in seen:
        counts: dict[str, int] = {}
        for hit in hits:
            counts[hit["article_id"]] = counts.get(hit["article_id"], 0) + 1
        assert all(counts[i] == passages[i] for i in counts), counts
    assert len(seen) >= 2  # searches were answered while the ingest ran
    for i in ids:
        client.delete(f"/articles/{i}", headers=AUTH)


# -- operations ----------------------------------------------------------------------------


def test_health_ready_stats(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ok"}
    stats = client.get("/stats").json()
    assert stats["in_agreement"] and stats["model"] == "all-MiniLM-L6-v2"
    assert stats["passages"] == stats["vectors_in_index"] >= stats["articles"] >= 5
    assert stats["index"] == "Flat" and stats["max_k"] == 100


def test_not_ready_before_the_lifespan_ran(service_collection):
    app = create_app(Settings(collection=service_collection))
    unstarted = TestClient(app)  # no `with`: the lifespan never runs, nothing is loaded
    assert unstarted.get("/healthz").status_code == 200
    response = unstarted.get("/readyz")
    assert response.status_code == 503 and response.headers["retry-after"]
    assert unstarted.post("/search", json={"query": "rain"}).status_code == 503


def test_metrics_by_route_template(client):
    client.get("/passages/999999")
    text = client.get("/metrics").text
    assert 'route="/passages/{passage_id}",status="404"' in text
    assert 'retrieval_http_requests_total{method="POST",route="/search",status="200"}' in text
    assert "retrieval_search_batch_size_bucket" in text
    assert "retrieval_index_vectors " in text


def test_docs_openapi_and_page(client):
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/search", "/search/batch", "/articles", "/articles/{article_id}",
            "/articles/{article_id}/related"} <= set(paths)
    page = client.get("/")
    assert page.status_code == 200 and "html" in page.headers["content-type"]


def test_serve_is_a_retrieval_subcommand(tmp_path, capsys):
    from retrieval.cli.main import build_parser, main
    from service.cli import run

    args = build_parser().parse_args(["serve", "--collection", str(tmp_path), "--port", "9"])
    assert args.run is run and args.port == 9
    assert main(["serve", "--collection", str(tmp_path / "missing")]) == 2
    assert "retrieval index" in capsys.readouterr().err


# -- the micro-batcher, with a fake retriever ----------------------------------------------


class FakeEmbedder:
    def __init__(self):
        self.calls: list[int] = []

    def embed_queries(self, texts):
        self.calls.append(len(texts))
        if "boom" in texts:
            raise RuntimeError("the model choked")
        return np.ones((len(texts), 4), dtype=np.float32)


class FakeRetriever:
    def __init__(self, *, empty=False):
        self.collection = type("C", (), {"embedder": FakeEmbedder()})()
        self.empty = empty

    def embed_queries(self, texts):
        return self.collection.embedder.embed_queries(texts)

    def search_embedded(self, queries, vectors, options):
        if self.empty:
            raise EmptyIndexError("nothing here")
        if options.mode != "lexical":
            assert vectors is not None and len(vectors) == len(queries)
        if options.k > 50:
            raise InputError("k too big")
        return [[Hit(1, q, "", None, None, None, q, 1.0, 1, 0, 1)] for q in queries]


def run_concurrently(batcher, requests):
    async def main():
        batcher.start()
        try:
            return await asyncio.gather(
                *(batcher.search(q, o) for q, o in requests), return_exceptions=True
            )
        finally:
            await batcher.stop()

    return asyncio.run(main())


def test_concurrent_queries_share_one_model_call():
    retriever = FakeRetriever()
    sizes = []
    batcher = Batcher(retriever, window_s=0.05, max_batch=32, on_batch=sizes.append)
    requests = [([f"q{i}"], SearchOptions()) for i in range(10)] + [(["a", "b"], SearchOptions())]
    results = run_concurrently(batcher, requests)
    assert retriever.collection.embedder.calls == [12] and sizes == [12]
    assert [r[0][0].text for r in results[:10]] == [f"q{i}" for i in range(10)]
    assert [r[0].text for r in results[10]] == ["a", "b"]


def test_max_batch_1_is_one_model_call_per_request():
    retriever = FakeRetriever()
    batcher = Batcher(retriever, window_s=0.05, max_batch=1)
    run_concurrently(batcher, [([f"q{i}"], SearchOptions()) for i in range(5)])
    assert retriever.collection.embedder.calls == [1, 1, 1, 1, 1]


def test_a_bad_request_fails_alone():
    retriever = FakeRetriever()
    batcher = Batcher(retriever, window_s=0.05, max_batch=32)
    results = run_concurrently(batcher, [
        (["fine"], SearchOptions()), (["boom"], SearchOptions()), (["big"], SearchOptions(k=99)),
        (["words"], SearchOptions(mode="lexical")),
    ])
    assert results[0][0] and results[3][0]
    assert isinstance(results[1], RuntimeError) and isinstance(results[2], InputError)
    # One batched call fails, then job by job; the lexical query is never embedded.
    assert retriever.collection.embedder.calls == [3, 1, 1, 1]


def test_an_empty_collection_answers_with_no_hits():
    batcher = Batcher(FakeRetriever(empty=True), window_s=0, max_batch=1)
    [result] = run_concurrently(batcher, [(["anything"], SearchOptions())])
    assert result[0] == []


def test_stop_fails_waiting_searches_instead_of_hanging():
    async def main():
        batcher = Batcher(FakeRetriever(), window_s=0, max_batch=1)
        pending = asyncio.ensure_future(batcher.search(["never started"], SearchOptions()))
        await asyncio.sleep(0)
        await batcher.stop()
        return await asyncio.wait_for(asyncio.gather(pending, return_exceptions=True), 5)

    started = time.perf_counter()
    [outcome] = asyncio.run(main())
    assert "shutting down" in str(outcome) and time.perf_counter() - started < 5

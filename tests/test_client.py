"""The HTTP client: requests and answers over MockTransport, failures, its light install,
and parity with the in-process Retriever through the real app (TestClient as `http=`)."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.metadata
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest
from packaging.requirements import Requirement
from pydantic import BaseModel

from retrieval.errors import RetrievalError
from retrieval.records import Article, Filters, Hit, Passage, RelatedArticle, Span
from service import schemas
from service.client import AsyncRetrievalClient, RetrievalClient, RetrievalClientError

PHONE_CALL = "phone call between the Cuban and Chinese presidents"

HIT = {
    "passage_id": 7,
    "article_id": "a1",
    "title": "Xi calls Diaz-Canel",
    "date": "2021-08-30",
    "source": "wire",
    "url": None,
    "text": "Xi spoke by telephone.",
    "score": 0.8125,
    "rank": 1,
    "start": 0,
    "end": 22,
    "highlight": {"start": 3, "end": 8},
}
EXPECTED_HIT = Hit(
    passage_id=7,
    article_id="a1",
    title="Xi calls Diaz-Canel",
    date="2021-08-30",
    source="wire",
    url=None,
    text="Xi spoke by telephone.",
    score=0.8125,
    rank=1,
    start=0,
    end=22,
    highlight=Span(3, 8),
)


RELATED = {
    "article_id": "a2",
    "title": "Cuba thanks China",
    "date": "2021-08-31",
    "source": "wire",
    "url": "https://example.org/a2",
    "score": 0.5,
}


def search_answer(request: schemas.SearchOptionsIn, query: str) -> schemas.SearchResponse:
    return schemas.SearchResponse(
        query=query, mode=request.mode, k=request.k, offset=request.offset, took_ms=1.5, hits=[HIT]
    )


def answer(model: BaseModel) -> httpx2.Response:
    return httpx2.Response(200, json=model.model_dump(mode="json"))


class Recorder:
    """A MockTransport handler that answers like the service and keeps what it was sent.

    Request bodies are read, and answers written, with the service's own schemas: a
    field the client sends that the service would refuse (they forbid unknown fields)
    or reads that the service does not write fails here.
    """

    def __init__(self) -> None:
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        content = request.content or b"{}"
        route = (request.method, request.url.raw_path.decode())
        if route == ("POST", "/search"):
            one = schemas.SearchRequest.model_validate_json(content)
            return answer(search_answer(one, one.query))
        if route == ("POST", "/search/batch"):
            batch = schemas.BatchSearchRequest.model_validate_json(content)
            results = [search_answer(batch, q) for q in batch.queries]
            return answer(schemas.BatchSearchResponse(results=results))
        if route == ("GET", "/passages/7"):
            return answer(
                schemas.PassageOut(
                    passage_id=7,
                    article_id="a1",
                    ordinal=0,
                    text="Xi spoke.",
                    start=0,
                    end=9,
                    n_tokens=5,
                    title="T",
                    date=None,
                    source=None,
                    url=None,
                )
            )
        if route == ("GET", "/articles/a%2Fb%20c"):
            ref = schemas.PassageRef(passage_id=1, ordinal=0, start=0, end=5)
            return answer(
                schemas.ArticleOut(
                    id="a/b c",
                    title="T",
                    text="Body.",
                    date=None,
                    source=None,
                    url=None,
                    metadata={"lang": "en"},
                    passages=[ref],
                )
            )
        if route == ("POST", "/articles"):
            added = schemas.ArticlesIn.model_validate_json(content)
            return answer(
                schemas.IngestOut(
                    added=len(added.articles),
                    updated=0,
                    unchanged=0,
                    passages_added=1,
                    passages_removed=0,
                )
            )
        if route == ("GET", "/articles/a%2Fb/related?k=3"):
            related = schemas.RelatedOut(**RELATED)
            return answer(schemas.RelatedResponse(article_id="a/b", k=3, related=[related]))
        if route == ("DELETE", "/articles/a1"):
            return answer(schemas.DeletedOut(article_id="a1", passages_removed=3))
        return httpx2.Response(404, json={"detail": f"no route {route}"})

    @property
    def last_body(self) -> dict[str, Any]:
        return json.loads(self.requests[-1].content)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def client(recorder: Recorder):
    with RetrievalClient(
        "http://search.test",
        api_key="s3cret",
        http=httpx2.Client(transport=httpx2.MockTransport(recorder)),
    ) as opened:
        yield opened


def answering(status: int, **response: Any) -> RetrievalClient:
    transport = httpx2.MockTransport(lambda request: httpx2.Response(status, **response))
    return RetrievalClient("http://search.test", http=httpx2.Client(transport=transport))


# -- requests and answers ---------------------------------------------------------------


def test_search_sends_the_wire_body_and_returns_hits(client, recorder):
    hits = client.search(
        "telephone", 3, mode="hybrid", max_per_article=1, offset=2, highlight=True
    )
    assert hits == [EXPECTED_HIT]  # the best sentence's span comes back as Hit.highlight
    request = recorder.requests[-1]
    assert (request.method, str(request.url)) == ("POST", "http://search.test/search")
    assert recorder.last_body == {  # k and mode always; the others when not the default
        "query": "telephone",
        "k": 3,
        "mode": "hybrid",
        "max_per_article": 1,
        "offset": 2,
        "highlight": True,
    }


def test_options_are_sent_only_when_not_the_default(client, recorder):
    client.search(
        "x", min_score=0.25, recency_half_life_days=30, now="2024-01-01", sort="date"
    )  # the recorder reads the body with the service's schema: it must accept them
    body = recorder.last_body
    assert (body["min_score"], body["recency_half_life_days"]) == (0.25, 30)
    assert (body["now"], body["sort"]) == ("2024-01-01", "date")
    client.search_batch(["x", "y"], min_score=-0.5)
    assert recorder.last_body["min_score"] == -0.5 and "sort" not in recorder.last_body
    client.search("x")  # defaults: left out, so an older server still takes the body
    assert set(recorder.last_body) == {"query", "k", "mode"}
    client.search("x", collapse=False)
    assert recorder.last_body["collapse"] is False
    client.search_batch(["x"], collapse=True)  # the default of both ends: left out
    assert "collapse" not in recorder.last_body


def test_a_hit_from_a_server_that_predates_collapsing_has_no_copies():
    from service.client import parse_hit

    old = {"passage_id": 1, "article_id": "a", "title": "T", "date": None, "source": None,
           "url": None, "text": "x", "score": 0.5, "rank": 1, "start": 0, "end": 1}
    hit = parse_hit(old)
    assert (hit.duplicates, hit.duplicate_ids) == (0, ())
    hit = parse_hit({**old, "duplicates": 2, "duplicate_ids": ["b", "c"]})
    assert (hit.duplicates, hit.duplicate_ids) == (2, ("b", "c"))


def test_related_comes_back_as_records(client, recorder):
    assert client.related("a/b", 3) == [RelatedArticle(**RELATED)]
    assert recorder.requests[-1].url.raw_path == b"/articles/a%2Fb/related?k=3"


def test_filters_go_as_json_lists(client, recorder):
    client.search(
        "x",
        filters=Filters(
            article_ids=("a1",),
            sources=("wire", "afp"),
            date_from="2021-01-01",
            date_to="2021-12-31",
        ),
    )
    assert recorder.last_body["filters"] == {
        "article_ids": ["a1"],
        "sources": ["wire", "afp"],
        "date_from": "2021-01-01",
        "date_to": "2021-12-31",
    }
    client.search("x", filters=Filters())
    assert recorder.last_body["filters"] is None


def test_search_batch_returns_one_list_per_query(client, recorder):
    results = client.search_batch(["one", "two"], 5, mode="lexical")
    assert results == [[EXPECTED_HIT], [EXPECTED_HIT]]
    assert recorder.requests[-1].url.path == "/search/batch"
    assert recorder.last_body["queries"] == ["one", "two"]
    with pytest.raises(RetrievalClientError, match="not one string"):
        client.search_batch("one string")  # type: ignore[arg-type]


def test_api_key_goes_in_the_header(client, recorder):
    client.add_articles([Article("a1", "T", "Body.")])
    assert recorder.requests[-1].headers["X-API-Key"] == "s3cret"
    anonymous = RetrievalClient(
        "http://search.test", http=httpx2.Client(transport=httpx2.MockTransport(recorder))
    )
    with pytest.raises(RetrievalClientError):
        anonymous.health()  # the recorder has no /healthz: a 404 with its message
    assert "X-API-Key" not in recorder.requests[-1].headers


def test_passages_and_articles_come_back_as_records(client, recorder):
    assert client.passage(7) == Passage(7, "a1", 0, "Xi spoke.", 0, 9, 5)
    article = client.article("a/b c")  # an id is quoted as one path segment
    assert article == Article("a/b c", "T", "Body.", metadata={"lang": "en"})
    report = client.add_articles([Article("n1", "New", "Text.", date="2024-01-01")])
    assert report["added"] == 1
    assert recorder.last_body["articles"] == [
        {
            "id": "n1",
            "title": "New",
            "text": "Text.",
            "date": "2024-01-01",
            "source": None,
            "url": None,
            "metadata": {},
        }
    ]
    assert client.delete_article("a1") == 3


def test_the_async_client_does_the_same(recorder):
    async def main() -> tuple[list[Hit], list[list[Hit]], int, list[RelatedArticle]]:
        http = httpx2.AsyncClient(transport=httpx2.MockTransport(recorder))
        async with AsyncRetrievalClient("http://search.test", api_key="k", http=http) as client:
            one = await client.search("telephone", 2, mode="lexical")
            batch = await client.search_batch(["a", "b", "c"], 2)
            removed = await client.delete_article("a1")
            related = await client.related("a/b", 3)
        await http.aclose()
        return one, batch, removed, related

    one, batch, removed, related = asyncio.run(main())
    assert one == [EXPECTED_HIT] and batch == [[EXPECTED_HIT]] * 3 and removed == 3
    assert related == [RelatedArticle(**RELATED)]
    assert recorder.requests[0].headers["X-API-Key"] == "k"


# -- failures: one exception type, the server's message ----------------------------------


def test_an_error_answer_carries_the_servers_detail():
    with pytest.raises(RetrievalClientError) as caught:
        answering(404, json={"detail": "no article with id 'zz'"}).article("zz")
    assert caught.value.status_code == 404
    assert caught.value.detail == "no article with id 'zz'"
    assert isinstance(caught.value, RetrievalError)


def test_a_validation_error_list_becomes_one_readable_message():
    detail = [
        {
            "type": "less_than_equal",
            "loc": ["body", "k"],
            "msg": "Input should be less than or equal to 100",
            "input": 1000,
        },
        {
            "type": "date_from_datetime_parsing",
            "loc": ["body", "filters", "date_from"],
            "msg": "Input should be a valid date",
            "input": "x",
        },
    ]
    with pytest.raises(RetrievalClientError) as caught:
        answering(422, json={"detail": detail}).search("q", 1000)
    assert caught.value.status_code == 422
    assert caught.value.detail == (
        "k: Input should be less than or equal to 100; "
        "filters.date_from: Input should be a valid date"
    )


def test_an_answer_that_is_not_the_services_is_an_error_too():
    with pytest.raises(RetrievalClientError) as caught:
        answering(502, text="<html>Bad gateway</html>").search("q")
    assert caught.value.status_code == 502 and "Bad gateway" in caught.value.detail
    with pytest.raises(RetrievalClientError, match="not JSON"):
        answering(200, text="hello").search("q")
    with pytest.raises(RetrievalClientError, match="lacks score"):
        answering(200, json={"hits": [{k: v for k, v in HIT.items() if k != "score"}]}).search("q")


def test_a_timeout_is_an_error_without_status():
    def slow(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ReadTimeout("timed out", request=request)

    client = RetrievalClient(
        "http://search.test", timeout=0.5, http=httpx2.Client(transport=httpx2.MockTransport(slow))
    )
    with pytest.raises(RetrievalClientError, match="within 0.5 s") as caught:
        client.search("q")
    assert caught.value.status_code is None


def test_a_real_server_that_never_answers_times_out():
    with socket.create_server(
        ("127.0.0.1", 0)
    ) as silent:  # accepts into its backlog, never replies
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with (
            RetrievalClient(url, timeout=0.2) as client,
            pytest.raises(RetrievalClientError) as caught,
        ):
            client.search("q")
    assert caught.value.status_code is None and "within 0.2 s" in caught.value.detail


def test_a_refused_connection_says_where_it_tried():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]  # closed on leaving: nothing listens there any more
    with (
        RetrievalClient(f"http://127.0.0.1:{port}", timeout=2) as client,
        pytest.raises(RetrievalClientError, match=f"could not reach http://127.0.0.1:{port}"),
    ):
        client.health()


# -- a light install --------------------------------------------------------------------

HEAVY = ("torch", "faiss", "numpy", "fastapi", "sentence_transformers")


def test_the_client_imports_without_torch_faiss_numpy_or_fastapi():
    script = (
        "import sys\n"
        f"for name in {HEAVY!r}: sys.modules[name] = None  # any import of them now fails\n"
        "import service.client\n"
        "from retrieval.records import Hit\n"
        "print('imported')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "imported"


def test_every_way_in_defaults_to_the_engines_mode():
    # The client and the CLI spell the default out (importing the engine there would be
    # heavy or slow); this keeps the five places one decision.
    import inspect

    from retrieval.cli import main as cli
    from retrieval.search.options import DEFAULT_MODE
    from retrieval.search.retriever import Retriever

    assert DEFAULT_MODE == "hybrid"
    assert inspect.signature(Retriever.search).parameters["mode"].default == DEFAULT_MODE
    assert schemas.SearchRequest.model_fields["mode"].default == DEFAULT_MODE
    assert inspect.signature(RetrievalClient.search).parameters["mode"].default == DEFAULT_MODE
    assert cli.build_parser().parse_args(["search", "q"]).mode == DEFAULT_MODE
    page = (Path(__file__).parents[1] / "service/static/index.html").read_text("utf-8")
    assert f'<option value="{DEFAULT_MODE}" selected>' in page


def test_the_client_extra_pulls_in_no_engine():
    """Base dependencies + the `client` extra, followed through installed metadata."""
    wanted = {"retrieval": {"client"}}
    seen: set[str] = set()
    while wanted:
        name, extras = wanted.popitem()
        seen.add(name)
        for line in importlib.metadata.requires(name) or []:
            req = Requirement(line)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in extras or {""}):
                continue
            dep = canonical(req.name)
            if dep != "retrieval" and dep not in seen:
                wanted[dep] = set(req.extras)
    assert "httpx2" in seen
    heavy = seen & {"torch", "faiss-cpu", "faiss", "sentence-transformers", "numpy", "fastapi"}
    assert not heavy, f"the client install pulls in {sorted(heavy)}"


def canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


# -- parity with the in-process Retriever ------------------------------------------------

PARITY_QUERIES = [PHONE_CALL, "COVID-19 cooperation", "Ecuador president Lasso"]
PARITY_CASES = [
    ("dense", None, None),
    ("lexical", None, None),
    ("hybrid", None, None),
    ("dense", Filters(sources=("wire",)), None),
    ("hybrid", Filters(date_from="2024-01-01", date_to="2024-01-31"), 1),
    ("lexical", Filters(article_ids=("rain", "flood")), None),
]
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
        "flood",
        "River floods town",
        "The river burst its banks and flooded the town centre.\n\n"
        "Residents were evacuated as water levels kept rising.",
        date="2024-01-12",
        source="wire",
    ),
    Article(
        "rates",
        "Central bank holds rates",
        "The central bank kept interest rates unchanged.",
        date="2024-02-01",
        source="finance",
    ),
]


def search_all(
    searcher: Any, mode: str, filters: Filters | None, cap: int | None, collapse: bool = False
) -> list[list[Hit]]:
    """Scores any `retrieval.search.retriever.Searcher`: the evaluation code's view of both.

    `collapse` is given to both, off by default here: the parity cases compare passages.
    """
    return searcher.search_batch(
        PARITY_QUERIES, 5, mode=mode, filters=filters, max_per_article=cap, collapse=collapse
    )


@pytest.fixture(scope="module")
def parity_collection(tmp_path_factory, embedder, seed_articles):
    """The seed article and a few short news items, indexed once for the module."""
    from retrieval.collection.collection import Collection

    path = tmp_path_factory.mktemp("parity") / "collection"
    with Collection.open(path, embedder) as collection:
        collection.add_articles([*seed_articles, *NEWS])
        yield collection


def serve(collection: Any, **settings: Any) -> Any:
    """A TestClient over the real app on the collection's directory (enter it to start)."""
    from starlette.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    return TestClient(create_app(Settings(collection=collection.path, **settings)))


@pytest.fixture(scope="module")
def served(parity_collection):
    """RetrievalClient over the real app, in process: TestClient is an httpx2.Client."""
    with serve(parity_collection) as http, RetrievalClient(http=http) as client:
        yield client


@pytest.mark.parametrize(("mode", "filters", "cap"), PARITY_CASES)
def test_client_and_retriever_return_the_same_hits(parity_collection, served, mode, filters, cap):
    from retrieval.search.retriever import Retriever

    local = search_all(Retriever(parity_collection), mode, filters, cap)
    remote = search_all(served, mode, filters, cap)
    assert any(local), "the parity queries should find something"
    assert [len(hits) for hits in remote] == [len(hits) for hits in local]
    for mine, theirs in zip(local, remote, strict=True):
        assert [(h.passage_id, h.rank) for h in theirs] == [(h.passage_id, h.rank) for h in mine]
        assert [h.score for h in theirs] == pytest.approx([h.score for h in mine], abs=1e-5)
        assert [without_score(h) for h in theirs] == [without_score(h) for h in mine]
    one = served.search(
        PARITY_QUERIES[0], 5, mode=mode, filters=filters, max_per_article=cap, collapse=False
    )
    assert [h.passage_id for h in one] == [h.passage_id for h in local[0]]


RANKINGS = [
    {"min_score": 0.2},
    {"min_score": 0.0, "sort": "date"},
    {"recency_half_life_days": 10, "now": "2024-02-01"},
    {"recency_half_life_days": 10, "now": "2024-02-01", "min_score": 0.1, "mode": "hybrid"},
    {"min_score": 0.5, "mode": "hybrid", "max_per_article": 1},
]


@pytest.mark.parametrize("options", RANKINGS)
def test_client_and_retriever_agree_on_min_score_freshness_and_date_order(
    parity_collection, served, options
):
    from retrieval.search.retriever import Retriever

    queries = ["storm floods", *PARITY_QUERIES]
    local = Retriever(parity_collection).search_batch(queries, 5, **options)
    remote = served.search_batch(queries, 5, **options)  # both collapse by default
    assert any(local)
    for mine, theirs in zip(local, remote, strict=True):
        assert [(h.passage_id, h.rank) for h in theirs] == [(h.passage_id, h.rank) for h in mine]
        assert [h.score for h in theirs] == pytest.approx([h.score for h in mine], abs=1e-5)


def test_client_and_retriever_agree_on_related(parity_collection, served):
    from retrieval.search.retriever import Retriever

    local = Retriever(parity_collection).related("rain", 3)
    remote = served.related("rain", 3)
    assert [r.article_id for r in remote] == [r.article_id for r in local]
    assert remote[0].article_id == "flood"
    assert [r.score for r in remote] == pytest.approx([r.score for r in local], abs=1e-5)
    with pytest.raises(RetrievalClientError) as caught:
        served.related("no-such-article")
    assert caught.value.status_code == 404


def without_score(hit: Hit) -> Hit:
    return dataclasses.replace(hit, score=0.0)


def test_the_real_services_errors_arrive_with_its_message(served, parity_collection):
    with pytest.raises(RetrievalClientError) as caught:
        served.search("rain", 0)
    assert caught.value.status_code == 422 and caught.value.detail.startswith("k: ")
    with pytest.raises(RetrievalClientError) as caught:
        served.article("no-such-article")
    assert caught.value.status_code == 404 and "no-such-article" in caught.value.detail
    passage = served.passage(served.search("interest rates", 1)[0].passage_id)
    assert passage == parity_collection.passage(passage.id)
    assert served.article("rates") == parity_collection.article("rates")


def test_writes_need_the_key_the_service_was_given(parity_collection):
    extra = Article("extra", "Harbour reopens", "The harbour reopened after the storm.")
    with serve(parity_collection, api_key="s3cret") as http:
        with pytest.raises(RetrievalClientError) as caught:
            RetrievalClient(http=http).add_articles([extra])
        assert caught.value.status_code == 401
        client = RetrievalClient(http=http, api_key="s3cret")
        assert client.add_articles([extra])["added"] == 1
        assert client.search("harbour reopened", 1, mode="lexical")[0].article_id == "extra"
        assert client.delete_article("extra") >= 1

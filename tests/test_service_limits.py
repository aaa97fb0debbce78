"""The service's bounds: no request may stall the others or hang.

Body size (413), article metadata size (422), the search queue (503 when full), each
search's deadline (503, its work dropped), highlighting off the search thread and within
a per-request budget (422), writes that queue behind another write (503), and the
warning when `retrieval serve` listens beyond loopback without an API key.

Ordering and status checks only: where a test needs the search or highlight thread busy,
it holds it on a threading.Event rather than racing a clock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from service_fixtures import build_collection

from retrieval.records import Hit
from retrieval.search.options import SearchOptions
from service.app import create_app
from service.batching import Batcher, QueueFullError, SearchTimeoutError
from service.schemas import MAX_METADATA_BYTES
from service.settings import Settings

BODY_LIMIT = 100_000
HIGHLIGHT_BUDGET = 30
WAIT_S = 30  # a bound on waiting for a test's own threads, never an assertion


@pytest.fixture(scope="module")
def limits_collection(tmp_path_factory, embedder, seed_articles):
    return build_collection(tmp_path_factory.mktemp("limits") / "c", embedder, seed_articles)


@pytest.fixture(scope="module")
def client(limits_collection):
    settings = Settings(
        collection=limits_collection, max_body_bytes=BODY_LIMIT,
        max_highlight_hits=HIGHLIGHT_BUDGET, lock_timeout_s=0.2,
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def wait_until(condition):
    """Polls `condition` until true; fails (rather than hangs) if it never becomes true."""
    for _ in range(WAIT_S * 100):
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError("the condition never held")


class Gate:
    """Holds a thread at `pass_through()` until `open()`; says when one arrived."""

    def __init__(self):
        self.arrived, self._open = threading.Event(), threading.Event()

    def pass_through(self):
        self.arrived.set()
        assert self._open.wait(WAIT_S), "the test never opened the gate"

    def open(self):
        self._open.set()


class GatedRetriever:
    """The real retriever, with its query embedding or its highlighting held at a gate."""

    def __init__(self, retriever, *, embed=None, highlight=None):
        self._retriever, self._embed, self._highlight = retriever, embed, highlight

    def embed_queries(self, texts):
        if self._embed:
            self._embed.pass_through()
        return self._retriever.embed_queries(texts)

    def highlight(self, query, hits, query_vector=None):
        if self._highlight:
            self._highlight.pass_through()
        return self._retriever.highlight(query, hits, query_vector)

    def __getattr__(self, name):
        return getattr(self._retriever, name)


def in_thread(call):
    """Runs `call` in a thread; returns the thread and a list that will hold its result."""
    result = []
    thread = threading.Thread(target=lambda: result.append(call()))
    thread.start()
    return thread, result


def gate_the(client, monkeypatch, **gates):
    batcher = client.app.state.service.batcher
    monkeypatch.setattr(batcher, "retriever", GatedRetriever(batcher.retriever, **gates))
    return batcher


# -- settings ------------------------------------------------------------------------------


def test_the_defaults_bound_every_request(monkeypatch):
    for name in ("MAX_BODY_BYTES", "MAX_QUEUED", "SEARCH_TIMEOUT_S", "LOCK_TIMEOUT_S",
                 "MAX_HIGHLIGHT_HITS"):
        monkeypatch.delenv(f"RETRIEVAL_{name}", raising=False)
    settings = Settings()
    assert settings.max_body_bytes == 16 * 1024 * 1024 and settings.max_queued == 256
    assert settings.search_timeout_s == 10 and settings.lock_timeout_s == 1.0
    assert settings.max_highlight_hits == 100
    monkeypatch.setenv("RETRIEVAL_MAX_QUEUED", "8")
    assert Settings().max_queued == 8


# -- request bodies ------------------------------------------------------------------------


def test_a_declared_body_over_the_limit_is_413_before_it_is_read(client):
    body = json.dumps({"query": "rain", "filters": {"sources": ["x" * 100] * 1500}})
    response = client.post("/search", content=body,
                           headers={"content-type": "application/json"})
    assert response.status_code == 413, response.text
    detail = response.json()["detail"]
    assert str(BODY_LIMIT) in detail and "RETRIEVAL_MAX_BODY_BYTES" in detail


def test_a_chunked_body_is_counted_and_refused_at_the_limit(client):
    def chunks():  # no Content-Length: httpx sends a generator chunked
        for _ in range(10):
            yield b" " * 20_000

    response = client.post("/articles", content=chunks(),
                           headers={"content-type": "application/json"})
    assert response.status_code == 413, response.text
    assert str(BODY_LIMIT) in response.json()["detail"]


def test_a_streamed_body_is_refused_at_the_chunk_that_crosses_the_limit(limits_collection):
    # Raw ASGI: the TestClient reads a generator body whole before sending it, while a
    # server hands the app one chunk per receive() as it arrives.
    app = create_app(Settings(collection=limits_collection, max_body_bytes=BODY_LIMIT))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/search", "raw_path": b"/search",
             "query_string": b"", "root_path": "", "server": ("test", 80),
             "headers": [(b"content-type", b"application/json")]}
    pulled, sent = [], []

    async def receive():
        pulled.append(20_000)
        return {"type": "http.request", "body": b" " * 20_000, "more_body": len(pulled) < 10}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert str(BODY_LIMIT).encode() in b"".join(m.get("body", b"") for m in sent[1:])
    assert len(pulled) == BODY_LIMIT // 20_000 + 1  # the rest was never read


def test_a_chunked_body_under_the_limit_is_answered(client):
    def chunks():
        yield b'{"query": '
        yield b'"heavy rain"}'

    response = client.post("/search", content=chunks(),
                           headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json()["hits"]


def test_article_metadata_is_bounded_naming_the_field(client):
    metadata = {"blob": "x" * MAX_METADATA_BYTES}
    article = {"id": "big-meta", "text": "Some text.", "metadata": metadata}
    response = client.post("/articles", json={"articles": [article]})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert "articles.0.metadata" in detail and str(MAX_METADATA_BYTES) in detail
    assert client.get("/articles/big-meta").status_code == 404


# -- the search queue and deadlines (the batcher, with a fake retriever) -------------------


class FakeRetriever:
    """Embeds after passing `gate` (when given); records every batch it embeds."""

    def __init__(self, gate=None):
        self.gate, self.embedded = gate, []

    def embed_queries(self, texts):
        if self.gate:
            self.gate.pass_through()
        self.embedded.append(list(texts))
        return np.ones((len(texts), 4), dtype=np.float32)

    def search_embedded(self, queries, vectors, options):
        return [[Hit(1, q, "", None, None, None, q, 1.0, 1, 0, 1)] for q in queries]


async def started(batcher, queries, gate):
    """A search that the worker has taken and holds at the gate."""
    task = asyncio.ensure_future(batcher.search(queries, SearchOptions()))
    await asyncio.to_thread(gate.arrived.wait, WAIT_S)
    return task


def test_a_full_queue_refuses_new_searches_at_once():
    gate = Gate()
    retriever = FakeRetriever(gate)
    batcher = Batcher(retriever, window_s=0, max_batch=1, max_queued=3)

    async def main():
        batcher.start()
        try:
            running = await started(batcher, ["running"], gate)
            # An empty queue takes any search, even one larger than max_queued.
            queued = asyncio.ensure_future(batcher.search(["a", "b", "c", "d"], SearchOptions()))
            await asyncio.sleep(0)
            assert batcher.waiting == 4
            with pytest.raises(QueueFullError, match="overloaded"):
                await batcher.search(["refused"], SearchOptions())
            gate.open()
            return await asyncio.gather(running, queued)
        finally:
            await batcher.stop()

    running, queued = asyncio.run(main())
    assert [r[0].text for r in running] == ["running"] and len(queued) == 4
    assert ["refused"] not in retriever.embedded and batcher.waiting == 0


def test_a_search_past_its_deadline_times_out_and_is_never_run():
    gate = Gate()
    retriever = FakeRetriever(gate)
    batcher = Batcher(retriever, window_s=0, max_batch=1, timeout_s=0.2)

    async def main():
        batcher.start()
        try:
            running = asyncio.ensure_future(
                asyncio.gather(batcher.search(["running"], SearchOptions()),
                               return_exceptions=True))
            await asyncio.to_thread(gate.arrived.wait, WAIT_S)
            with pytest.raises(SearchTimeoutError, match="overloaded"):
                await batcher.search(["abandoned"], SearchOptions())
            gate.open()
            await running
            batcher.timeout_s = WAIT_S
            # Answered after the abandoned job was collected: it was dropped, not embedded.
            return await batcher.search(["later"], SearchOptions())
        finally:
            await batcher.stop()

    later = asyncio.run(main())
    assert later[0][0].text == "later"
    assert retriever.embedded == [["running"], ["later"]]


# -- the same over HTTP: 503 with Retry-After ----------------------------------------------


def test_a_full_queue_is_503_retry_after(client, monkeypatch):
    gate = Gate()
    batcher = gate_the(client, monkeypatch, embed=gate)
    monkeypatch.setattr(batcher, "max_queued", 2)
    first, first_result = in_thread(lambda: client.post("/search", json={"query": "rain"}))
    try:
        assert gate.arrived.wait(WAIT_S)
        second, second_result = in_thread(
            lambda: client.post("/search/batch", json={"queries": ["a", "b", "c"]}))
        wait_until(lambda: batcher.waiting == 3)
        response = client.post("/search", json={"query": "refused"})
    finally:
        gate.open()
        first.join(WAIT_S)
    second.join(WAIT_S)
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert "overloaded" in response.json()["detail"]
    assert first_result[0].status_code == 200 and second_result[0].status_code == 200


def test_a_search_not_answered_in_time_is_503_retry_after(client, monkeypatch):
    gate = Gate()
    batcher = gate_the(client, monkeypatch, embed=gate)
    monkeypatch.setattr(batcher, "timeout_s", 0.3)
    first, first_result = in_thread(lambda: client.post("/search", json={"query": "rain"}))
    try:
        assert gate.arrived.wait(WAIT_S)
        response = client.post("/search", json={"query": "waits"})
    finally:
        gate.open()
        first.join(WAIT_S)
    for answer in (response, first_result[0]):  # the held one missed its deadline too
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
        assert "overloaded" in answer.json()["detail"]


# -- highlighting --------------------------------------------------------------------------


def test_a_plain_search_is_answered_while_a_batch_is_highlighted(client, monkeypatch):
    gate = Gate()
    gate_the(client, monkeypatch, highlight=gate)
    body = {"queries": ["heavy rain", "interest rates"], "k": 3, "highlight": True}
    batch, batch_result = in_thread(lambda: client.post("/search/batch", json=body))
    try:
        assert gate.arrived.wait(WAIT_S)  # the batch is being highlighted, and held there
        plain = client.post("/search", json={"query": "cup final", "k": 3})
        assert plain.status_code == 200 and not batch_result  # answered first
    finally:
        gate.open()
        batch.join(WAIT_S)
    assert batch_result[0].status_code == 200, batch_result[0].text
    results = batch_result[0].json()["results"]
    assert all(hit["highlight"] for result in results for hit in result["hits"])
    assert all(hit["highlight"] is None for hit in plain.json()["hits"])


@pytest.mark.parametrize(("queries", "k", "highlight", "status"), [
    (4, 10, True, 422),   # 4 x 10 = 40 hits to mark > 30
    (31, 1, True, 422),   # 31 x 1
    (4, 100, False, 200),  # no highlighting: no budget
    (3, 100, True, 200),  # 3 x min(100, HIGHLIGHT_MAX_HITS=10) = 30
])
def test_highlighting_has_a_per_request_budget(client, queries, k, highlight, status):
    body = {"queries": [f"rain {i}" for i in range(queries)], "k": k, "highlight": highlight}
    response = client.post("/search/batch", json=body)
    assert response.status_code == status, response.text
    if status == 422:
        detail = response.json()["detail"]
        assert str(HIGHLIGHT_BUDGET) in detail and "highlight=false" in detail


# -- writes --------------------------------------------------------------------------------


def test_a_write_behind_another_write_is_503_after_lock_timeout(client):
    write_lock = client.app.state.service.write_lock
    client.portal.call(write_lock.acquire)  # another write of this process holds it
    try:
        response = client.post("/articles", json={"articles": [
            {"id": "queued", "text": "A write that waits behind another."}]})
    finally:
        client.portal.call(write_lock.release)
    assert response.status_code == 503 and response.headers["retry-after"]
    assert "another write" in response.json()["detail"]
    assert client.get("/articles/queued").status_code == 404
    assert client.delete("/articles/nothing-here").status_code == 404  # the lock is free again


# -- serving beyond loopback ---------------------------------------------------------------


@pytest.mark.parametrize(("host", "api_key", "warned"), [
    ("0.0.0.0", None, True),
    ("192.168.1.20", None, True),
    ("::", None, True),
    ("news.example.org", None, True),
    ("0.0.0.0", "secret", False),
    ("127.0.0.1", None, False),
    ("127.0.0.2", None, False),
    ("::1", None, False),
    ("localhost", None, False),
])
def test_serving_writes_open_beyond_loopback_warns(
    limits_collection, monkeypatch, capsys, caplog, host, api_key, warned
):
    from service import cli

    monkeypatch.delenv("RETRIEVAL_API_KEY", raising=False)
    monkeypatch.setattr(cli, "serve", lambda settings, log_level: None)
    argv = ["--collection", str(limits_collection), "--host", host]
    with caplog.at_level(logging.WARNING, logger="service.cli"):
        assert cli.main([*argv, *(["--api-key", api_key] if api_key else [])]) == 0
    err = capsys.readouterr().err
    logged = [r.getMessage() for r in caplog.records if r.name == "service.cli"]
    if warned:
        assert "anyone who can reach" in err and "RETRIEVAL_API_KEY" in err
        assert logged and "add and delete articles" in logged[0]
    else:
        assert "anyone who can reach" not in err and not logged

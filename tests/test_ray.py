"""The sharded collection on a simulated Ray cluster: Serve parity, writes, faults, Data.

One `ray.cluster_utils.Cluster` for the module (starting Ray costs seconds on two
cores): a head and two worker nodes, each worker holding one shard's custom resource,
so each shard's replica runs on "its" node. The shards were split from one collection;
the Ray deployment must answer as that collection does.
"""

from __future__ import annotations

import gc
import json
import os
import socket
import threading
import time

import pytest
from sharded_fixtures import CASES, QUERIES, bbc_sample, same_hits
from test_client import NEWS, PARITY_CASES, search_all, without_score

ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install '.[ray]'")

from ray import serve  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from retrieval.cluster.layout import read_layout, split  # noqa: E402
from retrieval.collection.collection import Collection  # noqa: E402
from retrieval.records import Article, Filters  # noqa: E402
from retrieval.search.retriever import Retriever  # noqa: E402
from service.client import RetrievalClient, RetrievalClientError  # noqa: E402
from service.settings import Settings  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]
API_KEY = "s3cret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def single(tmp_path_factory, embedder, seed_articles):
    path = tmp_path_factory.mktemp("single") / "collection"
    with Collection.open(path, embedder, background=False) as collection:
        collection.add_articles([*bbc_sample(), *seed_articles, *NEWS])
        yield collection


@pytest.fixture(scope="module")
def cluster():
    # No usage report (no internet) and no memory monitor killing workers on a busy box.
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_memory_monitor_refresh_ms"] = "0"  # noqa: SIM112 (Ray's own spelling)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {"head": 1}, "include_dashboard": False,
        "object_store_memory": 100 * 2**20,
    })
    workers = [cluster.add_node(num_cpus=1, resources={f"shard{i}": 1},
                                object_store_memory=80 * 2**20) for i in range(2)]
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.workers = workers
    yield cluster
    ray.shutdown()  # the cluster's end ends Serve too (serve.shutdown costs 10 s more)
    cluster.shutdown()
    # Ray's client leaves sockets to the collector; collect them here, inside this
    # module (whose marks ignore the ResourceWarning), not at the end of the session.
    gc.collect()


@pytest.fixture(scope="module")
def deployed(cluster, single, tmp_path_factory):
    from service import ray_serve

    shards = tmp_path_factory.mktemp("ray") / "shards"
    split(single.path, shards, 2)
    port = free_port()
    settings = Settings(collection=shards, port=port, api_key=API_KEY, warm_up="none")
    ray_serve.run(cluster.address, shards, settings, shard_cpus=0.25, ingress_cpus=0.5,
                  blocking=False)
    with RetrievalClient(f"http://127.0.0.1:{port}", api_key=API_KEY, timeout=30) as client:
        yield client, read_layout(shards)


def test_shards_run_on_their_nodes(deployed, cluster):
    from service.ray_serve import APP_NAME

    nodes = {node["NodeID"]: node["Resources"] for node in ray.nodes() if node["Alive"]}
    for index in range(2):
        handle = serve.get_deployment_handle(f"shard{index}", APP_NAME)
        assert f"shard{index}" in nodes[handle.node_id.remote().result(timeout_s=30)]


@pytest.mark.parametrize(("mode", "filters", "cap"), CASES)
def test_ray_answers_as_one_collection(deployed, single, mode, filters, cap):
    client, _ = deployed
    expected = Retriever(single).search_batch(QUERIES, 8, mode=mode, filters=filters,
                                              max_per_article=cap, collapse=False)
    got = client.search_batch(QUERIES, 8, mode=mode, filters=filters, max_per_article=cap,
                              collapse=False)
    assert any(expected)
    for mine, theirs in zip(expected, got, strict=True):
        same_hits(mine, theirs)


def test_a_search_is_one_round_to_the_shards(deployed):
    """Counted at the ingress's router: one call to each shard per search, over Ray."""
    from service.ray_serve import APP_NAME

    client, _ = deployed
    ingress = serve.get_deployment_handle("ingress", APP_NAME)
    client.search(QUERIES[0], 3, mode="lexical")  # the router's BM25 statistics, warm
    before = ingress.traffic.remote().result(timeout_s=30)
    for mode in ("dense", "lexical", "hybrid"):
        for query in QUERIES:
            client.search(query, 5, mode=mode)
    after = ingress.traffic.remote().result(timeout_s=30)
    searches = 3 * len(QUERIES)
    assert after["searches"] - before["searches"] == searches
    assert after["rounds"] - before["rounds"] == searches
    assert after["calls"] - before["calls"] == 2 * searches


@pytest.mark.parametrize(("mode", "filters", "cap"), PARITY_CASES)
def test_the_clients_parity_holds_against_ray(deployed, single, mode, filters, cap):
    client, _ = deployed
    local = search_all(Retriever(single), mode, filters, cap)
    remote = search_all(client, mode, filters, cap)
    assert any(local)
    for mine, theirs in zip(local, remote, strict=True):
        assert [(h.passage_id, h.rank) for h in theirs] == [(h.passage_id, h.rank) for h in mine]
        assert [h.score for h in theirs] == pytest.approx([h.score for h in mine], abs=1e-5)
        assert [without_score(h) for h in theirs] == [without_score(h) for h in mine]


def test_every_endpoint_answers(deployed, single):
    client, _ = deployed
    [hit] = client.search(QUERIES[0], 1, mode="dense", highlight=True)
    assert hit.highlight is not None
    assert client.passage(hit.passage_id) == single.passage(hit.passage_id)
    assert client.article("rates") == single.article("rates")
    assert [r.article_id for r in client.related("rain", 2)] == [
        r.article_id for r in Retriever(single).related("rain", 2)
    ]
    stats = client.stats()
    assert stats["passages"] == single.stats()["passages"]
    with pytest.raises(RetrievalClientError) as caught:
        client.article("no-such-article")
    assert caught.value.status_code == 404


def test_writes_land_in_their_shard_and_are_found(deployed):
    client, layout = deployed
    article = Article("harbour-ray", "Harbour reopens", "The harbour reopened after the "
                      "storm.\n\nFishing boats went out again on Tuesday morning.")
    with pytest.raises(RetrievalClientError) as caught:
        RetrievalClient(client.base_url).add_articles([article])
    assert caught.value.status_code == 401
    assert client.add_articles([article])["added"] == 1
    index = layout.shard_of(article.id)
    for shard in range(layout.n):
        with Collection.open(layout.shard_dir(shard), create=False, background=False) as c:
            assert (c.store.article(article.id) is not None) == (shard == index)
    assert client.search("harbour reopened storm", 1, mode="dense")[0].article_id == article.id
    assert client.delete_article(article.id) >= 1
    assert all(h.article_id != article.id
               for h in client.search("harbour reopened storm", 5, mode="dense"))


def test_a_lost_shard_node_answers_503_without_hanging_then_recovers(deployed, cluster):
    client, _ = deployed
    statuses: list[tuple[int, float]] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                client.search(QUERIES[1], 3, mode="dense")
                statuses.append((200, time.monotonic() - started))
            except RetrievalClientError as error:
                statuses.append((error.status_code or 0, time.monotonic() - started))
                assert error.status_code != 503 or "shard 1" in error.detail

    loader = threading.Thread(target=load)
    loader.start()
    try:
        time.sleep(1)
        cluster.remove_node(cluster.workers[1])  # shard 1's only node
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(s == 503 for s, _ in statuses):
            time.sleep(0.5)
    finally:
        stop.set()
        loader.join()
    assert {s for s, _ in statuses} <= {200, 503}, statuses
    assert any(s == 503 for s, _ in statuses), "searches should fail while shard 1 is down"
    assert max(took for _, took in statuses) < 12, "a request waited past the deadline"
    with pytest.raises(RetrievalClientError) as caught:
        client.search(QUERIES[1], 3, mode="dense")
    assert caught.value.status_code == 503 and "shard 1" in caught.value.detail
    # A new node with shard 1's resource (its disk is this machine's): Serve restarts it.
    cluster.workers[1] = cluster.add_node(num_cpus=1, resources={"shard1": 1},
                                          object_store_memory=80 * 2**20)
    deadline = time.monotonic() + 90
    while True:
        try:
            assert client.search(QUERIES[1], 3, mode="dense")
            break
        except RetrievalClientError as error:
            assert error.status_code == 503
            assert time.monotonic() < deadline, "shard 1 did not come back"
            time.sleep(1)


# -- Ray Data indexing ---------------------------------------------------------------------


def test_ray_data_indexes_into_shards_as_one_collection_would(cluster, single, tmp_path):
    import subprocess
    import sys

    from retrieval.cluster.layout import create_shards
    from retrieval.cluster.ray_index import index_on_ray
    from retrieval.cluster.router import open_local

    shards = tmp_path / "shards"
    create_shards(shards, 2, single.manifest)
    corpus = tmp_path / "corpus.jsonl"
    articles = bbc_sample()
    corpus.write_text("".join(json.dumps({"_id": a.id, "title": a.title, "text": a.text,
                                          "date": a.date, "source": a.source}) + "\n"
                              for a in articles) + "{not json\n")
    # A driver killed mid-run: every shard stays at a committed generation...
    command = [sys.executable, "-m", "retrieval", "index", str(corpus), "--shards",
               str(shards), "--ray", cluster.address, "--batch-size", "4", "--quiet",
               "--actor-cpus", "0.5"]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Waits for the first commit, however slow a shared machine makes it: killed before
    # one, the run would prove nothing (a loaded CI machine once took over 90 s).
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and driver.poll() is None and not committed(shards):
        time.sleep(0.2)
    killed_mid_run = driver.poll() is None
    driver.kill()
    _, stderr = driver.communicate()
    assert killed_mid_run, stderr.decode()
    # Bad input is reported as `retrieval index` reports it, by file and line, and skipped.
    assert f"error: {corpus}:{len(articles) + 1}: " in stderr.decode()
    # ...and running it again finishes the job, without duplicates.
    report = index_on_ray(cluster.address, str(shards), articles, batch_size=16,
                          actor_cpus=0.5)
    assert report.added + report.unchanged == len(articles) and report.updated == 0
    assert 0 < report.unchanged < len(articles), "the kill should have come mid-run"
    again = index_on_ray(cluster.address, str(shards), articles, actor_cpus=0.5)
    assert (again.added, again.unchanged) == (0, len(articles))
    with open_local(shards, background=False) as sharded:
        sharded._embedder = single.embedder  # loaded once for the module
        assert sharded.stats()["passages"] == sum(
            len(single.passages_of(a.id)) for a in articles
        )
        for index, shard in enumerate(sharded.shards):
            info = shard.server.collection.info()
            assert info.in_agreement
            assert all(sharded.layout.shard_of(a) == index for a in shard_articles(shard))
        for query in QUERIES:
            expected = Retriever(single).search(query, 5, mode="dense",
                                                filters=Filters(article_ids=ids(articles)))
            got = Retriever(sharded).search(query, 5, mode="dense")
            assert [(h.article_id, h.start) for h in got] == [
                (h.article_id, h.start) for h in expected
            ]
            assert [h.score for h in got] == pytest.approx([h.score for h in expected],
                                                           abs=1e-5)


def test_the_index_command_refuses_bad_input_with_strict(cluster, single, tmp_path):
    from retrieval.cli.main import main
    from retrieval.cluster.layout import create_shards

    shards = tmp_path / "shards"
    create_shards(shards, 2, single.manifest)
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text('{"_id": "ok", "title": "Fine", "text": "A line that loads."}\n{oops\n')
    assert main(["index", str(corpus), "--shards", str(shards), "--ray", cluster.address,
                 "--strict"]) == 1
    with Collection.open(shards / "shard-000", create=False, background=False) as shard:
        assert shard.stats()["articles"] == 0


def committed(shards) -> bool:
    """Some shard has committed an embedded batch (its generation passed the id reserve)."""
    layout = read_layout(shards)
    for index in range(layout.n):
        with Collection.open(layout.shard_dir(index), create=False, background=False) as c:
            if c.generation > 1:
                return True
    return False


def shard_articles(shard) -> set[str]:
    store = shard.server.collection.store
    return set(store.article_of([int(i) for i in store.passage_ids()]).values())


def ids(articles) -> tuple[str, ...]:
    return tuple(a.id for a in articles)

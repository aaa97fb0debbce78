"""Live collections: real processes reading and writing one collection side by side.

A service answers searches from several threads while a `retrieval index` process
commits many small batches and another process deletes: no answer may hold a passage
twice or one whose deletion had finished before the search was sent, articles are
found by the first search after their write returned, and at the end store and index
agree id for id. Then the interleaving that once duplicated hits is run on purpose.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import httpx2
import numpy as np
import pytest
from service_fixtures import NEWS, build_collection

from retrieval.collection import checkpoint
from retrieval.collection.collection import Collection
from retrieval.collection.index import FaissIndex
from retrieval.collection.index_policy import IndexPolicy
from retrieval.collection.live_index import LiveIndex
from retrieval.collection.store import Store
from service.bench.loadtest import running_server

WRITES = 4  # `retrieval index` runs, each committing 3 one-article batches
QUERIES = ["glacier retreat", "interest rates", "floods after rain", "cup final", "volcano"]


def story(number: int) -> dict[str, str]:
    """An article with a word of its own ("zq<number>"), so a search can find exactly it."""
    return {
        "_id": f"live-{number}",
        "title": f"Report zq{number} on the glacier",
        "text": f"Glaciers in the northern range retreated again, report zq{number} says.\n\n"
        f"Scientists measured the ice loss for the {number}th time this year.",
    }


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", *args], env=env, capture_output=True, text=True, timeout=300
    )


DELETE = """
import sys
from retrieval.collection.collection import Collection
with Collection.open(sys.argv[1], create=False, background=False) as collection:
    for article_id in sys.argv[2:]:
        collection.delete_article(article_id)
"""


class Searcher(threading.Thread):
    """Searches until stopped; records every answer with the time its request was sent."""

    def __init__(self, url: str, mode: str) -> None:
        super().__init__(daemon=True)
        self.url, self.mode = url, mode
        self.answers: list[tuple[float, list[dict]]] = []
        self.failures: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx2.Client(base_url=self.url, timeout=60) as client:
            for i in range(100_000):  # bounded; stopped long before
                if self.stop.is_set():
                    return
                sent = time.monotonic()
                body = {"query": QUERIES[i % len(QUERIES)], "k": 20, "mode": self.mode}
                response = client.post("/search", json=body)
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code} {response.text[:200]}")
                    continue
                self.answers.append((sent, response.json()["hits"]))


@pytest.mark.slow
def test_a_service_searches_while_other_processes_write_and_delete(
    tmp_path, embedder, seed_articles
):
    path = build_collection(tmp_path / "c", embedder, seed_articles)
    deleted_at: dict[str, float] = {}
    with running_server(path, batch_window_ms=2, max_batch=32) as url:
        searchers = [Searcher(url, mode) for mode in ("dense", "hybrid", "lexical")]
        for searcher in searchers:
            searcher.start()
        fresh_misses = []
        try:
            for write in range(WRITES):
                corpus = tmp_path / f"batch-{write}.jsonl"
                numbers = range(3 * write, 3 * write + 3)
                corpus.write_text("".join(json.dumps(story(n)) + "\n" for n in numbers))
                indexed = run("retrieval", "index", str(corpus), "--collection", str(path),
                              "--batch-size", "1", "--quiet")
                assert indexed.returncode == 0, indexed.stderr
                fresh_misses += [n for n in numbers if not found(url, n)]
                if write >= 2 and write % 2:  # delete two articles written two rounds ago
                    gone = [f"live-{n}" for n in range(3 * write - 6, 3 * write - 4)]
                    deleted = subprocess.run(
                        [sys.executable, "-c", DELETE, str(path), *gone], capture_output=True,
                        text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                    )
                    assert deleted.returncode == 0, deleted.stderr
                    deleted_at.update(dict.fromkeys(gone, time.monotonic()))
        finally:
            for searcher in searchers:
                searcher.stop.set()
            for searcher in searchers:
                searcher.join(timeout=60)
        stats = httpx2.get(f"{url}/stats", timeout=30).json()

    assert fresh_misses == [], "an article was not found by the first search after its write"
    answers = [answer for searcher in searchers for answer in searcher.answers]
    assert all(not searcher.failures for searcher in searchers), searchers[0].failures[:3]
    assert len(answers) > 50, "the searchers should have run throughout the writes"
    for sent, hits in answers:
        ids = [hit["passage_id"] for hit in hits]
        assert len(ids) == len(set(ids)), f"a passage twice in one answer: {ids}"
        for hit in hits:
            gone = deleted_at.get(hit["article_id"])
            assert gone is None or sent < gone, f"{hit['article_id']} found after its deletion"
    assert stats["in_agreement"] and stats["articles"] == 1 + 4 + 3 * WRITES - len(deleted_at)
    info = run("retrieval", "info", "--collection", str(path))
    assert info.returncode == 0 and "in agreement       yes" in info.stdout, info.stdout


def found(url: str, number: int) -> bool:
    """Whether the first search after a write finds the article in the index (dense)."""
    return found_text(url, f"live-{number}")


def test_a_commit_between_snapshot_and_catch_up_is_read_once(tmp_path, embedder, seed_articles):
    """The interleaving that duplicated hits: another process commits while a reader is
    between reading the generation and reading the vectors."""
    path = build_collection(tmp_path / "c", embedder, seed_articles)
    corpus = tmp_path / "one.jsonl"
    corpus.write_text(json.dumps(story(1)) + "\n")
    with Collection.open(path, embedder, background=False) as reader:
        reader.refresh()
        index = reader.index
        with index.lock, reader.store.snapshot() as generation:
            indexed = run("retrieval", "index", str(corpus), "--collection", str(path), "--quiet")
            assert indexed.returncode == 0, indexed.stderr
            index.catch_up(reader.store, generation)  # the snapshot predates the commit
            assert index.generation == generation
        reader.refresh()  # now the commit, exactly once
        info = reader.info()
        assert info.in_agreement and info.generation == generation + 1
        assert len(reader.index.ids()) == len(set(reader.index.ids().tolist())) == info.passages


def test_a_second_catch_up_to_the_same_generation_adds_nothing(tmp_path, embedder, seed_articles):
    path = build_collection(tmp_path / "c", embedder, seed_articles)
    with Collection.open(path, embedder, background=False) as collection:
        generation = collection.refresh()
        before = collection.index.ids()
        with collection.index.lock, collection.store.snapshot():
            collection.index.catch_up(collection.store, generation)
        assert (collection.index.ids() == before).all()


def test_the_same_collection_in_two_processes_sees_each_others_writes(
    tmp_path, embedder, seed_articles
):
    path = build_collection(tmp_path / "c", embedder, seed_articles)
    with running_server(path, batch_window_ms=0, max_batch=1) as first, running_server(
        path, batch_window_ms=0, max_batch=1
    ) as second:
        article = {"id": "both", "title": "Ash cloud zq900", "text": "Volcanic ash zq900 again."}
        response = httpx2.post(f"{first}/articles", json={"articles": [article]}, timeout=60)
        assert response.status_code == 200, response.text
        assert found_text(first, "both") and found_text(second, "both")
        assert httpx2.delete(f"{second}/articles/both", timeout=60).status_code == 200
        assert not found_text(first, "both") and not found_text(second, "both")


def found_text(url: str, article_id: str) -> bool:
    """Whether a dense search (through the index) finds any passage of the article."""
    body = {"query": "glacier report", "k": 5, "mode": "dense",
            "filters": {"article_ids": [article_id]}}
    return bool(httpx2.post(f"{url}/search", json=body, timeout=30).json()["hits"])


# -- checkpoints built and loaded while reads go on ----------------------------------------


class SwapsBetweenTheTwoReads(LiveIndex):
    """A LiveIndex whose next read of `base` (once armed) lets a racing swap run in
    another thread before it returns: the interleaving of a checkpoint build that reads
    the base, then its generation, while a newer checkpoint is swapped in."""

    armed: tuple[FaissIndex, int, Store] | None = None
    swapper: threading.Thread | None = None

    @property  # type: ignore[override]
    def base(self) -> FaissIndex:
        value = self.__dict__["base"]  # read, then the swap runs before the caller goes on
        if self.armed is not None:
            newer, generation, store = self.armed
            self.armed = None
            self.swapper = threading.Thread(target=self.swap, args=(newer, generation, store))
            self.swapper.start()
            # Fixed code reads base and generation under the index lock, which the swap
            # needs: it then waits for the build, and this wait runs out instead.
            self.swapper.join(timeout=1.0)
        return value

    @base.setter
    def base(self, value: FaissIndex) -> None:
        self.__dict__["base"] = value


def test_a_checkpoint_is_never_built_from_an_old_base_and_a_newer_generation(
    tmp_path, embedder, seed_articles
):
    """A swap between the build's read of the base and of its generation paired the old
    base with the newer generation: the merged checkpoint then lacked the passages added
    in between and held the ones deleted in between, for every process, until a rebuild."""
    path = tmp_path / "c"
    first, *others = NEWS
    with Collection.open(path, embedder, background=False) as builder, Collection.open(
        path, embedder, background=False
    ) as other:
        builder.add_articles([*seed_articles, first])
        builder.checkpoint(force=True)  # the builder's base: this checkpoint
        other.add_articles(others)
        other.delete_article(first.id)
        other.checkpoint(force=True)  # a newer one, from "another process"
        with other.store.snapshot() as generation:
            newer = checkpoint.load_newest(path, generation, other.store.history())
        assert newer is not None and builder.index.base_generation < newer.generation

        index = builder.index
        index.__class__ = SwapsBetweenTheTwoReads
        index.armed = (newer.index, newer.generation, builder.store)
        builder._build_checkpoint("racing a swap")
        index.swapper.join()

        with builder.store.snapshot() as generation:
            saved = checkpoint.load_newest(path, generation, builder.store.history())
            stored = builder.store.passage_ids()
        assert saved is not None and saved.generation == generation
        assert np.array_equal(np.sort(saved.index.ids()), stored)


def test_two_reads_at_once_start_one_background_checkpoint(tmp_path, embedder, seed_articles):
    """`_after_read` checked for a running checkpoint thread, then started one: two reads
    between the check and the start each started their own."""
    due_at_once = IndexPolicy(delta_max=1)
    path = build_collection(tmp_path / "c", embedder, seed_articles, policy=due_at_once)
    with Collection.open(path, embedder) as collection:
        inside, go_on = threading.Event(), threading.Event()
        is_due, start = collection.checkpoint_due, collection._start
        started = []

        def held_when_first() -> str | None:
            if threading.current_thread().name == "first":
                inside.set()
                go_on.wait(timeout=30)
            return is_due()

        def counted(work):
            started.append(work)
            start(work)

        collection.checkpoint_due = held_when_first
        collection._start = counted
        first = threading.Thread(target=collection.refresh, name="first")
        first.start()
        assert inside.wait(timeout=30)
        collection.refresh()  # a second read while the first is between check and start
        go_on.set()
        first.join()
        collection._checkpointer.join()
        assert len(started) == 1

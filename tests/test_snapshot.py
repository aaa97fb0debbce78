"""`retrieval snapshot`: a consistent copy taken while the service serves and is written.

The copy holds one committed generation G. To know what the original answered at G, the
articles written after G are deleted from the original afterwards: passage ids are never
reused and exact search and BM25 statistics depend only on the passages present, so the
original then answers as it did at G, and the copy must answer the same, hit for hit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import httpx2
import numpy as np
import pytest
from service_fixtures import build_collection

from retrieval.collection.collection import Collection
from retrieval.collection.snapshot import snapshot
from retrieval.errors import InputError
from retrieval.records import Article
from retrieval.search.retriever import Retriever
from service.bench.loadtest import running_server

QUERIES = ["flooded roads after heavy rain", "interest rates", "glacier report", "cup final"]


def article(number: int) -> dict[str, str]:
    return {
        "id": f"snap-{number}",
        "title": f"Glacier report {number}",
        "text": f"The glacier retreated by {number} metres this year, the survey found.\n\n"
        f"Heavy rain and warm winds sped up the melt in the valley ({number}).",
    }


def test_a_snapshot_taken_during_writes_answers_as_the_original_did(
    tmp_path, embedder, seed_articles
):
    path = build_collection(tmp_path / "c", embedder, seed_articles)
    with Collection.open(path, embedder, background=False) as collection:
        collection.checkpoint(force=True)
    out = tmp_path / "copy"
    with running_server(path, batch_window_ms=2, max_batch=32) as url:
        stop, written = threading.Event(), []

        def write() -> None:
            with httpx2.Client(base_url=url, timeout=60) as client:
                for number in range(200):  # bounded; stopped after the snapshot
                    if stop.is_set():
                        return
                    answer = client.post("/articles", json={"articles": [article(number)]})
                    assert answer.status_code == 200, answer.text
                    written.append(number)
                    client.post("/search", json={"query": "glacier", "k": 3})

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        while len(written) < 3:
            writer.join(timeout=0.1)
        done = subprocess.run(
            [sys.executable, "-m", "retrieval", "snapshot", str(out), "--collection", str(path)],
            capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        while len(written) < 6:  # writes carry on after the copy
            writer.join(timeout=0.1)
        stop.set()
        writer.join(timeout=60)
    assert done.returncode == 0, done.stderr
    assert "snapshot at generation" in done.stdout

    with Collection.open(out, embedder, background=False) as copy:
        generation = copy.generation
        assert copy.info().in_agreement and copy.store.integrity_check() == "ok"
        with Collection.open(path, embedder, background=False) as original:
            later = [
                row[0] for row in original.store._db.execute(
                    "SELECT id FROM articles WHERE generation > ?", (generation,)
                )
            ]
            assert later, "the writes should have carried on past the snapshot"
            for article_id in later:
                original.delete_article(article_id)
            for mode in ("dense", "lexical", "hybrid"):
                for query in QUERIES:
                    want = Retriever(original).search(query, 10, mode=mode)
                    got = Retriever(copy).search(query, 10, mode=mode)
                    assert [h.passage_id for h in got] == [h.passage_id for h in want], mode
                    np.testing.assert_allclose(
                        [h.score for h in got], [h.score for h in want], rtol=0, atol=1e-5
                    )


def test_a_snapshot_refuses_a_directory_that_is_not_empty(tmp_path, embedder, seed_articles):
    path = build_collection(tmp_path / "c", embedder, seed_articles)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with pytest.raises(InputError, match="not empty"):
        snapshot(path, tmp_path / "busy")
    report = snapshot(path, tmp_path / "fresh")
    assert report.checkpoint_generation is None  # none saved yet: the copy replays the store
    with Collection.open(report.path, embedder, background=False) as copy:
        assert copy.generation == report.generation and copy.info().in_agreement


def test_a_snapshot_starts_a_history_of_its_own(tmp_path, embedder, seed_articles):
    """The copy keeps its checkpoint, but under a history of its own: its store put back
    in the original's directory never loads the original's later checkpoints."""
    path = build_collection(tmp_path / "c", embedder, seed_articles)
    with Collection.open(path, embedder, background=False) as collection:
        collection.checkpoint(force=True)
        report = snapshot(path, tmp_path / "copy")
        for number in range(3):
            collection.add_articles([Article(**article(number))])
        collection.checkpoint(force=True)  # the original's, later than the copy's
        original = collection.store.history()
    with Collection.open(report.path, embedder, background=False) as copy:
        assert copy.store.history() != original
        assert copy.index.base_generation == report.checkpoint_generation == report.generation
        for number in range(5):  # the copy goes its own way, past the original
            copy.add_articles([Article(**article(100 + number))])
    for name in ("store.sqlite", "store.sqlite-wal", "store.sqlite-shm"):
        (path / name).unlink(missing_ok=True)
    for name in ("store.sqlite", "store.sqlite-wal"):
        if (report.path / name).exists():
            (path / name).write_bytes((report.path / name).read_bytes())
    with Collection.open(path, embedder, background=False) as restored:
        assert restored.index.base_generation == 0  # not the original's checkpoint
        info = restored.info()
        assert info.in_agreement and restored.passages_of("snap-104")
        # The original's checkpoint held its own articles' vectors under the ids that the
        # copy gave to others: ids agreed, vectors did not.
        with restored.reading() as reader:
            vectors = reader.article_vectors("snap-100")
            _, ids = reader.dense(vectors, 1)
        assert ids[:, 0].tolist() == [p.id for p in restored.passages_of("snap-100")]

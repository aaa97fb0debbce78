"""A real ingest killed with SIGKILL at several moments leaves a consistent collection.

The child process is the real `retrieval index` command (real model, SQLite, FAISS).
After each kill the collection must open at its last committed state: every article
present holds all of its passages, store and index agree id for id, SQLite's integrity
check passes, and search works. Then an uninterrupted run completes the ingest.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from retrieval.collection import Collection
from retrieval.records import Article
from retrieval.search import Retriever

ARTICLES = 96
BATCH = 8  # articles per transaction: many commit points to land between


def synthetic_articles(seed_text: str) -> list[Article]:
    """Articles made of the seed's own sentences, shuffled: real news text, many ids."""
    import blingfire

    sentences = blingfire.text_to_sentences(seed_text).split("\n")
    rng = random.Random(7)
    articles = []
    for number in range(ARTICLES):
        paragraphs = ["  ".join(rng.sample(sentences, 3)) for _ in range(rng.randint(1, 3))]
        articles.append(
            Article(id=f"a{number:03d}", title=f"Story {number}", text="\n\n".join(paragraphs))
        )
    return articles


def write_jsonl(articles: list[Article], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for a in articles:
            handle.write(json.dumps({"_id": a.id, "title": a.title, "text": a.text}) + "\n")


def start_ingest(corpus: Path, collection: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "retrieval",
        "index",
        str(corpus),
        "--collection",
        str(collection),
        "--batch-size",
        str(BATCH),
        "--quiet",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def generation(collection: Path) -> int:
    """The store's committed generation, read without taking any lock."""
    try:
        db = sqlite3.connect(f"file:{collection / 'store.sqlite'}?mode=ro", uri=True, timeout=5)
        try:
            return int(db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def kill_after_commits(
    process: subprocess.Popen[bytes], collection: Path, commits: int, extra_delay: float
) -> None:
    """SIGKILLs the child once the store has moved `commits` generations on, plus a delay."""
    start = generation(collection)
    deadline = time.monotonic() + 240
    while generation(collection) < start + commits and time.monotonic() < deadline:
        if process.poll() is not None:
            return  # finished before we got there: nothing left to interrupt
        time.sleep(0.02)
    time.sleep(extra_delay)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def check_consistent(path: Path, expected: dict[str, int], embedder) -> int:
    """Asserts the collection is whole; returns how many articles it holds."""
    with Collection.open(path, embedder) as collection:
        assert collection.store.integrity_check() == "ok"
        info = collection.info()
        assert info.in_agreement, info
        stored = [row[0] for row in collection.store._db.execute("SELECT id FROM articles")]
        for article_id in stored:
            ordinals = [p.ordinal for p in collection.passages_of(article_id)]
            assert ordinals == list(range(expected[article_id])), article_id
        # Batches commit whole and in order: what is stored is a prefix of the corpus.
        assert sorted(stored) == sorted(expected)[: len(stored)]
        assert len(stored) % BATCH == 0 or len(stored) == len(expected)
        if stored:
            assert Retriever(collection).search("Cuba and China cooperation", 3)
        return len(stored)


@pytest.mark.slow
def test_sigkill_during_ingest_never_corrupts(tmp_path, embedder, seed_articles):
    articles = synthetic_articles(seed_articles[0].text)
    corpus, path = tmp_path / "corpus.jsonl", tmp_path / "collection"
    write_jsonl(articles, corpus)
    with Collection.open(path, embedder) as planner:  # how many passages each article gets
        expected = {a.id: len(planner.passages_for(a)) for a in articles}

    held = []
    # Kill while the model loads (no commit yet), then a few commits in, at varied offsets.
    for commits, delay in [(0, 0.5), (1, 0.0), (2, 0.13), (3, 0.31), (2, 0.05)]:
        process = start_ingest(corpus, path)
        if commits == 0:
            time.sleep(delay)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
        else:
            kill_after_commits(process, path, commits, delay)
        process.communicate()  # closes its pipes
        held.append(check_consistent(path, expected, embedder))
    assert held == sorted(held), "a kill must never lose what an earlier run committed"
    assert held[-1] < ARTICLES, "the kills should have interrupted the ingest"

    finished = start_ingest(corpus, path)
    _, stderr = finished.communicate(timeout=300)
    assert finished.returncode == 0, stderr.decode()
    assert check_consistent(path, expected, embedder) == ARTICLES

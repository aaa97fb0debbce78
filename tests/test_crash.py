"""Processes killed with SIGKILL at varied moments leave a consistent collection.

The children are the real commands (real model, SQLite, FAISS):

- `retrieval index` killed mid-ingest, between and inside its batch transactions;
- `python -m service` killed while a client keeps adding, replacing and deleting
  articles over HTTP (and searching, which starts background checkpoints);
- `retrieval index` killed while it builds a checkpoint: an IVF rebuild of a collection
  past its exact size, and a merge into the IVF checkpoint it already has.

After each kill the collection must open at a state some write committed: SQLite's
integrity check passes, store and index agree id for id, every stored article holds all
of its passages (ordinals 0..n-1), the generation is one a writer committed, search
works, a leftover temporary file breaks nothing (the next checkpoint removes it), and
the open loads the newest checkpoint on disk rather than replaying the whole log.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2
import numpy as np
import pytest
from service_fixtures import NEWS, build_collection, copy_collection

from retrieval.bench.index import synthesize
from retrieval.collection.checkpoint import saved_checkpoints
from retrieval.collection.collection import STORE, Collection
from retrieval.collection.index_policy import IndexPolicy
from retrieval.collection.store import NewPassage, Store
from retrieval.records import Article
from retrieval.search.retriever import Retriever
from service.bench.loadtest import free_port, stop, wait_until_ready

CHILD_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}

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


# -- the check every kill below is followed by -------------------------------------------

QUERY = "floods after heavy rain"
SYNTHETIC_TEXT = "synthetic passage"
PER_ARTICLE = 10  # passages per synthetic article

State = dict[str, tuple[str, str]]  # article id -> (title, text)


@dataclass(frozen=True)
class Whole:
    """What a collection held when it opened whole after a kill."""

    generation: int
    articles: State
    loaded: int  # generation of the checkpoint the open loaded (0: none on disk)
    spec: str  # that checkpoint's index ("Flat", the empty index, when none)
    leftovers: list[str]  # names of the temporary files on disk


def check_whole(path: Path, embedder) -> Whole:
    """Asserts that a collection opens consistent; returns what it holds."""
    leftovers = sorted(file.name for file in path.glob("*.tmp"))
    with Collection.open(path, embedder, background=False) as collection:
        assert collection.store.integrity_check() == "ok"
        generation = collection.generation
        on_disk = [g for g, _ in saved_checkpoints(path) if g <= generation]
        loaded, spec = collection.index.base_generation, collection.index.base.spec
        assert loaded == (on_disk[0] if on_disk else 0), f"loaded {loaded}, on disk {on_disk}"
        info = collection.info()
        assert info.in_agreement and info.generation == generation, info
        db = collection.store._db
        articles = {r[0]: (r[1], r[2]) for r in db.execute("SELECT id, title, text FROM articles")}
        passages = {
            r[0]: tuple(r[1:])
            for r in db.execute(
                "SELECT article_id, count(*), min(ordinal), max(ordinal), count(DISTINCT ordinal)"
                " FROM passages GROUP BY article_id"
            )
        }
        assert passages.keys() == articles.keys(), "an article without passages, or the reverse"
        for article_id, (_, text) in articles.items():
            n, first, last, distinct = passages[article_id]
            assert (first, last, distinct) == (0, n - 1, n), (article_id, passages[article_id])
            if text == SYNTHETIC_TEXT:
                expected = PER_ARTICLE
            else:
                expected = len(collection.passages_for(collection.article(article_id)))
            assert n == expected, f"{article_id}: {n} of its {expected} passages"
        assert Retriever(collection).search(QUERY, 3), "a search found nothing"
    return Whole(generation, articles, loaded, spec, leftovers)


def seed_sentences(seed_articles) -> list[str]:
    import blingfire

    return [s for s in blingfire.text_to_sentences(seed_articles[0].text).split("\n") if s]


# -- 1. the service killed while a client writes ------------------------------------------

SERVICE_KILLS = 3


@contextmanager
def service_process(path: Path, log: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`python -m service` on the collection; yields its URL and process once it is ready."""
    port = free_port()
    command = [
        sys.executable, "-m", "service", "--collection", str(path), "--host", "127.0.0.1",
        "--port", str(port), "--batch-window-ms", "0", "--max-batch", "1",
        "--log-level", "warning",
    ]
    with open(log, "ab") as out:
        process = subprocess.Popen(command, env=CHILD_ENV, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process, 180)
        yield url, process
    finally:
        if process.poll() is None:
            stop(process)


class Writer(threading.Thread):
    """Writes to the service until it dies: new articles, changed ones, deletions, and a
    search after each write (reads are what start the service's background checkpoints).

    Every write changes something, so each is one transaction: one generation. `state`
    is what the acknowledged writes left; `pending`, what the store holds if the write
    the kill left unanswered committed after all.
    """

    def __init__(
        self, url: str, state: State, sentences: list[str], numbers: Iterator[int], seed: int
    ) -> None:
        super().__init__(daemon=True)
        self.url, self.state, self.sentences, self.numbers = url, state, sentences, numbers
        self.rng = random.Random(seed)
        self.pending: State | None = None
        self.acked = 0
        self.failures: list[str] = []

    def run(self) -> None:
        with httpx2.Client(base_url=self.url, timeout=60) as client:
            while True:
                after, send = self.next_write()
                self.pending = after
                try:
                    response = send(client)
                    if response.status_code != 200:
                        self.failures.append(f"{response.status_code} {response.text[:300]}")
                        return
                    self.state, self.pending, self.acked = after, None, self.acked + 1
                    found = client.post("/search", json={"query": QUERY, "k": 3})
                except httpx2.TransportError:
                    return  # killed
                if found.status_code != 200 or not found.json()["hits"]:
                    self.failures.append(f"search: {found.status_code} {found.text[:300]}")
                    return

    def next_write(self) -> tuple[State, Callable[[httpx2.Client], httpx2.Response]]:
        after = dict(self.state)
        mine = sorted(i for i in self.state if i.startswith("w"))
        deletable = mine + sorted(a.id for a in NEWS if a.id in self.state)
        roll = self.rng.random()
        if roll < 0.2 and deletable:
            gone = self.rng.choice(deletable)
            del after[gone]
            return after, lambda client: client.delete(f"/articles/{gone}")
        if roll < 0.4 and mine:  # replace one of ours with new text
            ids = [self.rng.choice(mine)]
        else:
            ids = [f"w{next(self.numbers)}" for _ in range(self.rng.randint(1, 2))]
        articles = [self.article(article_id) for article_id in ids]
        after.update({a["id"]: (a["title"], a["text"]) for a in articles})
        return after, lambda client: client.post("/articles", json={"articles": articles})

    def article(self, article_id: str) -> dict[str, str]:
        paragraphs = [
            "  ".join(self.rng.sample(self.sentences, 2)) for _ in range(self.rng.randint(1, 2))
        ]
        title = f"Story {article_id}, version {next(self.numbers)}"  # never the same twice
        return {"id": article_id, "title": title, "text": "\n\n".join(paragraphs)}


def landed_in_write(whole: Whole, writer: Writer, generation: int) -> str:
    """Asserts the store holds exactly what the acknowledged writes left, or that plus the
    write the kill interrupted (never part of one); says which."""
    if whole.articles == writer.state:
        assert whole.generation == generation + writer.acked
        return "in-flight write lost" if writer.pending is not None else "between writes"
    assert writer.pending is not None and whole.articles == writer.pending, "a write half-kept"
    assert whole.generation == generation + writer.acked + 1
    return "in-flight write committed"


def check_stats(url: str, whole: Whole) -> None:
    stats = httpx2.get(f"{url}/stats", timeout=30).json()
    assert stats["in_agreement"], stats
    assert (stats["generation"], stats["articles"]) == (whole.generation, len(whole.articles))


@pytest.mark.slow
def test_sigkill_of_the_service_during_writes_never_corrupts(tmp_path, embedder, seed_articles):
    # Checkpoints due every few writes, so that some kills land in a background one.
    policy = IndexPolicy(delta_max=4, tombstones_max=0.05)
    built = build_collection(tmp_path / "built", embedder, seed_articles, policy=policy)
    path, log = copy_collection(built, tmp_path / "c"), tmp_path / "service.log"
    sentences, numbers, moments = seed_sentences(seed_articles), itertools.count(), random.Random()
    whole = check_whole(path, embedder)
    landed = []
    for kill in range(SERVICE_KILLS):
        with service_process(path, log) as (url, process):
            check_stats(url, whole)
            writer = Writer(url, whole.articles, sentences, numbers, seed=kill)
            writer.start()
            writes, delay = moments.randint(2, 7), moments.uniform(0, 0.3)
            deadline = time.monotonic() + 120
            while writer.acked < writes and writer.is_alive() and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(delay)
            process.send_signal(signal.SIGKILL)
            process.wait(30)
            writer.join(60)
        assert not writer.failures, writer.failures
        assert writer.acked >= writes, f"only {writer.acked} writes answered: see {log}"
        after = check_whole(path, embedder)
        where = landed_in_write(after, writer, whole.generation)
        landed.append(f"{delay:.2f} s after write {writes} ({writer.acked} answered): {where}; "
                      f"checkpoint {after.loaded} of {after.generation}, tmp {after.leftovers}")
        whole = after
    with service_process(path, log) as (url, _):
        check_stats(url, whole)
        found = httpx2.post(f"{url}/search", json={"query": QUERY, "k": 3}, timeout=30)
        assert found.status_code == 200 and found.json()["hits"]
    with Collection.open(path, embedder, background=False) as collection:
        assert collection.checkpoint(force=True)  # removes any temporary file left
    assert check_whole(path, embedder).leftovers == []
    print("service kills:", *landed, sep="\n  ")


# -- 2 and 3. `retrieval index` killed while it saves a checkpoint ------------------------

# Past exact_up_to=1,000 these ask for IVF512,SQ8: training and filling it take ~2 s on
# two busy cores (50,000 vectors took ~9 s, too long to repeat).
SYNTHETIC = 20_000


@pytest.fixture(scope="module")
def real_vectors(embedder, seed_articles):
    """Vectors of real text: the seed article's sentences and the news articles."""
    texts = seed_sentences(seed_articles) + [f"{a.title}\n{a.text}" for a in NEWS]
    return embedder.embed_documents(texts)


def synthetic_collection(path: Path, embedder, base: np.ndarray, policy: IndexPolicy) -> int:
    """A collection of SYNTHETIC passages (real vectors plus noise), 10 per article, written
    straight into its store in one transaction, with no checkpoint; returns its generation."""
    vectors = synthesize(base, SYNTHETIC, noise=0.02, mix=0.5)
    with Collection.open(path, embedder, policy=policy, background=False):
        pass
    store = Store(path / STORE)
    try:
        with store.transaction() as generation:
            for start in range(0, SYNTHETIC, PER_ARTICLE):
                rows = [
                    NewPassage(ordinal=i, start=0, end=len(SYNTHETIC_TEXT), text=SYNTHETIC_TEXT,
                               n_tokens=2, vector=vectors[start + i])
                    for i in range(PER_ARTICLE)
                ]
                article = Article(id=f"s{start // PER_ARTICLE}", title="", text=SYNTHETIC_TEXT)
                store.put_article(article, rows, generation)
    finally:
        store.close()
    return generation


def small_corpus(path: Path, prefix: str) -> list[Article]:
    """A few real articles under new ids, and one replacing a synthetic article (whose
    passages a merge must then remove); written to `path` as JSONL."""
    articles = [Article(f"{prefix}-{a.id}", a.title, a.text) for a in NEWS]
    articles.append(Article("s3", "Replaced", f"{NEWS[0].text}\n\nIt was replaced by {prefix}."))
    write_jsonl(articles, path)
    return articles


class IndexRun:
    """`retrieval index` in a child process, its stderr read line by line as it comes."""

    def __init__(self, corpus: Path, collection: Path) -> None:
        command = [sys.executable, "-m", "retrieval", "index", str(corpus),
                   "--collection", str(collection), "--quiet"]
        self.process = subprocess.Popen(
            command, env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []
        self.saving = threading.Event()
        self.saving_at = 0.0  # time.time() when the "saving" line was read
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            if line.startswith("checkpoint: saving the index"):
                self.saving_at = time.time()
                self.saving.set()

    def wait_for_saving(self) -> bool:
        """Waits for "checkpoint: saving the index (...)"; False if it exited without."""
        deadline = time.monotonic() + 240
        while not self.saving.wait(0.005):
            if self.process.poll() is not None:
                self._reader.join(30)
                return self.saving.is_set()
            assert time.monotonic() < deadline, "".join(self.lines)
        return True

    def kill(self) -> bool:
        """SIGKILLs it; returns whether it had exited by itself before."""
        exited = self.process.poll() is not None
        if not exited:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)
        self._reader.join(30)
        self.close()
        assert not exited or self.process.returncode == 0, "".join(self.lines)
        return exited

    def close(self) -> None:
        """Closes the pipes (warnings are errors: an unclosed file fails the run)."""
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()

    def finish(self) -> str:
        """Waits for it to exit, successfully; returns its stdout."""
        assert self.process.wait(300) == 0, "".join(self.lines)
        self._reader.join(30)
        assert self.process.stdout is not None
        out = self.process.stdout.read()
        self.close()
        return out

    def temporary_files(self, path: Path) -> list[Path]:
        """Checkpoint temporary files this run wrote (not ones left by an earlier run)."""
        found = []
        for file in path.glob("*.faiss.tmp"):
            try:
                if file.stat().st_mtime >= self.saving_at - 0.05:
                    found.append(file)
            except FileNotFoundError:  # renamed meanwhile
                continue
        return found


def kill_while_checkpointing(run: IndexRun, path: Path, delay: float | None) -> str | None:
    """SIGKILLs a run `delay` s after it says it saves a checkpoint, or (delay None) once
    it writes the checkpoint's temporary file. Returns the delay as said, or None when
    no checkpoint was due (a previous run's checkpoint had landed)."""
    if not run.wait_for_saving():
        run.kill()
        return None
    if delay is None:
        deadline = time.monotonic() + 120
        while not run.temporary_files(path) and run.process.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.001)
        said = "at its .tmp"
    else:
        time.sleep(delay)
        said = f"{delay:.2f} s"
    exited = run.kill()
    return f"{said}: exited by itself before" if exited else said


SAVED = "checkpoint saved"


def landed_in_checkpoint(said: str | None, run: IndexRun, path: Path, whole: Whole,
                         before: int) -> str:
    """Where a kill landed, from what it left on disk (`before`: the checkpoint before)."""
    if said is None:
        return "no checkpoint due: the last one had landed"
    if "exited" in said:
        return f"{said}: {SAVED}"
    if whole.loaded > before:
        older = " (the older one still there)" if len(saved_checkpoints(path)) > 1 else ""
        return f"{said}: after the rename, {SAVED}{older}"
    if run.temporary_files(path):
        return f"{said}: while writing the file ({whole.leftovers} left)"
    return f"{said}: while building"


def kill_checkpoints(
    path: Path, corpus: Path, embedder, delays: list[float | None],
    expect: Callable[[Whole], None], renew: Callable[[], None] | None = None,
) -> list[str]:
    """One `retrieval index` run per delay, each killed while checkpointing and checked;
    `renew` is called after a kill that landed once the checkpoint was saved."""
    landed = []
    for delay in delays:
        before = newest_checkpoint(path)
        run = IndexRun(corpus, path)
        said = kill_while_checkpointing(run, path, delay)
        whole = check_whole(path, embedder)
        expect(whole)
        landed.append(landed_in_checkpoint(said, run, path, whole, before))
        if renew is not None and SAVED in landed[-1]:
            renew()
    return landed


def newest_checkpoint(path: Path) -> int:
    """The newest checkpoint's generation on disk (0: none)."""
    saved = saved_checkpoints(path)
    return saved[0][0] if saved else 0


@pytest.mark.slow
def test_sigkill_during_an_ivf_rebuild_never_corrupts(tmp_path, embedder, real_vectors):
    path, corpus = tmp_path / "c", tmp_path / "small.jsonl"
    policy = IndexPolicy("auto", exact_up_to=1000)
    generation = synthetic_collection(path, embedder, real_vectors, policy) + 1  # + the ingest
    articles = {f"s{n}": ("", SYNTHETIC_TEXT) for n in range(SYNTHETIC // PER_ARTICLE)}
    articles.update({a.id: (a.title, a.text) for a in small_corpus(corpus, "r")})

    def expect(whole: Whole) -> None:
        # The ingest committed (whole) before the checkpoint began; reruns change nothing.
        assert whole.articles == articles and whole.generation == generation
        assert whole.loaded in (0, generation)
        assert whole.loaded == 0 or whole.spec.startswith("IVF")

    # The first run loads the model and commits; the reruns find the articles unchanged
    # but the checkpoint still due (none on disk), and rebuild again.
    rng = random.Random()
    delays = [rng.uniform(0, 0.3), None, *sorted(rng.uniform(0, 1.5) for _ in range(3))]
    landed = kill_checkpoints(path, corpus, embedder, delays, expect)
    assert any(": while" in where for where in landed), landed  # some before the rename

    run = IndexRun(corpus, path)
    stdout = run.finish()
    assert "0 added, 0 updated, 5 unchanged" in stdout, stdout
    built = any("checkpoint: rebuilt as IVF" in line for line in run.lines)
    assert built or SAVED in " ".join(landed), run.lines
    whole = check_whole(path, embedder)
    expect(whole)
    assert whole.loaded == generation and whole.spec.startswith("IVF") and not whole.leftovers
    print(f"IVF rebuild kills ({whole.spec}):", *landed, sep="\n  ")


@pytest.mark.slow
def test_sigkill_during_a_merge_checkpoint_never_corrupts(tmp_path, embedder, real_vectors):
    path, corpus = tmp_path / "c", tmp_path / "small.jsonl"
    policy = IndexPolicy("auto", exact_up_to=1000, delta_max=4)  # a few articles make one due
    generation = synthetic_collection(path, embedder, real_vectors, policy)
    articles = {f"s{n}": ("", SYNTHETIC_TEXT) for n in range(SYNTHETIC // PER_ARTICLE)}
    with Collection.open(path, embedder, background=False) as collection:
        assert (collection.checkpoint() or "").startswith("rebuilt as IVF")
        spec = collection.index.base.spec
    checkpointed, batches = generation, iter([small_corpus(corpus, "m")])

    def index_more() -> None:
        """Indexes a few articles here (the model is loaded already), making a merge due:
        every `retrieval index` run below finds its corpus unchanged, skips the model, and
        merges. (The rebuild test above kills a run that committed first.)"""
        nonlocal generation, checkpointed
        batch = next(batches, None) or [
            Article(f"x{generation}-{a.id}", a.title, a.text) for a in NEWS
        ]
        with Collection.open(path, embedder, background=False) as collection:
            checkpointed = collection.index.base_generation
            collection.add_articles(batch)
        generation += 1
        articles.update({a.id: (a.title, a.text) for a in batch})

    def expect(whole: Whole) -> None:
        assert whole.articles == articles and whole.generation == generation
        assert whole.loaded in (checkpointed, generation) and whole.spec == spec

    # A merge takes well under 0.1 s; after one lands, index_more makes the next one due.
    index_more()
    rng = random.Random()
    delays = [0.0, None, *sorted(rng.uniform(0, 0.06) for _ in range(3)), rng.uniform(0.05, 0.15)]
    landed = kill_checkpoints(path, corpus, embedder, delays, expect, renew=index_more)
    assert any(": while" in where for where in landed), landed  # some before the rename

    run = IndexRun(corpus, path)
    run.finish()
    assert any(line.startswith("checkpoint: merged") for line in run.lines), run.lines
    whole = check_whole(path, embedder)
    expect(whole)
    assert whole.loaded == generation and not whole.leftovers
    assert [g for g, _ in saved_checkpoints(path)] == [generation]  # older ones removed
    print(f"merge kills ({spec}):", *landed, sep="\n  ")

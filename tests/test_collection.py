"""The collection on disk: ingest, update, delete, reopen, recover, refuse the wrong model."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from retrieval.collection.checkpoint import saved_checkpoints as saved_indexes
from retrieval.collection.collection import Collection
from retrieval.collection.index_policy import IndexPolicy
from retrieval.errors import CollectionFormatError, ModelMismatchError, NotFoundError
from retrieval.records import Article
from retrieval.search.retriever import Retriever

TEXT = (
    "The city council approved a new budget for public transport on Tuesday.\n\n"
    "Bus fares will fall by ten percent from March, the mayor said.\n\n"
    "Opposition members argued that the cuts to road maintenance were too deep."
)


def article(id_: str = "a1", text: str = TEXT, **fields) -> Article:
    return Article(id=id_, title=fields.pop("title", "Council budget"), text=text, **fields)


def test_seed_article_is_chunked_within_the_model_limit(seeded, embedder):
    info = seeded.info()
    assert info.articles == 1
    assert info.passages >= 2, "the ~500-word seed paragraph must be split, not truncated"
    assert info.max_passage_tokens <= embedder.max_tokens
    assert info.in_agreement


def test_seed_passages_cover_every_word_in_order(seeded, seed_articles):
    seed = seed_articles[0]
    passages = seeded.passages_of(seed.id)
    covered = " ".join(seed.text[p.start : p.end] for p in passages)
    assert covered.split() == seed.text.split()
    assert [p.ordinal for p in passages] == list(range(len(passages)))


def test_unchanged_article_is_a_no_op(collection):
    collection.add_articles([article()])
    generation = collection.store.generation()
    report = collection.add_articles([article()])
    assert (report.unchanged, report.added, report.updated) == (1, 0, 0)
    assert collection.store.generation() == generation


def test_changed_article_replaces_its_passages(collection):
    collection.add_articles([article()])
    old = {p.id for p in collection.passages_of("a1")}
    report = collection.add_articles([article(text="A different story entirely, about fishing.")])
    assert report.updated == 1 and report.passages_removed == len(old)
    new = collection.passages_of("a1")
    assert {p.id for p in new}.isdisjoint(old)
    info = collection.info()
    assert info.vectors_in_index == len(new) == info.passages and info.in_agreement


def test_delete_removes_from_store_and_index(collection):
    collection.add_articles([article("a1"), article("a2", text="Weather: rain all week.")])
    removed = collection.delete_article("a1")
    assert removed >= 1
    info = collection.info()
    assert info.articles == 1 and info.in_agreement
    with pytest.raises(NotFoundError):
        collection.article("a1")
    with pytest.raises(NotFoundError):
        collection.delete_article("a1")


def test_writes_write_no_index_file_and_a_checkpoint_saves_one(tmp_path, embedder, seed_articles):
    path = tmp_path / "c"
    with Collection.open(path, embedder) as first:
        first.add_articles(seed_articles)
        assert saved_indexes(path) == []  # a write costs its own rows, not an index file
        generation = first.store.generation()
        assert first.checkpoint(force=True) == "rebuilt as Flat"
    assert [g for g, _ in saved_indexes(path)] == [generation]
    with Collection.open(path, embedder) as again:
        info = again.info()
        assert info.in_agreement and info.checkpoint_generation == generation


def test_missing_index_is_rebuilt_from_stored_vectors(tmp_path, embedder, seed_articles):
    path = tmp_path / "c"
    with Collection.open(path, embedder) as first:
        first.add_articles(seed_articles)
        first.checkpoint(force=True)
        first.refresh()
        vectors_before = first.index.search(np.ones((1, 384), np.float32) / 384**0.5, 3)
    for _, file in saved_indexes(path):
        file.unlink()
    with Collection.open(path, embedder) as again:
        assert again.info().in_agreement
        after = again.index.search(np.ones((1, 384), np.float32) / 384**0.5, 3)
        np.testing.assert_array_equal(vectors_before[1], after[1])


def test_older_index_catches_up_with_the_store(tmp_path, embedder):
    path = tmp_path / "c"
    with Collection.open(path, embedder) as first:
        first.add_articles([article("a1"), article("a2", text="Rain all week.")])
        first.checkpoint(force=True)
    with Collection.open(path, embedder) as second:
        second.delete_article("a1")
        second.add_articles([article("a3", text="Snow in the hills.")])
    # The checkpoint predates the delete and the add: the store's log replays them.
    with Collection.open(path, embedder) as third:
        info = third.info()
        assert info.in_agreement and info.articles == 2
        stored = {p.id for a in ("a2", "a3") for p in third.passages_of(a)}
        assert set(third.index.ids().tolist()) == stored


def test_unreadable_index_file_is_rebuilt(tmp_path, embedder, seed_articles):
    path = tmp_path / "c"
    with Collection.open(path, embedder) as first:
        first.add_articles(seed_articles)
        first.checkpoint(force=True)
    saved_indexes(path)[0][1].write_bytes(b"garbage")
    with Collection.open(path, embedder) as again:
        assert again.info().in_agreement


def test_other_model_is_refused(tmp_path, embedder, seed_articles):
    path = tmp_path / "c"
    with Collection.open(path, embedder) as first:
        first.add_articles(seed_articles)

    class OtherModel:
        def __getattr__(self, name):
            return getattr(embedder, name)

        def spec(self):
            return {**embedder.spec(), "model": "other", "fingerprint": "0" * 16}

    with pytest.raises(ModelMismatchError, match="built with model"):
        Collection.open(path, OtherModel())


def test_opening_a_missing_collection_without_create_says_how(tmp_path):
    with pytest.raises(CollectionFormatError, match="retrieval index"):
        Collection.open(tmp_path / "nothing", create=False)


def test_one_id_twice_in_one_ingest_is_refused(collection):
    from retrieval.errors import InputError

    with pytest.raises(InputError, match="appears twice"):
        collection.add_articles([article("a1"), article("a1", text="Another text.")])
    assert collection.info().articles == 0


def test_an_article_with_neither_text_nor_title_is_refused_before_any_write(collection):
    from retrieval.errors import InputError

    empty = article("a2", text="   ", title=" ")
    with pytest.raises(InputError, match="'a2' has no text and no title"):
        collection.add_articles([article("a1"), empty], batch_size=1)
    assert collection.info().articles == 0


def test_a_title_only_article_is_indexed_with_its_title_as_text(collection):
    from retrieval.ingestion.loaders import load_file

    flash = article("flash", text="", title="Earthquake strikes off northern Japan")
    [(passage, embed_input)] = collection.passages_for(flash)
    assert (passage.text, passage.start, passage.end) == (flash.title, 0, len(flash.title))
    assert embed_input == flash.title  # the title is not put before itself
    report = collection.add_articles([flash])
    assert (report.added, report.passages_added) == (1, 1)
    assert collection.article("flash").text == flash.title
    # The loaders give the same article, so re-adding it from a file changes nothing.
    path = collection.path.parent / "flash.jsonl"
    path.write_text(json.dumps({"_id": "flash", "title": flash.title}) + "\n")
    assert collection.add_articles(load_file(path).articles).unchanged == 1
    [hit] = Retriever(collection).search("earthquake in Japan", 1)
    assert (hit.article_id, hit.text) == ("flash", flash.title)


def test_a_thread_that_ends_leaves_no_connection_open(tmp_path):
    """Web servers' worker threads come and go (anyio retires one idle for 10 s): each
    thread's SQLite connection must close with it, not pile up for the process's life."""
    import gc
    import os
    import threading

    from retrieval.collection.store import Store

    store = Store(tmp_path / "store.sqlite")

    def handles() -> int:
        fds = os.listdir("/proc/self/fd")
        return sum(os.path.realpath(f"/proc/self/fd/{fd}").endswith("store.sqlite") for fd in fds)

    before = handles()
    for _ in range(20):
        worker = threading.Thread(target=store.generation)
        worker.start()
        worker.join()
    gc.collect()
    assert store.open_connections() == 1  # this thread's, opened by the constructor
    # SQLite may keep one closed connection's file handle for reuse while another holds
    # locks on the file, but no more than that: 20 threads leave no 20 handles.
    assert handles() <= before + 1
    with store.snapshot() as generation:
        assert generation == store.generation()
    store.close()
    assert store.open_connections() == 0


# -- a checkpoint belongs to one history of the store ------------------------------------


def remove_store(path) -> None:
    for name in ("store.sqlite", "store.sqlite-wal", "store.sqlite-shm"):
        (path / name).unlink(missing_ok=True)


def finds_itself(collection: Collection, article_id: str) -> bool:
    """Whether each stored vector of the article is its own passage's nearest one."""
    vectors = collection.store.article_vectors(article_id, collection.dim)
    own = [p.id for p in collection.passages_of(article_id)]
    with collection.reading() as reader:
        _, ids = reader.dense(vectors, 1)
    return ids[:, 0].tolist() == own


def test_a_checkpoint_of_another_history_is_never_loaded(tmp_path, embedder):
    """A store replaced by another one (here: made anew) that catches up past a leftover
    checkpoint's generation loaded that checkpoint: other passages' vectors under its ids."""
    path = tmp_path / "c"
    with Collection.open(path, embedder) as first:
        first.add_articles([article("a1"), article("a2", text="Rain all week.")])
        first.checkpoint(force=True)
        leftover = first.generation
    remove_store(path)  # the checkpoint file stays
    with Collection.open(path, embedder) as other:
        other.add_articles([article("b1", text="Snow in the hills."), article("b2")])
        assert other.generation >= leftover
    with Collection.open(path, embedder) as reopened:
        assert reopened.index.base_generation == 0  # replayed from the store instead
        info = reopened.info()
        assert info.in_agreement and info.articles == 2
        assert finds_itself(reopened, "b1") and finds_itself(reopened, "b2")


def test_a_store_gets_one_history_and_keeps_it(tmp_path, embedder):
    path = tmp_path / "c"
    with Collection.open(path, embedder) as first:
        history = first.store.history()
        first.add_articles([article("a1")])
    with Collection.open(path, embedder) as again:
        assert again.store.history() == history and len(history) == 32
    remove_store(path)
    with Collection.open(path, embedder) as anew:
        assert anew.store.history() != history


def test_a_store_made_before_histories_gets_one_and_ignores_unnamed_checkpoints(
    tmp_path, embedder
):
    """A collection from before histories opens as it is: its writer's open mints an
    identity; its checkpoint, which names none, is not trusted but rebuilt from the store."""
    path = tmp_path / "c"
    with Collection.open(path, embedder) as first:
        first.add_articles([article("a1"), article("a2", text="Rain all week.")])
        first.checkpoint(force=True)
        generation = first.generation
    [(_, file)] = saved_indexes(path)
    file.rename(path / f"index-{generation:012d}.faiss")  # the old name, without a history
    with sqlite3.connect(path / "store.sqlite") as db:
        db.execute("DELETE FROM meta WHERE key = 'history'")
    with Collection.open(path, embedder) as reopened:
        assert len(reopened.store.history()) == 32
        assert reopened.index.base_generation == 0
        assert reopened.info().in_agreement and finds_itself(reopened, "a2")
        reopened.checkpoint(force=True)
        assert [f.name for _, f in saved_indexes(path)] == [
            f"index-{generation:012d}-{reopened.store.history()}.faiss"
        ]


# -- a write costs what it changes ---------------------------------------------------------


def test_a_one_shot_writer_that_will_not_checkpoint_never_loads_the_index(tmp_path, embedder):
    """With no checkpoint saved, `retrieval index` of one article loaded the index (every
    stored vector replayed) only to find that no checkpoint was due."""
    path = tmp_path / "c"
    with Collection.open(path, embedder, background=False) as first:
        first.add_articles([article("a1"), article("a2", text="Rain all week.")])
        assert first.checkpoint_if_due() is None
        assert not first.index_loaded
    assert saved_indexes(path) == []
    with Collection.open(path, embedder, background=False) as writer:
        writer.add_articles([article("a3", text="Snow in the hills.")])
        assert writer.checkpoint_if_due() is None
        assert not writer.index_loaded


def test_a_one_shot_writer_checkpoints_a_collection_whose_replay_would_be_long(
    tmp_path, embedder
):
    path = tmp_path / "c"
    long_at_two = IndexPolicy(delta_max=2)  # passages an open may replay before it is long
    with Collection.open(path, embedder, policy=long_at_two, background=False) as first:
        first.add_articles([article("a1")])
        assert first.checkpoint_if_due() is None and not first.index_loaded
    with Collection.open(path, embedder, background=False) as writer:
        writer.add_articles([article("a2", text="Rain all week.")])
        assert writer.checkpoint_if_due() == "rebuilt as Flat"
    assert [g for g, _ in saved_indexes(path)] == [2]


def test_replays_read_in_the_order_of_an_index_without_a_temporary_sort(tmp_path, embedder):
    """Replaying the log read every vector `ORDER BY id` through the generation index,
    so SQLite sorted them all in a temporary B-tree (a temporary file, MBs per open)."""
    path = tmp_path / "c"
    with Collection.open(path, embedder, background=False) as first:
        first.add_articles([article("a1"), article("a2", text="Rain all week.")])
        first.checkpoint(force=True)
        first.add_articles([article("a3", text="Snow in the hills.")])
    with Collection.open(path, embedder, background=False) as collection:
        statements: list[str] = []
        db = collection.store._db  # this thread's connection: the one the replay uses
        db.set_trace_callback(statements.append)
        collection.refresh()  # the checkpoint, then the log since it
        collection.add_articles([article("a4", text="Wind on the coast.")])
        collection.checkpoint(force=True)  # merged: the log since the last one
        db.set_trace_callback(None)
        replays = [s for s in statements if s.startswith("SELECT") and "generation >" in s]
        assert any("vector" in s for s in replays)
        for statement in replays:
            plan = " | ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + statement))
            assert "TEMP B-TREE" not in plan, (statement, plan)

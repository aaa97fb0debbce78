"""The in-memory BM25 (retrieval/collection/bm25.py) gives FTS5's own bm25() answers, and keeps
giving them as
articles are added, replaced and deleted; summed statistics make shards score as one store.

These tests need no model: passages are stored with placeholder vectors, because only
their text matters here. FTS5, SQLite and the store are the real ones.
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from conftest import DATASETS

from retrieval.collection.bm25 import TOKENIZER, LexicalStatistics, MemoryBm25
from retrieval.collection.lexical import MAX_QUERY_WORDS, Fts5Index, query_words
from retrieval.collection.store import SCHEMA, NewPassage, Store
from retrieval.records import Article, Filters

BBC = DATASETS / "bbc" / "corpus.jsonl"
NONE = Filters()


def bbc_articles(n: int) -> list[Article]:
    """n BBC articles, every fifth of the corpus, so that every section has some."""
    with BBC.open() as lines:
        records = [json.loads(line) for i, line in enumerate(lines) if i % 5 == 0][:n]
    return [
        Article(id=r["_id"], title=r["title"], text=r["text"], source=r["_id"].split("_")[0])
        for r in records
    ]


def put(store: Store, articles: list[Article]) -> None:
    with store.transaction() as generation:
        for article in articles:
            paragraphs = [p for p in article.text.split("\n\n") if p.strip()]
            passages = [
                NewPassage(i, 0, len(p), p, len(p.split()), np.zeros(4, np.float32))
                for i, p in enumerate(paragraphs)
            ]
            store.put_article(article, passages, generation)


def delete(store: Store, article_ids: list[str]) -> None:
    with store.transaction() as generation:
        for article_id in article_ids:
            store.delete_article(article_id, generation)


def queries() -> list[str]:
    titles = [article.title for article in bbc_articles(120)]
    return [
        *titles,
        "what did the prime minister say about the economy and the economy",
        "running runs ran run",  # several words, one stem: FTS5 counts each phrase
        "Café société naïve",  # diacritics folded by unicode61
        "zzzz unseenword",
    ]


def assert_same(memory: list[tuple[int, float]], fts5: list[tuple[int, float]]) -> None:
    """The same passages with the same scores; ties may come in another order."""
    assert len(memory) == len(fts5)
    assert dict(memory).keys() == dict(fts5).keys() or _only_tie_order(memory, fts5)
    fts5_scores = dict(fts5)
    for passage_id, score in memory:
        if passage_id in fts5_scores:
            assert score == pytest.approx(fts5_scores[passage_id], abs=1e-9)
    assert [s for _, s in memory] == pytest.approx([s for _, s in fts5], abs=1e-9)


def _only_tie_order(memory: list[tuple[int, float]], fts5: list[tuple[int, float]]) -> bool:
    # passages cut at the k-th place differ only where their scores tie with the last one
    last = fts5[-1][1]
    differ = set(dict(memory)) ^ set(dict(fts5))
    scores = {**dict(memory), **dict(fts5)}
    return all(abs(scores[i] - last) < 1e-9 for i in differ)


@pytest.fixture(scope="module")
def stored_once(tmp_path_factory):
    """300 BBC articles stored once (hashing their duplicate fingerprints takes seconds)."""
    folder = tmp_path_factory.mktemp("bm25")
    made = Store(folder / "store.sqlite")
    put(made, bbc_articles(300))
    made.close()
    return folder


@pytest.fixture
def store(tmp_path, stored_once):
    for file in stored_once.iterdir():
        shutil.copy(file, tmp_path / file.name)
    opened = Store(tmp_path / "store.sqlite")
    yield opened
    opened.close()


def test_the_tokenizer_is_the_stores():
    assert f"tokenize='{TOKENIZER}'" in SCHEMA


def test_scores_are_fts5s_own(store):
    memory, fts5 = MemoryBm25(store), Fts5Index(store)
    for query in queries():
        for k in (1, 100):
            assert_same(
                memory.search(query, k, filters=NONE, allowed=None),
                fts5.search(query, k, filters=NONE, allowed=None),
            )


def test_a_long_query_is_searched_by_its_first_distinct_words(store):
    # A pasted page as the query: both engines read its first MAX_QUERY_WORDS distinct
    # words, the rest (a word that alone would match) changes nothing.
    head = " ".join(f"w{i}" for i in range(MAX_QUERY_WORDS - 1)) + " minister"
    words = query_words(head + " election " * 3 + "rugby " * 500)
    assert len(words) == MAX_QUERY_WORDS and words[-1] == "minister"
    memory, fts5 = MemoryBm25(store), Fts5Index(store)
    long = head + " rugby" * 500
    found = memory.search(long, 20, filters=NONE, allowed=None)
    assert found and found == memory.search(head, 20, filters=NONE, allowed=None)
    assert_same(found, fts5.search(long, 20, filters=NONE, allowed=None))


def test_filters_keep_the_whole_corpus_statistics(store):
    """FTS5 filters by joining after scoring: N and the frequencies stay the table's."""
    memory, fts5 = MemoryBm25(store), Fts5Index(store)
    filters = Filters(sources=("politics",))
    allowed = np.array(
        [row[0] for row in store._db.execute(
            "SELECT p.id FROM passages p JOIN articles a ON a.id = p.article_id "
            "WHERE a.source = 'politics'")],
        dtype=np.int64,
    )
    assert 0 < len(allowed) < len(memory)
    for query in queries()[:40]:
        found = memory.search(query, 20, filters=filters, allowed=allowed)
        assert set(dict(found)) <= set(allowed.tolist())
        assert_same(found, fts5.search(query, 20, filters=filters, allowed=allowed))


def test_it_follows_adds_replacements_and_deletes(store):
    memory, fts5 = MemoryBm25(store), Fts5Index(store)
    memory.refresh()
    more = bbc_articles(400)[300:]
    put(store, more[:50])
    delete(store, [a.id for a in bbc_articles(40)])
    replaced = [
        Article(id=a.id, title=a.title, text=a.text.upper() + "\n\nA wholly new paragraph.")
        for a in more[:10]
    ]
    put(store, replaced)
    put(store, more[50:])
    deleted_passages = set(store.removed_between(0, store.generation()).tolist())
    for query in queries():
        found = memory.search(query, 50, filters=NONE, allowed=None)
        assert not deleted_passages & set(dict(found))
        assert_same(found, fts5.search(query, 50, filters=NONE, allowed=None))
    assert len(memory) == store.counts()["passages"]


def test_compaction_after_mass_deletion_changes_no_answer(store, monkeypatch):
    monkeypatch.setattr("retrieval.collection.bm25.COMPACT_AFTER_DEAD", 0)
    memory, fts5 = MemoryBm25(store), Fts5Index(store)
    memory.refresh()
    delete(store, [a.id for a in bbc_articles(280)])  # leaves 20 of 300 articles
    put(store, bbc_articles(330)[300:])
    memory.refresh()
    assert memory._passage_ids.size == len(memory)  # dead rows dropped
    for query in queries():
        assert_same(
            memory.search(query, 30, filters=NONE, allowed=None),
            fts5.search(query, 30, filters=NONE, allowed=None),
        )


def test_a_search_sees_its_snapshot_not_a_later_write(store):
    memory = MemoryBm25(store)
    query = "Greenspan dollar"
    before = memory.search(query, 10, filters=NONE, allowed=None)
    with store.snapshot():
        # another thread's write commits while this snapshot is open
        import threading

        writer = threading.Thread(
            target=put,
            args=(store, [Article(id="new", title="Greenspan dollar", text="Greenspan dollar.")]),
        )
        writer.start()
        writer.join()
        assert memory.search(query, 10, filters=NONE, allowed=None) == before
    after = memory.search(query, 10, filters=NONE, allowed=None)
    assert after[0][1] > before[0][1]  # the new, short, exact passage now comes first


def test_words_fts5_splits_go_to_fts5(store):
    """A word FTS5 splits ("foo_bar" is the phrase "foo bar") is scored by FTS5 itself."""
    memory, fts5 = MemoryBm25(store), Fts5Index(store)
    assert memory.terms("oil_price rises") is None
    query = "oil_price rises"
    assert memory.search(query, 10, filters=NONE, allowed=None) == fts5.search(
        query, 10, filters=NONE, allowed=None
    )


def test_summed_statistics_make_shards_score_as_one_store(tmp_path, store):
    """Split the corpus over three stores; each scores with the summed statistics, and
    the merged answer is the one store's, score for score."""
    articles = bbc_articles(300)
    shards = [Store(tmp_path / f"shard{i}.sqlite") for i in range(3)]
    for i, shard in enumerate(shards):
        put(shard, [a for j, a in enumerate(articles) if j % 3 == i])
    indexes = [MemoryBm25(shard) for shard in shards]
    single = MemoryBm25(store)
    for query in queries()[:60]:
        terms = indexes[0].terms(query)
        assert terms is not None
        total = sum((index.statistics(terms) for index in indexes), LexicalStatistics(0, 0))
        assert total == single.statistics(terms)
        answers = [
            index.search(query, 10, filters=NONE, allowed=None, statistics=total)
            for index in indexes
        ]
        merged = sorted((s for answer in answers for _, s in answer), reverse=True)[:10]
        expected = [s for _, s in single.search(query, 10, filters=NONE, allowed=None)]
        assert merged == pytest.approx(expected, abs=1e-9)
    for shard in shards:
        shard.close()


def test_terms_keep_one_token_per_phrase(store):
    memory = MemoryBm25(store)
    assert memory.terms("Running runs, RAN!") == ("run", "run", "ran")
    assert memory.terms("...") == ()
    assert re.fullmatch(r"\w+", memory.terms("Société")[0])


def test_a_collection_reports_its_statistics(seeded):
    statistics = seeded.lexical_statistics("COVID-19 vaccine cooperation")
    assert statistics is not None
    assert statistics.documents == seeded.store.counts()["passages"]
    assert set(statistics.document_frequency) == {"covid", "19", "vaccin", "cooper"}
    assert seeded.lexical_statistics("foo_bar") is None

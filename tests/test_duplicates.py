"""Exact and near-duplicate articles, on real BBC News articles: grouped at ingest,
collapsed at query time, kept consistent through deletes and replacements, left out of
related articles, and grouped on opening a collection made before groups existed."""

from __future__ import annotations

import dataclasses
import json
import re
import sqlite3

import pytest
from conftest import DATASETS

from retrieval.collection import duplicates
from retrieval.collection.collection import Collection
from retrieval.collection.duplicates import DuplicateRule, shingles
from retrieval.collection.store import STORE, Store
from retrieval.records import Article, Filters
from retrieval.search.retriever import Retriever

BBC = DATASETS / "bbc" / "corpus.jsonl"
EXACT = ("business_214", "business_240")  # listed in the corpus's exact_duplicates.tsv
ORIGINAL = "business_001"  # "Ad sales boost Time Warner profit"
FOLLOW_UP = ("entertainment_007", "entertainment_013")  # Levy tipped for / takes the prize
OTHERS = ("sport_001", "politics_001")
COPY = f"{ORIGINAL}-copy"


def bbc(*ids: str) -> list[Article]:
    wanted, found = set(ids), {}
    with open(BBC, encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            if record["_id"] in wanted:
                found[record["_id"]] = Article(
                    record["_id"], record["title"], record["text"], source="bbc"
                )
    return [found[i] for i in ids]


def republished(article: Article, new_id: str = COPY) -> Article:
    """What a wire republisher makes of it: another headline and a byline, a dateline,
    the last paragraph dropped, and a few words changed."""
    paragraphs = article.text.split("\n\n")[:-1]
    paragraphs[0] = "NEW YORK (Reuters) - " + paragraphs[0]
    body = "\n\n".join(["By Jane Smith, Reuters", *paragraphs])
    for old, new in (("jumped", "rose"), ("benefited", "gained"), ("higher", "bigger")):
        body = body.replace(old, new, 1)
    return dataclasses.replace(
        article, id=new_id, title="Time Warner profit up on ads", text=body, source="reuters"
    )


@pytest.fixture(scope="module")
def bbc_collection(tmp_path_factory, embedder):
    original = bbc(ORIGINAL)[0]
    articles = [*bbc(*EXACT, ORIGINAL, *FOLLOW_UP, *OTHERS), republished(original)]
    path = tmp_path_factory.mktemp("dups") / "collection"
    with Collection.open(path, embedder) as collection:
        collection.add_articles(articles)
        yield collection


def group_of(collection: Collection, *ids: str) -> list[str]:
    keys = collection.store.article_group_keys(list(ids))
    return [keys[i] for i in ids]


def test_exact_and_republished_copies_share_a_group_and_a_follow_up_does_not(bbc_collection):
    exact = group_of(bbc_collection, *EXACT)
    assert exact[0] == exact[1]
    copy = group_of(bbc_collection, ORIGINAL, COPY)
    assert copy[0] == copy[1] != exact[0]
    follow_up = group_of(bbc_collection, *FOLLOW_UP)
    assert follow_up[0] != follow_up[1]  # the same story, a day on: another article
    everything = group_of(bbc_collection, *EXACT, ORIGINAL, *FOLLOW_UP, *OTHERS)
    assert len(set(everything)) == 6
    assert bbc_collection.duplicates_of([ORIGINAL, "sport_001"]) == {
        ORIGINAL: [COPY], "sport_001": [],
    }


def test_collapse_returns_k_groups_with_the_copies_they_stand_for(bbc_collection):
    retriever = Retriever(bbc_collection)
    query = "Time Warner quarterly profits and AOL subscribers"
    plain = retriever.search(query, 10, mode="dense", collapse=False)
    assert [h.article_id for h in plain[:4]].count(ORIGINAL) >= 1  # copies crowd the top
    assert [h.article_id for h in plain[:4]].count(COPY) >= 1
    assert all(h.duplicates == 0 and h.duplicate_ids == () for h in plain)
    for mode in ("dense", "lexical", "hybrid"):
        hits = retriever.search(query, 4, mode=mode, collapse=True)
        assert len(hits) == 4 and [h.rank for h in hits] == [1, 2, 3, 4]
        groups = group_of(bbc_collection, *(h.article_id for h in hits))
        assert len(set(groups)) == 4  # k counts groups
        top = hits[0]
        assert top.article_id in (ORIGINAL, COPY)
        others = {ORIGINAL, COPY} - {top.article_id}
        assert top.duplicates == 1 and set(top.duplicate_ids) == others
        best = max((h for h in plain if h.article_id in (ORIGINAL, COPY)), key=lambda h: h.score)
        if mode == "dense":
            assert (top.passage_id, top.score) == (best.passage_id, pytest.approx(best.score))
    exact = retriever.search("economy strong in election year", 3, collapse=True)[0]
    assert exact.article_id in EXACT and exact.duplicates == 1
    # The copies it stands for are those the filters allow.
    only_bbc = retriever.search(query, 3, collapse=True, filters=Filters(sources=("bbc",)))
    assert only_bbc[0].article_id == ORIGINAL and only_bbc[0].duplicates == 0


def test_a_search_deeper_than_the_collection_returns_every_group_once(bbc_collection):
    hits = Retriever(bbc_collection).search("news", 50, collapse=True)
    assert len(hits) == 6  # 8 articles in 6 groups
    assert sum(1 + h.duplicates for h in hits) == 8


def test_the_service_collapses_by_default_and_the_client_agrees_with_the_library(
    bbc_collection,
):
    from starlette.testclient import TestClient

    from service.app import create_app
    from service.client import RetrievalClient
    from service.settings import Settings

    query = "Time Warner quarterly profits and AOL subscribers"
    local = Retriever(bbc_collection).search(query, 4, collapse=True)
    app = create_app(Settings(collection=bbc_collection.path))
    with TestClient(app) as http, RetrievalClient(http=http) as client:
        answer = http.post("/search", json={"query": query, "k": 4}).json()
        assert len(answer["hits"]) == 4
        top = answer["hits"][0]
        assert top["duplicates"] == 1 and len(top["duplicate_ids"]) == 1
        batch = http.post("/search/batch", json={"queries": [query], "k": 4}).json()
        assert batch["results"][0]["hits"] == answer["hits"]
        plain = http.post("/search", json={"query": query, "k": 4, "collapse": False}).json()
        assert all(h["duplicates"] == 0 and h["duplicate_ids"] == [] for h in plain["hits"])
        remote = client.search(query, 4)  # the server's default: collapsed
        assert [(h.passage_id, h.duplicate_ids) for h in remote] == [
            (h.passage_id, h.duplicate_ids) for h in local
        ]
        assert client.search_batch([query], 4, collapse=True)[0] == remote


def test_the_cli_collapses_unless_told_not_to(bbc_collection, capsys):
    from retrieval.cli.main import main

    where = ["--collection", str(bbc_collection.path)]
    assert main(["search", "Time Warner profits", "-k", "2", "--collapse", *where]) == 0
    assert "and 1 copy: " in capsys.readouterr().out
    assert main(["search", "Time Warner profits", "-k", "2", "--collapse", "--json", *where]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["duplicates"] == 1 and len(hits[0]["duplicate_ids"]) == 1
    plain = ["search", "Time Warner profits", "-k", "2", "--no-collapse", "--json", *where]
    assert main(plain) == 0
    assert all(h["duplicates"] == 0 for h in json.loads(capsys.readouterr().out))
    assert main(["search", "Time Warner profits", "-k", "2", "--json", *where]) == 0
    assert json.loads(capsys.readouterr().out)[0]["duplicates"] == 1  # on by default


def test_related_articles_leave_out_the_articles_own_copies(bbc_collection):
    retriever = Retriever(bbc_collection)
    related = [r.article_id for r in retriever.related(ORIGINAL, 10)]
    assert COPY not in related and ORIGINAL not in related
    assert len(related) == 5  # one per other group: only one of the exact pair
    assert len({*related} & set(EXACT)) == 1
    assert EXACT[1] not in [r.article_id for r in retriever.related(EXACT[0], 10)]


def test_deleting_or_replacing_a_groups_first_member_keeps_the_group(tmp_path, embedder):
    original = bbc(ORIGINAL)[0]
    copies = [republished(original, f"copy-{i}") for i in range(2)]
    with Collection.open(tmp_path / "c", embedder) as collection:
        collection.add_articles([original, *copies])
        first = group_of(collection, ORIGINAL, "copy-0", "copy-1")
        assert len(set(first)) == 1
        collection.delete_article(ORIGINAL)
        assert group_of(collection, "copy-0", "copy-1") == first[1:]
        collection.add_articles([republished(original, "copy-2")])  # found through the others
        assert group_of(collection, "copy-2") == first[:1]
        # Replacing a member by another story moves it out; the rest stay together.
        other = bbc("sport_001")[0]
        collection.add_articles([dataclasses.replace(other, id="copy-0")])
        assert group_of(collection, "copy-1", "copy-2") == first[1:]
        assert group_of(collection, "copy-0") != first[:1]
        # The original back, unchanged: it rejoins its copies.
        collection.add_articles([original])
        assert group_of(collection, ORIGINAL) == first[:1]
        hits = Retriever(collection).search("Time Warner profits", 1, collapse=True)
        assert hits[0].duplicates == 2


def test_a_collection_made_before_groups_is_grouped_on_opening(tmp_path, embedder):
    path = tmp_path / "old"
    original = bbc(ORIGINAL)[0]
    with Collection.open(path, embedder) as collection:
        collection.add_articles([original, republished(original), *bbc(*OTHERS)])
        generation = collection.generation
    db = sqlite3.connect(path / STORE)  # what a collection of the previous version holds
    db.executescript(
        "DROP TRIGGER articles_duplicates_delete; DROP TABLE duplicates; "
        "DROP TABLE duplicate_bands; DELETE FROM meta WHERE key LIKE 'duplicate%';"
    )
    db.close()
    with Collection.open(path, embedder) as collection:
        assert collection.generation == generation  # no article or passage changed
        assert collection.duplicates_of([ORIGINAL]) == {ORIGINAL: [COPY]}
        assert Retriever(collection).search("Time Warner", 1, collapse=True)[0].duplicates == 1
    with Collection.open(path, embedder) as collection:  # idempotent
        assert collection.duplicates_of([ORIGINAL]) == {ORIGINAL: [COPY]}


def test_signatures_are_datasketchs_affine32_minhash_bit_for_bit():
    """The signatures stored in collections were made by datasketch 2's MinHash; ours must
    stay the same function (and the stored rule names it, so another one regroups)."""
    datasketch = pytest.importorskip("datasketch")
    template = datasketch.MinHash(num_perm=duplicates.NUM_PERM, seed=duplicates.SEED,
                                  scheme=duplicates.SCHEME)
    with open(BBC, encoding="utf-8") as lines:
        texts = [json.loads(line)["text"] for _, line in zip(range(300), lines, strict=False)]
    for text in [*texts, "Flash: quake", "!!!"]:
        grams = shingles(text)
        theirs = template.copy()
        theirs.update_batch(grams)
        assert (duplicates.minhash(grams) == theirs.hashvalues).all()
    assert (duplicates.minhash([]) == template.hashvalues).all()  # nothing added yet
    assert duplicates.SCHEME in DuplicateRule().describe()


def test_a_collection_grouped_by_another_hash_function_is_regrouped(tmp_path, embedder):
    path = tmp_path / "c"
    original = bbc(ORIGINAL)[0]
    with Collection.open(path, embedder) as collection:
        collection.add_articles([original, republished(original), *bbc(*OTHERS)])
    db = sqlite3.connect(path / STORE)  # as datasketch 1's "legacy" scheme left it
    db.execute("UPDATE meta SET value = replace(value, 'minhash-affine32', 'minhash') "
               "WHERE key LIKE 'duplicate%'")
    db.execute("UPDATE duplicates SET grp = rowid + 1000, signature = zeroblob(512)")
    db.commit()
    db.close()
    with Collection.open(path, embedder) as collection:
        assert collection.duplicates_of([ORIGINAL]) == {ORIGINAL: [COPY]}


def wire_edited(article: Article) -> Article:
    """What a wire desk makes of it: a byline, a dateline, the last paragraph dropped, and
    frequent words replaced at every occurrence, each breaking every shingle around it."""
    paragraphs = article.text.split("\n\n")[:-1]
    paragraphs[0] = "LONDON (Reuters) - " + paragraphs[0]
    body = "\n\n".join(["By Jane Smith, Reuters", *paragraphs])
    for old, new in (("said", "stated"), ("also", "additionally"), ("but", "however")):
        body = re.sub(rf"\b{old}\b", new, body)
    return dataclasses.replace(article, id=f"{article.id}-wire", title="Wire copy", text=body)


def test_a_wire_copy_with_frequent_words_replaced_joins_its_original(tmp_path):
    # business_034 ("Rover deal 'may cost 2,000 jobs'"): 5-word shingles missed its copy;
    # scripts/wire_copies.py measures the rule on 600 such copies per edit level.
    originals = bbc("business_034", "politics_036", *FOLLOW_UP)
    copies = [wire_edited(article) for article in originals[:2]]
    store = Store(tmp_path / STORE)
    with store.transaction() as generation:
        for article in [*originals, *copies]:
            store.put_article(article, [], generation)
    groups = store.article_group_keys([a.id for a in [*originals, *copies]])
    store.close()
    for original, copy in zip(originals, copies, strict=False):
        assert groups[original.id] == groups[copy.id], original.id
    assert groups[FOLLOW_UP[0]] != groups[FOLLOW_UP[1]]  # the same story, a day on
    assert len(set(groups.values())) == 4


def test_short_texts_and_bad_rules():
    assert shingles("Flash: quake") == [b"flash quake"]
    assert shingles("!!!") == [b"!!!"]
    assert len(shingles("one two three four five six")) == 3  # 4-word shingles
    with pytest.raises(ValueError, match="jaccard must be in"):
        DuplicateRule(jaccard=0.0)
    with pytest.raises(ValueError, match="containment"):
        DuplicateRule(containment=1.5)


def test_collapsing_a_huge_group_stops_at_the_candidate_ceiling(tmp_path, embedder, monkeypatch):
    """A group of many copies must not make a collapsed search read the whole collection:
    it reads at most COLLAPSE_MAX_POOL candidates (here 12), then answers with what it has."""
    import retrieval.search.pool as pool
    import retrieval.search.retriever as search

    monkeypatch.setattr(pool, "COLLAPSE_MAX_POOL", 12)
    (original,) = bbc(ORIGINAL)
    copies = [dataclasses.replace(original, id=f"copy-{i}") for i in range(30)]
    fetched: list[int] = []
    ranked = search.Retriever._ranked

    def counting(self, reader, query, vector, mode, fetch, *args, **named):
        fetched.append(fetch)
        return ranked(self, reader, query, vector, mode, fetch, *args, **named)

    monkeypatch.setattr(search.Retriever, "_ranked", counting)
    with Collection.open(tmp_path / "c", embedder, background=False) as collection:
        collection.add_articles([*copies, *bbc(*OTHERS)])
        hits = Retriever(collection).search(original.title, k=3, collapse=True)
    assert max(fetched) == 12 and len(collection.duplicates_of(["copy-0"])["copy-0"]) == 29
    assert hits[0].article_id.startswith("copy-") and hits[0].duplicates == 29
    assert len({hit.article_id for hit in hits}) == len(hits) <= 3


def test_fingerprints_are_made_before_the_write_transaction(tmp_path, embedder, monkeypatch):
    # Hashing inside the transaction held the write lock for 0.6 s on a process's first
    # write (then datasketch's import), long enough to make another process's write time out.
    inside_a_transaction = []
    with Collection.open(tmp_path / "c", embedder) as collection:
        real = duplicates.fingerprint

        def watched(text: str) -> duplicates.Fingerprint:
            inside_a_transaction.append(collection.store._db.in_transaction)
            return real(text)

        monkeypatch.setattr(duplicates, "fingerprint", watched)
        collection.add_articles(bbc(ORIGINAL, *OTHERS))
        assert len(collection.store.article_group_keys([ORIGINAL, *OTHERS])) == 3
    assert inside_a_transaction == [False, False, False]

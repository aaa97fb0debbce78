"""One contract suite over every VectorIndex backend, against the exact NumpyIndex oracle.

Awkward sizes (n = 1, 7, 50; dim 3 and 97; k > n), removals, filters and a save/load
round trip. The approximate HNSW indexes must give the oracle's answers at these sizes
(their graph reaches every node of a small set); scores are compared with atol because
SQ8 stores 8-bit codes and near-zero cosines defeat rtol-only checks.
"""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.collection.index import FaissIndex, NumpyIndex
from retrieval.errors import InputError

SPECS = ["numpy", "Flat", "HNSW32", "HNSW32,SQ8", "IVF4,SQ8"]
# SQ8 learns its per-dimension range from the first vectors added (50 here): a later
# vector outside it is clipped, so its scores may be a few hundredths off.
ATOL = {"numpy": 1e-6, "Flat": 1e-5, "HNSW32": 1e-5, "HNSW32,SQ8": 0.05, "IVF4,SQ8": 0.05}


def make(spec: str, dim: int):
    if spec == "numpy":
        return NumpyIndex(dim)
    index = FaissIndex(dim, spec)
    if spec.startswith("IVF"):  # lists need more vectors than n=1 or 7 give
        index.train(unit(np.random.default_rng(99), 400, dim))
    return index


def unit(rng, n, dim):
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def filled(spec, n, dim, seed=0):
    rng = np.random.default_rng(seed)
    vectors = unit(rng, n, dim)
    ids = rng.permutation(10 * n)[:n].astype(np.int64) + 5  # sparse, unordered ids
    index, oracle = make(spec, dim), NumpyIndex(dim)
    index.add(ids, vectors)
    oracle.add(ids, vectors)
    return index, oracle, ids, unit(rng, 4, dim)


def same_answers(spec, got, want):
    (got_scores, got_ids), (want_scores, want_ids) = got, want
    assert got_ids.shape == want_ids.shape
    np.testing.assert_allclose(got_scores, want_scores, atol=ATOL[spec])
    if "SQ8" in spec:  # 8-bit codes may swap near-ties: compare as sets
        for g, w in zip(got_ids, want_ids, strict=True):
            assert len(set(g.tolist()) ^ set(w.tolist())) <= 2
    else:
        np.testing.assert_array_equal(got_ids, want_ids)


@pytest.fixture(params=SPECS)
def spec(request):
    return request.param


@pytest.mark.parametrize("n", [1, 7, 50])
@pytest.mark.parametrize("dim", [3, 97])
def test_search_matches_the_oracle(spec, n, dim):
    index, oracle, _, queries = filled(spec, n, dim)
    assert len(index) == n and index.dim == dim
    for k in (1, 5, n + 3):  # k > n is clamped to n, never padded
        same_answers(spec, index.search(queries, k), oracle.search(queries, k))
        assert index.search(queries, k)[1].shape == (4, min(k, n))


def test_removal_and_readding(spec):
    index, oracle, ids, queries = filled(spec, 50, 97)
    gone = ids[::3]
    index.remove(gone)
    oracle.remove(gone)
    index.remove(np.array([10**9], np.int64))  # unknown ids are ignored
    assert len(index) == len(oracle) == 50 - len(gone)
    assert sorted(index.ids().tolist()) == sorted(oracle.ids().tolist())
    same_answers(spec, index.search(queries, 60), oracle.search(queries, 60))
    assert not set(index.search(queries, 60)[1].ravel().tolist()) & set(gone.tolist())
    # an update: the same id comes back with a new vector
    fresh = unit(np.random.default_rng(9), 1, 97)
    index.add(gone[:1], fresh)
    oracle.add(gone[:1], fresh)
    same_answers(spec, index.search(fresh, 3), oracle.search(fresh, 3))
    assert index.search(fresh, 1)[1][0, 0] == gone[0]


def test_removing_everything(spec):
    index, _, ids, queries = filled(spec, 7, 3)
    index.remove(ids)
    assert len(index) == 0
    scores, found = index.search(queries, 5)
    assert found.shape == (4, 0)


@pytest.mark.parametrize("n_allowed", [0, 1, 3, 30])
def test_filters_return_k_hits_when_k_exist(spec, n_allowed):
    index, oracle, ids, queries = filled(spec, 50, 97)
    index.remove(ids[:5])
    oracle.remove(ids[:5])
    allowed = ids[3 : 3 + n_allowed]  # two of them removed: never returned
    got = index.search(queries, 10, allowed=allowed)
    want = oracle.search(queries, 10, allowed=allowed)
    same_answers(spec, got, want)
    live = len(set(allowed.tolist()) - set(ids[:5].tolist()))
    assert ((got[1] >= 0).sum(axis=1) == min(10, live)).all()
    assert np.isneginf(got[0][got[1] < 0]).all()


def test_save_and_load_round_trip(tmp_path, spec):
    if spec == "numpy":
        pytest.skip("NumpyIndex lives in memory only")
    index, oracle, ids, queries = filled(spec, 50, 97)
    index.remove(ids[:4])
    oracle.remove(ids[:4])
    index.save(tmp_path / "index.faiss")
    loaded = FaissIndex.load(tmp_path / "index.faiss")
    assert loaded.spec == spec and len(loaded) == 46
    assert loaded.tombstone_fraction == (4 / 50 if spec.startswith("HNSW") else 0)
    same_answers(spec, loaded.search(queries, 10), oracle.search(queries, 10))
    assert not list(tmp_path.glob("*.tmp"))


def test_bad_shapes_are_input_errors(spec):
    index = make(spec, 3)
    with pytest.raises(InputError, match=r"shape \(n, 3\)"):
        index.add(np.array([1]), np.zeros((1, 4), np.float32))
    with pytest.raises(InputError):
        index.add(np.array([1, 2]), np.zeros((1, 3), np.float32))


@pytest.mark.parametrize("approximate", ["HNSW32,SQ8", "IVF16,SQ8"])
def test_approximate_index_over_many_vectors_with_restrictive_and_broad_filters(approximate):
    """Past EXACT_FILTER_LIMIT the index answers filtered queries; short rows fall back."""
    from retrieval.collection import index as module

    rng = np.random.default_rng(3)
    centres = unit(rng, 40, 32)
    vectors = centres[rng.integers(0, 40, 3000)] + 0.3 * rng.standard_normal((3000, 32))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    ids = np.arange(3000, dtype=np.int64)
    approx, oracle = FaissIndex(32, approximate), NumpyIndex(32)
    approx.add(ids, vectors)
    oracle.add(ids, vectors)
    approx.remove(ids[::2])
    oracle.remove(ids[::2])
    queries = unit(rng, 20, 32)
    limit = module.EXACT_FILTER_LIMIT
    try:
        module.EXACT_FILTER_LIMIT = 10  # force the graph path for the broad filter
        for allowed in (ids[1:40:2], ids[: 2000]):  # 20 live (fewer than k), 1000 live
            got = approx.search(queries, 25, allowed=allowed)[1]
            want = oracle.search(queries, 25, allowed=allowed)[1]
            assert ((got >= 0).sum(axis=1) == (want >= 0).sum(axis=1)).all()
            pairs = zip(got, want, strict=True)
            recall = np.mean([len(set(g) & set(w[w >= 0])) / (w >= 0).sum() for g, w in pairs])
            assert recall >= 0.9
            assert not np.isin(got[got >= 0], ids[::2]).any()
    finally:
        module.EXACT_FILTER_LIMIT = limit


# -- the approximate index inside a collection ---------------------------------------------


@pytest.fixture
def articles():
    from retrieval.models.calibration import calibration_texts
    from retrieval.records import Article

    texts = calibration_texts()
    return [
        Article(id=f"a{i}", title=f"Story {i}", text="\n\n".join(texts[3 * i : 3 * i + 3]))
        for i in range(12)
    ]


def dense_ids(collection, query, k=50, filters=None):
    from retrieval.search.retriever import Retriever

    # Passages, not stories: every passage of an article counts here.
    hits = Retriever(collection).search(query, k, filters=filters, collapse=False)
    return [hit.passage_id for hit in hits], {hit.article_id for hit in hits}


def test_auto_policy_checkpoints_the_approximate_index_and_reloads_it(
    tmp_path, embedder, articles
):
    from retrieval.collection.collection import Collection
    from retrieval.collection.index_policy import IndexPolicy

    policy = IndexPolicy("auto", exact_up_to=20, delta_max=1000)  # IVF1,SQ8 above 20
    path = tmp_path / "c"
    with Collection.open(path, embedder, policy=policy, background=False) as collection:
        collection.add_articles(articles[:2])
        assert collection.checkpoint() is None  # nothing due: few passages, still exact
        collection.add_articles(articles[2:])
        assert collection.info().vectors_in_index >= 20
        assert collection.checkpoint() == "rebuilt as IVF1,SQ8"  # the size asks for IVF
        assert collection.index.base.spec == "IVF1,SQ8" and collection.info().in_agreement
        spec = collection.index.base.spec
    with Collection.open(path, embedder, index_spec="auto") as reopened:  # loaded, not rebuilt
        info = reopened.info()
        assert info.index_spec == spec and info.in_agreement and info.checkpoint_generation > 0


@pytest.mark.parametrize("approximate", ["HNSW32,SQ8", "IVF2,SQ8"])
def test_deletes_updates_and_filters_stay_right_with_the_approximate_index(
    tmp_path, embedder, articles, approximate
):
    from dataclasses import replace

    from retrieval.collection.collection import Collection
    from retrieval.collection.index_policy import IndexPolicy
    from retrieval.records import Filters

    path = tmp_path / "c"
    policy = IndexPolicy(approximate, delta_max=1000, tombstones_max=0.2)
    with Collection.open(path, embedder, policy=policy, background=False) as collection:
        collection.add_articles(articles)
        collection.checkpoint(force=True)
        index = collection.index
        assert index.base.approximate and index.counts()["tombstones"] == 0
        before = collection.info().vectors_in_index
        removed = collection.delete_article("a3")
        assert collection.info().vectors_in_index == before - removed
        assert index.counts()["tombstones"] == removed  # the checkpoint itself is untouched
        _, found = dense_ids(collection, articles[3].text[:200])
        assert "a3" not in found
        # an update replaces the article's passages: old ones never come back
        changed = replace(articles[4], text="Completely new text about volcanic eruptions.")
        collection.add_articles([changed])
        ids, found = dense_ids(collection, "volcanic eruptions")
        assert ids and collection.passage(ids[0]).article_id == "a4"
        assert len([i for i in ids if collection.passage(i).article_id == "a4"]) == 1
        # a restrictive filter still returns every match there is, none from elsewhere
        ids, found = dense_ids(collection, "profits", k=10, filters=Filters(article_ids=("a5",)))
        assert found == {"a5"} and len(ids) == len(collection.passages_of("a5"))
        assert collection.info().in_agreement
    with Collection.open(path, embedder, background=False) as reopened:  # the log replays
        assert reopened.info().in_agreement
        assert "a3" not in dense_ids(reopened, articles[3].text[:200])[1]
        for article in ("a0", "a1", "a2"):  # past tombstones_max a checkpoint is due
            reopened.delete_article(article)
        reopened.refresh()
        assert reopened.checkpoint_due() and reopened.checkpoint()
        assert reopened.index.counts()["tombstones"] == 0 and reopened.info().in_agreement

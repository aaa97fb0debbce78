"""The OpenVINO backends against sentence-transformers, and one backend per collection.

The fp32 export must give sentence-transformers' vectors (cosine > 0.9999): that proves
tokenisation, mean pooling and normalisation right. The int8 export may move vectors a
little (mean cosine >= 0.99 on real news passages); its retrieval quality is measured by
the quality guard on every labelled set (docs/evaluation.md). The int8 export is the production
one, cached in ~/.cache/retrieval/models: the first run on a machine quantises (~1-2 min).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import DATASETS, SEEDS

from retrieval.collection.collection import Collection
from retrieval.errors import InputError, ModelMismatchError
from retrieval.models.backends import default_embedder

pytest.importorskip("openvino")


@pytest.fixture(scope="session")
def passages():
    """~60 real news paragraphs (BBC), or the seed articles' paragraphs without the set."""
    corpus = DATASETS / "bbc" / "corpus.jsonl"
    if corpus.exists():
        with open(corpus, encoding="utf-8") as handle:
            texts = [json.loads(line)["text"] for line, _ in zip(handle, range(15), strict=False)]
    else:
        texts = [path.read_text("utf-8") for path in sorted(SEEDS.glob("*.txt"))]
    paragraphs = [p for text in texts for p in text.split("\n\n") if len(p.split()) > 8]
    return paragraphs[:60] + ["rain in Spain", "who won the election?"]


@pytest.fixture(scope="session")
def fp32(tmp_path_factory):
    from retrieval.models.openvino import OpenVinoEmbedder

    return OpenVinoEmbedder(precision="fp32", cache_dir=tmp_path_factory.mktemp("ov-cache"))


@pytest.fixture(scope="session")
def int8():
    from retrieval.models.openvino import OpenVinoEmbedder

    return OpenVinoEmbedder(precision="int8")


def test_fp32_export_gives_sentence_transformers_vectors(fp32, embedder, passages):
    want = embedder.embed_documents(passages)
    got = fp32.embed_documents(passages)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert (got * want).sum(axis=1).min() > 0.9999
    queries = embedder.embed_queries(passages[-2:])
    assert (fp32.embed_queries(passages[-2:]) * queries).sum(axis=1).min() > 0.9999
    # the same tokenizer: the chunker sees the same lengths with either backend
    assert [fp32.count_tokens(p) for p in passages] == [embedder.count_tokens(p) for p in passages]
    assert fp32.token_offsets(passages[0]) == embedder.token_offsets(passages[0])


def test_fp32_export_truncates_like_sentence_transformers(fp32, embedder):
    long = " ".join(["the market rallied after the announcement"] * 80)  # ~480 pieces
    assert fp32.count_tokens(long) > fp32.max_tokens == embedder.max_tokens == 256
    got, want = fp32.embed_documents([long, "short"]), embedder.embed_documents([long, "short"])
    assert (got * want).sum(axis=1).min() > 0.9999


def test_batches_are_cut_into_a_few_shapes():
    from retrieval.models.openvino import batch_shapes, batch_sizes

    assert batch_shapes(0, 32) == []
    assert batch_shapes(29, 32) == [(0, 16), (16, 8), (24, 4), (28, 1)]
    assert batch_shapes(70, 32) == [(0, 32), (32, 32), (64, 4), (68, 2)]
    assert batch_sizes(32) == [1, 2, 4, 8, 16, 32] and batch_sizes(12) == [1, 2, 4, 8, 12]
    for n in range(1, 100):  # every text once, in order, each call of a known size
        shapes = batch_shapes(n, 12)
        assert [s for s, _ in shapes] == [sum(z for _, z in shapes[:i]) for i in range(len(shapes))]
        assert sum(z for _, z in shapes) == n and {z for _, z in shapes} <= set(batch_sizes(12))


def test_batch_cutting_and_warm_up_leave_vectors_alone(fp32, passages):
    """29 texts run as 16 + 8 + 4 + 1: each vector as when embedded alone, before and after
    every shape was warmed up."""
    texts = passages[:29]
    alone = np.vstack([fp32.embed_documents([t]) for t in texts])
    together = fp32.embed_documents(texts)
    fp32.warm_up(64)
    again = fp32.embed_documents(texts)
    assert (together * alone).sum(axis=1).min() > 0.99999
    np.testing.assert_allclose(again, together, atol=1e-6)


def test_short_texts_pad_to_fewer_tokens_with_the_same_vectors(fp32):
    """A query pads to SHORT_PAD word pieces, not PAD_TO: the padding is masked out, so its
    vector is the one it gets beside a long text (padded to a multiple of PAD_TO)."""
    from retrieval.models.openvino import PAD_TO, SHORT_PAD, padded_length, padded_lengths

    assert [padded_length(n) for n in (1, SHORT_PAD, SHORT_PAD + 1, PAD_TO + 1)] == [
        SHORT_PAD, SHORT_PAD, PAD_TO, 2 * PAD_TO]
    assert padded_lengths(256) == [SHORT_PAD, *range(PAD_TO, 257, PAD_TO)]
    query, long = "bank holds interest rates", "The central bank said " * 12
    assert fp32.count_tokens(query) <= SHORT_PAD < PAD_TO < fp32.count_tokens(long)
    alone = fp32.embed_queries([query])[0]
    beside = fp32.embed_documents([query, long, query, long])[0]  # one batch, padded to long
    assert float(alone @ beside) > 0.99999


def test_int8_is_close_to_fp32(int8, fp32, passages):
    cosines = (int8.embed_documents(passages) * fp32.embed_documents(passages)).sum(axis=1)
    assert cosines.mean() >= 0.99 and cosines.min() >= 0.95
    assert len(int8.embed_documents([])) == 0


def test_int8_spec_names_the_export(int8, embedder):
    spec = int8.spec()
    assert spec["backend"] == "openvino-int8" and spec["model"] == "all-MiniLM-L6-v2"
    assert spec["fingerprint"] == embedder.spec()["fingerprint"]  # the same source model
    assert spec["recipe"].startswith("v1-cal") and len(spec["export_fingerprint"]) == 16


def test_the_export_is_cached_and_reused(tmp_path, fp32):
    from retrieval.models.openvino import OpenVinoEmbedder

    again = OpenVinoEmbedder(precision="fp32", cache_dir=fp32._export.parent)  # no new export
    assert again.spec() == fp32.spec()
    assert not [p for p in fp32._export.parent.iterdir() if p.name.startswith(".export-")]


def test_calibration_texts_are_fixed():
    from retrieval.models.calibration import calibration_digest, calibration_texts

    texts = calibration_texts()
    assert len(texts) == 300 and texts == calibration_texts()
    assert calibration_digest() == "f7c325b11c74"  # changing them changes every int8 model


def test_a_collection_keeps_its_backend(tmp_path, int8, embedder, seed_articles):
    path = tmp_path / "collection"
    with Collection.open(path, int8) as collection:
        collection.add_articles(seed_articles)
        assert collection.manifest["embedder"]["backend"] == "openvino-int8"
    with pytest.raises(ModelMismatchError, match="openvino-int8"):
        Collection.open(path, embedder)  # torch vectors would not compare with int8 ones
    rebuilt = default_embedder(json.loads((path / "manifest.json").read_text())["embedder"])
    assert rebuilt.spec() == int8.spec()
    with Collection.open(path) as reopened:  # no embedder given: the manifest's own
        assert reopened.embedder.spec()["backend"] == "openvino-int8"


def test_threads_are_not_pinned_and_follow_the_environment(monkeypatch):
    # Pinned threads of two processes sharing a machine stay on the same cores (issue 22,
    # item 3); RETRIEVAL_MODEL_THREADS gives each process its share.
    from retrieval.models.openvino import THREADS_VARIABLE, OpenVinoEmbedder

    monkeypatch.setenv(THREADS_VARIABLE, "1")
    compiled = OpenVinoEmbedder(precision="int8")._request.get_compiled_model()
    assert compiled.get_property("ENABLE_CPU_PINNING") is False
    assert compiled.get_property("INFERENCE_NUM_THREADS") == 1
    monkeypatch.setenv(THREADS_VARIABLE, "all")
    with pytest.raises(InputError, match="RETRIEVAL_MODEL_THREADS='all': give a whole number"):
        OpenVinoEmbedder(precision="int8")


def test_unknown_precision_and_pooling_are_refused(tmp_path):
    from retrieval.models.openvino import OpenVinoEmbedder, check_mean_pooling

    with pytest.raises(InputError, match="precision"):
        OpenVinoEmbedder(precision="int4")
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "modules.json").write_text(json.dumps(
        [{"idx": 1, "name": "1", "path": "1_Pooling",
          "type": "sentence_transformers.models.Pooling"}]
    ))
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(
        {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}
    ))
    with pytest.raises(InputError, match="mean-pooling"):
        check_mean_pooling(tmp_path)

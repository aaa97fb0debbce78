"""Smoke tests of `retrieval bench` at tiny sizes: it runs, reports its ratios, exits 0.

The figures themselves mean nothing here (tiny inputs, a shared machine); they are
measured by running the benchmarks, never asserted in tests.
"""

from __future__ import annotations

import json

import pytest
from conftest import DATASETS

from retrieval.bench.ingest import ingest_table
from retrieval.cli.main import main

pytestmark = pytest.mark.skipif(
    not (DATASETS / "bbc" / "corpus.jsonl").exists(), reason="needs $RETRIEVAL_DATASETS/bbc"
)


def run_json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_bench_ingest_reports_both_runs_and_the_ratio(capsys, embedder):
    result = run_json(capsys, ["bench", "ingest", "--limit", "4", "--rounds", "2",
                               "--backend", "torch", "--json"])
    assert result["articles"] == 4 and result["passages"] >= 4 and result["in_agreement"]
    assert result["ratio"] > 0 and 0 <= result["outside_model_share"] < 1
    assert result["pipeline_passages_per_s"] > 0 and result["baseline_passages_per_s"] > 0
    assert "x |" in ingest_table(result)


def test_bench_index_measures_recall_against_exact(capsys, monkeypatch, tmp_path, embedder):
    from retrieval.bench import index as bench_index

    monkeypatch.setattr(bench_index, "CACHE", tmp_path / "cache")
    argv = ["bench", "index", "--size", "600", "--spec", "HNSW32,SQ8", "--queries", "12",
            "--base", "40", "--probes", "16,64", "--backend", "torch", "--json"]
    result = run_json(capsys, argv)
    assert result["spec"] == "HNSW32,SQ8" and result["size"] == 600
    assert result["param"] == "efSearch" and [r["efSearch"] for r in result["rows"]] == [16, 64]
    assert all(0.5 <= row["recall_at_10"] <= 1 for row in result["rows"])
    assert 0 < result["bytes_per_vector"] < 2000 and result["open_s"] > 0
    assert list((tmp_path / "cache").glob("*.npz"))  # real vectors are cached for reruns
    table = bench_index.index_table(result)
    assert "| Flat (exact, baseline) |" in table and "| HNSW32,SQ8 | 64 |" in table


def test_query_table_shows_the_ratio():
    from service.bench.query import query_table

    rows = [
        {"concurrency": 1, "server": "service", "requests": 10, "qps": 90.0, "p50_ms": 9.0,
         "p99_ms": 12.0},
        {"concurrency": 1, "server": "naive", "requests": 10, "qps": 30.0, "p50_ms": 30.0,
         "p99_ms": 40.0},
    ]
    table = query_table({"collection": "c", "errors": 0, "levels": rows})
    assert "| 3.00x |" in table and "errors: 0" in table


def test_bench_lexical_finds_fts5s_answers(capsys, seeded):
    result = run_json(capsys, ["bench", "lexical", "--collection", str(seeded.path),
                               "--limit", "30", "--json"])
    assert result["queries"] == 30 and result["answers_that_differ"] == 0
    assert result["passages"] == seeded.store.counts()["passages"]
    assert result["memory_cpu_ms"] > 0 and result["fts5_cpu_ms"] > 0

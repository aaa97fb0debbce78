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


def defaults_result(c1_p50_ms, c32_qps, errors=0):
    """A `bench defaults` result as its run builds it, with chosen numbers (no timing)."""
    load = {1: {"requests": 100, "qps": 90.0, "p50_ms": c1_p50_ms, "p99_ms": 20.0,
                "errors": errors},
            32: {"requests": 900, "qps": c32_qps, "p50_ms": 90.0, "p99_ms": 200.0, "errors": 0}}
    return {
        "backend": {"backend": "openvino-int8"}, "e_ms": 18.0, "cpu": "AMD EPYC (2 CPUs)",
        "model": {"m1_ms": 5.0, "l_qps": 400.0},
        "ingest": {"articles": 10, "passages": 40, "baseline_s": 2.0, "pipeline_s": 1.0,
                   "baseline_passages_per_s": 20.0, "pipeline_passages_per_s": 40.0,
                   "ratio": 2.0, "outside_model_share": 0.08},
        "load": load, "peer": {1: {**load[1], "qps": 45.0}, 32: {**load[32], "qps": 50.0}},
        "backends": {"torch": {"query_ms": 18.0, "queries_per_s": 300.0,
                               "passages_per_s": 30.0}},
    }


def test_bench_defaults_states_its_goals_against_the_model():
    from service.bench.defaults import checks, table

    met = defaults_result(c1_p50_ms=6.5, c32_qps=320.0)  # m1 + 1.5 ms, 0.8 L
    met["checks"] = checks(met)
    assert all(ok for *_, ok in met["checks"])
    missed = defaults_result(c1_p50_ms=7.5, c32_qps=280.0, errors=1)  # m1 + 2.5 ms, 0.7 L
    missed["checks"] = checks(missed)
    assert [ok for *_, ok in missed["checks"]] == [True, False, False, False]

    text = table(met)
    assert "m1 = 5.00 ms" in text and "L = 400 queries/s" in text
    assert "0.80 L" in text and "m1 +1.50 ms" in text
    assert "concurrency 1: 2.00x, concurrency 32: 6.40x" in text  # service / peer
    assert "8.0% outside the model" in text and "AMD EPYC" in text


def test_parse_wrk_reads_totals_latencies_and_errors():
    from service.bench.defaults import parse_wrk

    out = """Running 3s test @ http://127.0.0.1:8000
  Latency Distribution
     50%    5.10ms
     99%    1.20s
  1234 requests in 3.00s, 1.00MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 3
Requests/sec:    411.33
"""
    assert parse_wrk(out) == {"requests": 1234, "qps": 411.33, "p50_ms": 5.1,
                              "p99_ms": 1200.0, "errors": 6}

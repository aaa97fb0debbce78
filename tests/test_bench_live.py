"""`retrieval bench live` at a tiny size: it runs both services, both writers, and reports.

The figures mean nothing at this size on a shared machine and are not asserted: the goals
are shown by the full run in docs/performance.md. What must hold whatever the load: every
metric is reported,
no answer is a 5xx, none holds a passage twice or an article already deleted, and
store and index agree at the end.
"""

from __future__ import annotations

import argparse
import json

import pytest
from conftest import DATASETS

pytestmark = pytest.mark.skipif(
    not (DATASETS / "bbc" / "corpus.jsonl").exists(), reason="needs $RETRIEVAL_DATASETS/bbc"
)

METRICS = {
    "searches", "statuses", "http_5xx", "unexpected_errors", "duplicate_answers", "deleted_hits",
    "search_p50_ms_idle", "search_p99_ms_idle", "search_p50_ms_writing", "search_p99_ms_writing",
    "p99_ratio_writing_idle", "freshness_a_p50_s", "freshness_a_p99_s", "freshness_a_max_s",
    "freshness_b_p50_s", "freshness_b_p99_s", "freshness_b_max_s", "freshness_probes",
    "rss_warm_mb", "rss_max_mb", "rss_growth", "in_agreement_a", "in_agreement_b",
    "generation_a", "generation_b", "info_exit", "http_posts", "http_deletes", "cli_index_runs",
    "cli_delete_runs", "write_3000_median_s", "write_3000_p90_s", "write_3000_median_bytes",
    "write_3000_p90_bytes", "write_cost_ratio_s", "write_cost_ratio_bytes",
}


def test_parser_has_the_documented_defaults():
    from service.bench.live import add_live_parser

    parser = argparse.ArgumentParser()
    add_live_parser(parser.add_subparsers())
    args = parser.parse_args(["live"])
    assert (args.size, args.duration, args.idle, args.searchers) == (200_000, 600, 120, 64)
    assert (args.write_every, args.cli_every) == (1.0, 5.0)
    assert args.write_cost_sizes == "200000,1000000" and not args.reuse and args.dir is None


@pytest.mark.slow
def test_tiny_live_run_reports_every_metric_and_stays_exact(tmp_path, monkeypatch, capsys):
    from retrieval.bench import index as bench_index
    from service.bench import live as bench_live

    monkeypatch.setattr(bench_index, "CACHE", tmp_path / "cache")
    argv = ["--size", "3000", "--idle", "5", "--duration", "15", "--warmup", "3",
            "--searchers", "4", "--write-cost-sizes", "3000", "--write-cost-batches", "3",
            "--real-articles", "20", "--base", "100", "--dir", str(tmp_path / "runs"), "--json"]
    status = bench_live.main(argv)
    result = json.loads(capsys.readouterr().out)
    assert status == (0 if result["passed"] else 1)
    metrics = result["metrics"]
    assert set(metrics) >= METRICS, METRICS - set(metrics)
    assert metrics["http_5xx"] == 0, metrics["statuses"]
    assert metrics["duplicate_answers"] == 0 and metrics["deleted_hits"] == 0, result["errors"]
    assert metrics["in_agreement_a"] and metrics["in_agreement_b"] and metrics["info_exit"] == 0
    assert metrics["generation_a"] == metrics["generation_b"]
    assert metrics["searches_idle"] > 0 and metrics["searches_writing"] > 0
    assert metrics["http_posts"] > 0 and metrics["freshness_probes"] == metrics["http_posts"]
    assert metrics["cli_index_runs"] > 0 and metrics["http_deletes"] == metrics["http_posts"]
    assert result["command"].startswith("python -m service.bench.live --size 3000")
    assert {"model", "avx2", "avx512f", "avx512_vnni", "amx"} <= set(result["cpu"])
    table = bench_live.live_table(result)
    assert "| metric | value | goal | pass |" in table
    assert "| HTTP 5xx answers | 0 | 0 | pass |" in table
